"""The pix2pix discriminator: the 70x70 PatchGAN (arXiv 1611.07004, appendix 6.1.2).

C64-C128-C256-C512 then a 1-channel conv: each output logit judges one 70x70 patch of
the (condition, image) pair, so a 256x256 pair gives 30x30 logits. Layer indices match
the official code's `NLayerDiscriminator` (`model.N` there is `layers.N` here). Needs torch,
and generator.py for the shared initialisation and checkpoint loading.
"""
from pathlib import Path

import torch
import torch.nn as nn

from generator import init_weights, load_strict, read_checkpoint, shape_of, weights_in


def _conv(in_channels: int, out_channels: int, stride: int, norm: bool) -> list[nn.Module]:
    """One Ck block; only un-normalised convs carry a bias (BatchNorm's beta replaces it)."""
    layers = [nn.Conv2d(in_channels, out_channels, 4, stride=stride, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return layers + [nn.LeakyReLU(0.2, inplace=True)]


class Discriminator(nn.Module):
    """PatchGAN over the channel-wise concatenation [condition, image]."""

    def __init__(self, in_channels: int = 6, ndf: int = 64):
        super().__init__()
        if min(in_channels, ndf) < 1:
            raise ValueError(f"Discriminator: in_channels {in_channels} and ndf {ndf} must both be at least 1")
        self.layers = nn.Sequential(
            *_conv(in_channels, ndf, stride=2, norm=False),  # C64
            *_conv(ndf, ndf * 2, stride=2, norm=True),        # C128
            *_conv(ndf * 2, ndf * 4, stride=2, norm=True),    # C256
            *_conv(ndf * 4, ndf * 8, stride=1, norm=True),    # C512
            nn.Conv2d(ndf * 8, 1, 4, stride=1, padding=1),    # one logit per patch
        )
        init_weights(self)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([condition, image], dim=1))

    @classmethod
    def from_state_dict(cls, state_dict: dict) -> "Discriminator":
        """Build a discriminator of the right size for these weights (ours or the official layout) and load them."""
        if any(key.startswith("model.") for key in state_dict):
            state_dict = {official_to_ours([key]).get(key, key): value for key, value in state_dict.items()}
        first = state_dict.get("layers.0.weight")
        if first is None or "layers.11.weight" not in state_dict:
            raise ValueError("checkpoint: expected 70x70 PatchGAN weights (keys layers.0.weight ... layers.11.weight), "
                             f"found keys like {', '.join(list(state_dict)[:3])}")
        if not (torch.is_tensor(first) and first.dim() == 4):
            raise ValueError("checkpoint: weights do not fit a 70x70 PatchGAN: layers.0.weight is "
                             f"{shape_of(first)}, not 4-D convolution weights")
        return load_strict(cls(in_channels=first.shape[1], ndf=first.shape[0]), state_dict, "a 70x70 PatchGAN")

    @classmethod
    def from_checkpoint(cls, path_or_url: str | Path,
                        map_location: str | torch.device | None = "cpu") -> "Discriminator":
        """Load a train.py checkpoint's D, a bare state_dict or an official latest_net_D.pth."""
        return cls.from_state_dict(weights_in(read_checkpoint(path_or_url, map_location), "discriminator"))


def official_to_ours(official_keys: list[str]) -> dict[str, str]:
    """Rename the official basic PatchGAN's state_dict keys (`model.N...`) to this module's."""
    return {key: "layers." + key[len("model."):] for key in official_keys if key.startswith("model.")}
