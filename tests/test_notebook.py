"""demo.ipynb runs top to bottom, headless, and shows pictures."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_demo_notebook_runs_and_shows_images(tiny_run, synthetic, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("SAT2MAP_CHECKPOINT", str(tiny_run / "checkpoints" / "latest.pt"))
    monkeypatch.setenv("SAT2MAP_DATA", str(synthetic))
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notebook = nbformat.read(ROOT / "demo.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 4  # three validation rows and the wide image
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "-> map (" in printed
