"""Measure training and inference speed, data throughput and peak memory, side by side in one run.

    python benchmark.py --quick --json benchmark.json     # about 3 minutes on a 2-core CPU
    python benchmark.py                                    # every variant, including torch.compile

The baseline is the official implementation's math and defaults: fp32 eager, contiguous
tensors, torch's default Adam, D frozen during G's update. Every other row changes one thing,
and "default" is what train.py (training rows) and evaluate.py (inference rows) pick on this
machine. Each measurement runs in a fresh child process, one after the other: denormal
flushing and malloc settings are process-wide, and a process's peak memory only grows, so
variants sharing one process would colour each other's figures. Ratios are to the baseline of
the same run; absolute figures from different machines or runs do not compare.
"""
import argparse
import contextlib
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from config import Config
from dataset import PairedImageDataset, write_synthetic
from discriminator import Discriminator
from generator import Generator
from utils import (autocast_dtype, hardware_summary, inference_mode, native_bf16, pick_device, train_step,
                   tune_cpu_runtime, use_channels_last)

BASELINE = dict(amp="off", channels_last="off", fused_adam=False, compile=False, cpu_tuning=False)
DEFAULT = {k: getattr(Config(), k) for k in BASELINE}  # what train.py uses unless told otherwise
VARIANTS = {"baseline": BASELINE,
            "fused Adam": {**BASELINE, "fused_adam": True},
            "channels_last": {**BASELINE, "channels_last": "on"},
            "CPU tuning": {**BASELINE, "cpu_tuning": True},
            "bf16 autocast": {**BASELINE, "amp": "bf16"},
            "fp16 autocast": {**BASELINE, "amp": "fp16"},
            "torch.compile": {**BASELINE, "compile": True},
            "default": DEFAULT}


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


