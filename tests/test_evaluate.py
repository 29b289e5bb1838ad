"""evaluate.py and translate(): metric values, written files, any-size images, bad checkpoints."""
import json
import math
import re
import urllib.parse
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
from generator import Generator
from utils import Autocast, BackgroundWriter, compile_for_inference, image_to_tensor, inference_mode, translate

NEEDS_COMPILER = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "clang++", "c++")),
                                    reason="torch.compile on the CPU needs a C++ compiler")


def test_metrics_on_hand_made_images():
    real = torch.rand(3, 64, 64) * 2 - 1
    same = evaluate.score(real, real.clone())
    assert same["l1"] == 0 and same["ssim"] == pytest.approx(1.0) and math.isinf(same["psnr"])
    base = torch.full((3, 64, 64), -0.5)
    shifted = base + 10 / 127.5  # every pixel 10 grey levels brighter
    shifted_score = evaluate.score(shifted, base)
    assert shifted_score["l1"] == pytest.approx(10, abs=0.01)
    assert shifted_score["psnr"] == pytest.approx(10 * math.log10(255 ** 2 / 100), abs=0.05)
    noisy = (real + 0.3 * torch.randn_like(real)).clamp(-1, 1)
    noisier = (real + 0.8 * torch.randn_like(real)).clamp(-1, 1)
    assert 1 > evaluate.ssim(noisy, real) > evaluate.ssim(noisier, real) > 0


