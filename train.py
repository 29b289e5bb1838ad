"""Train pix2pix: a U-Net generator against a PatchGAN discriminator, with an L1 term.

    python train.py --preset demo                       # a few minutes on a CPU, synthetic pairs
    python train.py --data data/maps --name maps        # the paper's setting (GPU advised)
    python train.py --resume runs/maps                  # continue a run where its last checkpoint left it

Everything goes to runs/NAME/: checkpoints/latest.pt, samples/epoch_NNN.png, losses.csv,
val.csv, loss_curve.png and config.json.
"""
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from config import Config, build_parser, parse_config
from dataset import PairedImageDataset, write_synthetic
from discriminator import Discriminator
from generator import Generator, read_checkpoint
from utils import (append_csv, inference_mode, pick_device, plot_losses, rng_state,
                   save_checkpoint, save_grid, seed_everything, set_rng_state)

DEMO_PAIRS = (150, 16)  # train and val pairs that --preset demo writes when its data folder is absent


def lr_factor(epoch: int, cfg: Config) -> float:
    """The official schedule (0-based epoch): constant for cfg.epochs, then linear decay over cfg.epochs_decay."""
    return 1.0 - max(0, epoch + 1 - cfg.epochs) / float(cfg.epochs_decay + 1)


def gan_loss(logits: torch.Tensor, real: bool, mode: str) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if mode == "lsgan":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


def validation_l1(generator: nn.Module, dataset: PairedImageDataset, count: int, device: torch.device,
                  seed: int) -> float:
    """Mean L1 (on [-1, 1]) of the generator on the first `count` val pairs, paper inference mode."""
    indices = range(len(dataset) if count == 0 else min(count, len(dataset)))
    total = 0.0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            inference_mode(generator, paper=True):
        torch.manual_seed(seed)  # the same dropout masks every epoch: scores comparable across epochs
        for i in indices:
            x, y = (t.unsqueeze(0).to(device) for t in dataset[i])
            total += F.l1_loss(generator(x), y).item()
    return total / len(indices)


def sample_rows(generator: nn.Module, dataset: PairedImageDataset, count: int,
                device: torch.device) -> list[list[torch.Tensor]]:
    """Rows of input | generated | target for the first `count` val pairs."""
    rows = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            inference_mode(generator, paper=True):
        torch.manual_seed(0)
        for i in range(min(count, len(dataset))):
            x, y = dataset[i]
            rows.append([x, generator(x.unsqueeze(0).to(device))[0].cpu(), y])
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
            parser.error(f"--resume {known.resume}: no checkpoints/latest.pt there; pass the run folder "
                         "(runs/NAME) of a run that finished at least one epoch")
        try:
            state = read_checkpoint(checkpoint_path)
        except ValueError as error:
            parser.error(str(error))
        cfg, args = parse_config(parser, argv, base=state["config"])
        run_dir = Path(known.resume)
    else:
        cfg, args = parse_config(parser, argv)
        run_dir = Path(cfg.runs_dir) / cfg.name
        if (run_dir / "checkpoints" / "latest.pt").exists():
            parser.error(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                         "or start a new one with --name OTHER")
        if args.preset == "demo" and not Path(cfg.data).exists():
            print(f"train: writing {DEMO_PAIRS[0]} + {DEMO_PAIRS[1]} synthetic pairs to {cfg.data} (once)")
            write_synthetic(cfg.data, *DEMO_PAIRS)
    return cfg, run_dir, state


