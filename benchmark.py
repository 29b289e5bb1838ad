"""Measure training and inference speed, data throughput and peak memory, side by side in one run.

    python benchmark.py --quick --json benchmark.json     # 3.5 to 5 minutes on a 2-core CPU
    python benchmark.py                                    # every variant, torch.compile included
    python benchmark.py --quick --variants "CUDA graphs"   # only the baseline, the default and these

The baseline is the official implementation's math and defaults: fp32 eager, contiguous
tensors, torch's default Adam, gradients kept until the next backward, D frozen during G's
update. Every other row changes one thing, and "default" is what train.py (training rows) and
evaluate.py (inference rows) pick on this machine. Each measurement runs in a fresh child
process, one after the other: denormal flushing, malloc and cuDNN settings are process-wide,
and a process's peak memory only grows, so variants sharing one process would colour each
other's figures. Ratios are to the baseline of the same run; absolute figures from different
machines or runs do not compare.
"""
import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from config import ArgumentParser, Config
from dataset import PairedImageDataset, write_synthetic
from discriminator import Discriminator
from generator import Generator
from utils import (Autocast, ChannelsLastAdam, autocast_dtype, compile_for_inference, convolution_kernels,
                   error_line, hardware_summary, inference_mode, lay_out, native_bf16, pick_device,
                   step_during_backward, train_step, tune_runtime)

LEVERS = ("amp", "channels_last", "fused_adam", "free_grads", "cpu_tuning", "cpu_conv_autotune", "cudnn_benchmark",
          "compile", "cuda_graphs")
BASELINE = dict(amp="off", channels_last="off", fused_adam=False, free_grads=False, cpu_tuning=False,
                cpu_conv_autotune=False, cudnn_benchmark=False, compile=False, cuda_graphs=False)
TRAIN_DEFAULTS = Config()  # what train.py uses unless told otherwise
DEFAULT = {k: getattr(TRAIN_DEFAULTS, k) for k in LEVERS}
VARIANTS = {"baseline": BASELINE,
            "fused Adam": {**BASELINE, "fused_adam": True},
            "free grads": {**BASELINE, "free_grads": True},
            "channels_last": {**BASELINE, "channels_last": "on"},
            "CPU tuning": {**BASELINE, "cpu_tuning": True},
            "CPU conv autotune": {**BASELINE, "cpu_conv_autotune": True},
            "cuDNN autotune": {**BASELINE, "cudnn_benchmark": True},
            "bf16 autocast": {**BASELINE, "amp": "bf16"},
            "fp16 autocast": {**BASELINE, "amp": "fp16"},
            "CUDA graphs": {**BASELINE, "cuda_graphs": True},
            "default": DEFAULT,
            "torch.compile": {**BASELINE, "compile": True},
            "default without CUDA graphs": {**DEFAULT, "cuda_graphs": False}}
GPU_ONLY = ("fp16 autocast", "cuDNN autotune", "CUDA graphs", "default without CUDA graphs")
COMPILED = ("torch.compile",)
# no inference rows: these change nothing there (evaluate.py runs without CUDA graphs)
TRAINING_ONLY = ("fused Adam", "free grads", "CPU conv autotune", "default without CUDA graphs")


class PeakMemory:
    """Peak memory inside a block, in MB: max allocated on CUDA; on the CPU the process's peak resident
    size (getrusage), which is the variant's own because every measurement runs in a fresh process.
    (A thread polling the resident size would take the kernel's memory lock and slow page-faulting code.)"""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, 0.0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) / 1e6
        else:
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # Linux reports KB


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(call, device: torch.device, calls: int, warmup: int) -> list[float]:
    """Seconds per call, each timing. On CUDA the calls are timed in 5 blocks, synchronizing only at block
    ends (launches queue up as in training), after at least 1 s of warm-up so that the GPU's clocks
    have risen; on the CPU every call is timed on its own."""
    started = time.perf_counter()
    for i in range(warmup):
        call()
    if device.type == "cuda":
        while time.perf_counter() - started < 1:
            call()
        synchronize(device)
    blocks, per_block = (5, calls) if device.type == "cuda" else (calls, 1)
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(per_block):
            call()
        synchronize(device)
        times.append((time.perf_counter() - start) / per_block)
    return times


def graphed(variant: dict, device: torch.device) -> bool:
    return variant["cuda_graphs"] and device.type == "cuda"


