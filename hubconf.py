"""torch.hub entry points: torch.hub.load(REPO_DIR, "generator", weights=..., source="local").

weights is a path or URL of a train.py checkpoint, an export.py release file or an official
pix2pix .pth, or one of the names in OFFICIAL_WEIGHTS; None gives freshly initialised networks.
"""
from pathlib import Path

from discriminator import Discriminator
from generator import Generator

dependencies = ["torch"]

# The official pix2pix PyTorch models for the maps dataset (generators only).
OFFICIAL_WEIGHTS = {name: f"http://efrosgans.eecs.berkeley.edu/pix2pix/models-pytorch/{name}.pth"
                    for name in ("sat2map", "map2sat")}


def generator(weights: str | None = None, ngf: int = 64, map_location: str = "cpu") -> Generator:
    """The pix2pix U-Net 256 generator; its width comes from the weights when they are given."""
    if weights is None:
        return Generator(ngf=ngf)
    weights = str(weights)
    if weights not in OFFICIAL_WEIGHTS and "://" not in weights and not Path(weights).expanduser().exists():
        raise FileNotFoundError(f"hubconf: weights {weights!r} is neither a file nor one of the official models "
                                f"({', '.join(OFFICIAL_WEIGHTS)})")
    return Generator.from_checkpoint(OFFICIAL_WEIGHTS.get(weights, weights), map_location=map_location)


def discriminator(weights: str | None = None, ndf: int = 64, map_location: str = "cpu") -> Discriminator:
    """The 70x70 PatchGAN discriminator (6 input channels: satellite and map)."""
    if weights is None:
        return Discriminator(ndf=ndf)
    if str(weights) in OFFICIAL_WEIGHTS and not Path(weights).expanduser().exists():
        raise ValueError(f"hubconf: the official {weights} model holds a generator only; pass the path or URL of a "
                         "train.py checkpoint for its discriminator")
    return Discriminator.from_checkpoint(weights, map_location=map_location)
