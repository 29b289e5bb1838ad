"""Render maps with a trained generator and score them against the real ones.

    python evaluate.py --checkpoint runs/maps/checkpoints/latest.pt --data data/maps
    python evaluate.py --checkpoint runs/maps/checkpoints/latest.pt --images my_tiles/ --out my_maps/
    python evaluate.py --constant-baseline --data data/maps      # a flat image of the median map colour

On a paired split: index.html (worst first), grids (satellite | generated | real map), every
image, metrics.json (means) and metrics.csv (per image). On --images: one map per input, same
name and size. Inference follows the paper (dropout on, BatchNorm with the test image's own
statistics) unless --eval-mode.
"""
import argparse
import errno
import html
import json
import math
import os
import sys
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from config import ArgumentParser
from dataset import PairedImageDataset, describe_bad, find_bad_pairs, split_pair
from generator import Generator, read_checkpoint, weights_in
from palette import Palette, confusion, iou_from_confusion
from utils import (PNG, Autocast, BackgroundWriter, atomic_write, autocast_dtype, compile_for_inference, error_line,
                   hardware_summary, image_to_tensor, inference_mode, list_images, load_image, pick_device, save_grid,
                   tensor_to_image, translate, tune_runtime, write_csv)

COMPILE_FROM = 200  # images: compiling (10 to 30 s on a 2-core CPU) saves about 50 ms on each
# DataLoader workers that decode, and threads that write PNGs, while the generator runs: one of each per 2 cores
HELPERS = max(1, min(4, (os.cpu_count() or 2) // 2))
DEFINITIONS = {
    "l1": "mean absolute difference on 0-255 RGB, 256x256, against the real map resized bicubically",
    "psnr": "10 log10(255^2 / MSE) on 0-255 RGB per image, averaged (dB)",
    "ssim": "SSIM (Wang et al. 2004), 11x11 Gaussian window, sigma 1.5, per RGB channel, averaged",
    "gcgan_rmse": "GcGAN (Fu et al. 2019): sqrt(sum over H, W, RGB of diff^2 / (H*W)) on 0-255 at 256x256, real "
                  "map resized bilinearly; per image, averaged",
    "gcgan_acc5": "GcGAN pixel accuracy: share of all pixels of the split whose largest RGB difference is < 5",
    "gcgan_acc10": "as gcgan_acc5 with a threshold of 10",
    "miou": "mean over map classes present in the real maps of the pooled IoU; each pixel takes the class of the "
            "nearest colour in map_palette.json",
    "fid": "Frechet Inception Distance (pytorch-fid, pool3, 2048-d) between generated and real maps at 256x256",
}
PUBLISHED = {"CycleGAN (GcGAN paper)": {"gcgan_rmse": 28.15, "gcgan_acc5": 0.418, "gcgan_acc10": 0.637},
             "GcGAN best": {"gcgan_rmse": 27.98, "gcgan_acc5": 0.428, "gcgan_acc10": 0.646},
             "pix2pix (MMagic)": {"fid": 122.59}}


def to_255(tensor: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> 0..255 floats, rounded as when the image is saved, so scores match the files."""
    return ((tensor.float().clamp(-1, 1) + 1.0) * 127.5).round()


def psnr(fake: torch.Tensor, real: torch.Tensor) -> float:
    """On the 8-bit values as saved (so it matches the files); inf for identical images."""
    mse = (to_255(fake) - to_255(real)).pow(2).mean().item()
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def ssim(fake: torch.Tensor, real: torch.Tensor) -> float:
    """SSIM (Wang et al. 2004) on 0..255 RGB: 11x11 Gaussian window, sigma 1.5, channels averaged.
    The window is an outer product, so it is applied as two 1-D passes over the five maps as channels
    of one depthwise convolution: 8x faster than five 2-D ones, which took a third of evaluate's time."""
    x, y = to_255(fake).reshape(-1, *fake.shape[-2:]), to_255(real).reshape(-1, *real.shape[-2:])
    maps = torch.cat([x, y, x * x, y * y, x * y])[None]
    coords = torch.arange(11, dtype=torch.float32, device=x.device) - 5
    gauss = torch.exp(-coords ** 2 / (2 * 1.5 ** 2))
    gauss = (gauss / gauss.sum()).expand(len(maps[0]), 1, 11)
    # 'valid' filtering, as the reference code
    blurred = F.conv2d(F.conv2d(maps, gauss[..., None], groups=len(maps[0])), gauss[:, :, None], groups=len(maps[0]))
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = blurred[0].split(len(x))
    var_x, var_y, cov = mean_xx - mu_x ** 2, mean_yy - mu_y ** 2, mean_xy - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return score.mean().item()


def gcgan_errors(fake: torch.Tensor, real_255: torch.Tensor) -> tuple[float, torch.Tensor]:
    """GcGAN's per-image RMSE and each pixel's largest channel difference (fake in [-1, 1], real on 0-255)."""
    diff = to_255(fake) - real_255.float()
    height, width = diff.shape[-2:]
    return math.sqrt(diff.pow(2).sum().item() / (height * width)), diff.abs().amax(dim=0)


def score(fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """L1, PSNR and SSIM of one generated image against its real counterpart (tensors in [-1, 1])."""
    return {"l1": (to_255(fake) - to_255(real)).abs().mean().item(), "psnr": psnr(fake, real),
            "ssim": ssim(fake, real)}


class ConstantImage(nn.Module):
    """A 'generator' that answers every input with one flat colour: the baseline that metrics must beat."""

    def __init__(self, rgb_255: torch.Tensor):
        super().__init__()
        self.value = nn.Parameter(rgb_255.float() / 127.5 - 1.0, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.view(1, 3, 1, 1).expand(x.shape[0], 3, *x.shape[-2:]).clone()


class ScoredPairs(Dataset):
    """The first `count` pairs of a split as evaluate.py scores them: the generator's input and the target as
    training's validation sees them, and the real map resized bilinearly for GcGAN's metrics. Read in
    DataLoader workers, so that decoding overlaps the generator; an unreadable file comes back as its message."""

    def __init__(self, dataset: PairedImageDataset, count: int):
        self.dataset, self.count = dataset, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | str:
        try:
            decoded = split_pair(self.dataset.files[index])  # once, for both uses below
        except ValueError as error:
            return str(error)
        x, y = self.dataset.pair(index, decoded)
        target_half = decoded[1 if self.dataset.direction == "AtoB" else 0]
        real_255 = image_to_tensor(target_half.resize(x.shape[-2:][::-1], Image.BILINEAR)) * 127.5 + 127.5
        return x, y, real_255.round()


def save_png(tensor: torch.Tensor, path: Path) -> None:
    tensor_to_image(tensor).save(path, **PNG)


def evaluate_split(generator: nn.Module, data: Path, split: str, direction: str, out: Path, paper: bool,
                   seed: int, limit: int, rows_per_grid: int, fid: bool = False, compile_setting: str = "off") -> dict:
    """Translate a paired split; write images, grids, metrics and index.html; return the summary.
    compile_setting is --compile: auto compiles on the CPU where the split has COMPILE_FROM images or more."""
    try:
        dataset = PairedImageDataset(data, split, direction, train=False)
        palette = Palette()
    except (OSError, ValueError) as error:
        raise SystemExit(str(error)) from None
    count = len(dataset) if limit == 0 else min(limit, len(dataset))
    bad = find_bad_pairs(dataset.files[:count], min_side=1)  # every one named now, not the first after minutes
    if bad:
        raise SystemExit(f"evaluate: {describe_bad(bad)}; fix or remove them")
    device = next(generator.parameters()).device
    for folder in ("inputs", "maps", "targets"):
        make_folder(out / folder)
    per_image, rows = [], []
    pooled = {"pixels": 0, "below5": 0, "below10": 0}
    classes = torch.zeros(len(palette.names), len(palette.names), dtype=torch.long)
    if compile_setting == "on" or (compile_setting == "auto" and device.type == "cpu" and count >= COMPILE_FROM):
        with inference_mode(generator, paper=paper, seed=seed):
            generator = compiled_or_eager(generator, dataset[0][0].unsqueeze(0).to(device))
    pairs = DataLoader(ScoredPairs(dataset, count), batch_size=None, num_workers=HELPERS if count > 1 else 0,
                       pin_memory=device.type == "cuda",
                       generator=torch.Generator())  # its workers' seeds: the dropout masks' RNG is left alone
    with BackgroundWriter(HELPERS) as writer, inference_mode(generator, paper=paper, seed=seed):
        for index, pair in enumerate(tqdm(pairs, desc=f"evaluate {split}", leave=False)):
            if isinstance(pair, str):
                raise SystemExit(f"evaluate: {pair}")
            # copies: a tensor from a worker holds an open file until freed, and rows keep a grid's worth
            x, y, real_255 = (tensor.clone() for tensor in pair)
            path = dataset.files[index]
            fake = generator(x.unsqueeze(0).to(device, non_blocking=True))[0].float().cpu()
            rmse, worst_channel = gcgan_errors(fake, real_255)
            image_classes = confusion(palette.classify(to_255(fake)), palette.classify(real_255),
                                      len(palette.names))
            classes += image_classes
            iou, present = iou_from_confusion(image_classes)
            pooled["pixels"] += worst_channel.numel()
            pooled["below5"] += int((worst_channel < 5).sum())
            pooled["below10"] += int((worst_channel < 10).sum())
            file_name = f"{index:05d}_{path.stem}.png"  # the index keeps names unique across extensions
            for folder, image in (("inputs", x), ("maps", fake), ("targets", y)):
                writer.submit(save_png, image, out / folder / file_name)
            per_image.append({"image": path.name, "file": file_name, **score(fake, y), "gcgan_rmse": rmse,
                              "gcgan_acc5": (worst_channel < 5).float().mean().item(),
                              "gcgan_acc10": (worst_channel < 10).float().mean().item(),
                              "miou": iou[present].mean().item()})
            rows.append([x, fake, y])
            if len(rows) == rows_per_grid or index == count - 1:
                writer.submit(save_grid, rows, out / "grids" / f"grid_{index // rows_per_grid:03d}.png")
                rows = []

    iou, present = iou_from_confusion(classes)
    means = {key: sum(r[key] for r in per_image) / len(per_image) for key in ("l1", "psnr", "ssim", "gcgan_rmse")}
    means["gcgan_acc5"] = pooled["below5"] / pooled["pixels"]
    means["gcgan_acc10"] = pooled["below10"] / pooled["pixels"]
    means["miou"] = iou[present].mean().item()
    if fid:
        means.update(frechet_distance(out / "targets", out / "maps", device))
    mode = "paper (dropout on, test-image BatchNorm statistics)" if paper else "eval"
    summary = {"inference_mode": "none: a constant image" if isinstance(generator, ConstantImage) else mode,
               "data": str(data), "split": split, "direction": direction, "images": len(per_image), "seed": seed,
               "metrics": means,
               "class_iou": {name: (round(iou[i].item(), 4) if present[i] else None)
                             for i, name in enumerate(palette.names)},
               "definitions": DEFINITIONS, "published_aerial_to_map": PUBLISHED}
    atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))
    write_csv(out / "metrics.csv", per_image)
    write_report(summary, per_image, out / "index.html")
    return summary


def frechet_distance(real_dir: Path, fake_dir: Path, device: torch.device) -> dict:
    """FID with pytorch-fid's standard Inception weights; {} and one line when it cannot run."""
    try:
        from pytorch_fid.fid_score import calculate_fid_given_paths
    except ImportError:
        print("evaluate: --fid needs pytorch-fid (pip install -r requirements-dev.txt); FID skipped")
        return {}
    try:
        return {"fid": float(calculate_fid_given_paths([str(real_dir), str(fake_dir)], batch_size=16,
                                                       device=device, dims=2048, num_workers=0))}
    except Exception as error:  # typically the Inception weights cannot be downloaded
        reason = error_line(error)
        print(f"evaluate: FID skipped: {reason} (the Inception weights download needs internet once)")
        return {}


def write_report(summary: dict, per_image: list[dict], path: Path) -> None:
    """index.html: mean metrics, then one row per image, worst L1 first; click a header to sort."""
    columns = ["l1", "psnr", "ssim", "gcgan_rmse", "gcgan_acc5", "gcgan_acc10", "miou"]
    means = " &nbsp; ".join(f"<b>{html.escape(k)}</b> {v:.4g}" for k, v in summary["metrics"].items())
    body = []
    for row in sorted(per_image, key=lambda r: -r["l1"]):
        link = urllib.parse.quote(row["file"])
        cells = "".join(f'<td><img src="{folder}/{link}" width="256" height="256" loading="lazy"></td>'
                        for folder in ("inputs", "maps", "targets"))
        numbers = "".join(f"<td>{row[c]:.4g}</td>" for c in columns)
        body.append(f"<tr><td>{html.escape(row['image'])}</td>{cells}{numbers}</tr>")
    headers = "".join(f"<th onclick=\"sortBy({i + 4})\">{html.escape(c)} &#8597;</th>" for i, c in enumerate(columns))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>sat2map evaluation: {html.escape(summary['split'])}</title>
<style>body{{font-family:sans-serif}} td,th{{padding:2px 6px;text-align:right}} th{{cursor:pointer}}</style>
</head><body>
<h1>{html.escape(summary['data'])} / {html.escape(summary['split'])}: {summary['images']} images,
{html.escape(summary['inference_mode'])} mode</h1>
<p>{means}</p>
<p>Rows: satellite | generated | real map, worst L1 first. Click a column header to sort by it.</p>
<table id="rows"><thead><tr><th>image</th><th>satellite</th><th>generated</th><th>real map</th>{headers}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<script>
let ascending = false;
function sortBy(column) {{
  const body = document.querySelector('#rows tbody');
  const rows = Array.from(body.rows);
  ascending = !ascending;
  rows.sort((a, b) => (parseFloat(a.cells[column].textContent) - parseFloat(b.cells[column].textContent))
                      * (ascending ? 1 : -1));
  rows.forEach(row => body.appendChild(row));
}}
</script></body></html>
"""
    atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))


def compiled_or_eager(generator: nn.Module, example: torch.Tensor) -> nn.Module:
    """The generator compiled by utils.compile_for_inference and run once on example (all images of a
    split have its size, so that is the only compile); where compiling fails (no C++ compiler, say), the
    generator as it was, with one line saying why."""
    print("evaluate: compiling the generator (--compile; 10 to 30 s on a small CPU)", flush=True)
    started = time.perf_counter()
    try:
        compiled = compile_for_inference(generator)
        compiled(example)
    except Exception as error:  # inductor's failures share no base class
        reason = error_line(error)[:200]
        print(f"evaluate: compiling failed ({reason}); translating without it (--compile off skips the attempt)")
        return generator
    print(f"evaluate: compiled in {time.perf_counter() - started:.0f} s")
    return compiled


def translate_folder(generator: nn.Module, images: Path, out: Path, paper: bool, seed: int, limit: int = 0) -> int:
    """Write one map per image in `images` (any size or mode), same size, as NAME.png (see map_names),
    with the photo's world file, if it has one, so that GIS software places the map where the photo lies."""
    if not images.is_dir():
        raise SystemExit(f"evaluate: --images {images} is not a folder; pass a folder of satellite images")
    files = list_images(images)[:limit or None]
    if not files:
        raise SystemExit(f"evaluate: {images} has no images (*.jpg, *.png, ...); put satellite tiles there")
    if out.resolve() == images.resolve():
        raise SystemExit(f"evaluate: --out {out} is the --images folder: the maps would overwrite the photos "
                         "there; choose another --out")
    bad = {}
    for path in tqdm(files, desc=f"checking {images}", leave=False):  # every bad one named now, before any map
        try:
            load_image(path, upright=True)
        except ValueError as error:
            bad[path] = str(error).removeprefix(f"{path}: ")
    if bad:
        raise SystemExit(f"evaluate: {describe_bad(bad)}; fix or move them")
    make_folder(out)
    with BackgroundWriter(HELPERS, backlog=HELPERS) as writer:  # maps of large photos are large
        for path, name in tqdm(list(zip(files, map_names(files))), desc="translate", leave=False):
            map_image = translate(generator, load_image(path, upright=True), paper=paper, seed=seed)
            writer.submit(atomic_write, out / name, lambda tmp, image=map_image: image.save(tmp, **PNG))
            copy_georeference(path, out / name)
    return len(files)


WORLD_FILE_SUFFIXES = {".jpg": (".jgw", ".jpgw"), ".jpeg": (".jgw", ".jpegw"), ".png": (".pgw", ".pngw"),
                       ".tif": (".tfw", ".tifw"), ".tiff": (".tfw", ".tiffw"), ".bmp": (".bpw", ".bmpw")}


def copy_georeference(photo: Path, map_png: Path) -> None:
    """Copy the photo's world file (as MAP.pgw) and projection (.prj): the map has the photo's pixel grid."""
    world_file = sidecar(photo, (*WORLD_FILE_SUFFIXES.get(photo.suffix.lower(), ()), ".wld"))
    if world_file is None:
        return
    with Image.open(photo) as image:
        if image.getexif().get(0x0112, 1) != 1:  # the map is turned upright; the world file describes the file
            print(f"evaluate: warning: {photo.name} is turned by its EXIF orientation; its world file is not copied")
            return
    map_png.with_suffix(".pgw").write_bytes(world_file.read_bytes())
    projection = sidecar(photo, (".prj",))
    if projection:
        map_png.with_suffix(".prj").write_bytes(projection.read_bytes())


def sidecar(photo: Path, suffixes: tuple[str, ...]) -> Path | None:
    """The first file beside the photo with its name and one of these suffixes, in lower or upper case."""
    candidates = (photo.with_suffix(case) for suffix in suffixes for case in (suffix, suffix.upper()))
    return next((path for path in candidates if path.is_file()), None)


def make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SystemExit(f"evaluate: cannot make the folder {folder} ({error.strerror or error}); "
                         "pass an --out you can write to") from None


def map_names(files: list[Path]) -> list[str]:
    """tile.png for tile.jpg; where two inputs share a stem, tile_jpg.png and tile_png.png; where even
    those clash, the input's position is added, so that no map overwrites another."""
    stems = Counter(path.stem for path in files)
    names = [path.stem if stems[path.stem] == 1 else f"{path.stem}_{path.suffix[1:]}" for path in files]
    taken = Counter(names)
    return [f"{name}.png" if taken[name] == 1 else f"{name}_{i}.png" for i, name in enumerate(names)]


def main(argv: list[str] | None = None) -> dict | int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="train.py checkpoint, export.py release file or official .pth (path or URL)")
    model.add_argument("--constant-baseline", action="store_true",
                       help="score a flat image of the median training-map colour (map_palette.json) instead")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", help="folder with paired splits (train/, val/); default: the one the checkpoint "
                                       "was trained on, else data/maps")
    source.add_argument("--images", help="folder of satellite images of any size to translate instead")
    parser.add_argument("--split", help="which paired split of --data to score (default: val)")
    parser.add_argument("--direction", default=None, choices=("AtoB", "BtoA"),
                        help="default: the direction stored in the checkpoint, else AtoB")
    parser.add_argument("--out", help="output folder (default: beside the checkpoint, eval_SPLIT or translated)")
    parser.add_argument("--eval-mode", action="store_true", help="model.eval() instead of the paper's test mode")
    parser.add_argument("--limit", type=int, default=0, help="only the first N pairs or --images (0: all)")
    parser.add_argument("--rows-per-grid", type=int, default=8, help="pairs per grid image")
    parser.add_argument("--fid", action="store_true", help="also FID (needs pytorch-fid, and internet once)")
    parser.add_argument("--seed", type=int, default=0, help="fixes the dropout masks of paper mode")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                        help="mixed precision: auto = bf16 on CPUs with native bf16, TF32 on Ampere+ GPUs, fp16 on "
                             "older GPUs, else fp32")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="NHWC memory layout (faster convolutions)")
    parser.add_argument("--compile", default="auto", choices=("auto", "on", "off"),
                        help="paired splits: compile the generator with its weights frozen in (on a 2-core CPU "
                             f"1.4x faster per image, after 10 to 30 s); auto = on the CPU for {COMPILE_FROM} images "
                             "or more")
    args = parser.parse_args(argv)
    if args.limit < 0 or args.rows_per_grid < 1:
        parser.error("--limit must be >= 0 and --rows-per-grid >= 1")
    if not 0 <= args.seed < 2 ** 32:
        parser.error(f"--seed must lie in [0, 2^32), as in train.py; got {args.seed}")
    if args.images and args.split:
        parser.error("--split picks a split of --data; --images translates every image of its folder")
    if args.images and args.compile == "on":
        parser.error("--compile is for paired splits: --images come in any size, and each new size would compile "
                     "again")
    args.split = args.split or "val"

    device = pick_device(args.device)
    stored_config: dict = {}
    if args.constant_baseline:
        try:
            generator, default_out = ConstantImage(Palette().median).to(device), Path("runs") / "constant_baseline"
        except ValueError as error:
            raise SystemExit(str(error)) from None
    else:
        try:
            state = read_checkpoint(args.checkpoint, map_location=device)
            generator = Generator.from_state_dict(weights_in(state, "generator")).to(device)
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"evaluate: {error}") from None
        stored_config = state.get("config") if isinstance(state.get("config"), dict) else {}
        default_out = Path(args.checkpoint).parent if "://" not in args.checkpoint else Path("runs") / "downloaded"
        if default_out.name == "checkpoints":  # runs/NAME/checkpoints/latest.pt -> write into runs/NAME/
            default_out = default_out.parent
    if args.channels_last:
        generator.to(memory_format=torch.channels_last)
    tune_runtime(device)
    amp_dtype = autocast_dtype(device, args.amp)
    if amp_dtype is not None and not args.constant_baseline:
        generator = Autocast(generator, amp_dtype)
    if args.constant_baseline:
        print(f"evaluate: scoring one flat colour, the median of the training maps, on {device}")
    else:
        print(f"evaluate: {device} = {hardware_summary(device)}; autocast {amp_dtype or 'off (fp32)'}, "
              f"channels_last {'on' if args.channels_last else 'off'}")
    paper = not args.eval_mode
    out = Path(args.out or default_out / ("translated" if args.images else f"eval_{args.split}"))
    try:
        if args.images:
            count = translate_folder(generator, Path(args.images).expanduser(), out, paper, args.seed, args.limit)
            print(f"evaluate: {count} map{'s' * (count != 1)} written to {out}")
            return count
        direction = args.direction or stored_config.get("direction", "AtoB")
        data = args.data or stored_config.get("data") or "data/maps"
        if not args.data and stored_config.get("data"):
            print(f"evaluate: --data {data}, where the checkpoint was trained")
        summary = evaluate_split(generator, Path(data), args.split, direction, out, paper, args.seed,
                                 args.limit, args.rows_per_grid, args.fid,
                                 "off" if args.constant_baseline else args.compile)
    except OSError as error:  # one line where the results could not be written; anything else as it is
        if error.filename is None and error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise SystemExit(f"evaluate: writing into {out} failed ({error.strerror}); free space or choose "
                             "another --out") from None
        if error.filename is not None and Path(error.filename).resolve().is_relative_to(out.resolve()):
            raise SystemExit(f"evaluate: writing {error.filename} failed ({error.strerror or error}); "
                             "free space or choose another --out") from None
        raise
    m = summary["metrics"]
    print(f"evaluate: {summary['images']} images  L1 {m['l1']:.2f}  PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.4f}  "
          f"GcGAN RMSE {m['gcgan_rmse']:.2f}  acc<5 {m['gcgan_acc5']:.1%}  acc<10 {m['gcgan_acc10']:.1%}  "
          f"mIoU {m['miou']:.3f}" + (f"  FID {m['fid']:.2f}" if "fid" in m else ""))
    print(f"evaluate: report {out / 'index.html'}, metrics {out / 'metrics.json'}, grids in {out / 'grids'}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
