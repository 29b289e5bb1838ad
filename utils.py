"""Pieces the scripts share: devices, seeding, images <-> tensors, checkpoints, grids, plots."""
import contextlib
import csv
import ctypes
import logging
import os
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# zlib's fastest level: PNGs written 2 to 4 times faster than at Pillow's default (6), about as small
PNG = dict(format="PNG", compress_level=1)
# oneDNN instruction sets (ONEDNN_MAX_CPU_ISA values) that have no bf16 dot products
ISAS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


def pick_device(name: str = "auto") -> torch.device:
    """'auto' means CUDA when a GPU is visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("device: --device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo does not exist."""
    line = next((line for line in _cpuinfo_lines() if line.startswith("flags")), "flags:")
    return set(line.split(":", 1)[1].split())


def onednn_isa_cap() -> str:
    """The instruction set oneDNN is held to (ONEDNN_MAX_CPU_ISA, e.g. AVX2), or "" when it uses all the CPU has."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).upper()


def native_bf16(device: torch.device) -> bool:
    """bf16 arithmetic in hardware: AVX-512 BF16 or AMX on a CPU (unless oneDNN is held to an instruction set
    without it), a bf16-capable GPU. Elsewhere it is emulated, slowly."""
    if device.type == "cuda":  # Ampere (8.0) and newer; is_bf16_supported() also counts emulation
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags()) and onednn_isa_cap() not in ISAS_WITHOUT_BF16


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype for --amp. auto: bf16 on CPUs that have it natively; on GPUs from Ampere on,
    none, as their fp32 convolutions already run on tensor cores (TF32) and at pix2pix's batch size
    the casts cost more than they save (benchmark.py, H200); fp16 on older GPUs; else None (fp32)."""
    if amp == "auto":
        if device.type == "cuda":
            return None if native_bf16(device) else torch.float16
        return torch.bfloat16 if native_bf16(device) else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