def test_ssim_matches_the_definition_with_a_2d_window():
    """evaluate.ssim filters in two 1-D passes; the paper's formula with its 11x11 window, in float64,
    pixel by pixel over every valid position, must give the same number."""
    torch.manual_seed(1)
    real = torch.rand(3, 40, 48) * 2 - 1
    fake = (real + 0.4 * torch.randn_like(real)).clamp(-1, 1)
    x, y = evaluate.to_255(fake).double(), evaluate.to_255(real).double()
    offsets = torch.arange(11, dtype=torch.float64) - 5
    gauss = torch.exp(-offsets ** 2 / (2 * 1.5 ** 2))
    window = torch.outer(gauss, gauss) / gauss.sum() ** 2
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for top in range(40 - 10):
        for left in range(48 - 10):
            a, b = x[:, top:top + 11, left:left + 11], y[:, top:top + 11, left:left + 11]
            mu_a, mu_b = (a * window).sum((1, 2)), (b * window).sum((1, 2))
            var_a = (a * a * window).sum((1, 2)) - mu_a ** 2
            var_b = (b * b * window).sum((1, 2)) - mu_b ** 2
            cov = (a * b * window).sum((1, 2)) - mu_a * mu_b
            scores.append((2 * mu_a * mu_b + c1) * (2 * cov + c2)
                          / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
    expected = torch.stack(scores).mean().item()
    assert 0.1 < expected < 0.9  # a pair that is neither identical nor unrelated
    assert evaluate.ssim(fake, real) == pytest.approx(expected, abs=1e-5)


def test_evaluate_scores_a_perfect_pair_as_perfect(tmp_path):
    """Pairs whose map IS the generator's eval-mode output: L1 0, SSIM 1 through the whole pipeline."""
    torch.manual_seed(0)
    generator = Generator(ngf=8)
    checkpoint = tmp_path / "g.pt"
    torch.save(generator.state_dict(), checkpoint)
    (tmp_path / "data" / "val").mkdir(parents=True)
    for i in range(3):
        photo = Image.fromarray(np.random.default_rng(i).integers(0, 256, (256, 256, 3), dtype=np.uint8))
        with inference_mode(generator, paper=False):
            output = generator(image_to_tensor(photo).unsqueeze(0))[0]
        rendered = Image.fromarray(((output.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
        pair = Image.new("RGB", (512, 256))
        pair.paste(photo, (0, 0))
        pair.paste(rendered, (256, 0))
        pair.save(tmp_path / "data" / "val" / f"{i}.png")
    out = tmp_path / "out"
    means = evaluate.main(["--checkpoint", str(checkpoint), "--data", str(tmp_path / "data"), "--out", str(out),
                           "--eval-mode", "--rows-per-grid", "2", "--amp", "off", "--no-channels-last"])["metrics"]
    assert means["l1"] == 0 and means["ssim"] == pytest.approx(1.0)
    assert means["miou"] == pytest.approx(1.0) and means["gcgan_acc5"] == 1.0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["images"] == 3 and summary["metrics"]["l1"] == 0
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["grid_000.png", "grid_001.png"]
    assert len(list((out / "maps").glob("*.png"))) == 3
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 4
    # paper mode (dropout on) is the default and really differs
    paper = evaluate.main(["--checkpoint", str(checkpoint), "--data", str(tmp_path / "data"), "--out",
                           str(tmp_path / "paper")])["metrics"]
    assert paper["l1"] > 1


def test_evaluate_on_a_trained_run_writes_beside_it(tiny_run, synthetic):
    means = evaluate.main(["--checkpoint", str(tiny_run / "checkpoints" / "latest.pt"), "--data", str(synthetic)])["metrics"]
    assert 0 < means["l1"] < 128 and 0 < means["ssim"] < 1
    assert (tiny_run / "eval_val" / "metrics.json").is_file()
    assert (tiny_run / "eval_val" / "grids" / "grid_000.png").is_file()


def test_without_data_the_folder_the_checkpoint_was_trained_on_is_scored(tiny_run, synthetic, tmp_path, capsys):
    summary = evaluate.main(["--checkpoint", str(tiny_run / "checkpoints" / "latest.pt"), "--out",
                             str(tmp_path / "out"), "--limit", "2", "--compile", "off"])
    assert summary["data"] == str(synthetic) and summary["images"] == 2
    assert summary["inference_mode"].startswith("paper")
    assert f"--data {synthetic}, where the checkpoint was trained" in capsys.readouterr().out


def test_images_folder_gives_one_map_per_input_with_the_same_size(tiny_run, tmp_path):
    folder = tmp_path / "tiles"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (500, 700, 3), dtype=np.uint8)).convert("RGBA").save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 256, (100, 90), dtype=np.uint8)).save(folder / "small_gray.png")
    Image.fromarray(rng.integers(0, 256, (300, 256, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    Image.fromarray(rng.integers(0, 256, (120, 130, 3), dtype=np.uint8)).convert("P").save(folder / "palette.png")
    Image.fromarray(rng.integers(0, 65535, (140, 150), dtype=np.uint16)).save(folder / "deep16.png")
    Image.fromarray(rng.integers(0, 256, (60, 70, 3), dtype=np.uint8)).save(folder / "deep16.jpg")  # same stem
    out = tmp_path / "maps"
    count = evaluate.main(["--checkpoint", str(tiny_run / "checkpoints" / "latest.pt"), "--images", str(folder),
                           "--out", str(out)])
    assert count == 6
    sizes = {p.name: Image.open(p).size for p in out.iterdir()}
    assert sizes == {"wide.png": (700, 500), "small_gray.png": (90, 100), "photo.png": (256, 300),
                     "palette.png": (130, 120), "deep16_png.png": (150, 140), "deep16_jpg.png": (70, 60)}
    assert all(Image.open(p).mode == "RGB" for p in out.iterdir())
    photos = sorted(folder.iterdir())
    with pytest.raises(SystemExit, match="would overwrite the photos"):
        evaluate.main(["--checkpoint", str(tiny_run / "checkpoints" / "latest.pt"), "--images", str(folder),
                       "--out", str(folder)])
    assert sorted(folder.iterdir()) == photos


def test_map_names_never_clash():
    inputs = [Path(name) for name in ("a.jpg", "a.png", "a_png.jpg", "b.png", "c.JPG")]
    names = evaluate.map_names(inputs)
    assert len(set(names)) == len(inputs) and names[3:] == ["b.png", "c.png"]


def test_tiled_and_whole_image_translation_agree_without_seams():
    torch.manual_seed(0)
    generator = Generator(ngf=8)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    tiled = np.asarray(translate(generator, image, paper=False), dtype=np.float32)
    whole = np.asarray(translate(generator, image, paper=False, whole=True), dtype=np.float32)
    difference = np.abs(tiled - whole).mean(axis=2)
    assert difference.mean() < 3  # out of 255
    # tiles of 256 with overlap 64 start every 192 px (after a 32 px margin): no jump at those borders
    column_error = difference.mean(axis=0)
    borders = [192 * k - 32 for k in (1, 2)]
    assert max(column_error[b] for b in borders) < 3 * column_error.mean() + 1
    paper_a = translate(generator, image, paper=True, seed=4)
    paper_b = translate(generator, image, paper=True, seed=4)
    assert np.array_equal(np.asarray(paper_a), np.asarray(paper_b))  # the seed fixes dropout


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("folder", "weights.pt is a folder; pass a .pt file"),
    (b"garbage bytes, not a checkpoint", "not a loadable weights file"),
])
def test_bad_checkpoints_get_one_clear_line(tmp_path, content, message):
    path = tmp_path / "weights.pt"
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit, match=message):
        evaluate.main(["--checkpoint", str(path), "--data", str(tmp_path)])


