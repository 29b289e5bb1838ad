"""The pix2pix generator: the U-Net 256 of the paper (arXiv 1611.07004, appendix 6.1.1).

Encoder  C64-C128-C256-C512-C512-C512-C512-C512   (Ck = 4x4 conv stride 2 - BatchNorm - LeakyReLU 0.2)
Decoder  C512-CD512-CD512-CD512-C256-C128-C64     (transposed convs - BatchNorm - [Dropout 0.5] - ReLU;
                                                   dropout where the official code has it, see DROPOUT_UP_LAYERS)
Skips    decoder layer i receives [encoder feature, decoder feature] concatenated.

The layers and tensors are those of the official PyTorch code's `unet_256`, so its
checkpoints load by renaming keys (`official_to_ours`). This file needs only torch.
"""
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ENCODER_MULTIPLIERS = (1, 2, 4, 8, 8, 8, 8, 8)  # channels of down1..down8, in units of ngf
DROPOUT_UP_LAYERS = (2, 3, 4)  # counted from the bottleneck, as the official code (the paper's text says 1-3)


def _down(in_channels: int, out_channels: int, norm: bool) -> nn.Sequential:
    layers = OrderedDict(conv=nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False))
    if norm:
        layers["norm"] = nn.BatchNorm2d(out_channels)
    return nn.Sequential(layers)


def _up(in_channels: int, out_channels: int, dropout: bool) -> nn.Sequential:
    layers = OrderedDict(conv=nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False),
                         norm=nn.BatchNorm2d(out_channels))
    if dropout:
        layers["dropout"] = nn.Dropout(0.5)
    return nn.Sequential(layers)


def init_weights(module: nn.Module) -> None:
    """The paper's initialisation: conv weights N(0, 0.02), BatchNorm gamma N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _dense_gradient(x: torch.Tensor) -> torch.Tensor:
    """x, with its gradient copied back into x's channels_last layout on the way through. The backward of
    torch.cat hands each part a channel slice of the joint gradient, dense in NCHW but strided in NHWC,
    and BatchNorm's CPU backward runs such a slice up to 10 times slower (20 instead of 2 ms at
    64x128x128 in bf16). Left out while torch.compile traces, as inductor picks its own layouts."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if channels_last and x.requires_grad and not torch.compiler.is_compiling():
        x.register_hook(lambda grad: grad.contiguous(memory_format=torch.channels_last))
    return x