def compiled(network: torch.nn.Module, variant: dict, device: torch.device, inference: bool = False) -> torch.nn.Module:
    """The network as the variant runs it: eager, compiled with CUDA graphs (reduce-overhead), or torch.compile;
    for inference with the weights frozen in, as evaluate.py compiles (utils.compile_for_inference)."""
    if graphed(variant, device):
        return torch.compile(network, mode="reduce-overhead")
    if variant["compile"]:
        return compile_for_inference(network) if inference else torch.compile(network)
    return network


def measure_training(variant: dict, batch: int, steps: int, warmup: int, device: torch.device,
                     ngf: int, ndf: int) -> dict:
    """Median seconds per training step with the variant's settings, and the peak memory."""
    torch.manual_seed(0)
    amp_dtype = autocast_dtype(device, variant["amp"])
    tune_runtime(device, variant["cpu_tuning"], variant["cudnn_benchmark"])
    with PeakMemory(device) as memory:
        generator, discriminator = Generator(ngf=ngf).to(device), Discriminator(ndf=ndf).to(device)
        memory_format, _ = lay_out(generator, discriminator, variant["channels_last"], device, amp_dtype)
        fused = variant["fused_adam"] or None  # None: torch's default implementation
        opt_g = ChannelsLastAdam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=fused)
        opt_d = ChannelsLastAdam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=fused)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        x = (torch.rand(batch, 3, 256, 256, device=device) * 2 - 1).contiguous(memory_format=memory_format)
        y = (torch.rand(batch, 3, 256, 256, device=device) * 2 - 1).contiguous(memory_format=memory_format)
        convolution_kernels(variant["cpu_conv_autotune"], variant["compile"], generator, discriminator, x, amp_dtype,
                            saved=None)  # train.py's per-layer choice, where it applies
        if variant["free_grads"]:
            step_during_backward(generator, opt_g, device, scaler)  # as train.py
        g_step, d_step = compiled(generator, variant, device), compiled(discriminator, variant, device)

        def step() -> None:
            if graphed(variant, device):
                torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be reused now
            train_step(g_step, d_step, opt_g, opt_d, x, y, 100.0, "vanilla", amp_dtype, scaler,
                       free_grads=variant["free_grads"])

        times = seconds_per_call(step, device, steps, warmup)
    seconds = statistics.median(times)
    return {"seconds_per_step": seconds, "images_per_second": batch / seconds, "peak_memory_mb": memory.peak,
            "seconds_each": times}


def measure_inference(variant: dict, paper: bool, repeats: int, warmup: int, device: torch.device, ngf: int) -> dict:
    """Median images per second of the generator on one 256x256 image; "default" is evaluate.py's choice."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if variant["channels_last"] in ("on", "inference") \
        else torch.contiguous_format
    tune_runtime(device, variant["cpu_tuning"], variant["cudnn_benchmark"])
    generator = Generator(ngf=ngf).to(device, memory_format=memory_format)
    amp_dtype = autocast_dtype(device, variant["amp"])
    forward = compiled(Autocast(generator, amp_dtype) if amp_dtype else generator, variant, device,
                       inference=True)  # as evaluate.py
    x = (torch.rand(1, 3, 256, 256, device=device) * 2 - 1).contiguous(memory_format=memory_format)
    with PeakMemory(device) as memory, inference_mode(generator, paper=paper):
        times = seconds_per_call(lambda: forward(x), device, repeats, warmup)
    return {"images_per_second": 1 / statistics.median(times), "peak_memory_mb": memory.peak, "seconds_each": times}


def measure_data(root: Path, count: int, workers: int) -> dict:
    """Training pairs per second: in one process from disk (decode + resize + jitter) and from the
    in-memory cache, and through a DataLoader with train.py's default worker count, from disk."""
    rates = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker; more threads only slowed these small tensors down
    for cached in (False, True):
        dataset = PairedImageDataset(root, "train", cache=cached)
        indices = list(range(min(count, len(dataset))))
        if cached:
            for i in indices:
                dataset.halves(i)
        start = time.perf_counter()
        for i in indices:
            dataset[i]
        rates["cached" if cached else "from_disk"] = len(indices) / (time.perf_counter() - start)
    torch.set_num_threads(threads)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(PairedImageDataset(root, "train"), indices),
                                         num_workers=workers)
    batches = iter(loader)
    next(batches)  # the workers' start-up is paid once per run, not per pair
    start = time.perf_counter()
    rates[f"{workers}_workers"] = sum(1 for _ in batches) / (time.perf_counter() - start)
    return rates


