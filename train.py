"""Train pix2pix: a U-Net generator against a PatchGAN discriminator, with an L1 term.

    python train.py --preset demo                       # a few minutes on a CPU, synthetic pairs
    python train.py --data data/maps --name maps        # the paper's setting (GPU advised)
    python train.py --resume runs/maps                  # continue a run where its last checkpoint left it
    torchrun --nproc_per_node 4 train.py --data data/maps --name maps4   # DistributedDataParallel

Everything goes to runs/NAME/: checkpoints/latest.pt and best.pt, samples/epoch_NNN.png,
losses.csv, val.csv, loss_curve.png and config.json. Ctrl-C (or SIGTERM) saves the current
step and exits; --resume continues from there.
"""
import csv
import dataclasses
import errno
import gc
import hashlib
import json
import math
import os
import random
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure  # no pyplot: no backend or screen involved, notebooks keep theirs
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from config import PRESETS, Config, build_parser, parse_config
from dataset import PairedImageDataset, describe_bad, find_bad_pairs, write_synthetic
from discriminator import Discriminator
from generator import Generator, read_checkpoint
from utils import (BackgroundWriter, ChannelsLastAdam, atomic_write, autocast_dtype, convolution_kernels,
                   error_line, hardware_summary, inference_mode, lay_out, pick_device, save_grid,
                   step_during_backward, train_step, tune_runtime, write_csv)

DEMO_PAIRS = (150, 16)  # train and val pairs that --preset demo writes when its data folder is absent
LOSS_NAMES = ("loss_D_real", "loss_D_fake", "loss_G_gan", "loss_G_l1")
LOSS_BLOCK = 10  # steps whose losses are read back (one device sync) and written together


def lr_factor(epoch: int, cfg: Config) -> float:
    """The official schedule (0-based epoch): constant for cfg.epochs, then linear decay over cfg.epochs_decay."""
    return 1.0 - max(0, epoch + 1 - cfg.epochs) / float(cfg.epochs_decay + 1)


def validation_l1(generator: nn.Module, dataset: PairedImageDataset, count: int, device: torch.device,
                  seed: int) -> float:
    """Mean L1 (on [-1, 1]) of the generator on the first `count` val pairs, paper inference mode."""
    indices = range(len(dataset) if count == 0 else min(count, len(dataset)))
    total = 0.0
    with inference_mode(generator, paper=True, seed=seed):  # the same dropout masks every epoch
        for i in indices:
            x, y = (t.unsqueeze(0).to(device) for t in dataset[i])
            total += F.l1_loss(generator(x).float(), y).item()
    return total / len(indices)


def sample_rows(generator: nn.Module, dataset: PairedImageDataset, count: int,
                device: torch.device) -> list[list[torch.Tensor]]:
    """Rows of input | generated | target for the first `count` val pairs."""
    rows = []
    with inference_mode(generator, paper=True, seed=0):
        for i in range(min(count, len(dataset))):
            x, y = dataset[i]
            rows.append([x, generator(x.unsqueeze(0).to(device))[0].float().cpu(), y])
    return rows


