"""Release files, ONNX export and torch.hub entry points."""
import hashlib
from pathlib import Path

import pytest
import torch

import export
from generator import Generator

ROOT = Path(__file__).resolve().parents[1]


def eval_output(generator, x):
    with torch.no_grad():
        return generator.eval()(x)


@pytest.mark.parametrize("half", [False, True])
def test_release_file_is_named_by_its_hash_and_reproduces_the_checkpoint(tiny_run, tmp_path, half):
    checkpoint = tiny_run / "checkpoints" / "latest.pt"
    release = export.main([str(checkpoint), str(tmp_path), *(["--half"] if half else [])])
    digest = hashlib.sha256(release.read_bytes()).hexdigest()
    assert release.name == f"sat2map-{digest[:8]}.pt"
    assert release.stat().st_size < checkpoint.stat().st_size / (5 if half else 2.5)  # no D, no optimizer state
    x = torch.randn(1, 3, 256, 256)
    expected = eval_output(Generator.from_checkpoint(checkpoint), x)
    loaded = Generator.from_checkpoint(release)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert torch.allclose(eval_output(loaded, x), expected, atol=2e-3 if half else 1e-6)
    # torch.hub accepts the name as a hash prefix: check_hash recomputes the SHA-256 after the download
    hub_copy = torch.hub.load_state_dict_from_url(release.as_uri(), model_dir=str(tmp_path / "hub"),
                                                  check_hash=True, weights_only=True)
    assert set(hub_copy["generator"]) == set(Generator(ngf=8).state_dict())
    again = export.main([str(checkpoint), str(tmp_path / "again"), *(["--half"] if half else [])])
    assert again.name == release.name and again.read_bytes() == release.read_bytes()  # same weights, same hash
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [release.name]  # no leftovers


def test_onnx_export_matches_pytorch(tiny_run, tmp_path):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    release = export.main([str(tiny_run / "checkpoints" / "latest.pt"), str(tmp_path), "--onnx"])
    model_path = release.with_suffix(".onnx")
    session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 512, 256)  # another batch and shape than the export example
    (output,) = session.run(None, {"satellite": x.numpy()})
    assert torch.allclose(torch.from_numpy(output), eval_output(Generator.from_checkpoint(release), x), atol=1e-4)


def test_export_of_a_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match="export: checkpoint: .*nothing.pt does not exist"):
        export.main([str(tmp_path / "nothing.pt"), str(tmp_path)])
    assert list(tmp_path.iterdir()) == []


def test_torch_hub_loads_the_local_repository(tiny_run):
    fresh = torch.hub.load(str(ROOT), "generator", source="local", ngf=8)
    assert isinstance(fresh, Generator) and fresh.down[0].conv.out_channels == 8
    trained = torch.hub.load(str(ROOT), "generator", source="local",
                             weights=str(tiny_run / "checkpoints" / "latest.pt"))
    x = torch.randn(1, 3, 256, 256)
    assert torch.equal(eval_output(trained, x),
                       eval_output(Generator.from_checkpoint(tiny_run / "checkpoints" / "latest.pt"), x))
    d = torch.hub.load(str(ROOT), "discriminator", source="local",
                       weights=str(tiny_run / "checkpoints" / "latest.pt"))
    assert d.layers[0].out_channels == 8


def test_export_errors_are_one_line_and_leave_no_partial_file(tiny_run, tmp_path, monkeypatch):
    checkpoint = str(tiny_run / "checkpoints" / "latest.pt")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit, match="cannot write into .*a_file .*pass a folder you can write to"):
        export.main([checkpoint, str(tmp_path / "a_file")])

    def no_onnx(*args, **kwargs):
        raise torch.onnx.OnnxExporterError("Module onnx is not installed!")
    monkeypatch.setattr(torch.onnx, "export", no_onnx)
    with pytest.raises(SystemExit, match="ONNX export failed \\(Module onnx is not installed!\\); .*requirements-dev"):
        export.main([checkpoint, str(tmp_path / "release"), "--onnx"])
    assert [p.suffix for p in (tmp_path / "release").iterdir()] == [".pt"]  # the .pt stays; no half .onnx


def test_foreign_layouts_load_and_wrong_files_are_named(tiny_run, tmp_path):
    state = torch.load(tiny_run / "checkpoints" / "latest.pt", weights_only=True)
    # torch.compile over DistributedDataParallel: both prefixes, inside a "state_dict" entry
    torch.save({"state_dict": {f"_orig_mod.module.{k}": v for k, v in state["generator"].items()}}, tmp_path / "ddp.pt")
    x = torch.randn(1, 3, 256, 256)
    assert torch.equal(eval_output(Generator.from_checkpoint(tmp_path / "ddp.pt"), x),
                       eval_output(Generator.from_state_dict(state["generator"]), x))
    torch.save({"discriminator": state["discriminator"]}, tmp_path / "d_only.pt")
    with pytest.raises(ValueError, match="holds discriminator weights but no generator"):
        Generator.from_checkpoint(tmp_path / "d_only.pt")
    from_path = torch.hub.load(str(ROOT), "generator", source="local", weights=tmp_path / "ddp.pt")  # a Path
    assert torch.equal(eval_output(from_path, x), eval_output(Generator.from_state_dict(state["generator"]), x))
    with pytest.raises(FileNotFoundError, match="'sat2mapp' is neither a file nor one of .*sat2map, map2sat"):
        torch.hub.load(str(ROOT), "generator", source="local", weights="sat2mapp")
    with pytest.raises(ValueError, match="the official sat2map model holds a generator only"):
        torch.hub.load(str(ROOT), "discriminator", source="local", weights="sat2map")
    with pytest.raises(ValueError, match="ngf 0 must all be at least 1"):
        torch.hub.load(str(ROOT), "generator", source="local", ngf=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cannot be loaded onto a GPU, as this machine has none"):
            Generator.from_checkpoint(tiny_run / "checkpoints" / "latest.pt", map_location="cuda")