def isolated(function, *args, timeout: float) -> dict:
    """function(*args) in a fresh process (not a daemon, so torch.compile may start its own workers). A
    failure, a crash or a timeout comes back as {"error": one line}, so one broken variant does not end the run.

    The process is forked from Python's fork server, which has imported torch and this file and has run
    nothing else, so no measurement inherits another's settings or memory; importing torch in each
    spawned process instead took about 3 s, 23 times in a --quick run. Spawned where there is no fork
    server (Windows)."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["__main__", "benchmark"])
    else:
        context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_report, args=(sender, function, args))
    process.start()
    sender.close()  # the child holds the only sending end: its death reads as EOF here
    try:
        if not receiver.poll(timeout):
            return {"error": f"stopped after {timeout:.0f} s (--timeout)"}
        result = receiver.recv()
        # Let it exit by itself, so that what it started (torch.compile's workers) is shut down and
        # unregistered; killed at once, it left "leaked semaphore" warnings at the end of the run.
        process.join(timeout=60)
        return result
    except EOFError:
        process.join()
        return {"error": f"the measuring process died (exit code {process.exitcode})"}
    finally:
        process.kill()
        process.join()


def _report(sender, function, args) -> None:
    try:
        result = function(*args)
    except Exception as error:  # whatever the variant raised is reported, not raised
        result = {"error": f"{type(error).__name__}: {error_line(error)[:200]}"}
    sender.send(result)


def settle_headline(rows: list[dict], kind: str, measure_again, processes: int = 3) -> None:
    """Make the two figures behind a headline ratio, baseline and default (training at batch 1, or inference
    in paper mode), each the median of every timing in `processes` measurements taken in turns
    (measure_again(name) makes one more). On a shared 2-core machine the same settings ran up to 30% slower
    from one minute to the next (load from outside), a drift that one measurement each would pass on, and
    single steps of one process varied by 15% either way, which the 3 steps of one --quick process would.
    Failed processes are listed."""
    match, label = ({"batch": 1}, "batch 1") if kind == "train" else ({"mode": "paper"}, "paper")
    headline = {name: next(r for r in rows if r["kind"] == kind and r["variant"] == name
                           and all(r.get(k) == v for k, v in match.items())) for name in ("baseline", "default")}
    runs = {name: [dict(row)] for name, row in headline.items()}
    for _ in range(processes - 1):
        for name in headline:
            runs[name].append(measure_again(name))
    for name, row in headline.items():
        measured = [run for run in runs[name] if "error" not in run]
        failed = [run["error"] for run in runs[name] if "error" in run]
        if failed:
            row["failed_processes"] = failed
        if measured:
            row.pop("error", None)
            row["images_per_second_each_process"] = [run["images_per_second"] for run in measured]
            row["seconds_each"] = [seconds for run in measured for seconds in run["seconds_each"]]
            row["images_per_second"] = 1 / statistics.median(row["seconds_each"])  # batch 1
            row["peak_memory_mb"] = max(run["peak_memory_mb"] for run in measured)
            if kind == "train":
                row["seconds_per_step"] = 1 / row["images_per_second"]  # batch 1
        rates = ", ".join(f"{rate:.2f}" for rate in row.get("images_per_second_each_process", []))
        outcome = f"{row['images_per_second']:.2f} img/s, the median of {len(row['seconds_each'])} timings in " \
                  f"{len(measured)} processes ({rates} each)" if measured else "all failed"
        print(f"  {kind:<9} {name:<21} {label}: {outcome}" + (f"; {len(failed)} failed: {failed[0]}" if failed else ""),
              flush=True)


def setting(row: dict) -> dict:
    """What a row is compared on: the batch size of a training row, the mode of an inference row."""
    return {"batch": row["batch"]} if row["kind"] == "train" else {"mode": row["mode"]}


def add_ratios(rows: list[dict]) -> None:
    """Each measured row's speed and peak memory over its baseline's, wherever that baseline has been
    measured: the JSON, rewritten after every measurement, carries them also when a run is cut short."""
    for row in rows:
        base = next((r for r in rows if r["kind"] == row["kind"] and r["variant"] == "baseline"
                     and setting(r) == setting(row) and "error" not in r), None)
        if base is not None and "error" not in row:
            row["speedup"] = row["images_per_second"] / base["images_per_second"]
            row["memory_ratio"] = row["peak_memory_mb"] / base["peak_memory_mb"]


def skip_reason(name: str, device: torch.device, quick: bool) -> str | None:
    """Why a variant is left out on this machine, or None to run it."""
    if name in GPU_ONLY and device.type != "cuda":
        return "a GPU lever"
    if name == "CPU tuning" and device.type != "cpu":
        return "denormal flushing and glibc malloc settings are CPU levers"
    if name == "CPU conv autotune" and device.type != "cpu":
        return "a CPU lever (oneDNN or PyTorch's own kernels per convolution)"
    if name == "bf16 autocast" and quick and not native_bf16(device):
        return "bf16 is emulated on this CPU (many times slower); name it in --variants to measure it"
    if name in COMPILED and quick:
        return "compiling takes minutes; name it in --variants to measure it"
    return None


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats and rows: the larger batch and eval-mode inference only for the baseline "
                             "and the default, no torch.compile (CUDA graphs stay), no emulated bf16 (4.5 to 5 "
                             "minutes on a 2-core CPU)")
    parser.add_argument("--json", help="also write the results here (rewritten after every measurement)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--ngf", type=int, default=64, help="generator width (64 is the paper's)")
    parser.add_argument("--ndf", type=int, default=64, help="discriminator width (64 is the paper's)")
    parser.add_argument("--large-batch", type=int, default=4, help="the second, larger batch size to time")
    parser.add_argument("--timeout", type=float, default=600, help="seconds one measurement may take before it "
                                                                     "is reported as stopped")
    parser.add_argument("--data", help="paired data for the data-pipeline figures (default: ../shared/data/maps, "
                                       "else synthetic pairs)")
    parser.add_argument("--variants", help="comma-separated rows to measure besides the baseline and the default, "
                                           "which every ratio needs (default: every row that applies here): "
                                           + ", ".join(VARIANTS))
    args = parser.parse_args(argv)
    if args.ngf < 1 or args.ndf < 1 or args.large_batch < 2 or args.timeout <= 0:
        parser.error("--ngf and --ndf must be >= 1, --large-batch >= 2 and --timeout > 0")
    asked = {name.strip() for name in args.variants.split(",")} if args.variants else set()
    if asked - set(VARIANTS):
        parser.error(f"--variants: no row named {', '.join(sorted(asked - set(VARIANTS)))}; "
                     f"the rows are: {', '.join(VARIANTS)}")
    chosen = {"baseline", "default", *asked} if asked else set(VARIANTS)
    device = pick_device(args.device)
    if device.type == "cuda":  # GPU steps take milliseconds: more of them, and warm-up for cuDNN and compiling
        steps, warmup = (20, 5) if args.quick else (100, 10)
    else:
        steps, warmup = (3, 1) if args.quick else (10, 2)
    hardware = hardware_summary(device)
    print(f"benchmark: {hardware}; torch {torch.__version__}; ngf {args.ngf}, ndf {args.ndf}, 256x256")
    print(f"benchmark: default here = {DEFAULT} (autocast {autocast_dtype(device, DEFAULT['amp']) or 'off'})")
    summary = {"hardware": hardware, "device": device.type, "torch": torch.__version__, "quick": args.quick,
               "ngf": args.ngf, "ndf": args.ndf, "default_settings": DEFAULT, "partial": True}
    rows, skipped, inference_variants = [], {}, {}

    def record(row: dict) -> None:
        rows.append(row)
        what = f"{row['kind']:<6} {row['variant']:<21} {row.get('batch', row.get('mode'))}"
        if "error" in row:
            print(f"  {what}: FAILED, {row['error']}", flush=True)
        elif row["kind"] == "train":
            print(f"  {what}: {row['seconds_per_step']:.4f} s/step, peak {row['peak_memory_mb']:.0f} MB", flush=True)
        else:
            print(f"  {what}: {row['images_per_second']:.2f} img/s", flush=True)
        write_json()

    def write_json() -> None:
        add_ratios(rows)
        if args.json:
            Path(args.json).write_text(json.dumps({**summary, "results": rows, "skipped": skipped}, indent=2) + "\n")

    def train_once(variant: dict, batch: int) -> dict:
        return isolated(measure_training, variant, batch, steps if batch == 1 else max(2, steps // 2), warmup,
                        device, args.ngf, args.ndf, timeout=args.timeout)

    def infer_once(variant: dict, paper: bool) -> dict:
        return isolated(measure_inference, variant, paper, steps * 3, warmup, device, args.ngf, timeout=args.timeout)

    for name, variant in VARIANTS.items():
        # a row named in --variants runs even where --quick would leave it out
        reason = skip_reason(name, device, args.quick and name not in asked) or \
            (None if name in chosen else "not in --variants")
        if reason:
            skipped[name] = reason
            continue
        full = not args.quick or name in ("baseline", "default")
        for batch in (1, args.large_batch) if full else (1,):
            record({"kind": "train", "variant": name, "batch": batch, **train_once(variant, batch)})
        if name in TRAINING_ONLY:
            continue
        # evaluate.py always uses channels_last, which speeds up inference where training gains nothing; it
        # compiles on the CPU (splits of 200 images or more), and uses no CUDA graphs: on a GPU, compiling takes
        # longer than translating a whole split
        inference_variants[name] = {**variant, "channels_last": "inference", "cuda_graphs": False,
                                    "compile": device.type == "cpu"} if name == "default" else variant
        for paper in (True, False) if full else (True,):
            record({"kind": "inference", "variant": name, "mode": "paper" if paper else "eval",
                    **infer_once(inference_variants[name], paper)})

    settle_headline(rows, "train", lambda name: train_once(VARIANTS[name], 1))
    settle_headline(rows, "inference", lambda name: infer_once(inference_variants[name], True))
    write_json()

    def find(kind: str, variant: str, **match) -> dict:
        row = next((r for r in rows if r["kind"] == kind and r["variant"] == variant
                    and all(r.get(k) == v for k, v in match.items())), None)
        if row is None or "error" in row:
            raise SystemExit(f"benchmark: the {variant} {kind} measurement {match} failed: "
                             f"{row['error'] if row else 'missing'}")
        return row

    for row in rows:  # every ratio needs its baseline
        if "error" not in row:
            find(row["kind"], "baseline", **setting(row))

    data_root = Path(args.data) if args.data else Path(__file__).resolve().parent.parent / "shared" / "data" / "maps"
    with tempfile.TemporaryDirectory() as scratch:
        if not (data_root / "train").is_dir():
            data_root = write_synthetic(Path(scratch) / "pairs", count=24, val_count=1)
        data = measure_data(data_root, 24 if args.quick else 100, TRAIN_DEFAULTS.num_workers)
    step_rate = find("train", "default", batch=1)["images_per_second"]
    workers = f"{TRAIN_DEFAULTS.num_workers}_workers"
    loader_rate = data["cached" if TRAIN_DEFAULTS.cache else workers]

    summary.update({
        "partial": False,
        "train_speedup": find("train", "default", batch=1)["speedup"],
        "inference_speedup": find("inference", "default", mode="paper")["speedup"],
        "train_peak_memory_ratio": find("train", "default", batch=1)["memory_ratio"],
        "data_pairs_per_second": data, "data_over_step_rate": loader_rate / step_rate,
        "results": rows, "skipped": skipped,
    })
    print()
    print(table(rows))
    print(f"\ndata pipeline: {data['from_disk']:.1f} pairs/s from disk in one process (decode + resize + jitter), "
          f"{data[workers]:.1f} with train.py's {TRAIN_DEFAULTS.num_workers} workers, "
          f"{data['cached']:.1f} from --cache in one process; the default training step takes "
          f"{step_rate:.2f} pairs/s, so loading is {summary['data_over_step_rate']:.1f}x faster than training"
          f"{'' if summary['data_over_step_rate'] > 1 else ' (A BOTTLENECK: use --cache and more --num-workers)'}")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    print(f"\ntrain_speedup {summary['train_speedup']:.2f}x, inference_speedup {summary['inference_speedup']:.2f}x, "
          f"train_peak_memory_ratio {summary['train_peak_memory_ratio']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"benchmark: results written to {args.json}")
    return summary


def table(rows: list[dict]) -> str:
    """A Markdown table of every measurement, ratios to the baseline of the same kind."""
    lines = ["| measure | variant | batch / mode | time | images/s | x baseline | peak memory (MB) | memory x baseline |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['kind']} | {r['variant']} | {r.get('batch', r.get('mode'))} | failed: {r['error']} "
                         "| | | | |")
            continue
        time_cell = f"{r['seconds_per_step'] * 1000:.1f} ms/step" if r["kind"] == "train" \
            else f"{1000 / r['images_per_second']:.1f} ms"
        lines.append(f"| {r['kind']} | {r['variant']} | {r.get('batch', r.get('mode'))} | {time_cell} | "
                     f"{r['images_per_second']:.2f} | {r['speedup']:.2f} | {r['peak_memory_mb']:.0f} | "
                     f"{r['memory_ratio']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