def test_real_val_pairs_evaluate(real_maps, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "g.pt"
    torch.save({"generator": Generator(ngf=8).state_dict()}, checkpoint)
    means = evaluate.main(["--checkpoint", str(checkpoint), "--data", str(real_maps), "--limit", "2",
                           "--out", str(tmp_path / "out")])["metrics"]
    assert 0 < means["l1"] < 255 and json.loads((tmp_path / "out" / "metrics.json").read_text())["images"] == 2


def test_readme_python_snippet_runs(tiny_run, tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Use a trained generator in Python", 1)[1]
    snippet = section.split("```python", 1)[1].split("```", 1)[0]
    (tmp_path / "runs" / "demo" / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_run / "checkpoints" / "latest.pt", tmp_path / "runs" / "demo" / "checkpoints" / "latest.pt")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 420, 3), dtype=np.uint8)).save(
        tmp_path / "my_tile.jpg")
    monkeypatch.chdir(tmp_path)
    exec(snippet, {})
    assert Image.open(tmp_path / "my_map.png").size == (420, 300)


def test_gcgan_metrics_match_a_hand_computation():
    real = torch.full((3, 8, 8), 100.0)
    fake = (real + torch.tensor([7.0, 0.0, 0.0]).view(3, 1, 1)) / 127.5 - 1  # red 7 levels off
    rmse, worst = evaluate.gcgan_errors(fake, real)
    assert rmse == pytest.approx(7.0, abs=1e-4)  # sqrt(64 * 49 / 64): summed over channels, divided by H*W
    assert (worst < 5).float().mean() == 0 and (worst < 10).float().mean() == 1
    fake = (real + 3) / 127.5 - 1  # every channel 3 levels off
    rmse, worst = evaluate.gcgan_errors(fake, real)
    assert rmse == pytest.approx(math.sqrt(27), abs=1e-4) and (worst < 5).all()


def flat_pairs(folder: Path, photo_rgb, map_rgbs):
    (folder / "val").mkdir(parents=True)
    for i, map_rgb in enumerate(map_rgbs):
        pair = Image.new("RGB", (512, 256), map_rgb)
        pair.paste(Image.new("RGB", (256, 256), photo_rgb), (0, 0))
        pair.save(folder / "val" / f"{i}.png")


def test_split_metrics_pool_pixels_and_write_a_report_whose_links_exist(tmp_path):
    flat_pairs(tmp_path / "data", (50, 60, 70), [(200, 200, 200), (100, 100, 100)])
    constant = evaluate.ConstantImage(torch.tensor([206.0, 200.0, 200.0]))  # 6 off in red on the first pair
    summary = evaluate.evaluate_split(constant, tmp_path / "data", "val", "AtoB", tmp_path / "out", paper=False,
                                      seed=0, limit=0, rows_per_grid=8)
    m = summary["metrics"]
    assert m["gcgan_acc5"] == 0 and m["gcgan_acc10"] == pytest.approx(0.5)  # pooled: only pair 0 is within 10
    assert m["gcgan_rmse"] == pytest.approx((6 + math.sqrt(106 ** 2 + 2 * 100 ** 2)) / 2, abs=1e-3)
    assert m["l1"] == pytest.approx((2 + (106 + 100 + 100) / 3) / 2, abs=1e-3)
    report = (tmp_path / "out" / "index.html").read_text()
    links = re.findall(r'src="([^"]+)"', report)
    assert len(links) == 6 and all((tmp_path / "out" / urllib.parse.unquote(link)).is_file() for link in links)
    assert report.index("1.png") < report.index("0.png")  # worst L1 first