def prepare_run(argv: list[str] | None) -> tuple[Config, Path, dict | None]:
    """Parse flags; for --resume read the run's checkpoint, whose config the flags may override."""
    parser = build_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    known, _ = parser.parse_known_args(argv)
    state = None
    if known.resume:
        checkpoint_path = Path(known.resume) / "checkpoints" / "latest.pt"
        if not checkpoint_path.is_file():
            parser.error(f"--resume {known.resume}: no checkpoints/latest.pt there; pass the folder (runs/NAME) "
                         "of a run that saved a checkpoint")
        try:
            state = read_checkpoint(checkpoint_path)
        except ValueError as error:
            parser.error(str(error))
        if not isinstance(state, dict) or not {"opt_g", "config", "epoch"} <= set(state):
            parser.error(f"--resume: {checkpoint_path} is not a train.py checkpoint (no optimizer state, config "
                         "or epoch); pass the folder of a run that train.py saved")
        cfg, args = parse_config(parser, argv, base=state["config"])
        changed = [k for k in ("ngf", "ndf", "batch_size", "direction", "crop_size")
                   if getattr(cfg, k) != state["config"][k]]
        if changed:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in changed)
            by_preset = any(k in PRESETS.get(args.preset, {}) for k in changed)
            parser.error(f"--resume: {flags} cannot change in the middle of a run (the checkpoint's networks and "
                         f"data were built with the saved values); drop the flag"
                         f"{f' (--preset {args.preset} sets it)' if by_preset else ''} or start a new --name")
        if state["epoch"] >= cfg.epochs + cfg.epochs_decay:
            parser.error(f"--resume: {known.resume} has finished all its {cfg.epochs + cfg.epochs_decay} epochs; "
                         "raise --epochs or --epochs-decay to train it longer")
        run_dir = Path(known.resume).resolve()
        for stray in (run_dir / "checkpoints").glob("*.tmp"):  # a write that a kill cut short (up to 690 MB)
            stray.unlink(missing_ok=True)
        cfg = dataclasses.replace(cfg, name=run_dir.name, runs_dir=str(run_dir.parent))  # the run stays where it is
    else:
        cfg, args = parse_config(parser, argv)
        run_dir = Path(cfg.runs_dir) / cfg.name
        if (run_dir / "checkpoints" / "latest.pt").exists():
            parser.error(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                         "or start a new one with --name OTHER")
        earlier = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
        if earlier:  # a run whose latest.pt was removed: its best.pt would be overwritten
            parser.error(f"{run_dir} holds checkpoints of an earlier run ({', '.join(earlier[:3])}); start a new "
                         "one with --name OTHER, or move them away first")
        if args.preset == "demo" and not Path(cfg.data).exists():
            print(f"train: writing {DEMO_PAIRS[0]} + {DEMO_PAIRS[1]} synthetic pairs to {cfg.data} (once)")
            try:
                write_synthetic(cfg.data, *DEMO_PAIRS)  # all or nothing: a Ctrl-C leaves no half-written data
            except OSError as error:
                parser.error(f"--data {cfg.data}: cannot write the demo pairs there ({error.strerror or error}); "
                             "pass another --data")
    return cfg, run_dir, state


def load_data(cfg: Config) -> tuple[PairedImageDataset, PairedImageDataset]:
    """Both splits, every file checked before any time is spent; bad files stop the run unless skipped."""
    try:
        train_set = PairedImageDataset(cfg.data, "train", cfg.direction, True, cfg.load_size, cfg.crop_size,
                                       cfg.flip, cfg.cache)
        # the val pairs scored and shown each epoch are kept too, once first decoded (0.9 s an epoch here)
        val_set = PairedImageDataset(cfg.data, "val", cfg.direction, False, cfg.load_size, cfg.crop_size,
                                     cache=cfg.cache)
    except (OSError, ValueError) as error:
        raise SystemExit(str(error)) from None
    for split in (train_set, val_set):
        bad = find_bad_pairs(split.files, cfg.crop_size)
        if bad and not cfg.skip_bad_images:
            raise SystemExit(f"dataset: {describe_bad(bad)}; fix or remove them, or pass --skip-bad-images")
        if bad:
            print(f"train: warning: skipping {describe_bad(bad)}")
            split.drop(set(bad))
        if not split.files:
            raise SystemExit(f"dataset: no usable pairs left in {split.folder}")
    return train_set, val_set


def check_writable(run_dir: Path) -> None:
    """Fail now, not after the first epoch, when the run folder cannot be written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_bytes(b"0" * 4096)
        probe.unlink()
    except OSError as error:
        raise SystemExit(f"train: cannot write to {run_dir} ({errno.errorcode.get(error.errno, '?')}: "
                         f"{error.strerror}); choose another --runs-dir or free space") from None


def keep_rows_up_to(path: Path, column: str, last: int) -> None:
    """Drop rows logged beyond the checkpoint: a resumed run logs them again, and a new run (last = 0)
    must not append to what a run that never saved a checkpoint left in its folder."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if int(r[column]) <= last]
    if not kept:
        path.unlink()
    elif len(kept) != len(rows):
        write_csv(path, kept)