class Generator(nn.Module):
    """U-Net 256: maps a 3 x H x W image in [-1, 1] to another, H and W multiples of 256."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64):
        super().__init__()
        if min(in_channels, out_channels, ngf) < 1:
            raise ValueError(f"Generator: in_channels {in_channels}, out_channels {out_channels} and ngf {ngf} "
                             "must all be at least 1")
        widths = [ngf * m for m in ENCODER_MULTIPLIERS]
        # down[0] is the paper's C64 (no BatchNorm); down[7] the innermost C512 (no BatchNorm: it is 1x1).
        self.down = nn.ModuleList(
            _down(c_in, c_out, norm=0 < i < len(widths) - 1)
            for i, (c_in, c_out) in enumerate(zip([in_channels] + widths[:-1], widths)))
        # up[0] sits at the bottleneck; from up[1] on, the input is [skip, previous up] concatenated.
        up_widths = widths[-2::-1]  # 512 512 512 512 256 128 64 at ngf=64
        up_inputs = [widths[-1]] + [2 * c for c in up_widths[:-1]]
        self.up = nn.ModuleList(
            _up(c_in, c_out, dropout=i + 1 in DROPOUT_UP_LAYERS)
            for i, (c_in, c_out) in enumerate(zip(up_inputs, up_widths)))
        self.final = nn.ConvTranspose2d(2 * widths[0], out_channels, 4, stride=2, padding=1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 256 or x.shape[-2] % 256:
            raise ValueError(f"Generator: input is {x.shape[-2]}x{x.shape[-1]}, but the U-Net 256 needs "
                             "height and width that are multiples of 256; resize or pad it (utils.translate does)")
        skips = []
        for down in self.down[:-1]:
            # The skip carries the activated feature: the official code's in-place LeakyReLU does the same.
            # In place is safe here: neither a convolution nor BatchNorm needs its own output for backward.
            x = F.leaky_relu(down(x), 0.2, inplace=True)
            skips.append(x)
        x = self.down[-1](x)
        x = self.up[0](F.relu(x, inplace=True))
        for up, skip in zip(self.up[1:], reversed(skips[1:])):
            x = up(F.relu(torch.cat([skip, _dense_gradient(x)], dim=1), inplace=True))
        return torch.tanh(self.final(F.relu(torch.cat([skips[0], _dense_gradient(x)], dim=1), inplace=True)))

    @classmethod
    def from_state_dict(cls, state_dict: dict) -> "Generator":
        """Build a generator of the right size for these weights (ours or the official layout) and load them."""
        if any(key.startswith("model.model.") for key in state_dict):
            mapping = official_to_ours(list(state_dict))
            state_dict = {mapping.get(key, key): value for key, value in state_dict.items()}
        first, last = state_dict.get("down.0.conv.weight"), state_dict.get("final.weight")
        if first is None or last is None:
            raise ValueError("checkpoint: expected pix2pix U-Net generator weights (keys down.0.conv.weight ... "
                             f"final.weight), found keys like {', '.join(list(state_dict)[:3])}")
        if not all(torch.is_tensor(w) and w.dim() == 4 for w in (first, last)):
            raise ValueError(f"checkpoint: weights do not fit a U-Net 256 generator: down.0.conv.weight is "
                             f"{shape_of(first)} and final.weight {shape_of(last)}, not 4-D convolution weights")
        model = cls(in_channels=first.shape[1], out_channels=last.shape[1], ngf=first.shape[0])
        return load_strict(model, state_dict, "a U-Net 256 generator")

    @classmethod
    def from_checkpoint(cls, path_or_url: str | Path, map_location: str | torch.device | None = "cpu") -> "Generator":
        """Load a training checkpoint, a release file, a bare state_dict or an official pix2pix file."""
        return cls.from_state_dict(weights_in(read_checkpoint(path_or_url, map_location), "generator"))


def weights_in(state: object, network: str) -> dict:
    """The state_dict of `network` ("generator" or "discriminator") inside what read_checkpoint returned."""
    if isinstance(state, dict) and isinstance(state.get(network), dict):
        state = state[network]  # train.py checkpoints and export.py release files
    other = {"generator": "discriminator", "discriminator": "generator"}[network]
    if isinstance(state, dict) and isinstance(state.get(other), dict):
        raise ValueError(f"checkpoint: holds {other} weights but no {network}; pass a file with the {network}")
    for wrapper in ("state_dict", "model"):  # the usual containers of other training scripts
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint: expected a dict of {network} weights, found a {type(state).__name__}")
    unnamed = [repr(key) for key in state if not isinstance(key, str)]
    if unnamed:
        raise ValueError(f"checkpoint: expected {network} weights named by strings, found keys like "
                         f"{', '.join(unnamed[:3])}; pass a file of weights")
    return {_without_wrapper_prefixes(key): value for key, value in state.items()}


def _without_wrapper_prefixes(key: str) -> str:
    """DistributedDataParallel saves its module's weights as module.NAME, torch.compile as _orig_mod.NAME."""
    while key.startswith(("module.", "_orig_mod.")):
        key = key.split(".", 1)[1]
    return key


