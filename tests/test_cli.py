"""Every script answers --help, and a user's mistakes end in one line, not a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script, flag", [("train.py", "--lambda-l1"), ("evaluate.py", "--eval-mode"),
                                          ("dataset.py", "synthetic"), ("benchmark.py", "--quick"),
                                          ("export.py", "--half"), ("palette.py", "--k")])
def test_help(script, flag):
    result = run(script, "--help")
    assert result.returncode == 0 and flag in result.stdout


def test_missing_data_is_one_line_naming_the_fix(tmp_path):
    result = run("train.py", "--data", str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"{tmp_path / 'nowhere' / 'train'} does not exist" in result.stderr
    assert "dataset.py download" in result.stderr