class Autocast(nn.Module):
    """Runs a network (for inference) under autocast and hands back fp32, so images and metrics never see
    bf16/fp16. The convolution weights are cast once, here: autocast would cast all 54M of them again
    for every image (60 ms on a 2-core CPU), to the same values."""

    def __init__(self, network: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.network, self.dtype = network, dtype
        for module in network.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                module.to(dtype)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(inputs[0].device.type, dtype=self.dtype):
            return self.network(*inputs).float()


def compile_for_inference(network: nn.Module) -> nn.Module:
    """torch.compile for a network whose weights no longer change. Inductor takes the weights in as
    constants ("freezing"): BatchNorm is folded into the convolutions where its statistics are fixed, and
    each convolution's weights are packed for oneDNN once instead of at every call. Dropout draws from
    torch's own generator (inductor's ran slower). Both settings are process-wide, so this is for scripts
    that only translate (evaluate.py, benchmark.py); the compiling happens at the first call."""
    import torch._inductor.config as inductor_config

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # its guess at CUDA_HOME, on any machine
    inductor_config.freezing = True
    inductor_config.fallback_random = True
    return torch.compile(network)


def use_channels_last(setting: str, device: torch.device, amp_dtype: torch.dtype | None) -> bool:
    """--channels-last auto: NHWC on GPUs, and on CPUs training in bf16, whose native kernels (oneDNN on
    AMX/AVX-512 BF16) want it; in fp32 on a CPU it slowed training down where measured (benchmark.py)."""
    if setting == "auto":
        return device.type == "cuda" or amp_dtype == torch.bfloat16
    return setting == "on"


def lay_out(generator: nn.Module, discriminator: nn.Module, setting: str, device: torch.device,
            amp_dtype: torch.dtype | None) -> tuple[torch.memory_format, str]:
    """Give both networks the memory layout --channels-last asks for; returns the one for their inputs
    and a word on what was done.

    With auto on a CPU, the generator's eight convolutions nearest the bottleneck (down[4:], up[:4]) stay
    NCHW inside an NHWC network. Their inputs are 16x16 and smaller at 256x256, but their weights are 46M
    of the 54M: oneDNN reorders every weight into its own layout at each call, faster from NCHW, and
    PyTorch's backward copies each NHWC weight gradient once more, from NCHW (mkldnn Conv.cpp). 3 to 5% of
    a bf16 training step on a 2-core Zen 4 CPU, in turns in one process. `on` keeps every layer NHWC."""
    memory_format = torch.channels_last if use_channels_last(setting, device, amp_dtype) else torch.contiguous_format
    generator.to(memory_format=memory_format)
    discriminator.to(memory_format=memory_format)
    if memory_format == torch.contiguous_format:
        return memory_format, "off"
    if setting == "auto" and device.type == "cpu":
        for block in [*generator.down[4:], *generator.up[:4]]:
            _run_nchw(block.conv)
        return memory_format, "on (G's 8 innermost convolutions NCHW)"
    return memory_format, "on"


def _run_nchw(conv: nn.Module) -> None:
    """A convolution takes NHWC when its input or its weight is NHWC (torch's rule): make both NCHW,
    and hand its output on as NHWC, so that the layers around it run as before."""
    conv.weight.data = conv.weight.data.contiguous()
    conv.register_forward_pre_hook(lambda module, inputs: (inputs[0].contiguous(), *inputs[1:]))
    conv.register_forward_hook(lambda module, inputs, output: output.contiguous(memory_format=torch.channels_last))


def tune_runtime(device: torch.device, cpu_tuning: bool = True, cudnn_benchmark: bool = False) -> None:
    """Process-wide settings that change no result worth a bit; call once, at start.

    CPU: denormal floats (below 1e-38) are flushed to zero, and glibc keeps freed blocks of any size
    for reuse instead of returning them to the OS, which spares page faults on the large activations
    of every step. CUDA: cuDNN times its algorithms once per input shape and keeps the fastest;
    pix2pix's shapes never change. False leaves torch's and glibc's defaults alone."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark
        return
    torch.set_flush_denormal(cpu_tuning)
    if not cpu_tuning:
        return  # (setting glibc's thresholds to their documented defaults would switch off its own adaptation)
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, Windows, musl): skip
        libc = ctypes.CDLL("libc.so.6")
        mmap_threshold, trim_threshold = -3, -1  # mallopt parameter numbers (malloc.h)
        libc.mallopt(mmap_threshold, 1 << 30)
        libc.mallopt(trim_threshold, (1 << 31) - 1)


def use_pytorch_kernels(conv: nn.Module) -> None:
    """Run this convolution, forward and backward, with PyTorch's own CPU kernels (im2col + BLAS matrix
    products) instead of oneDNN's. Which library runs a convolution is one process-wide switch that
    torch reads at each call, the backward's included: hooks turn it off around this layer's calls and
    then put back what it was."""
    was_on = []  # the switch before each call now running (a stack: calls of other layers may nest)

    def pytorch_kernels(*_) -> None:
        was_on.append(torch.backends.mkldnn.enabled)
        torch.backends.mkldnn.enabled = False

    def as_before(*_) -> None:
        torch.backends.mkldnn.enabled = was_on.pop()

    def after_forward(module: nn.Module, inputs: tuple, output: torch.Tensor | None) -> None:
        as_before()
        if getattr(output, "grad_fn", None) is not None:  # (None when the forward raised)
            output.grad_fn.register_prehook(pytorch_kernels)
            output.grad_fn.register_hook(as_before)

    conv.register_forward_pre_hook(pytorch_kernels)
    # first among the forward hooks: it must see the convolution's own output (lay_out's hook hands on a copy)
    conv.register_forward_hook(after_forward, prepend=True, always_call=True)


def convolution_layers(generator: nn.Module, discriminator: nn.Module) -> dict[str, nn.Module]:
    """G's and D's convolutions by name ("G.up.3.conv", "D.layers.8"), as choose_cpu_convolutions reports them."""
    return {f"{prefix}.{name}": module for prefix, network in (("G", generator), ("D", discriminator))
            for name, module in network.named_modules() if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))}


def convolution_kernels(autotune: bool, compiled: bool, generator: nn.Module, discriminator: nn.Module,
                        example: torch.Tensor, amp_dtype: torch.dtype | None,
                        saved: list[str] | None) -> tuple[list[str] | None, str]:
    """train.py's and benchmark.py's per-layer choice: switch the convolutions that run faster with PyTorch's
    own CPU kernels than with oneDNN's, timed at example's shape and layout; returns their names (kept in
    checkpoints) and a line saying what was done. saved is a resumed run's first choice ([] for one from
    before the choice existed, which ran all on oneDNN), kept so that it ends with the weights it would have
    reached without stopping (ValueError if it names layers these networks lack). Under torchrun the first
    process times and the others follow it."""
    if not (autotune and example.device.type == "cpu" and not compiled and torch.backends.mkldnn.is_available()):
        return saved, ""
    layers = convolution_layers(generator, discriminator)
    if saved is None and amp_dtype is not None:
        # PyTorch's own kernels have no native bf16 path: on a 2-core AMX CPU the timing took 65 s and kept
        # oneDNN for all 21 layers
        names, how = [], "not timed under autocast (only oneDNN's are native bf16)"
    elif saved is None:
        started = time.perf_counter()
        chosen = [None]
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not distributed or torch.distributed.get_rank() == 0:
            chosen = [choose_cpu_convolutions(generator, discriminator, example)]
        if distributed:
            torch.distributed.broadcast_object_list(chosen, src=0)
        names, how = chosen[0], f"timed at start ({time.perf_counter() - started:.1f} s)"
    else:
        names, how = saved, "as chosen when the run started"
    unknown = [name for name in names if name not in layers]
    if unknown:
        raise ValueError(f"the checkpoint lists convolutions this model does not have ({', '.join(unknown)}); "
                         "resume with --no-cpu-conv-autotune")
    for name in names:
        use_pytorch_kernels(layers[name])
    return names, f"convolution kernels {how}: " + (
        f"PyTorch's own for {len(names)} of {len(layers)} ({', '.join(names)}), oneDNN for the rest" if names
        else f"oneDNN for all {len(layers)}")


def choose_cpu_convolutions(generator: nn.Module, discriminator: nn.Module, x: torch.Tensor,
                            rounds: int = 3) -> list[str]:
    """Time each convolution of G and D, forward and backward at the shapes and layout of a training step on x, with
    oneDNN and with PyTorch's own kernels, and return the names of those that run at least 10% and 2 ms
    faster with PyTorch's (for use_pytorch_kernels). oneDNN reorders a layer's weights into its
    own layout at every call, which on a 2-core AVX2 CPU costs more than it saves on the U-Net's small
    middle feature maps (6 to 8% of a step at ngf 64). For fp32 training only: PyTorch's own kernels
    have no native bf16 path. Changes no weight, RNG or BatchNorm statistic."""
    convolutions = convolution_layers(generator, discriminator)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    shapes = {}  # name -> (input shape, whether its input needs a gradient, output shape)

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            shapes[name] = (inputs[0].shape, inputs[0] is not x, output.shape)
        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in convolutions.items()]
    modes = generator.training, discriminator.training
    try:
        generator.eval(), discriminator.eval()  # the same shapes, without touching BatchNorm statistics or dropout RNG
        with torch.no_grad():
            discriminator(x, generator(x))
    finally:
        generator.train(modes[0]), discriminator.train(modes[1])
        for hook in hooks:
            hook.remove()
    noise = torch.Generator().manual_seed(0)  # the run's own random streams stay untouched
    chosen = []
    for name, conv in convolutions.items():
        in_shape, needs_grad, out_shape = shapes[name]
        inputs = torch.randn(in_shape, generator=noise).contiguous(memory_format=memory_format)
        inputs.requires_grad_(needs_grad)
        grad_output = torch.randn(out_shape, generator=noise).contiguous(memory_format=memory_format)
        best = {True: float("inf"), False: float("inf")}  # oneDNN on/off -> fastest seconds
        was_on = torch.backends.mkldnn.enabled
        try:
            for round_ in range(rounds + 1):  # the first round warms up, and is timed too
                for onednn in (True, False):
                    torch.backends.mkldnn.enabled = onednn
                    best[onednn] = min(best[onednn], _seconds_forward_backward(conv, inputs, grad_output))
                if round_ >= 1 and (best[False] > 1.1 * best[True] or best[True] > 2 * best[False]):
                    break  # clearly decided: spare the rest (timing the large layers is most of the cost)
        finally:
            torch.backends.mkldnn.enabled = was_on
        if best[False] < 0.9 * best[True] and best[True] - best[False] > 2e-3:
            chosen.append(name)
    return chosen


def _seconds_forward_backward(conv: nn.Module, inputs: torch.Tensor, grad_output: torch.Tensor) -> float:
    """autograd.grad, not backward(): no .grad is written and no optimizer hook fires."""
    wanted = [p for p in conv.parameters() if p.requires_grad]
    if inputs.requires_grad:
        wanted.append(inputs)
    start = time.perf_counter()
    output = conv(inputs)
    torch.autograd.grad(output, wanted, grad_output)
    return time.perf_counter() - start


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()


def hardware_summary(device: torch.device) -> str:
    """One line on what the machine offers, for logs and benchmark tables."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (bf16 {'native' if native_bf16(device) else 'no'})"
    flags = cpu_flags()
    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo_lines() if line.startswith("model name")), "CPU")
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    held = [f"{name} held to {isa}" for name, isa in (("oneDNN", onednn_isa_cap()),
                                                       ("ATen", os.environ.get("ATEN_CPU_CAPABILITY", "").upper()),
                                                       ("MKL", os.environ.get("MKL_ENABLE_INSTRUCTIONS", "").upper()))
            if isa and isa not in ("ALL", "DEFAULT")]  # how the AVX2 case is measured on newer CPUs (README)
    return f"{model}, {torch.get_num_threads()} threads, {' '.join(simd) or 'no AVX2'} (bf16 " \
           f"{'native' if native_bf16(device) else 'emulated'})" + "".join(f"; {line}" for line in held)