def load_strict(model: nn.Module, state_dict: dict, description: str) -> nn.Module:
    """Load every tensor exactly once, or say which keys are missing, unexpected or mis-shaped."""
    expected = model.state_dict()
    # Older official files lack BatchNorm's num_batches_tracked counters; they carry no weights.
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = expected[key]
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [f"{k} {shape_of(state_dict[k])} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state_dict and shape_of(state_dict[k]) != tuple(v.shape)]
    if missing or unexpected or wrong:
        raise ValueError(f"checkpoint: weights do not fit {description}: "
                         + "; ".join(f"{label}: {', '.join(items[:4])}" + (" ..." if len(items) > 4 else "")
                                     for label, items in (("missing", missing), ("unexpected", unexpected),
                                                          ("wrong shape", wrong)) if items))
    model.load_state_dict(state_dict)
    return model


def shape_of(value: object) -> tuple | str:
    """A tensor's shape, else the type of what stands in its place: checkpoint files can hold anything."""
    return tuple(value.shape) if torch.is_tensor(value) else type(value).__name__


def read_checkpoint(path_or_url: str | Path, map_location: str | torch.device | None = "cpu") -> dict:
    """torch.load with weights_only=True (a weights file cannot run code), URLs via torch.hub's cache."""
    source = str(path_or_url)
    if isinstance(map_location, str):
        try:
            torch.device(map_location)
        except RuntimeError:
            message = f"checkpoint: map_location {map_location!r} is not a device; pass 'cpu' or 'cuda'"
            raise ValueError(message) from None
    try:
        if source.startswith(("http://", "https://")):
            try:
                return torch.hub.load_state_dict_from_url(source, map_location=map_location, weights_only=True)
            except OSError as error:  # URLError and socket errors: offline, or the file moved
                raise FileNotFoundError(f"checkpoint: cannot download {source} ({getattr(error, 'reason', error)}); "
                                        "check the internet connection, or download it by hand and pass its path")
        path = Path(source).expanduser()
        if not path.is_file():
            problem = "is a folder" if path.is_dir() else "does not exist"
            raise FileNotFoundError(f"checkpoint: {source} {problem}; pass a .pt file written by train.py "
                                    "(runs/NAME/checkpoints/latest.pt), export.py or the official pix2pix code")
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # torch raises many types for a bad file; to a user they mean one thing
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        if lines and "CUDA" in lines[0] and not torch.cuda.is_available():
            raise ValueError(f"checkpoint: {source} cannot be loaded onto a GPU, as this machine has none; "
                             "pass map_location='cpu'") from None
        if lines and lines[0].startswith("Weights only load failed"):
            # torch's text suggests weights_only=False, which would run any code in the file: keep only the cause
            cause = next((line for line in lines[1:] if not line.startswith(("Please file", "Check the"))), "")
            reason = f"refused by the safe loader: {cause or 'not plain weights'}"
        else:
            reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        raise ValueError(f"checkpoint: {source} is not a loadable weights file ({reason}); "
                         "pass a .pt file written by train.py, export.py or the official pix2pix code") from None


def official_to_ours(official_keys: list[str]) -> dict[str, str]:
    """Rename the official unet_256 state_dict keys (nested `model.model.1...`) to this module's."""
    mapping = {}
    depth = len(ENCODER_MULTIPLIERS)
    for level in range(depth):  # level 0 is the outermost block
        prefix = "model.model." + "1.model." * (level > 0) + "3.model." * max(level - 1, 0)
        if level == 0:
            parts = {"0.": "down.0.conv.", "3.": "final."}
        elif level < depth - 1:
            parts = {"1.": f"down.{level}.conv.", "2.": f"down.{level}.norm.",
                     "5.": f"up.{depth - 1 - level}.conv.", "6.": f"up.{depth - 1 - level}.norm."}
        else:  # innermost: LeakyReLU, conv, ReLU, transposed conv, BatchNorm
            parts = {"1.": f"down.{level}.conv.", "3.": "up.0.conv.", "4.": "up.0.norm."}
        for key in official_keys:
            for theirs, ours in parts.items():
                if key.startswith(prefix + theirs) and "model" not in key[len(prefix + theirs):]:
                    mapping[key] = ours + key[len(prefix + theirs):]
    return mapping


if __name__ == "__main__":
    # `python generator.py` prints the layer table that README.md and Visualization/architecture.md show.
    model, shapes = Generator(ngf=64), {}
    layers = [*((f"down{i + 1}", m) for i, m in enumerate(model.down)),
              *((f"up{i + 1}", m) for i, m in enumerate(model.up)), ("final", model.final)]
    for name, module in layers:
        module.register_forward_hook(lambda m, i, o, name=name: shapes.update({name: (i[0].shape, o.shape)}))
    model.eval()(torch.zeros(1, 3, 256, 256))
    print("| layer | paper | input | output | parameters |\n|---|---|---|---|---|")
    for name, module in layers:
        (_, c_in, h_in, w_in), (_, c_out, h_out, w_out) = shapes[name]
        label = "Tanh output" if name == "final" else ("CD" if hasattr(module, "dropout") else "C") + str(c_out)
        params = sum(p.numel() for p in module.parameters())
        print(f"| {name} | {label} | {c_in}x{h_in}x{w_in} | {c_out}x{h_out}x{w_out} | {params:,} |")
    print(f"| **total** | | | | **{sum(p.numel() for p in model.parameters()):,}** |")
