"""Map classes for scoring: each map pixel is assigned to the nearest colour of a small palette.

Pixel accuracy and SSIM reward a flat grey image; the IoU of map classes (water, park, roads...)
does not. The palette is fitted once by k-means on the training maps and stored in
map_palette.json beside this file:

    python palette.py --data data/maps --k 10
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from config import ArgumentParser
from dataset import split_pair
from utils import atomic_write, list_images

PALETTE_FILE = Path(__file__).with_name("map_palette.json")
# The map style's classes, by a typical colour read off the maps. They only name the fitted
# clusters: each cluster joins the class nearest to it, so anti-aliased edge shades join a class too.
NAMED_COLOURS = {"land": (232, 228, 221), "building": (243, 241, 235), "water": (176, 207, 254),
                 "park": (202, 221, 174), "road": (253, 252, 251), "major road": (242, 212, 129),
                 "highway": (245, 162, 46)}


class Palette:
    """Class names and their colours (a class may own several) as stored in map_palette.json."""

    def __init__(self, path: Path = PALETTE_FILE):
        try:
            data = json.loads(Path(path).read_text())
            self.names = [c["name"] for c in data["classes"]]
            self.colours = torch.tensor([rgb for c in data["classes"] for rgb in c["rgb"]], dtype=torch.float32)
            self.colour_class = torch.tensor([i for i, c in enumerate(data["classes"]) for _ in c["rgb"]])
            self.median = torch.tensor(data["median_rgb"], dtype=torch.float32)
        except (OSError, ValueError, KeyError, TypeError) as error:
            restore = "restore it with git checkout map_palette.json or " if Path(path) == PALETTE_FILE else ""
            raise ValueError(f"palette: {path} cannot be read as a palette ({type(error).__name__}: {error}); "
                             f"{restore}write it with python palette.py --data data/maps") from None

    def classify(self, image_255: torch.Tensor) -> torch.Tensor:
        """Class index of every pixel of a 3 x H x W image on 0-255: the class of the nearest colour."""
        pixels = image_255.reshape(3, -1).T.float()
        nearest = torch.cdist(pixels, self.colours.to(pixels.device)).argmin(dim=1).cpu()
        return self.colour_class[nearest].reshape(image_255.shape[1:])


def confusion(fake_labels: torch.Tensor, real_labels: torch.Tensor, classes: int) -> torch.Tensor:
    """classes x classes pixel counts: row = real class, column = generated class."""
    index = real_labels.flatten() * classes + fake_labels.flatten()
    return torch.bincount(index, minlength=classes * classes).reshape(classes, classes)


def iou_from_confusion(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class IoU, and a mask of the classes present in the real maps (mIoU averages over those)."""
    matrix = matrix.double()
    hits = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - hits
    present = matrix.sum(1) > 0
    return torch.where(union > 0, hits / union.clamp_min(1), torch.zeros_like(hits)), present


def pair_files(data: Path, split: str = "train") -> list[Path]:
    """The A|B files of a split, or one line saying where to get them."""
    folder = Path(data) / split
    files = list_images(folder) if folder.is_dir() else []
    if not files:
        raise SystemExit(f"palette: {Path(data) / split} has no images; run `python dataset.py download --root data`")
    return files


def fit_palette(data: Path, k: int, pixels_per_image: int = 2000, seed: int = 0, iterations: int = 50) -> dict:
    """k-means on map pixels (right halves, resized to 256x256) of the training split."""
    rng = np.random.default_rng(seed)
    samples = []
    for path in tqdm(pair_files(data), desc="sampling map pixels", leave=False):
        try:
            pixels = np.asarray(split_pair(path)[1].resize((256, 256), Image.BILINEAR)).reshape(-1, 3)
        except ValueError as error:
            raise SystemExit(f"palette: {error}") from None
        samples.append(pixels[rng.choice(len(pixels), min(pixels_per_image, len(pixels)), replace=False)])
    points = torch.tensor(np.concatenate(samples), dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    centres = points[torch.randperm(len(points), generator=generator)[:k]].clone()
    for _ in range(iterations):
        labels = torch.cdist(points, centres).argmin(dim=1)
        for j in range(k):
            if (labels == j).any():
                centres[j] = points[labels == j].mean(dim=0)
    counts = torch.bincount(torch.cdist(points, centres).argmin(dim=1), minlength=k)
    order = counts.argsort(descending=True).tolist()
    reference = torch.tensor(list(NAMED_COLOURS.values()), dtype=torch.float32)
    classes: dict[str, dict] = {}
    for j in order:
        name = list(NAMED_COLOURS)[torch.cdist(centres[j:j + 1], reference).argmin().item()]
        entry = classes.setdefault(name, {"name": name, "rgb": [], "share": 0.0})
        entry["rgb"].append([round(v) for v in centres[j].tolist()])
        entry["share"] = round(entry["share"] + counts[j].item() / len(points), 4)
    return {"fitted_on": f"{Path(data) / 'train'} map halves at 256x256, {pixels_per_image} pixels each, "
                         f"k-means k={k}, seed {seed}",
            "median_rgb": [round(v) for v in points.median(dim=0).values.tolist()],
            "classes": sorted(classes.values(), key=lambda c: -c["share"])}


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/maps", help="folder whose train/ holds A|B map pairs")
    parser.add_argument("--k", type=int, default=10, help="number of colour classes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(PALETTE_FILE), help="where to write the palette JSON")
    args = parser.parse_args(argv)
    if not 2 <= args.k <= 32:
        parser.error("--k must lie between 2 and 32")
    palette = fit_palette(Path(args.data), args.k, seed=args.seed)
    try:  # all or nothing: evaluate.py reads this file, and a half-written one would break every later run
        atomic_write(Path(args.out), lambda tmp: Path(tmp).write_text(json.dumps(palette, indent=2) + "\n"))
    except OSError as error:
        raise SystemExit(f"palette: cannot write {args.out} ({error.strerror or error}); "
                         "free space or pass another --out") from None
    print(f"palette: {len(palette['classes'])} classes written to {args.out}: "
          + ", ".join(c["name"] for c in palette["classes"]))


if __name__ == "__main__":
    main()