def measure_training(variant: dict, batch: int, steps: int, warmup: int, device: torch.device,
                     ngf: int, ndf: int) -> dict:
    """Median seconds per training step with the variant's settings, and the peak memory."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if use_channels_last(variant["channels_last"], device) \
        else torch.contiguous_format
    if device.type == "cpu":
        tune_cpu_runtime(variant["cpu_tuning"])
    with PeakMemory(device) as memory:
        generator = Generator(ngf=ngf).to(device, memory_format=memory_format)
        discriminator = Discriminator(ndf=ndf).to(device, memory_format=memory_format)
        opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=variant["fused_adam"] or None)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999),
                                 fused=variant["fused_adam"] or None)
        amp_dtype = autocast_dtype(device, variant["amp"])
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        g_step, d_step = generator, discriminator
        if variant["compile"]:
            g_step, d_step = torch.compile(generator), torch.compile(discriminator)
        x = (torch.rand(batch, 3, 256, 256, device=device) * 2 - 1).contiguous(memory_format=memory_format)
        y = (torch.rand(batch, 3, 256, 256, device=device) * 2 - 1).contiguous(memory_format=memory_format)
        times = []
        for i in range(warmup + steps):
            synchronize(device)
            start = time.perf_counter()
            train_step(g_step, d_step, opt_g, opt_d, x, y, 100.0, "vanilla", amp_dtype, scaler)
            synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
        del generator, discriminator, opt_g, opt_d, g_step, d_step
    seconds = statistics.median(times)
    return {"seconds_per_step": seconds, "images_per_second": batch / seconds, "peak_memory_mb": memory.peak}


def measure_inference(variant: dict, paper: bool, repeats: int, warmup: int, device: torch.device, ngf: int) -> dict:
    """Median images per second of the generator on one 256x256 image; "default" is evaluate.py's choice."""
    torch.manual_seed(0)
    memory_format = torch.channels_last if variant["channels_last"] in ("on", "inference") \
        else torch.contiguous_format
    if device.type == "cpu":
        tune_cpu_runtime(variant["cpu_tuning"])
    generator = Generator(ngf=ngf).to(device, memory_format=memory_format)
    forward = torch.compile(generator) if variant["compile"] else generator
    amp_dtype = autocast_dtype(device, variant["amp"])
    x = (torch.rand(1, 3, 256, 256, device=device) * 2 - 1).contiguous(memory_format=memory_format)
    times = []
    with PeakMemory(device) as memory, inference_mode(generator, paper=paper):
        for i in range(warmup + repeats):
            synchronize(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                forward(x)
            synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return {"images_per_second": 1 / statistics.median(times), "peak_memory_mb": memory.peak}


def measure_data(root: Path, count: int) -> dict:
    """Training pairs per second from disk (decode + resize + jitter) and from the in-memory cache."""
    rates = {}
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
    return rates


def isolated(function, *args) -> dict:
    """Run function(*args) in a fresh Python process (spawned, so nothing is inherited) and return its result."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def skip_reason(name: str, device: torch.device, quick: bool) -> str | None:
    """Why a variant is left out on this machine, or None to run it."""
    if name == "fp16 autocast" and device.type != "cuda":
        return "fp16 autocast is a GPU lever"
    if name == "CPU tuning" and device.type != "cpu":
        return "denormal flushing and glibc malloc settings are CPU levers"
    if name == "bf16 autocast" and quick and not native_bf16(device):
        return "bf16 is emulated on this CPU (many times slower); run without --quick to measure it"
    if name == "torch.compile" and quick:
        return "compiling takes minutes; run without --quick"
    return None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and variants (ends within 5 minutes on a CPU)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--ngf", type=int, default=64, help="generator width (64 is the paper's)")
    parser.add_argument("--ndf", type=int, default=64, help="discriminator width (64 is the paper's)")
    parser.add_argument("--large-batch", type=int, default=4, help="the second, larger batch size to time")
    parser.add_argument("--data", help="paired data for the data-pipeline figures (default: ../shared/data/maps, "
                                       "else synthetic pairs)")
    args = parser.parse_args(argv)
    if args.ngf < 1 or args.ndf < 1 or args.large_batch < 2:
        parser.error("--ngf and --ndf must be >= 1 and --large-batch >= 2")
    device = pick_device(args.device)
    steps, warmup = (4, 1) if args.quick else (10, 2)
    hardware = hardware_summary(device)
    print(f"benchmark: {hardware}; torch {torch.__version__}; ngf {args.ngf}, ndf {args.ndf}, 256x256")
    print(f"benchmark: default here = {DEFAULT} (autocast {autocast_dtype(device, DEFAULT['amp']) or 'off'})")

    rows, skipped = [], {}
    for name, variant in VARIANTS.items():
        reason = skip_reason(name, device, args.quick)
        if reason:
            skipped[name] = reason
            continue
        for batch in (1, args.large_batch):
            if batch > 1 and name not in ("baseline", "default") and args.quick:
                continue
            result = isolated(measure_training, variant, batch, steps if batch == 1 else max(2, steps // 2), warmup,
                              device, args.ngf, args.ndf)
            rows.append({"kind": "train", "variant": name, "batch": batch, **result})
            print(f"  train  {name:<15} batch {batch}: {result['seconds_per_step']:.3f} s/step, "
                  f"peak {result['peak_memory_mb']:.0f} MB", flush=True)
        for paper in (True, False):
            # evaluate.py always uses channels_last: it speeds up inference where training gains nothing
            inference_variant = {**variant, "channels_last": "inference"} if name == "default" else variant
            result = isolated(measure_inference, inference_variant, paper, steps * 3, warmup, device, args.ngf)
            rows.append({"kind": "inference", "variant": name, "mode": "paper" if paper else "eval", **result})
            print(f"  infer  {name:<15} {'paper' if paper else 'eval':<5}: {result['images_per_second']:.2f} img/s",
                  flush=True)

    def find(kind: str, variant: str, **match) -> dict:
        return next(r for r in rows if r["kind"] == kind and r["variant"] == variant
                    and all(r.get(k) == v for k, v in match.items()))

    for row in rows:
        base = find(row["kind"], "baseline", **({"batch": row["batch"]} if row["kind"] == "train" else {"mode": row["mode"]}))
        row["speedup"] = row["images_per_second"] / base["images_per_second"]
        row["memory_ratio"] = row["peak_memory_mb"] / base["peak_memory_mb"]

    data_root = Path(args.data) if args.data else Path(__file__).resolve().parent.parent / "shared" / "data" / "maps"
    with tempfile.TemporaryDirectory() as scratch:
        if not (data_root / "train").is_dir():
            data_root = write_synthetic(Path(scratch) / "pairs", count=24, val_count=1)
        data = measure_data(data_root, 24 if args.quick else 100)
    step_rate = find("train", "default", batch=1)["images_per_second"]

    summary = {
        "hardware": hardware, "device": device.type, "torch": torch.__version__, "quick": args.quick,
        "ngf": args.ngf, "ndf": args.ndf, "default_settings": DEFAULT,
        "train_speedup": find("train", "default", batch=1)["speedup"],
        "inference_speedup": find("inference", "default", mode="paper")["speedup"],
        "train_peak_memory_ratio": find("train", "default", batch=1)["memory_ratio"],
        "data_pairs_per_second": data, "data_over_step_rate": data["from_disk"] / step_rate,
        "results": rows, "skipped": skipped,
    }
    print()
    print(table(rows))
    print(f"\ndata pipeline, one process: {data['from_disk']:.1f} pairs/s from disk (decode + resize + jitter), "
          f"{data['cached']:.1f} pairs/s from --cache; the default training step takes {step_rate:.2f} pairs/s, "
          f"so loading is {summary['data_over_step_rate']:.0f}x faster than training"
          f"{'' if summary['data_over_step_rate'] > 1 else ' (A BOTTLENECK: use --num-workers and --cache)'}")
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
        time_cell = f"{r['seconds_per_step']:.3f} s/step" if r["kind"] == "train" else f"{1000 / r['images_per_second']:.0f} ms"
        lines.append(f"| {r['kind']} | {r['variant']} | {r.get('batch', r.get('mode'))} | {time_cell} | "
                     f"{r['images_per_second']:.2f} | {r['speedup']:.2f} | {r['peak_memory_mb']:.0f} | "
                     f"{r['memory_ratio']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