def _cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def gan_loss(logits: torch.Tensor, real: bool, mode: str) -> torch.Tensor:
    """vanilla: BCE with logits against all-ones or all-zeros; lsgan: squared error."""
    logits = logits.float()
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if mode == "lsgan":
        return torch.nn.functional.mse_loss(logits, target)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, target)


def train_step(generator: nn.Module, discriminator: nn.Module, opt_g: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, lambda_l1: float, gan_mode: str,
               amp_dtype: torch.dtype | None, scaler: torch.amp.GradScaler,
               frozen_discriminator: nn.Module | None = None, free_grads: bool = True) -> torch.Tensor:
    """One pix2pix step (train.py's loop and benchmark.py share it); returns the detached
    [loss_D_real, loss_D_fake, loss_G_gan, loss_G_l1 (weighted)] on the device.

    frozen_discriminator is what G's update calls (default: discriminator); under
    DistributedDataParallel it is the plain module, as frozen D has no gradients to reduce.
    free_grads drops each network's gradients as soon as its optimizer has used them; the official
    code keeps G's until its next backward, alive (and in memory) through the next forward passes."""
    if frozen_discriminator is None:  # (not `or`: a compiled module refuses truth tests)
        frozen_discriminator = discriminator

    with _autocast(x.device, amp_dtype):
        fake = generator(x)

    # Discriminator: real pairs towards 1, generated pairs towards 0; halved as in the paper.
    discriminator.requires_grad_(True)
    opt_d.zero_grad(set_to_none=True)
    with _autocast(x.device, amp_dtype):
        loss_d_fake = gan_loss(discriminator(x, fake.detach()), False, gan_mode)
        loss_d_real = gan_loss(discriminator(x, y), True, gan_mode)
    scaler.scale((loss_d_fake + loss_d_real) * 0.5).backward()
    scaler.step(opt_d)
    if free_grads:
        opt_d.zero_grad(set_to_none=True)

    # Generator: fool D, and stay close to the target in L1. D is frozen: no gradients pile up there.
    discriminator.requires_grad_(False)
    opt_g.zero_grad(set_to_none=True)
    with _autocast(x.device, amp_dtype):
        loss_g_gan = gan_loss(frozen_discriminator(x, fake), True, gan_mode)
    loss_g_l1 = torch.nn.functional.l1_loss(fake.float(), y) * lambda_l1
    scaler.scale(loss_g_gan + loss_g_l1).backward()
    scaler.step(opt_g)  # nothing left to do where step_during_backward already stepped each parameter
    if free_grads:
        opt_g.zero_grad(set_to_none=True)
    scaler.update()
    return torch.stack([loss_d_real, loss_d_fake, loss_g_gan, loss_g_l1]).detach()


