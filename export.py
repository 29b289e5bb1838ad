"""Turn a training checkpoint into a small release file (and optionally an ONNX model).

    python export.py runs/maps/checkpoints/latest.pt releases/ [--half] [--onnx]

The release file holds the generator's weights and what is needed to rebuild it, and is named
sat2map-<first 8 hex digits of its SHA-256>.pt, so torch.hub can check it after a download.
Generator.from_checkpoint and evaluate.py --checkpoint read it like any checkpoint.
"""
import argparse
import hashlib
import io
import sys
import warnings
from pathlib import Path

import torch

from config import ArgumentParser
from generator import Generator, read_checkpoint, weights_in
from utils import atomic_write, error_line


def export_release(checkpoint: str | Path, out_dir: Path, half: bool = False) -> Path:
    """Write the release file into out_dir and return its path."""
    state = read_checkpoint(checkpoint)
    generator = Generator.from_state_dict(weights_in(state, "generator"))  # also checks the weights fit
    config = state.get("config", {}) if isinstance(state.get("config"), dict) else {}
    weights = {k: (v.half() if half and v.is_floating_point() else v) for k, v in generator.state_dict().items()}
    release = {"generator": weights,
               "config": {"ngf": generator.down[0].conv.out_channels, "in_channels": generator.down[0].conv.in_channels,
                          "out_channels": generator.final.out_channels, "norm": "batch",
                          "direction": config.get("direction", "AtoB"), "fp16": half},
               "source": {"checkpoint": str(checkpoint).rsplit("/", 1)[-1] if "://" in str(checkpoint)
                          else Path(checkpoint).name, "epoch": state.get("epoch"), "step": state.get("step")}}
    # Serialized in memory: torch.save names the archive's inner folder after the file it writes, so
    # a temporary file's random name would give the same weights a different hash on every export.
    buffer = io.BytesIO()
    torch.save(release, buffer)
    content = buffer.getbuffer()
    final = out_dir / f"sat2map-{hashlib.sha256(content).hexdigest()[:8]}.pt"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(final, lambda tmp: Path(tmp).write_bytes(content))
    except OSError as error:
        raise ValueError(f"cannot write into {out_dir} ({error.strerror or error}); pass a folder you can write to")
    return final


def export_onnx(release: Path, out_path: Path) -> str:
    """ONNX model of the generator in eval mode, dynamic batch and size; checked with onnxruntime if present."""
    generator = Generator.from_checkpoint(release).eval()
    example = torch.randn(1, 3, 256, 256)
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter handles dynamic height and width here; it warns that it is the older one.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            atomic_write(out_path, lambda tmp: torch.onnx.export(
                generator, (example,), tmp, input_names=["satellite"], output_names=["map"],
                dynamic_axes={"satellite": {0: "batch", 2: "height", 3: "width"},
                              "map": {0: "batch", 2: "height", 3: "width"}},
                opset_version=17, dynamo=False))
    except (ImportError, torch.onnx.OnnxExporterError) as error:  # torch reports a missing onnx as the latter
        cause = error_line(error)
        raise SystemExit(f"export: the ONNX export failed ({cause}); it needs the onnx package: "
                         "pip install -r requirements-dev.txt") from None
    try:
        import onnxruntime
    except ImportError:
        return "not checked (onnxruntime is not installed)"
    probe = torch.randn(2, 3, 256, 512)
    session = onnxruntime.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    (onnx_output,) = session.run(None, {"satellite": probe.numpy()})
    with torch.no_grad():
        difference = (torch.from_numpy(onnx_output) - generator(probe)).abs().max().item()
    if difference > 1e-3:
        raise SystemExit(f"export: the ONNX model differs from PyTorch by {difference:.2e}; do not use {out_path}")
    return f"matches PyTorch within {difference:.1e} on a 2x3x256x512 input (onnxruntime)"


def main(argv: list[str] | None = None) -> Path:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a train.py checkpoint (runs/NAME/checkpoints/latest.pt)")
    parser.add_argument("out_dir", help="folder for the release file")
    parser.add_argument("--half", action="store_true", help="store fp16 weights (half the size; loaded back as fp32)")
    parser.add_argument("--onnx", action="store_true", help="also write an ONNX model beside it")
    args = parser.parse_args(argv)
    try:
        release = export_release(args.checkpoint, Path(args.out_dir).expanduser(), args.half)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"export: {error}") from None
    print(f"export: {release} ({release.stat().st_size / 1e6:.1f} MB)")
    if args.onnx:
        onnx_path = release.with_suffix(".onnx")
        print(f"export: {onnx_path}: {export_onnx(release, onnx_path)}")
    return release


if __name__ == "__main__":
    main(sys.argv[1:])