def test_a_pair_broken_after_the_check_stops_the_split_with_one_line(tmp_path, monkeypatch):
    """Pairs are read in DataLoader workers; a file that breaks after the up-front check (replaced by an
    unreadable one mid-run) must still end the run with one line naming it, not a worker's traceback."""
    flat_pairs(tmp_path / "data", (50, 60, 70), [(200, 200, 200)] * 4)
    (tmp_path / "data" / "val" / "2.png").write_bytes(b"not an image")
    monkeypatch.setattr(evaluate, "find_bad_pairs", lambda files, min_side: {})
    with pytest.raises(SystemExit) as stop:
        evaluate.evaluate_split(evaluate.ConstantImage(torch.tensor([200.0] * 3)), tmp_path / "data", "val", "AtoB",
                                tmp_path / "out", paper=False, seed=0, limit=0, rows_per_grid=8)
    message = str(stop.value)
    assert message.startswith("evaluate: ") and "2.png" in message and "\n" not in message
    assert "Traceback" not in message


def test_background_writes_that_fail_raise_and_the_others_are_written(tmp_path):
    image = torch.zeros(3, 8, 8)
    with pytest.raises(OSError):
        with BackgroundWriter(threads=2, backlog=2) as writer:
            writer.submit(evaluate.save_png, image, tmp_path / "a.png")
            writer.submit(evaluate.save_png, image, tmp_path / "no such folder" / "b.png")
            writer.submit(evaluate.save_png, image, tmp_path / "c.png")
    assert (tmp_path / "a.png").is_file() and (tmp_path / "c.png").is_file()
    assert np.asarray(Image.open(tmp_path / "a.png")).max() == 128  # -> 0 in [-1, 1] is grey 128


def test_class_iou_of_a_constant_image_and_of_a_perfect_one(real_maps, tmp_path):
    from palette import Palette, confusion, iou_from_confusion
    palette = Palette()
    summary = evaluate.main(["--constant-baseline", "--data", str(real_maps), "--limit", "12",
                             "--out", str(tmp_path / "constant")])
    assert summary["inference_mode"] == "none: a constant image"
    ious = summary["class_iou"]
    assert 0.2 < ious["land"] < 0.8
    assert all(value is None or value < 0.02 for name, value in ious.items() if name != "land")
    assert summary["metrics"]["miou"] < 0.2
    real = image_to_tensor(Image.open(tmp_path / "constant" / "targets" / "00000_1.png")) * 127.5 + 127.5
    labels = palette.classify(real.round())
    iou, present = iou_from_confusion(confusion(labels, labels, len(palette.names)))
    assert present.sum() >= 2 and torch.all(iou[present] == 1.0)


