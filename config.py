"""Every hyper-parameter in one dataclass; command-line flags are generated from its fields.

Defaults are the pix2pix paper's (arXiv 1611.07004) and its official PyTorch code's.
A preset is a named set of overrides; flags given on the command line win over it.
"""
import argparse
import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn


@dataclass
class Config:
    # data
    data: str = field(default="data/maps", metadata={"help": "folder holding train/ and val/ of A|B pairs"})
    direction: str = field(default="AtoB", metadata={"help": "AtoB: satellite -> map; BtoA: map -> satellite",
                                                     "choices": ("AtoB", "BtoA")})
    load_size: int = field(default=286, metadata={"help": "training images are resized to this, then cropped"})
    crop_size: int = field(default=256, metadata={"help": "side of the random training crop and of eval images"})
    flip: bool = field(default=True, metadata={"help": "random horizontal flip in training"})
    cache: bool = field(default=True, metadata={
        "help": "decode and resize every pair once, at start, and keep them in memory (maps: about 0.5 GB), and "
                "the val pairs scored each epoch once first used; without it, JPEG decoding can starve a fast GPU"})
    num_workers: int = field(default=2, metadata={"help": "DataLoader worker processes"})
    # model
    ngf: int = field(default=64, metadata={"help": "generator width: channels of its first layer"})
    ndf: int = field(default=64, metadata={"help": "discriminator width: channels of its first layer"})
    # optimisation
    batch_size: int = field(default=1, metadata={"help": "images per step (the paper uses 1)"})
    lr: float = field(default=2e-4, metadata={"help": "Adam learning rate of G and D"})
    beta1: float = field(default=0.5, metadata={"help": "Adam beta1"})
    beta2: float = field(default=0.999, metadata={"help": "Adam beta2"})
    lambda_l1: float = field(default=100.0, metadata={"help": "weight of the L1 term in G's loss"})
    gan_mode: str = field(default="vanilla", metadata={"help": "vanilla: BCE with logits; lsgan: least squares",
                                                       "choices": ("vanilla", "lsgan")})
    epochs: int = field(default=100, metadata={"help": "epochs at constant learning rate"})
    epochs_decay: int = field(default=100, metadata={"help": "further epochs with the learning rate decaying linearly to 0"})
    # speed: the fastest correct settings are the defaults; each can be switched off
    amp: str = field(default="auto", metadata={
        "help": "mixed precision: auto = bf16 on CPUs with AVX-512 BF16/AMX, off on Ampere and newer GPUs (TF32 "
                "is faster at batch 1), fp16 with loss scaling on older GPUs, else off",
        "choices": ("auto", "bf16", "fp16", "off")})
    channels_last: str = field(default="auto", metadata={
        "help": "NHWC memory layout: auto = on for CUDA and bf16 CPU training (there G's 8 innermost convolutions "
                "stay NCHW), off for fp32 CPU training (slower); on = every layer NHWC",
        "choices": ("auto", "on", "off")})
    cpu_tuning: bool = field(default=True, metadata={
        "help": "on the CPU: flush denormal floats to zero and keep freed memory for reuse (glibc)"})
    cpu_conv_autotune: bool = field(default=True, metadata={
        "help": "on the CPU in fp32: time each convolution at start with oneDNN and with PyTorch's own kernels and "
                "run it with the faster (seconds; oneDNN's per-call weight reorders cost more than they save on the "
                "U-Net's small middle layers); a resumed run keeps its first choice"})
    cudnn_benchmark: bool = field(default=False, metadata={
        "help": "on CUDA: cuDNN times its convolution algorithms once and keeps the fastest (a few %% faster, "
                "but the trials take several GB of GPU memory at start)"})
    fused_adam: bool = field(default=True, metadata={"help": "Adam's fused kernel (one pass over all weights)"})
    free_grads: bool = field(default=True, metadata={
        "help": "free gradients as soon as they are used, not just before the next backward (less memory); on "
                "the CPU, G's optimizer updates each weight during the backward, as soon as its gradient is ready"})
    compile: bool = field(default=False, metadata={"help": "torch.compile G and D (measured slower for training on CPU and on an H200 at batch 1)"})
    cuda_graphs: bool = field(default=True, metadata={
        "help": "on CUDA, in one process: replay G's and D's steps as CUDA graphs (torch.compile, mode "
                "reduce-overhead), so the GPU no longer waits for Python to launch each kernel: 2.3x faster steps "
                "at batch 1 on an H200, after a minute or two of compiling at start"})
    sync_bn: bool = field(default=False, metadata={
        "help": "under torchrun, BatchNorm statistics over all processes (SyncBatchNorm, CUDA only) instead of "
                "per process as at batch 1 in the paper"})
    # run
    name: str = field(default="maps", metadata={"help": "run name: everything is written to runs/NAME/"})
    runs_dir: str = field(default="runs", metadata={"help": "parent folder of all runs"})
    sample_count: int = field(default=4, metadata={"help": "validation images shown in each epoch's sample grid"})
    val_count: int = field(default=50, metadata={"help": "validation images scored (L1) after each epoch; 0 for all"})
    seed: int = field(default=0, metadata={"help": "seed of every random number generator"})
    checkpoint_every: int = field(default=0, metadata={
        "help": "also save checkpoints/latest.pt every N steps inside an epoch (0: only at epoch ends)"})
    skip_bad_images: bool = field(default=False, metadata={
        "help": "train on the readable pairs when some files are bad, with a warning, instead of stopping"})
    device: str = field(default="auto", metadata={"help": "auto picks cuda when available, else cpu",
                                                  "choices": ("auto", "cpu", "cuda")})

    def __post_init__(self) -> None:
        """Refuse settings that cannot work, before any time is spent."""
        problems = []
        if self.crop_size < 256 or self.crop_size % 256:
            problems.append(f"--crop-size {self.crop_size} must be 256 or a larger multiple of 256 "
                            "(the U-Net halves it 8 times)")
        name_parts = Path(self.name).parts
        if not self.name.strip() or Path(self.name).is_absolute() or not name_parts or ".." in name_parts:
            problems.append(f"--name {self.name!r} must name a folder inside --runs-dir (not empty, not absolute, "
                            "no ..)")
        if self.load_size < self.crop_size:
            problems.append(f"--load-size {self.load_size} is smaller than --crop-size {self.crop_size}")
        for name in ("ngf", "ndf", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        for name in ("epochs", "epochs_decay", "num_workers", "sample_count", "val_count", "checkpoint_every"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')} must not be negative")
        if self.epochs + self.epochs_decay < 1:
            problems.append("--epochs plus --epochs-decay must be at least 1")
        if not 0 < self.lr < math.inf:  # (also refuses nan)
            problems.append(f"--lr must be a positive number, got {self.lr}")
        if not 0 <= self.lambda_l1 < math.inf:
            problems.append(f"--lambda-l1 must be a number >= 0, got {self.lambda_l1}")
        if not 0 <= self.seed < 2 ** 32:
            problems.append(f"--seed must lie in [0, 2^32), as NumPy's seeds do; got {self.seed}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            problems.append("--beta1 and --beta2 must lie in [0, 1)")
        for name, meta in ((f.name, f.metadata) for f in dataclasses.fields(self)):
            if "choices" in meta and getattr(self, name) not in meta["choices"]:
                problems.append(f"--{name.replace('_', '-')} must be one of {', '.join(meta['choices'])}")
        if problems:
            raise ValueError("; ".join(problems))


PRESETS = {
    # A few minutes on a laptop CPU: a narrow model on procedural pairs that dataset.py makes.
    "demo": dict(data="data/synthetic", name="demo", ngf=16, ndf=16, epochs=3, epochs_decay=2,
                 num_workers=0, val_count=16),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse's, but a refused flag comes after one usage line, not the 20 lines that list every flag."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"usage: {self.prog} [flags]   (--help lists them)\n{self.prog}: error: {message}\n")


def build_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with --preset and one --flag per Config field."""
    parser = ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="named set of defaults (flags still win)")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool or f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f.metadata["help"])
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default,
                                choices=f.metadata.get("choices"), help=f.metadata["help"])
    return parser


def parse_config(parser: argparse.ArgumentParser, argv: list[str] | None = None,
                 base: dict | None = None) -> tuple[Config, argparse.Namespace]:
    """Config from the command line: defaults < base (a saved run's config) < preset < explicit flags."""
    args = parser.parse_args(argv)
    values = {f.name: f.default for f in dataclasses.fields(Config)}
    values.update({k: v for k, v in (base or {}).items() if k in values})
    values.update(PRESETS.get(args.preset, {}))
    values.update(_explicit_flags(parser, argv))
    try:
        return Config(**values), args
    except ValueError as error:
        parser.error(str(error))


def _explicit_flags(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict:
    """The Config fields the user actually typed (re-parse with every default suppressed)."""
    quiet = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            quiet_action = copy.copy(action)
            quiet_action.default = argparse.SUPPRESS
            quiet._add_action(quiet_action)
    typed = vars(quiet.parse_known_args(argv)[0])
    field_names = {f.name for f in dataclasses.fields(Config)}
    return {k: v for k, v in typed.items() if k in field_names}