def start_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun: NCCL on CUDA, gloo on CPU, one GPU per process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_name)
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local_rank >= gpus:
            raise SystemExit(f"train: torchrun started more processes on this machine than it has GPUs ({gpus}); "
                             f"use --nproc_per_node {gpus}, or add --device cpu for CPU processes")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def weights_digest(*modules: nn.Module) -> str:
    """SHA-256 of every parameter's bytes: equal on all ranks iff the weights are identical."""
    digest = hashlib.sha256()
    for module in modules:
        for parameter in module.parameters():
            digest.update(parameter.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's generators from one seed, so that a run repeats."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)  # torchrun adds the rank to the seed; NumPy takes 32 bits
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict:
    """Every random generator's state, so a resumed run draws the same numbers."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    # numpy's key array is stored as a tensor: torch.load(weights_only=True) refuses numpy objects
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position,
                                                     has_gauss, cached), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back what rng_state() took, so a resumed run draws what the uninterrupted one would have."""
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict, path: Path) -> None:
    """Written beside, then renamed: a crash or a full disk leaves the previous checkpoint whole."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def copied_to_cpu(value):
    """A copy of a checkpoint's nested dicts and lists with every tensor copied into CPU memory."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        copied = type(value)((key, copied_to_cpu(item)) for key, item in value.items())
        if hasattr(value, "_metadata"):  # a module's state_dict: its layers' versions, as torch.save keeps them
            copied._metadata = value._metadata
        return copied
    if isinstance(value, (list, tuple)):
        return type(value)(copied_to_cpu(item) for item in value)
    return value


def keep_as_best(latest: Path, best: Path) -> None:
    """best.pt becomes a second name of latest.pt's file (a hard link) instead of a 690 MB copy: latest.pt is
    only ever replaced by a rename, never rewritten in place, so best.pt keeps these bytes. A copy where the
    file system has no hard links."""
    def link(tmp: str) -> None:
        os.remove(tmp)
        try:
            os.link(latest, tmp)
        except OSError:
            shutil.copyfile(latest, tmp)
    atomic_write(best, link)


def write_checkpoint(state: dict, latest: Path, best: Path | None = None) -> None:
    """save_checkpoint, then best.pt where asked; a failure is one line."""
    try:
        save_checkpoint(state, latest)
        if best is not None:
            keep_as_best(latest, best)
    except OSError as error:
        raise SystemExit(f"train: saving {error.filename or latest} failed "
                         f"({errno.errorcode.get(error.errno, '?')}: {error.strerror}); the previous "
                         "checkpoint there is intact: free space, then --resume") from None
    except RuntimeError as error:  # torch.save's own writer, on a full disk or a file size limit
        reason = error_line(error)[:200]
        raise SystemExit(f"train: saving {latest} failed, most likely for lack of space ({reason}); the previous "
                         "checkpoint there is intact: free space, then --resume") from None


class CheckpointSaver(BackgroundWriter):
    """Writes checkpoints in a thread while training goes on: at the end of an 8 s epoch on a GPU, writing
    and syncing a 690 MB checkpoint took another 2 to 3 s. The state is copied into CPU memory first (tens of
    ms from a GPU), so the file holds the step it was taken at. One write at a time, and a failed one stops
    training at the next loss flush (check()), the previous checkpoint intact."""

    def save(self, state: dict, latest: Path, best: Path | None = None) -> None:
        self.wait()  # the last write ends before the next copy is taken: one copy in memory at a time
        self.submit(write_checkpoint, copied_to_cpu(state), latest, best)


def append_csv(path: Path, row: dict) -> None:
    """Append one row, writing the header first when the file is new."""
    path = Path(path)
    is_new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if is_new:
            writer.writeheader()
        writer.writerow(row)