def test_fid_without_its_weights_is_one_line_and_the_rest_is_still_written(tmp_path, monkeypatch, capsys):
    inception = pytest.importorskip("pytorch_fid.inception")
    monkeypatch.setattr(inception, "FID_WEIGHTS_URL", "http://127.0.0.1:9/pt_inception-unreachable.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # leave the user's hub cache alone
    flat_pairs(tmp_path / "data", (50, 60, 70), [(200, 200, 200)] * 2)
    summary = evaluate.evaluate_split(evaluate.ConstantImage(torch.tensor([200.0] * 3)), tmp_path / "data", "val",
                                      "AtoB", tmp_path / "out", paper=False, seed=0, limit=0, rows_per_grid=8,
                                      fid=True)
    assert "evaluate: FID skipped" in capsys.readouterr().out
    assert "fid" not in summary["metrics"] and json.loads((tmp_path / "out" / "metrics.json").read_text())["images"] == 2


def test_autocast_wrapper_returns_fp32_close_to_fp32(tmp_path):
    from utils import Autocast
    torch.manual_seed(0)
    generator = Generator(ngf=8).eval()
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        plain = generator(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cast_every_call = generator(x).float()
        mixed = Autocast(generator, torch.bfloat16)(x)
    assert mixed.dtype == torch.float32 and (plain - mixed).abs().mean() < 0.02
    assert {m.weight.dtype for m in generator.modules() if isinstance(m, torch.nn.Conv2d)} == {torch.bfloat16}  # once...
    assert torch.equal(mixed, cast_every_call)  # ...to the values autocast casts to on every call


def test_translate_takes_low_precision_models_and_refuses_bad_arguments():
    torch.manual_seed(0)
    generator = Generator(ngf=8)
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (300, 280, 3), dtype=np.uint8))
    reference = np.asarray(translate(generator, image, paper=False), dtype=np.int16)
    low = Generator(ngf=8)
    low.load_state_dict(generator.state_dict())
    assert np.abs(np.asarray(translate(low.bfloat16(), image, paper=False), dtype=np.int16) - reference).mean() < 2
    for bad, message in [(dict(batch_size=0), "batch_size 0 must be"), (dict(tile=300), "tile 300 must be"),
                         (dict(overlap=256), "overlap 256 must be"), (dict(overlap=64.5), "overlap 64.5 must be")]:
        with pytest.raises(ValueError, match=message):
            translate(generator, image, paper=False, **bad)
    with pytest.raises(TypeError, match="got a Tensor; pass a PIL image"):
        translate(generator, torch.zeros(3, 64, 64))
    with pytest.raises(TypeError, match="generator is a str; pass a network, such as Generator.from_checkpoint"):
        translate("runs/maps/checkpoints/latest.pt", image)
    # Monte Carlo dropout: BatchNorm in eval mode, dropout on; translate must hand both back as they were
    generator.eval()
    for module in generator.modules():
        if isinstance(module, torch.nn.Dropout):
            module.train()
    before = [module.training for module in generator.modules()]
    translate(generator, image)
    assert [module.training for module in generator.modules()] == before


