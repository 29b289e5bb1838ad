"""torchrun with 2 CPU processes (gloo): one set of weights, one writer, resumable either way."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from generator import read_checkpoint
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--standalone", "train.py", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_two_processes_train_one_model_and_only_rank_0_writes(synthetic, tmp_path):
    run_dir = tmp_path / "ddp"
    first = torchrun("--data", str(synthetic), "--runs-dir", str(tmp_path), "--name", "ddp", "--epochs", "1",
                     "--epochs-decay", "0", *TINY)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "G and D weights identical in all 2 processes" in first.stdout
    assert "2 processes, 1 pair(s) each: 2 per step" in first.stdout
    assert first.stdout.count("train: done") == 1  # the other process prints nothing
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "latest.pt"]
    assert [p.name for p in (run_dir / "samples").iterdir()] == ["epoch_001.png"]
    state = read_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert state["step"] == 6 and len(state["rng"]) == 2  # 12 pairs shared by 2 processes; a state per process
    assert not any(key.startswith("module.") for key in state["generator"])  # loads in a single process
    assert len((run_dir / "losses.csv").read_text().strip().splitlines()) == 1 + 6

    resumed = torchrun("--resume", str(run_dir), "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout and "identical in all 2 processes" in resumed.stdout
    assert read_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"] == 12

    history = train.main(["--resume", str(run_dir), "--epochs", "3"])  # and on in one process
    single = read_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert len(history) == 1 and single["step"] == 24 and len(single["rng"]) == 1
    assert all(torch.isfinite(v).all() for v in single["generator"].values() if v.is_floating_point())


def test_more_processes_than_gpus_is_one_line_naming_the_fix(monkeypatch):
    """torchrun --nproc_per_node 2 on a one-GPU machine: the second process has no GPU of its own."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(train, "pick_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit, match=r"more processes on this machine than it has GPUs \(1\); use "
                                         r"--nproc_per_node 1, or add --device cpu"):
        train.start_distributed("auto")
