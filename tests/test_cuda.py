"""The CUDA code paths: fp16 loss scaling, the default GPU settings, bf16 + channels_last, evaluation, NCCL + SyncBN.

Skipped without a GPU (CI has none); run on a GPU machine with `python -m pytest -q tests/test_cuda.py`.
"""
import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import evaluate
import train
from generator import Generator, read_checkpoint
from tests.conftest import TINY
from utils import Autocast, inference_mode

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
ROOT = Path(__file__).resolve().parents[1]


def val_l1(run_dir: Path) -> list[float]:
    with open(run_dir / "val.csv") as f:
        return [float(row["val_l1"]) for row in csv.DictReader(f)]


def test_fp16_loss_scaling_trains_and_resumes(synthetic, tmp_path, capsys):
    common = [*TINY, "--data", str(synthetic), "--runs-dir", str(tmp_path), "--name", "fp16", "--device", "cuda",
              "--amp", "fp16", "--epochs-decay", "0"]
    train.main([*common, "--epochs", "1"])
    assert "autocast torch.float16" in capsys.readouterr().out
    scale = read_checkpoint(tmp_path / "fp16" / "checkpoints" / "latest.pt")["scaler"]["scale"]
    assert math.isfinite(scale) and scale > 1  # GradScaler is live, not a no-op
    history = train.main(["--resume", str(tmp_path / "fp16"), "--epochs", "2"])
    state = read_checkpoint(tmp_path / "fp16" / "checkpoints" / "latest.pt")
    assert len(history) == 1 and state["step"] == 24 and all(math.isfinite(v) for v in val_l1(tmp_path / "fp16"))


def test_default_gpu_settings_learn_like_the_official_baseline(synthetic, tmp_path, capsys):
    """CUDA graphs, channels_last, fused Adam, freed gradients (and fp16 on pre-Ampere GPUs): the same learning as
    the official code."""
    common = [*TINY, "--data", str(synthetic), "--runs-dir", str(tmp_path), "--device", "cuda", "--epochs", "3",
              "--epochs-decay", "1", "--lr", "1e-3"]
    fast = train.main([*common, "--name", "fast"])
    printed = capsys.readouterr().out
    assert "channels_last on" in printed and "fused Adam on" in printed and "free grads on" in printed
    assert "CUDA graphs on" in printed
    baseline = train.main([*common, "--name", "baseline", "--amp", "off", "--channels-last", "off",
                           "--no-fused-adam", "--no-free-grads", "--no-cuda-graphs"])
    assert abs(fast[-1] - baseline[-1]) / baseline[-1] < 0.10, (fast, baseline)


def test_gpu_inference_agrees_with_the_cpu():
    """fp32 on the GPU (TF32 convolutions) and bf16 + channels_last stay close to the CPU's fp32 output."""
    torch.manual_seed(0)
    model = Generator(ngf=8)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with inference_mode(model, paper=False):
        reference = model(x)
    gpu = model.cuda()
    with inference_mode(gpu, paper=False):
        fp32 = gpu(x.cuda()).cpu()
        gpu.to(memory_format=torch.channels_last)
        bf16 = Autocast(gpu, torch.bfloat16)(x.cuda().contiguous(memory_format=torch.channels_last)).cpu()
    assert bf16.dtype == torch.float32
    assert (fp32 - reference).abs().max() < 1e-2
    assert (bf16 - reference).abs().mean() < 2e-2 and (bf16 - reference).abs().max() < 0.2


def test_evaluate_on_the_gpu_writes_metrics(tiny_run, synthetic, tmp_path, capsys):
    out = tmp_path / "eval"
    evaluate.main(["--checkpoint", str(tiny_run / "checkpoints" / "latest.pt"), "--data", str(synthetic),
                   "--out", str(out), "--device", "cuda"])
    assert "evaluate: cuda = " in capsys.readouterr().out
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(math.isfinite(float(row["psnr"])) for row in rows)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs a GPU per process: two GPUs")
def test_torchrun_on_nccl_with_sync_bn_trains_one_model(synthetic, tmp_path):
    gpus = torch.cuda.device_count()
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus),
                             "--standalone", "train.py", "--data", str(synthetic), "--runs-dir", str(tmp_path),
                             "--name", "nccl", "--epochs", "1", "--epochs-decay", "0", "--sync-bn", *TINY,
                             "--device", "cuda"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"G and D weights identical in all {gpus} processes" in result.stdout
    assert "CUDA graphs off" in result.stdout  # DistributedDataParallel's hooks run between the kernels
    assert read_checkpoint(tmp_path / "nccl" / "checkpoints" / "latest.pt")["step"] == math.ceil(12 / gpus)