def loss_curve(steps: np.ndarray, values: np.ndarray, smooth: int = 50, points: int = 2000) -> tuple:
    """What plot_losses draws for one loss, at most `points` x values whatever the run's length: the running
    mean, and a band from the lowest to the highest raw value of each run of steps that one x value stands
    for (of each step, where there are fewer), so that no spike is lost. Drawing all 219,200 steps of a
    paper run took 10 s per epoch by its end; thinned like this, under a second."""
    stride = -(-len(values) // points)  # steps per x value, rounded up
    window = max(1, min(max(smooth, stride), len(values) // 5))  # so that every step counts in a plotted mean
    mean = np.convolve(values, np.ones(window) / window, mode="valid")
    starts = np.arange(0, len(values), stride)
    low, high = np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)
    return steps[window - 1:][::stride], mean[::stride], steps[starts], low, high


def plot_losses(csv_path: Path, png_path: Path, smooth: int = 50) -> None:
    """Loss curves from train.py's losses.csv: raw values faint, a running mean on top."""
    with open(csv_path) as f:
        names = f.readline().strip().split(",")
        if not f.readline():
            return  # no step logged yet
    table = np.loadtxt(csv_path, delimiter=",", skiprows=1, ndmin=2)
    columns = dict(zip(names, table.T))
    panels = [("D", ["loss_D_real", "loss_D_fake"]), ("G adversarial", ["loss_G_gan"]),
              ("G L1 (weighted)", ["loss_G_l1"])]
    figure = Figure(figsize=(15, 4))
    axes = figure.subplots(1, len(panels))
    for axis, (title, names_in_panel) in zip(axes, panels):
        for name in names_in_panel:
            mean_x, mean_y, band_x, low, high = loss_curve(columns["step"], columns[name], smooth)
            line, = axis.plot(mean_x, mean_y, label=name)
            # (its edges are drawn: where each x value is one step, low and high are one line)
            axis.fill_between(band_x, low, high, alpha=0.2, color=line.get_color(), linewidth=0.5)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.legend()
    figure.tight_layout()
    atomic_write(png_path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))


class StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step, so it can save first."""

    def __init__(self):
        self.received: int | None = None

    def __enter__(self) -> "StopSignal":
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum: int, frame) -> None:
        if self.received is not None:  # a second Ctrl-C: stop at once
            print("\ntrain: second interrupt: stopping without saving (a checkpoint being written is finished "
                  "first); checkpoints saved before are intact", file=sys.stderr)
            raise SystemExit(128 + signum)
        self.received = signum
        print(f"\ntrain: {signal.Signals(signum).name} received; saving at the end of this step", flush=True)

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def train(cfg: Config, run_dir: Path, state: dict | None = None) -> list[float]:
    """Run (or continue) training; returns the validation L1 after each epoch of this call."""
    rank, world, device = start_distributed(cfg.device)
    lead = rank == 0  # only the first process writes logs, samples and checkpoints
    seed_everything(cfg.seed)  # the same initial weights in every process...
    train_set, val_set = load_data(cfg)
    if lead:
        check_writable(run_dir)

    generator = Generator(ngf=cfg.ngf).to(device)
    discriminator = Discriminator(ndf=cfg.ndf).to(device)
    seed_everything(cfg.seed + rank)  # ...but different dropout masks
    if cfg.sync_bn and world > 1:
        if device.type != "cuda":
            raise SystemExit("train: --sync-bn needs CUDA (SyncBatchNorm); drop it on the CPU")
        generator = nn.SyncBatchNorm.convert_sync_batchnorm(generator)
        discriminator = nn.SyncBatchNorm.convert_sync_batchnorm(discriminator)
    amp_dtype = autocast_dtype(device, cfg.amp)
    if amp_dtype == torch.float16 and device.type == "cpu" and lead:
        print("train: warning: fp16 is emulated on the CPU, several times slower than fp32; prefer --amp auto")
    tune_runtime(device, cfg.cpu_tuning, cfg.cudnn_benchmark)
    memory_format, layout = lay_out(generator, discriminator, cfg.channels_last, device, amp_dtype)
    betas, fused = (cfg.beta1, cfg.beta2), cfg.fused_adam or None  # None: torch's default implementation
    opt_g = ChannelsLastAdam(generator.parameters(), lr=cfg.lr, betas=betas, fused=fused)
    opt_d = ChannelsLastAdam(discriminator.parameters(), lr=cfg.lr, betas=betas, fused=fused)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    epoch, step_in_epoch, step, best_l1 = 0, 0, 0, float("inf")
    if state is not None:
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        if state.get("scaler"):  # empty when the saved run had no fp16 loss scaling
            scaler.load_state_dict(state["scaler"])
        epoch, step_in_epoch, step = state["epoch"], state["step_in_epoch"], state["step"]
        best_l1 = state.get("best_val_l1", best_l1)
        if len(state["rng"]) == world:  # one state per process
            set_rng_state(state["rng"][rank])
        elif lead:
            print(f"train: the checkpoint came from {len(state['rng'])} process(es), this run has {world}: "
                  "random streams restart from the seed")
        if lead:
            print(f"train: resuming {run_dir} at epoch {epoch + 1}, step {step}")
    # before any hook or wrapper below
    example = torch.zeros(cfg.batch_size, 3, cfg.crop_size, cfg.crop_size, device=device).contiguous(
        memory_format=memory_format)
    try:  # (the only ValueError it raises: a checkpoint's choice naming layers this model lacks)
        pytorch_convolutions, convolutions_note = convolution_kernels(
            cfg.cpu_conv_autotune, cfg.compile, generator, discriminator, example, amp_dtype,
            state.get("pytorch_convolutions", []) if state else None)
    except ValueError as error:
        raise SystemExit(f"train: {error}") from None
    if lead:
        keep_rows_up_to(run_dir / "losses.csv", "step", step)
        keep_rows_up_to(run_dir / "val.csv", "step", step)
    g_updated_in_backward = cfg.free_grads and step_during_backward(generator, opt_g, device, scaler, world)
    g_step, d_step, d_frozen = generator, discriminator, discriminator
    # CUDA graphs are left out across processes: DistributedDataParallel's gradient hooks run between kernels.
    cuda_graphs = cfg.cuda_graphs and device.type == "cuda" and world == 1
    if cfg.compile or cuda_graphs:
        mode = "reduce-overhead" if cuda_graphs else None
        g_step, d_step = torch.compile(generator, mode=mode), torch.compile(discriminator, mode=mode)
        d_frozen = d_step
    if world > 1:
        # BatchNorm buffers stay per process (batch-1 statistics, as in the paper); G's step calls D's
        # plain module, since frozen D has no gradients for DistributedDataParallel to reduce.
        with warnings.catch_warnings():  # broadcast_buffers=False is still the way to keep buffers per process
            warnings.simplefilter("ignore", FutureWarning)
            g_step = DistributedDataParallel(g_step, broadcast_buffers=False)
            d_step = DistributedDataParallel(d_step, broadcast_buffers=False)

    if lead:
        (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    total_epochs = cfg.epochs + cfg.epochs_decay
    say = print if lead else (lambda *args, **kwargs: None)
    say(f"train: {len(train_set)} train / {len(val_set)} val pairs from {cfg.data}, epochs {epoch + 1}.."
        f"{total_epochs}, writing to {run_dir}")
    free_grads = ("on, G stepped during backward" if g_updated_in_backward else "on") if cfg.free_grads else "off"
    say(f"train: {device} = {hardware_summary(device)}; autocast {amp_dtype or 'off (fp32)'}, "
        f"channels_last {layout}, fused Adam {'on' if cfg.fused_adam else 'off'}, "
        f"free grads {free_grads}, compile {'on' if cfg.compile else 'off'}"
        + (f", CPU tuning {'on' if cfg.cpu_tuning else 'off'}" if device.type == "cpu" else
           f", cuDNN autotune {'on' if cfg.cudnn_benchmark else 'off'}, CUDA graphs {'on' if cuda_graphs else 'off'}")
        + (f"; {world} processes, {cfg.batch_size} pair(s) each: {world * cfg.batch_size} per step" if world > 1 else ""))
    if convolutions_note:
        say(f"train: {convolutions_note}")
    if cfg.compile or cuda_graphs:
        say("train: G and D are compiled during the first steps (a minute or two)")
    if cfg.cache:
        train_set.preload()  # decoded once here; DataLoader workers inherit the memory

    def checkpoint(epoch_done: int, in_epoch: int, best: bool = False) -> None:
        """Every process hands in its random state; the first one writes latest.pt (and best.pt), in the
        background."""
        states = [rng_state()]
        if world > 1:
            states = [None] * world
            dist.all_gather_object(states, rng_state())
        if not lead:
            return
        saver.save(dict(generator=generator.state_dict(), discriminator=discriminator.state_dict(),
                        opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(), scaler=scaler.state_dict(),
                        epoch=epoch_done, step_in_epoch=in_epoch, step=step, best_val_l1=best_l1,
                        config=dataclasses.asdict(cfg), rng=states, pytorch_convolutions=pytorch_convolutions),
                   run_dir / "checkpoints" / "latest.pt", run_dir / "checkpoints" / "best.pt" if best else None)

    def flush_losses(rows: list) -> None:
        """Write the buffered losses (one device sync per call, not per step); stop on NaN/Inf."""
        if not rows:
            return
        all_values = torch.stack([losses for *_, losses in rows]).float().cpu().tolist()
        first_bad = next(((row[0], [n for n, v in zip(LOSS_NAMES, values) if not math.isfinite(v)])
                          for row, values in zip(rows, all_values) if not all(map(math.isfinite, values))), None)
        if world > 1:  # all processes stop together, or the healthy ones would wait in the next all-reduce
            flag = torch.tensor([first_bad is not None], device=device, dtype=torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and first_bad is None:
                raise SystemExit("train: another process saw a NaN/Inf loss; stopped without saving")
        if first_bad is not None:
            saver.wait()
            latest = run_dir / "checkpoints" / "latest.pt"
            kept = (f"so {latest} still holds the last good state; lower --lr or check the data, then --resume"
                    if latest.exists() else "no checkpoint had been saved yet; lower --lr or check the data")
            raise SystemExit(f"train: {', '.join(first_bad[1])} became NaN/Inf at step {first_bad[0]}; stopped "
                             f"without saving, {kept}")
        saver.check()
        for (row_step, row_epoch, lr, _), values in zip(rows, all_values):
            if lead:
                append_csv(run_dir / "losses.csv", dict(step=row_step, epoch=row_epoch, lr=f"{lr:.3g}",
                                                        **{n: f"{v:.5f}" for n, v in zip(LOSS_NAMES, values)}))
        rows.clear()

    history, rows, first_step = [], [], step + 1
    with StopSignal() as stop, CheckpointSaver() as saver:  # the last checkpoint is on disk when the run ends
        while epoch < total_epochs:
            lr = cfg.lr * lr_factor(epoch, cfg)  # a function of the epoch alone: resuming needs no scheduler
            for group in opt_g.param_groups + opt_d.param_groups:
                group["lr"] = lr
            train_set.set_epoch(cfg.seed, epoch)
            # Each process's share of the epoch depends on (seed, epoch, rank) only; a resumed epoch skips
            # the pairs already seen.
            sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
            sampler.set_epoch(epoch)
            loader = DataLoader(train_set, batch_size=cfg.batch_size,
                                sampler=list(sampler)[step_in_epoch * cfg.batch_size:],
                                num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                                generator=torch.Generator())  # keeps the global RNG (dropout) untouched
            generator.train()
            discriminator.train()
            started = time.time()
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{total_epochs}", leave=False, dynamic_ncols=True,
                       initial=step_in_epoch, total=step_in_epoch + len(loader), disable=not lead)
            for x, y in bar:
                if cuda_graphs:  # the last step's graph outputs are dead: their memory may be reused now
                    torch.compiler.cudagraph_mark_step_begin()
                x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
                y = y.to(device, non_blocking=True).contiguous(memory_format=memory_format)
                losses = train_step(g_step, d_step, opt_g, opt_d, x, y, cfg.lambda_l1, cfg.gan_mode, amp_dtype, scaler,
                                    d_frozen, cfg.free_grads)
                step += 1
                step_in_epoch += 1
                rows.append((step, epoch + 1, lr, losses))
                if step % LOSS_BLOCK == 0 or step == first_step:
                    d_real, d_fake, g_gan, g_l1 = rows[-1][3].float().tolist()
                    bar.set_postfix(D=f"{(d_real + d_fake) / 2:.3f}", G_gan=f"{g_gan:.3f}", G_L1=f"{g_l1:.3f}")
                    flush_losses(rows)
                if world > 1:  # every process stops at the same step, or the others would wait forever
                    flag = torch.tensor([stop.received or 0], device=device)
                    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                    stop.received = int(flag.item()) or None
                if stop.received is not None or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                    flush_losses(rows)
                    checkpoint(epoch, step_in_epoch)
                    if stop.received is not None:
                        saver.wait()
                        bar.close()
                        say(f"train: stopped at epoch {epoch + 1}, step {step}; saved "
                              f"{run_dir / 'checkpoints' / 'latest.pt'}; continue with --resume {run_dir}")
                        raise SystemExit(128 + stop.received)
            bar.close()
            flush_losses(rows)

            epoch, step_in_epoch = epoch + 1, 0
            improved = False
            if lead or cfg.sync_bn:  # SyncBatchNorm talks to every process, so then all of them validate
                val_l1 = validation_l1(generator, val_set, cfg.val_count, device, cfg.seed)
                rows_to_show = sample_rows(generator, val_set, cfg.sample_count, device)
            if lead:
                history.append(val_l1)
                append_csv(run_dir / "val.csv", dict(epoch=epoch, step=step, val_l1=f"{val_l1:.5f}",
                                                     seconds=f"{time.time() - started:.1f}"))
                if rows_to_show:  # --sample-count 0: no grid
                    save_grid(rows_to_show, run_dir / "samples" / f"epoch_{epoch:03d}.png")
                plot_losses(run_dir / "losses.csv", run_dir / "loss_curve.png")
                improved = val_l1 < best_l1
                best_l1 = min(best_l1, val_l1)
            checkpoint(epoch, 0, best=improved)
            val_l1_shown = history[-1] if history else 0.0  # on [-1, 1]; evaluate.py reports it on 0-255
            say(f"epoch {epoch}/{total_epochs}  step {step}  val L1 {val_l1_shown:.4f} ({val_l1_shown * 127.5:.2f} "
                f"of 255){' (best)' if improved else ''}  {time.time() - started:.0f}s  lr {lr:.2e}")
    if world > 1:
        digests = [None] * world
        dist.all_gather_object(digests, weights_digest(generator, discriminator))
        say(f"train: G and D weights identical in all {world} processes" if len(set(digests)) == 1 else
            f"train: WARNING: the weights differ between processes ({digests}); please report this")
        # DistributedDataParallel's reducers hold the process group: freed only at interpreter exit, they can
        # meet gloo's threads half torn down and abort the process (seen once in ~10 test runs)
        del g_step, d_step
        gc.collect()
        dist.destroy_process_group()
    say(f"train: done. samples in {run_dir / 'samples'}, checkpoint {run_dir / 'checkpoints' / 'latest.pt'} "
        f"(best: best.pt), loss curve {run_dir / 'loss_curve.png'}")
    return history


def main(argv: list[str] | None = None) -> list[float]:
    cfg, run_dir, state = prepare_run(argv)
    return train(cfg, run_dir, state)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:  # inside the training loop Ctrl-C saves first (StopSignal); this is outside it
        print("\ntrain: interrupted outside the training loop; checkpoints saved before are intact", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
