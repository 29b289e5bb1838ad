"""Paired images for pix2pix: the maps layout, procedural stand-ins, and the real archive's download.

Each file holds A|B side by side (A = satellite photo on the left, B = map on the right), in
ROOT/train and ROOT/val. Run as a script:
    python dataset.py synthetic data/synthetic --count 200
    python dataset.py download --root data
"""
import argparse
import shutil
import tarfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import Dataset
from tqdm import tqdm

from config import ArgumentParser
from utils import error_line, image_to_tensor, list_images, load_image, to_rgb

MAPS_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/maps.tar.gz"  # as the official repository's script
FETCH_HINT = "run `python dataset.py download --root data` (real maps) or `python dataset.py synthetic DIR` (offline)"


def split_pair(path: Path) -> tuple[Image.Image, Image.Image]:
    """The A (left) and B (right) halves of an A|B file, at full size."""
    pair = load_image(path)
    width, height = pair.size
    if width != 2 * height:
        raise ValueError(f"dataset: {path} is {width}x{height}, not an A|B pair of two squares "
                         "side by side (width = 2 x height); fix or remove it")
    return pair.crop((0, 0, height, height)), pair.crop((height, 0, width, height))


class PairedImageDataset(Dataset):
    """(input, target) tensors in [-1, 1] from A|B files.

    Training jitter as in the paper: both halves resized to load_size (bicubic), then the
    same random crop_size crop and the same random horizontal flip. The jitter of a pair is a
    function of (seed, epoch, index) (see set_epoch), so a run resumed in the middle of an epoch,
    with any number of workers, sees the same crops. Evaluation: resized to crop_size, nothing
    random. With cache=True the resized halves stay in memory.
    """

    def __init__(self, root: str | Path, split: str, direction: str = "AtoB", train: bool = True,
                 load_size: int = 286, crop_size: int = 256, flip: bool = True, cache: bool = False):
        self.folder = Path(root) / split
        if not self.folder.is_dir():
            splits = sorted(p.name for p in Path(root).iterdir()
                            if p.is_dir() and not p.name.startswith(".")) if Path(root).is_dir() else []
            if splits:
                hint = f"the splits there are {', '.join(splits)}"
            elif Path(root).is_dir() and list_images(Path(root)):  # --data data/maps/val, not data/maps
                hint = f"{root} looks like a split folder itself: pass its parent folder, which holds {split}/"
            else:
                hint = FETCH_HINT
            raise FileNotFoundError(f"dataset: {self.folder} does not exist; {hint}")
        try:
            self.files = list_images(self.folder)
        except OSError as error:
            message = f"dataset: cannot read {self.folder} ({error.strerror}); check its permissions"
            raise PermissionError(message) from None
        if not self.files:
            raise FileNotFoundError(f"dataset: {self.folder} has no images (*.jpg, *.png); {FETCH_HINT}")
        if direction not in ("AtoB", "BtoA"):
            raise ValueError(f"dataset: direction must be AtoB or BtoA, not {direction!r}")
        self.direction, self.train, self.flip = direction, train, flip
        self.size = load_size if train else crop_size
        self.crop_size = crop_size
        self.cache: dict[int, tuple[Image.Image, Image.Image]] | None = {} if cache else None
        self.seed, self.epoch = 0, 0

    def set_epoch(self, seed: int, epoch: int) -> None:
        """Choose the jitter of this epoch; call before each epoch (before DataLoader workers start)."""
        self.seed, self.epoch = seed, epoch

    def drop(self, bad: set[Path]) -> None:
        """Leave these files out (see find_bad_pairs)."""
        if self.cache:
            raise RuntimeError("dataset: drop files before filling the cache")
        self.files = [f for f in self.files if f not in bad]

    def __len__(self) -> int:
        return len(self.files)

    def halves(self, index: int, decoded: tuple[Image.Image, Image.Image] | None = None
               ) -> tuple[Image.Image, Image.Image]:
        """The file's A and B halves, each resized to a square of the working size; from `decoded`, the
        file's split_pair, where the caller needs that too (a JPEG decode is most of the time here)."""
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        a, b = (half.resize((self.size, self.size), Image.BICUBIC)
                for half in decoded or split_pair(self.files[index]))
        if self.cache is not None:
            self.cache[index] = (a, b)
        return a, b

    def preload(self) -> None:
        """Fill the cache now (cache=True), e.g. before DataLoader workers fork and share it."""
        for index in tqdm(range(len(self)), desc=f"caching {self.folder}", leave=False):
            self.halves(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pair(index)

    def pair(self, index: int, decoded: tuple[Image.Image, Image.Image] | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) of this index, as dataset[index] gives it; `decoded` as for halves()."""
        a, b = (image_to_tensor(half) for half in self.halves(index, decoded))
        if self.train:
            rng = torch.Generator().manual_seed(hash((self.seed, self.epoch, index)) & (2 ** 63 - 1))
            top, left = torch.randint(0, self.size - self.crop_size + 1, (2,), generator=rng).tolist()
            a = a[:, top:top + self.crop_size, left:left + self.crop_size]
            b = b[:, top:top + self.crop_size, left:left + self.crop_size]
            if self.flip and torch.rand((), generator=rng) < 0.5:
                a, b = a.flip(-1), b.flip(-1)
        return (a, b) if self.direction == "AtoB" else (b, a)


def find_bad_pairs(files: list[Path], min_side: int) -> dict[Path, str]:
    """Every file that cannot serve as a pair, with the reason: unreadable, truncated, not 2:1, too small."""
    bad = {}
    for path in tqdm(files, desc=f"checking {files[0].parent}" if files else "checking", leave=False):
        try:
            with Image.open(path) as image:
                image.load()  # decodes everything: a truncated file fails here
                width, height = image.size
                to_rgb(image)  # and values it would refuse (16-bit data of 12 bits, say) are found now
        except Exception as error:  # PIL raises many types for broken files
            bad[path] = f"unreadable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
            continue
        if width != 2 * height:
            bad[path] = f"{width}x{height} is not two squares side by side"
        elif height < min_side:
            bad[path] = f"halves of {height}px are smaller than --crop-size {min_side}"
    return bad


def describe_bad(bad: dict[Path, str], shown: int = 5) -> str:
    """One line: the first few bad files by name and reason, then how many more."""
    items = [f"{path.name} ({reason})" for path, reason in list(bad.items())[:shown]]
    more = f" and {len(bad) - shown} more" if len(bad) > shown else ""
    return f"{len(bad)} bad file(s) in {next(iter(bad)).parent}: {'; '.join(items)}{more}"


# ---------------------------------------------------------------- synthetic pairs
LAND, WATER, PARK, BUILDING, ROAD, MAJOR_ROAD = range(6)
MAP_COLOURS = np.array([(236, 230, 222), (178, 208, 246), (202, 222, 170),
                        (222, 220, 212), (250, 250, 250), (246, 222, 150)], dtype=np.float32)
PHOTO_COLOURS = np.array([(104, 102, 78), (38, 56, 66), (58, 84, 44),
                          (150, 146, 140), (118, 116, 112), (96, 96, 96)], dtype=np.float32)
PHOTO_GRAIN = np.array([18, 4, 22, 14, 6, 5], dtype=np.float32)  # texture strength per class


def synthetic_pair(rng: np.random.Generator, size: int = 600) -> Image.Image:
    """One A|B pair: a random town (water, parks, buildings, roads) drawn as a photo and as a map."""
    labels = Image.new("L", (size, size), LAND)
    draw = ImageDraw.Draw(labels)
    roof_shade = Image.new("L", (size, size), 128)
    shade = ImageDraw.Draw(roof_shade)
    if rng.random() < 0.7:  # a river: a wandering thick line across the tile
        x, points = rng.uniform(0, size), []
        for y in np.linspace(-20, size + 20, 12):
            x += rng.normal(0, size / 12)
            points.append((x, y))
        if rng.random() < 0.5:
            points = [(y, x) for x, y in points]
        draw.line(points, fill=WATER, width=int(rng.uniform(0.06, 0.18) * size), joint="curve")
    for _ in range(rng.integers(0, 3)):
        x0, y0 = rng.uniform(0, size, 2)
        w, h = rng.uniform(0.1, 0.3, 2) * size
        draw.rectangle((x0, y0, x0 + w, y0 + h), fill=PARK)
    spacing = rng.uniform(0.12, 0.25) * size
    for _ in range(int(rng.integers(20, 120))):  # buildings, skipping water
        x0, y0 = rng.uniform(0, size, 2)
        w, h = rng.uniform(0.02, 0.06, 2) * size
        if labels.getpixel((int(min(x0, size - 1)), int(min(y0, size - 1)))) == LAND:
            draw.rectangle((x0, y0, x0 + w, y0 + h), fill=BUILDING)
            shade.rectangle((x0, y0, x0 + w, y0 + h), fill=int(rng.integers(60, 220)))
    for axis in (0, 1):  # a street grid with one or two major roads
        offsets = np.arange(rng.uniform(0, spacing), size, spacing) + rng.normal(0, spacing / 10)
        majors = set(rng.choice(len(offsets), size=min(len(offsets), int(rng.integers(1, 3))), replace=False))
        for i, offset in enumerate(offsets):
            kind, width = (MAJOR_ROAD, int(size * 0.025)) if i in majors else (ROAD, int(size * 0.012))
            line = [(offset, 0), (offset, size)] if axis == 0 else [(0, offset), (size, offset)]
            draw.line(line, fill=kind, width=width)
    label_array = np.asarray(labels)
    map_rgb = MAP_COLOURS[label_array]
    grain = rng.normal(0, 1, (size, size, 1)).astype(np.float32) * PHOTO_GRAIN[label_array][..., None]
    roof = (np.asarray(roof_shade, dtype=np.float32)[..., None] - 128) * (label_array == BUILDING)[..., None]
    photo = PHOTO_COLOURS[label_array] + grain + roof * 0.6 + rng.normal(0, 6, 3)
    photo_image = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2))
    pair = Image.new("RGB", (2 * size, size))
    pair.paste(photo_image, (0, 0))
    pair.paste(Image.fromarray(map_rgb.astype(np.uint8)), (size, 0))
    return pair


def write_synthetic(out_dir: str | Path, count: int = 200, val_count: int = 16, size: int = 600,
                    seed: int = 0) -> Path:
    """Write count train and val_count val pairs as JPEGs in the maps layout; returns out_dir.

    A folder that holds anything is refused: its 1.jpg, 2.jpg ... (the real dataset's own names) would
    be overwritten. All or nothing: a new folder is written as OUT_DIR.partial and renamed at the end;
    an existing empty one is written in place (it keeps its owner and permissions), and what a failure
    or a Ctrl-C cut short is removed."""
    out_dir = Path(out_dir)
    if out_dir.is_file() or (out_dir.is_dir() and any(out_dir.iterdir())):
        raise FileExistsError(f"dataset: {out_dir} already exists and is not an empty folder; "
                              "choose a new folder for the synthetic pairs")
    in_place = out_dir.is_dir()
    staging = out_dir if in_place else out_dir.with_name(out_dir.name + ".partial")
    rng = np.random.default_rng(seed)
    try:
        if not in_place:
            shutil.rmtree(staging, ignore_errors=True)  # what an earlier Ctrl-C left behind
        for split, n in (("train", count), ("val", val_count)):
            (staging / split).mkdir(parents=True)
            for i in tqdm(range(1, n + 1), desc=f"synthetic {split}", leave=False):
                synthetic_pair(rng, size).save(staging / split / f"{i}.jpg", quality=95)
    except BaseException:
        for written in ((staging / "train", staging / "val") if in_place else (staging,)):
            shutil.rmtree(written, ignore_errors=True)
        raise
    if not in_place:
        staging.rename(out_dir)
    return out_dir


# ---------------------------------------------------------------- the real dataset
def download(root: str | Path = "data", url: str = MAPS_URL) -> Path:
    """Fetch the maps archive (about 250 MB) and unpack it into ROOT/maps; returns that folder.

    All or nothing: the archive is fetched as .part and renamed when whole, then unpacked beside the
    target and renamed into place, so that a cut download or a full disk leaves no half dataset that a
    later run would take for the whole one. A whole archive that could not be unpacked for lack of space
    is kept, and the next run unpacks it without fetching it again."""
    root = Path(root)
    target = root / "maps"
    if all((target / split).is_dir() and list_images(target / split) for split in ("train", "val")):
        print(f"dataset: {target} is already there")
        return target
    if target.exists():
        raise SystemExit(f"download: {target} exists but lacks train/ or val/ images; remove it and run this again")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SystemExit(f"download: cannot make the folder {root} ({error.strerror}); pass another --root") from None
    archive = root / "maps.tar.gz"
    if not archive.is_file():
        fetch(url, archive)
    unpacking = root / "maps.unpacking"
    shutil.rmtree(unpacking, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(unpacking, filter="data")  # 'data' refuses links and paths that leave the folder
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        shutil.rmtree(unpacking, ignore_errors=True)
        if isinstance(error, OSError) and error.errno is not None:  # the disk, not the archive
            raise SystemExit(f"download: cannot unpack into {root} ({error.strerror}); free space there and run "
                             f"this again, which unpacks the kept {archive}") from None
        archive.unlink()
        raise SystemExit(f"download: {url} did not unpack ({type(error).__name__}: {error_line(error)}); the "
                         "archive is cut short or not a maps.tar.gz: run this again to fetch it anew") from None
    archive.unlink()
    if not all((unpacking / "maps" / split).is_dir() for split in ("train", "val")):
        shutil.rmtree(unpacking)
        raise SystemExit(f"download: {url} holds no maps/train and maps/val; pass the pix2pix maps.tar.gz with --url")
    (unpacking / "maps").rename(target)
    shutil.rmtree(unpacking)  # anything the archive held beside maps/
    print(f"dataset: maps unpacked into {target}")
    return target


def fetch(url: str, archive: Path) -> None:
    """Download url to archive, through archive.part, so that only a whole file ever has the final name."""
    partial = archive.with_name(archive.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=archive.name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (ValueError, OSError) as error:  # URLError is an OSError; a malformed URL a ValueError
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        raise SystemExit(f"download: cannot fetch {url} ({reason}); check the internet connection (and free "
                         f"space), or fetch the file by hand and unpack it so that {archive.parent}/maps/train "
                         f"and {archive.parent}/maps/val exist") from None
    partial.replace(archive)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    synthetic = commands.add_parser("synthetic", help="write procedural A|B pairs (no internet needed)")
    synthetic.add_argument("out_dir", help="folder to create, with train/ and val/")
    synthetic.add_argument("--count", type=int, default=200, help="training pairs")
    synthetic.add_argument("--val-count", type=int, default=16, help="validation pairs")
    synthetic.add_argument("--size", type=int, default=600, help="side of each half, in pixels")
    synthetic.add_argument("--seed", type=int, default=0)
    fetch = commands.add_parser("download", help="fetch the pix2pix maps dataset into ROOT/maps")
    fetch.add_argument("--root", default="data", help="parent folder of maps/")
    fetch.add_argument("--url", default=MAPS_URL, help="where the maps.tar.gz archive lives")
    args = parser.parse_args(argv)
    if args.command == "synthetic":
        if args.count < 1 or args.val_count < 1 or args.size < 64:
            parser.error("--count and --val-count must be at least 1 and --size at least 64")
        try:
            write_synthetic(args.out_dir, args.count, args.val_count, args.size, args.seed)
        except OSError as error:  # the folder is taken, or cannot be written
            detail = f"cannot write {error.filename} ({error.strerror}); choose another folder or free space"
            raise SystemExit(f"dataset: {detail}" if error.filename else str(error)) from None
        print(f"dataset: {args.count} train and {args.val_count} val pairs written to {args.out_dir}")
    else:
        download(args.root, args.url)


if __name__ == "__main__":
    main()
