"""Shared fixtures: tiny synthetic pairs, the real maps pairs beside the project, a tiny trained run."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataset import write_synthetic  # noqa: E402
import train  # noqa: E402


def real_data_root() -> Path | None:
    """$SAT2MAP_DATA, else ../shared/data/maps beside the project; None when neither exists."""
    for candidate in (os.environ.get("SAT2MAP_DATA"), ROOT.parent / "shared" / "data" / "maps"):
        if candidate and (Path(candidate) / "val").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def real_maps() -> Path:
    root = real_data_root()
    if root is None:
        pytest.skip("real maps pairs not found: set SAT2MAP_DATA or put shared/data/maps beside the project")
    return root


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> Path:
    """12 train and 4 val pairs, 256 px halves: enough for a tiny model to learn something."""
    return write_synthetic(tmp_path_factory.mktemp("synthetic"), count=12, val_count=4, size=256, seed=1)


# On the CPU also where a GPU exists, so that runs repeat exactly (cuDNN's backward is not deterministic) and
# take no compiling; tests/test_cuda.py puts "--device cuda" after these.
TINY = ["--ngf", "8", "--ndf", "8", "--num-workers", "0", "--sample-count", "2", "--val-count", "4", "--device", "cpu"]


@pytest.fixture(scope="session")
def tiny_run(synthetic, tmp_path_factory) -> Path:
    """A finished 2-epoch run of a tiny model; returns its run folder."""
    runs = tmp_path_factory.mktemp("runs")
    train.main(["--data", str(synthetic), "--runs-dir", str(runs), "--name", "tiny",
                "--epochs", "1", "--epochs-decay", "1", *TINY])
    return runs / "tiny"
