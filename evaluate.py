"""Render maps with a trained generator and score them against the real ones.

    python evaluate.py --checkpoint runs/maps/checkpoints/latest.pt --data data/maps
    python evaluate.py --checkpoint runs/maps/checkpoints/latest.pt --images my_tiles/ --out my_maps/

On a paired split: grids (satellite | generated | real map), one generated map per pair,
metrics.json (means) and metrics.csv (per image). On --images: one map per input, same
name and size. Inference follows the paper (dropout on, BatchNorm with the test image's
own statistics) unless --eval-mode.
"""
import argparse
import csv
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dataset import PairedImageDataset
from generator import Generator, generator_weights, read_checkpoint
from utils import atomic_write, inference_mode, list_images, load_image, pick_device, save_grid, tensor_to_image, \
    translate


def to_255(tensor: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> 0..255 floats, rounded as when the image is saved, so scores match the files."""
    return ((tensor.float().clamp(-1, 1) + 1.0) * 127.5).round()


def l1_255(fake: torch.Tensor, real: torch.Tensor) -> float:
    return (to_255(fake) - to_255(real)).abs().mean().item()


def psnr(fake: torch.Tensor, real: torch.Tensor) -> float:
    mse = (to_255(fake) - to_255(real)).pow(2).mean().item()
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(255.0 ** 2 / mse)).item()


def ssim(fake: torch.Tensor, real: torch.Tensor) -> float:
    """SSIM (Wang et al. 2004) on 0..255 RGB: 11x11 Gaussian window, sigma 1.5, channels averaged."""
    x, y = to_255(fake).reshape(-1, 1, *fake.shape[-2:]), to_255(real).reshape(-1, 1, *real.shape[-2:])
    coords = torch.arange(11, dtype=torch.float32) - 5
    gauss = torch.exp(-coords ** 2 / (2 * 1.5 ** 2))
    window = (gauss[:, None] * gauss[None, :] / gauss.sum() ** 2)[None, None].to(x.device)
    blur = lambda t: F.conv2d(t, window)  # noqa: E731 - 'valid' filtering, as the reference code
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x ** 2, blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return score.mean().item()


def score(fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
    """Every metric for one generated image against its real counterpart (tensors in [-1, 1])."""
    return {"l1": l1_255(fake, real), "psnr": psnr(fake, real), "ssim": ssim(fake, real)}


def evaluate_split(generator: Generator, data: Path, split: str, direction: str, out: Path, paper: bool,
                   seed: int, limit: int, rows_per_grid: int) -> dict:
    """Translate a paired split, write maps, grids and metrics; returns the mean metrics."""
    try:
        dataset = PairedImageDataset(data, split, direction, train=False)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error)) from None
    count = len(dataset) if limit == 0 else min(limit, len(dataset))
    device = next(generator.parameters()).device
    per_image, rows = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            inference_mode(generator, paper=paper):
        torch.manual_seed(seed)
        for index in tqdm(range(count), desc=f"evaluate {split}", leave=False):
            x, y = dataset[index]
            fake = generator(x.unsqueeze(0).to(device))[0].cpu()
            name = dataset.files[index].stem
            tensor_to_image(fake).save(out / "maps" / f"{name}.png")
            per_image.append({"image": dataset.files[index].name, **score(fake, y)})
            rows.append([x, fake, y])
            if len(rows) == rows_per_grid or index == count - 1:
                save_grid(rows, out / "grids" / f"grid_{index // rows_per_grid:03d}.png")
                rows = []
    means = {key: sum(r[key] for r in per_image) / len(per_image) for key in ("l1", "psnr", "ssim")}
    summary = {"inference_mode": "paper (dropout on, test-batch BatchNorm)" if paper else "eval (model.eval())",
               "split": split, "images": len(per_image), "seed": seed,
               "metrics": means, "definitions": {
                   "l1": "mean absolute difference on 0-255 RGB at 256x256",
                   "psnr": "10 log10(255^2 / MSE) on 0-255 RGB, per image, averaged (dB)",
                   "ssim": "SSIM, 11x11 Gaussian window sigma 1.5, on 0-255 RGB channels, averaged"}}
    atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=2)))

    def write_csv(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(per_image[0]))
            writer.writeheader()
            writer.writerows(per_image)
    atomic_write(out / "metrics.csv", write_csv)
    return means


def translate_folder(generator: Generator, images: Path, out: Path, paper: bool, seed: int) -> int:
    """Write one map per image in `images` (any size or mode), same name and size, as PNG."""
    if not images.is_dir():
        raise SystemExit(f"evaluate: --images {images} is not a folder; pass a folder of satellite images")
    files = list_images(images)
    if not files:
        raise SystemExit(f"evaluate: {images} has no images (*.jpg, *.png, ...); put satellite tiles there")
    for path in tqdm(files, desc="translate", leave=False):
        try:
            image = load_image(path)
        except ValueError as error:
            raise SystemExit(f"evaluate: {error}") from None
        translate(generator, image, paper=paper, seed=seed).save(out / f"{path.stem}.png")
    return len(files)


def main(argv: list[str] | None = None) -> dict | int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="train.py checkpoint, release file or official .pth (path or URL)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", default="data/maps", help="folder with paired splits (train/, val/)")
    source.add_argument("--images", help="folder of satellite images of any size to translate instead")
    parser.add_argument("--split", default="val", help="which paired split of --data to score")
    parser.add_argument("--direction", default=None, choices=("AtoB", "BtoA"),
                        help="default: the direction stored in the checkpoint, else AtoB")
    parser.add_argument("--out", help="output folder (default: beside the checkpoint, eval_SPLIT or translated)")
    parser.add_argument("--eval-mode", action="store_true", help="model.eval() instead of the paper's test mode")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N pairs (0: all)")
    parser.add_argument("--rows-per-grid", type=int, default=8, help="pairs per grid image")
    parser.add_argument("--seed", type=int, default=0, help="fixes the dropout masks of paper mode")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    if args.limit < 0 or args.rows_per_grid < 1:
        parser.error("--limit must be >= 0 and --rows-per-grid >= 1")

    device = pick_device(args.device)
    try:
        state = read_checkpoint(args.checkpoint, map_location=device)
        generator = Generator.from_state_dict(generator_weights(state)).to(device)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"evaluate: {error}") from None
    stored_config = state.get("config", {}) if isinstance(state.get("config"), dict) else {}
    paper = not args.eval_mode
    checkpoint_dir = Path(args.checkpoint).parent if "://" not in args.checkpoint else Path(".")
    if checkpoint_dir.name == "checkpoints":  # runs/NAME/checkpoints/latest.pt -> write into runs/NAME/
        checkpoint_dir = checkpoint_dir.parent
    if args.images:
        out = Path(args.out or checkpoint_dir / "translated")
        out.mkdir(parents=True, exist_ok=True)
        count = translate_folder(generator, Path(args.images), out, paper, args.seed)
        print(f"evaluate: {count} maps written to {out}")
        return count
    out = Path(args.out or checkpoint_dir / f"eval_{args.split}")
    (out / "maps").mkdir(parents=True, exist_ok=True)
    direction = args.direction or stored_config.get("direction", "AtoB")
    means = evaluate_split(generator, Path(args.data), args.split, direction, out, paper, args.seed,
                           args.limit, args.rows_per_grid)
    print(f"evaluate: L1 {means['l1']:.2f}  PSNR {means['psnr']:.2f} dB  SSIM {means['ssim']:.4f}  "
          f"-> {out / 'metrics.json'}, grids in {out / 'grids'}")
    return means


if __name__ == "__main__":
    main(sys.argv[1:])