class ChannelsLastAdam(torch.optim.Adam):
    """torch's Adam, except that fused on the CPU it steps channels_last weights through contiguous NHWC-shaped
    views of the same memory. PyTorch's fused CPU kernel copies every gradient that is not contiguous in
    NCHW order and then reads the original all the same (grad.contiguous() in FusedAdamKernel.cpp): with
    channels_last weights that copy took 4 to 8% of a bf16 training step on a 2-core AMX CPU. Adam works
    element by element, so the weights come out bit for bit the same (tests/test_speed.py); the views exist
    only inside step(), so the weights, gradients, optimizer state and checkpoints keep their usual shapes."""

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        viewed = [p for group in self.param_groups for p in group["params"] if group["fused"] and p.grad is not None
                  and p.device.type == "cpu" and p.dim() == 4 and not p.is_contiguous()
                  and p.is_contiguous(memory_format=torch.channels_last)]
        for p in viewed:
            _permute_with_state(p, self.state[p], (0, 2, 3, 1))  # (out, in, kh, kw) -> (out, kh, kw, in)
        try:
            return super().step(closure)
        finally:
            for p in viewed:
                _permute_with_state(p, self.state[p], (0, 3, 1, 2))

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's, then each moment takes its weight's memory layout. A checkpoint keeps the layout its run
        had (NHWC from a GPU or a bf16 CPU run, NCHW from an fp32 one), and the fused CPU kernel pairs a weight's
        elements with its moments' by position in memory: resumed in another layout, each weight would be
        stepped with the moments of others, silently."""
        super().load_state_dict(state_dict)
        for p, state in self.state.items():
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _permute_with_state(parameter: nn.Parameter, state: dict, dims: tuple[int, ...]) -> None:
    """Give a weight, its gradient and its Adam moments another shape over the same memory (no copy)."""
    grad, parameter.grad = parameter.grad, None  # (a gradient must have its weight's shape when set)
    parameter.data = parameter.data.permute(dims)
    if grad is not None:
        parameter.grad = grad.permute(dims)
    for key, value in state.items():
        if torch.is_tensor(value) and value.dim() == 4:
            state[key] = value.permute(dims)


def step_during_backward(network: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                         scaler: torch.amp.GradScaler, processes: int = 1) -> bool:
    """Let optimizer update each of network's parameters as soon as its gradient is complete, and free
    that gradient, so that G's gradients (218 MB at ngf 64) never all exist at once; returns whether it did.

    Adam works element by element, so the weights come out bit for bit as with one step after the
    backward (tests/test_speed.py), and the optimizer and its checkpoints stay as they are; its own
    step() then finds no gradient left and does nothing. Not done on CUDA, where memory is plentiful and
    each parameter would launch its own Adam kernel; with fp16 loss scaling, which must see every
    gradient before any step; or across processes, whose gradients are averaged after the backward.
    optimizer must hold exactly network's parameters: a gradient it does not step is dropped all the same."""
    if device.type == "cuda" or scaler.is_enabled() or processes > 1:
        return False
    step = optimizer.step

    def update(parameter: nn.Parameter) -> None:
        step()  # only this parameter has a gradient now: the others' were used and freed, or are still to come
        parameter.grad = None

    for parameter in network.parameters():
        parameter.register_post_accumulate_grad_hook(update)
    return True