def train(cfg: Config, run_dir: Path, state: dict | None = None) -> list[float]:
    """Run (or continue) training; returns the validation L1 after each epoch of this call."""
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    try:
        train_set = PairedImageDataset(cfg.data, "train", cfg.direction, True, cfg.load_size, cfg.crop_size,
                                       cfg.flip, cfg.cache)
        val_set = PairedImageDataset(cfg.data, "val", cfg.direction, False, cfg.load_size, cfg.crop_size)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error)) from None

    generator = Generator(ngf=cfg.ngf).to(device)
    discriminator = Discriminator(ndf=cfg.ndf).to(device)
    betas = (cfg.beta1, cfg.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=betas)
    start_epoch, step = 0, 0
    if state is not None:
        generator.load_state_dict(state["generator"])
        discriminator.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        start_epoch, step = state["epoch"], state["step"]
        set_rng_state(state["rng"])
        print(f"train: resuming {run_dir} at epoch {start_epoch + 1}, step {step}")

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    total_epochs = cfg.epochs + cfg.epochs_decay
    print(f"train: {len(train_set)} train / {len(val_set)} val pairs from {cfg.data}, device {device}, "
          f"epochs {start_epoch + 1}..{total_epochs}, writing to {run_dir}")
    if cfg.cache:
        train_set.preload()  # decoded once here; DataLoader workers inherit the memory
    loader_rng = torch.Generator()
    loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda", generator=loader_rng)
    history = []
    for epoch in range(start_epoch, total_epochs):
        loader_rng.manual_seed(cfg.seed * 100_003 + epoch)  # shuffle and worker seeds depend on the epoch only
        lr = cfg.lr * lr_factor(epoch, cfg)  # a function of the epoch alone: resuming needs no scheduler state
        for group in opt_g.param_groups + opt_d.param_groups:
            group["lr"] = lr
        generator.train()
        discriminator.train()
        rows, started = [], time.time()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{total_epochs}", leave=False, dynamic_ncols=True)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            fake = generator(x)

            # Discriminator: real pairs towards 1, generated pairs towards 0; halved as in the paper.
            discriminator.requires_grad_(True)
            opt_d.zero_grad(set_to_none=True)
            loss_d_fake = gan_loss(discriminator(x, fake.detach()), False, cfg.gan_mode)
            loss_d_real = gan_loss(discriminator(x, y), True, cfg.gan_mode)
            ((loss_d_fake + loss_d_real) * 0.5).backward()
            opt_d.step()

            # Generator: fool D, and stay close to the target in L1. D is frozen so no grads pile up there.
            discriminator.requires_grad_(False)
            opt_g.zero_grad(set_to_none=True)
            loss_g_gan = gan_loss(discriminator(x, fake), True, cfg.gan_mode)
            loss_g_l1 = F.l1_loss(fake, y) * cfg.lambda_l1
            (loss_g_gan + loss_g_l1).backward()
            opt_g.step()

            step += 1
            losses = torch.stack([loss_d_real, loss_d_fake, loss_g_gan, loss_g_l1]).detach()
            rows.append((step, losses))
            if step % 10 == 0 or len(rows) == 1:
                d_real, d_fake, g_gan, g_l1 = losses.tolist()
                bar.set_postfix(D=f"{(d_real + d_fake) / 2:.3f}", G_gan=f"{g_gan:.3f}", G_L1=f"{g_l1:.3f}")
        bar.close()

        for row_step, losses in rows:
            d_real, d_fake, g_gan, g_l1 = losses.tolist()
            append_csv(run_dir / "losses.csv", dict(step=row_step, epoch=epoch + 1, loss_D_real=f"{d_real:.5f}",
                                                    loss_D_fake=f"{d_fake:.5f}", loss_G_gan=f"{g_gan:.5f}",
                                                    loss_G_l1=f"{g_l1:.5f}", lr=f"{lr:.3g}"))
        val_l1 = validation_l1(generator, val_set, cfg.val_count, device, cfg.seed)
        history.append(val_l1)
        append_csv(run_dir / "val.csv", dict(epoch=epoch + 1, step=step, val_l1=f"{val_l1:.5f}",
                                             seconds=f"{time.time() - started:.1f}"))
        save_grid(sample_rows(generator, val_set, cfg.sample_count, device),
                  run_dir / "samples" / f"epoch_{epoch + 1:03d}.png")
        plot_losses(run_dir / "losses.csv", run_dir / "loss_curve.png")
        save_checkpoint(dict(generator=generator.state_dict(), discriminator=discriminator.state_dict(),
                             opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(),
                             epoch=epoch + 1, step=step, config=dataclasses.asdict(cfg), rng=rng_state()),
                        run_dir / "checkpoints" / "latest.pt")
        print(f"epoch {epoch + 1}/{total_epochs}  step {step}  val L1 {val_l1:.4f}  "
              f"{time.time() - started:.0f}s  lr {lr:.2e}")
    print(f"train: done. samples in {run_dir / 'samples'}, checkpoint {run_dir / 'checkpoints' / 'latest.pt'}, "
          f"loss curve {run_dir / 'loss_curve.png'}")
    return history


def main(argv: list[str] | None = None) -> list[float]:
    cfg, run_dir, state = prepare_run(argv)
    return train(cfg, run_dir, state)


if __name__ == "__main__":
    main(sys.argv[1:])