def test_images_folder_names_every_bad_file_first_and_keeps_world_files(tiny_run, tmp_path):
    checkpoint = str(tiny_run / "checkpoints" / "latest.pt")
    folder, out = tmp_path / "tiles", tmp_path / "maps"
    folder.mkdir()
    photo = Image.fromarray(np.random.default_rng(3).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    for name in ("a.jpg", "a.png", "b.png"):
        photo.save(folder / name)
    (folder / "a.jgw").write_text("0.5\n0\n0\n-0.5\n1000.25\n2000.25\n")
    (folder / "a.pgw").write_text("2.0\n0\n0\n-2.0\n50.0\n70.0\n")  # a.png's own: not a.jpg's
    (folder / "a.prj").write_text('PROJCS["WGS 84 / UTM zone 18N"]')
    (folder / "._a.jpg").write_bytes(b"macOS metadata, not an image")  # hidden: left out
    (folder / "c.jpg").write_bytes((folder / "a.jpg").read_bytes()[:400])
    (folder / "d.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit, match="2 bad file\\(s\\) in .*tiles: c.jpg \\(cannot be read.*d.png \\(cannot be"):
        evaluate.main(["--checkpoint", checkpoint, "--images", str(folder), "--out", str(out)])
    assert not out.exists()  # nothing written before every file was checked
    (folder / "c.jpg").unlink()
    (folder / "d.png").unlink()
    assert evaluate.main(["--checkpoint", checkpoint, "--images", str(folder), "--out", str(out)]) == 3
    assert sorted(p.name for p in out.iterdir()) == ["a_jpg.pgw", "a_jpg.png", "a_jpg.prj", "a_png.pgw", "a_png.png",
                                                     "a_png.prj", "b.png"]
    assert (out / "a_jpg.pgw").read_text() == (folder / "a.jgw").read_text()
    assert (out / "a_png.pgw").read_text() == (folder / "a.pgw").read_text()
    assert evaluate.main(["--checkpoint", checkpoint, "--images", str(folder), "--out", str(tmp_path / "one"),
                          "--limit", "1"]) == 1
    with pytest.raises(SystemExit, match="cannot make the folder .*a.jpg"):
        evaluate.main(["--checkpoint", checkpoint, "--images", str(folder), "--out", str(folder / "a.jpg")])
    with pytest.raises(SystemExit):  # argparse: --split belongs to --data
        evaluate.main(["--checkpoint", checkpoint, "--images", str(folder), "--split", "val"])


@NEEDS_COMPILER
def test_compiled_generator_scores_like_the_eager_one(tiny_run, synthetic, tmp_path, capsys):
    common = ["--checkpoint", str(tiny_run / "checkpoints" / "latest.pt"), "--data", str(synthetic), "--eval-mode"]
    eager = evaluate.main([*common, "--out", str(tmp_path / "eager")])["metrics"]  # auto: 4 images, not compiled
    assert "compiling" not in capsys.readouterr().out
    compiled = evaluate.main([*common, "--out", str(tmp_path / "compiled"), "--compile", "on"])["metrics"]
    assert "evaluate: compiled in" in capsys.readouterr().out
    for key in ("l1", "gcgan_rmse", "psnr"):  # BatchNorm folded into the convolutions: the last bits differ
        assert compiled[key] == pytest.approx(eager[key], rel=1e-3), key


def test_a_failed_compile_falls_back_to_the_generator_with_one_line(tiny_run, synthetic, tmp_path, monkeypatch,
                                                                   capsys):
    def no_compiler(network):
        def fail(*inputs):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore lines")
        return fail

    monkeypatch.setattr(evaluate, "compile_for_inference", no_compiler)
    means = evaluate.main(["--checkpoint", str(tiny_run / "checkpoints" / "latest.pt"), "--data", str(synthetic),
                           "--out", str(tmp_path / "eval"), "--compile", "on"])["metrics"]
    printed = capsys.readouterr().out
    assert "compiling failed (InvalidCxxCompiler: No working C++ compiler found); translating without it" in printed
    assert math.isfinite(means["l1"]) and (tmp_path / "eval" / "metrics.json").is_file()
    with pytest.raises(SystemExit) as refused:  # --images come in any size: each would compile again
        evaluate.main(["--checkpoint", str(tiny_run / "checkpoints" / "latest.pt"), "--images", str(synthetic),
                       "--compile", "on"])
    assert refused.value.code == 2 and "--compile is for paired splits" in capsys.readouterr().err


@NEEDS_COMPILER
def test_compiled_bf16_generator_agrees_with_the_eager_one():
    """evaluate.py's default on CPUs with native bf16: Autocast (weights cast once), then compiled."""
    torch.manual_seed(0)
    generator = Generator(ngf=8).to(memory_format=torch.channels_last)
    network = Autocast(generator, torch.bfloat16)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with inference_mode(generator, paper=False):
        eager = network(x)
        compiled = compile_for_inference(network)(x)
    assert compiled.dtype == torch.float32
    assert (compiled - eager).abs().max() < 2e-3 and (compiled - eager).abs().mean() < 1e-4


@pytest.mark.parametrize("direction", ["AtoB", "BtoA"])
def test_scored_pairs_decode_once_and_give_what_the_dataset_and_gcgan_would(real_maps, direction):
    from dataset import PairedImageDataset, split_pair
    dataset = PairedImageDataset(real_maps, "val", direction, train=False)
    x, y, real_255 = evaluate.ScoredPairs(dataset, 2)[1]
    expected_x, expected_y = dataset[1]
    assert torch.equal(x, expected_x) and torch.equal(y, expected_y)
    full_target = split_pair(dataset.files[1])[1 if direction == "AtoB" else 0]  # 600 px, resized bilinearly
    expected_real = np.asarray(full_target.resize((256, 256), Image.BILINEAR), dtype=np.float32)
    assert np.array_equal(real_255.permute(1, 2, 0).numpy(), expected_real)