def list_images(folder: Path) -> list[Path]:
    """The image files of a folder, sorted; hidden files (such as macOS's ._NAME.jpg) are left out."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


def to_rgb(image: "Image.Image | np.ndarray") -> Image.Image:
    """Any PIL mode or NumPy image as 8-bit RGB; transparency (a fourth channel) is composited on white."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(to_8_bits(_as_height_width_channels(image)))
    elif image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = Image.fromarray(to_8_bits(np.asarray(image)))
    if image.mode == "La":  # premultiplied alpha, which Pillow converts to LA only
        image = image.convert("LA")
    if image.mode in ("RGBA", "RGBa", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _as_height_width_channels(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"image array: shape {array.shape} has the channels first; pass array.transpose(1, 2, 0)")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.size == 0 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ValueError(f"image array: shape {array.shape}; pass H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA)")
    return array


def to_8_bits(values: np.ndarray) -> np.ndarray:
    """Pixel values as uint8. Integers up to 255 are taken as they are, larger ones as 16-bit; floats
    as [0, 1] when none exceeds 1.1, else as 0..255, small overshoots (from resampling) clipped.
    Anything else is refused with the fix: a wrong guess at the scale gives a black or white photo,
    and from it a blank map, without a word."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype.kind not in "uif":
        raise ValueError(f"image: values of type {values.dtype}; pass numbers (uint8, 0..255, is best)")
    floats = values.astype(np.float64)
    if not np.isfinite(floats).all():
        raise ValueError("image: NaN or infinite values; pass 0..255 (uint8) or floats in [0, 1]")
    low, high = floats.min(), floats.max()
    if values.dtype.kind == "f":
        top = 1.0 if high <= 1.1 else 255.0
        if low < -0.1 * top or high > 1.1 * top or 1.1 < high < 2:
            raise ValueError(f"image: float values from {low:g} to {high:g}; pass floats in [0, 1] or 0..255 "
                             "(overshoots of up to 10%, as resampling makes, are clipped)")
        scale = top / 255
    elif low < 0:
        raise ValueError(f"image: integer values down to {low:.0f}; pass 0..255 (uint8) or 16-bit (0..65535)")
    elif high <= 255:
        scale = 1.0
    elif 4096 <= high <= 65535:
        scale = 65535 / 255
    elif high < 4096:
        raise ValueError(f"image: 16-bit values that reach only {high:.0f} of 65535 (12-bit or less sensor data?) "
                         "would make a black photo; stretch them to 0..255 (uint8) first, as you would to view them")
    else:
        raise ValueError(f"image: values up to {high:.0f}; pass 0..255 (uint8), 16-bit integers or floats in [0, 1]")
    return np.clip(floats / scale + 0.5, 0, 255).astype(np.uint8)


def load_image(path: Path, upright: bool = False) -> Image.Image:
    """Decode an image file fully (so a truncated file fails here) as RGB. upright=True turns a photo as
    its EXIF orientation says; A|B pair files are read as stored, as the official code reads them."""
    try:
        with Image.open(path) as image:
            image.load()
            if upright:
                image = ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise ValueError(f"{path}: does not exist; check the path") from None
    except Image.DecompressionBombError as error:
        raise ValueError(f"{path}: too large for Pillow's guard against decompression bombs ({error}); cut it into "
                         "pieces (gdal_retile.py, say), or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"{path}: cannot be read as an image ({error}); replace or delete it") from None
    try:
        return to_rgb(image)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor 3 x H x W in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """Tensor 3 x H x W in [-1, 1] -> RGB PIL image (rounded to 8 bits)."""
    array = ((tensor.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).numpy())


def save_grid(rows: list[list[torch.Tensor]], path: Path) -> None:
    """Save rows of equal-sized images in [-1, 1] (e.g. satellite | generated | real) as one PNG."""
    import torchvision.utils  # imported here: it takes seconds, and only grids need it

    flat = torch.stack([image.detach().float().cpu() for row in rows for image in row])
    grid = torchvision.utils.make_grid((flat + 1) / 2, nrow=len(rows[0]), padding=4, pad_value=1.0)
    atomic_write(path, lambda tmp: tensor_to_image(grid * 2 - 1).save(tmp, **PNG))


def atomic_write(path: Path, write) -> None:
    """Call write(temporary_path), then rename it onto path: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(handle)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be shared
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def error_line(error: BaseException) -> str:
    """The first line of an error's message (its type where it has none), for one-line reports."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class BackgroundWriter:
    """Runs writes in a few threads while the caller goes on: PNG encoding, torch.save and file I/O release
    the GIL, so they overlap the generator or the next training steps. At most `backlog` writes wait beyond
    those running, so what they hold does not pile up in memory. A failed write raises at a later submit,
    check() or wait(), or where the with-block ends, once every other write has finished; a block that is
    already failing prints it instead, so as not to hide the error that ended it."""

    def __init__(self, threads: int = 1, backlog: int = 16):
        self.pool, self.pending, self.backlog = futures.ThreadPoolExecutor(threads), [], backlog

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, error_type, *exc) -> None:
        try:
            self.wait()
        except (Exception, SystemExit) as failed:
            if error_type is None:
                raise
            print(failed, file=sys.stderr)
        finally:
            self.pool.shutdown()

    def submit(self, function, *args) -> None:
        self.pending.append(self.pool.submit(function, *args))
        while len(self.pending) > self.backlog:
            self.pending.pop(0).result()

    def check(self) -> None:
        """Raise now if a write that has finished failed."""
        while self.pending and self.pending[0].done():
            self.pending.pop(0).result()

    def wait(self) -> None:
        """Until every write handed in has finished; then raises the first failure."""
        pending, self.pending = self.pending, []
        futures.wait(pending)
        for future in pending:
            future.result()


@contextlib.contextmanager
def inference_mode(generator: nn.Module, paper: bool = True, seed: int = 0) -> Iterator[None]:
    """Run the generator for inference and restore its training state afterwards.

    paper=True is how pix2pix is tested: dropout on and BatchNorm with the statistics of the
    test batch (the running averages are left untouched); paper=False is plain model.eval().
    The random generators are seeded inside (the same dropout masks every call) and restored
    after, so inference never shifts the random stream of a training run.
    """
    modes = [(m, m.training) for m in generator.modules()]  # each its own: MC dropout keeps BatchNorm in eval
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracked = [m.track_running_stats for m in norms]
    generator.train(paper)
    if paper:
        for m in norms:
            m.track_running_stats = False  # use batch statistics without updating the running ones
    device = next(generator.parameters()).device
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            torch.manual_seed(seed)
            yield
    finally:
        for m, flag in zip(norms, tracked):
            m.track_running_stats = flag
        for m, training in modes:
            m.training = training


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write rows (dicts with the same keys) as a whole new CSV file, atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    atomic_write(path, write)


def _blend_window(tile: int, device: torch.device) -> torch.Tensor:
    """A smooth bump, near zero at tile borders and 1 in the middle, so overlapping tiles fade into each other."""
    ramp = torch.hann_window(tile, periodic=False, device=device).clamp_min(1e-3)
    return (ramp[:, None] * ramp[None, :])[None, None]


def translate(generator: nn.Module, image: "Image.Image | np.ndarray | str | Path", paper: bool = True,
              seed: int = 0, tile: int = 256, overlap: int = 64, batch_size: int = 8,
              whole: bool = False) -> Image.Image:
    """Translate an image of any size and mode; the result is an RGB image of the same size.

    The image is reflect-padded and cut into overlapping tile x tile pieces whose outputs are
    blended with a smooth window (no seams). whole=True runs it at once when both sides are
    multiples of 256 (the U-Net is fully convolutional). paper=True is the paper's test mode
    (dropout on, per-tile BatchNorm statistics; tiles then run one by one, since batching would
    mix their statistics), paper=False is model.eval(); seed fixes the dropout masks.
    """
    if not isinstance(generator, nn.Module):
        raise TypeError(f"translate: generator is a {type(generator).__name__}; pass a network, such as "
                        "Generator.from_checkpoint(path)")
    if not (isinstance(tile, int) and tile > 0 and tile % 256 == 0):
        raise ValueError(f"translate: tile {tile!r} must be a positive multiple of 256, the U-Net's input size")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"translate: batch_size {batch_size!r} must be a whole number >= 1")
    if isinstance(image, (str, Path)):
        image = load_image(Path(image).expanduser(), upright=True)
    elif not isinstance(image, (Image.Image, np.ndarray)):
        raise TypeError(f"translate: got a {type(image).__name__}; pass a PIL image, a NumPy array (H x W x 3) or "
                        "a path (a tensor in [-1, 1]: tensor_to_image(tensor) first)")
    image = to_rgb(image)
    width, height = image.size
    device = next(generator.parameters()).device
    dtypes = {p.dtype for p in generator.parameters()}  # a .half() model wants half input; Autocast's mix, fp32
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    pixels = np.asarray(image)
    if whole and width % 256 == 0 and height % 256 == 0:
        padded, margin = pixels, 0
    else:
        if not (isinstance(overlap, (int, np.integer)) and not isinstance(overlap, bool) and 0 <= overlap < tile):
            raise ValueError(f"translate: overlap {overlap!r} must be a whole number in [0, tile={tile})")
        stride, margin = tile - overlap, overlap // 2
        cover_h = max(tile, -(-(height + 2 * margin - tile) // stride) * stride + tile)
        cover_w = max(tile, -(-(width + 2 * margin - tile) // stride) * stride + tile)
        padded = np.pad(pixels, ((margin, cover_h - height - margin), (margin, cover_w - width - margin), (0, 0)),
                        mode="symmetric")
    source = image_to_tensor(Image.fromarray(padded)).unsqueeze(0).to(device, dtype)
    with inference_mode(generator, paper=paper, seed=seed):
        if padded is pixels:
            result = generator(source)
        else:
            window = _blend_window(tile, device)
            result = torch.zeros_like(source, dtype=torch.float32)
            weight = torch.zeros_like(result[:, :1])
            corners = [(top, left) for top in range(0, source.shape[-2] - tile + 1, tile - overlap)
                       for left in range(0, source.shape[-1] - tile + 1, tile - overlap)]
            per_batch = 1 if paper else batch_size
            for start in range(0, len(corners), per_batch):
                chunk = corners[start:start + per_batch]
                tiles = torch.cat([source[..., top:top + tile, left:left + tile] for top, left in chunk])
                for output, (top, left) in zip(generator(tiles), chunk):
                    result[..., top:top + tile, left:left + tile] += output.float() * window[0]
                    weight[..., top:top + tile, left:left + tile] += window[0]
            result = result / weight
    return tensor_to_image(result[0, :, margin:margin + height, margin:margin + width])
