"""Bad input, interruptions and untrusted weights: one clear line, nothing lost, no code run."""
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate
import train
from generator import Generator, read_checkpoint
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def corpus(synthetic, tmp_path) -> Path:
    """A copy of the synthetic pairs plus one file of every bad kind."""
    root = tmp_path / "corpus"
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        for path in (synthetic / split).glob("*.jpg"):
            (root / split / path.name).symlink_to(path)
    good = (synthetic / "train" / "1.jpg").read_bytes()
    (root / "train" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "train" / "notes.png").write_bytes(b"these are my notes, not a picture")
    Image.new("RGB", (700, 300)).save(root / "train" / "not_a_pair.png")
    Image.new("RGB", (200, 100)).save(root / "train" / "tiny.png")
    return root


def test_every_bad_file_is_listed_in_one_message_before_training(corpus, tmp_path):
    with pytest.raises(SystemExit) as stop:
        train.main(["--data", str(corpus), "--runs-dir", str(tmp_path / "runs"), "--name", "bad", *TINY])
    message = str(stop.value)
    assert "4 bad file(s)" in message and "--skip-bad-images" in message
    for name in ("truncated.jpg", "notes.png", "not_a_pair.png", "tiny.png"):
        assert name in message
    assert "700x300 is not two squares" in message and "smaller than --crop-size 256" in message
    assert not (tmp_path / "runs" / "bad" / "checkpoints").exists()  # stopped before any work


def test_evaluate_names_every_bad_file_before_writing_anything(corpus, tmp_path):
    checkpoint = tmp_path / "g.pt"
    torch.save({"generator": Generator(ngf=8).state_dict()}, checkpoint)
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--checkpoint", str(checkpoint), "--data", str(corpus), "--split", "train",
                       "--out", str(tmp_path / "out")])
    message = str(stop.value)
    assert message.startswith("evaluate: 3 bad file(s)")  # tiny.png is fine: evaluation resizes to 256
    assert all(name in message for name in ("truncated.jpg", "notes.png", "not_a_pair.png"))
    assert not (tmp_path / "out").exists()


def test_skip_bad_images_trains_on_the_rest(corpus, tmp_path, capsys):
    history = train.main(["--data", str(corpus), "--runs-dir", str(tmp_path), "--name", "skip", "--epochs", "1",
                          "--epochs-decay", "0", "--skip-bad-images", *TINY])
    assert len(history) == 1
    assert "warning: skipping 4 bad file(s)" in capsys.readouterr().out
    assert read_checkpoint(tmp_path / "skip" / "checkpoints" / "latest.pt")["step"] == 12


def test_unwritable_output_is_reported_before_training(synthetic, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("runs-dir points below a file, so nothing can be created there")
    with pytest.raises(SystemExit, match=f"cannot write to {blocker / 'x'} \\(E[A-Z]+: .*choose another --runs-dir"):
        train.main(["--data", str(synthetic), "--runs-dir", str(blocker), "--name", "x", *TINY])


def test_resume_refuses_to_change_the_architecture(tiny_run, capsys):
    with pytest.raises(SystemExit):
        train.main(["--resume", str(tiny_run), "--ngf", "16"])
    assert "--ngf cannot change in the middle of a run" in capsys.readouterr().err


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(synthetic, tmp_path, monkeypatch):
    common = ["--data", str(synthetic), "--runs-dir", str(tmp_path), "--name", "nan", "--epochs-decay", "0", *TINY]
    train.main([*common, "--epochs", "1"])
    good = (tmp_path / "nan" / "checkpoints" / "latest.pt").read_bytes()
    calls = {"n": 0}
    real_l1 = torch.nn.functional.l1_loss

    def l1_that_breaks(a, b):
        calls["n"] += 1
        loss = real_l1(a, b)
        return loss * float("nan") if calls["n"] == 5 else loss
    monkeypatch.setattr(torch.nn.functional, "l1_loss", l1_that_breaks)
    with pytest.raises(SystemExit, match="loss_G_l1 became NaN/Inf at step 17; stopped without saving"):
        train.main(["--resume", str(tmp_path / "nan"), "--epochs", "2"])
    assert (tmp_path / "nan" / "checkpoints" / "latest.pt").read_bytes() == good


def launch(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_step(run_dir: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    """Block until losses.csv shows `step`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        losses = run_dir / "losses.csv"
        if losses.exists() and len(losses.read_text().strip().splitlines()) - 1 >= step:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError(f"step {step} never came")


def final_generator(run_dir: Path) -> dict:
    return read_checkpoint(run_dir / "checkpoints" / "latest.pt")["generator"]


def assert_same_weights(a: dict, b: dict) -> None:
    for key, value in a.items():
        assert torch.allclose(value.float(), b[key].float(), atol=1e-6), key


@pytest.fixture(scope="module")
def straight_run(synthetic, tmp_path_factory) -> tuple[Path, list[str]]:
    """An uninterrupted 4-epoch run, the reference for the interrupted ones."""
    runs = tmp_path_factory.mktemp("straight")
    # Runs started apart may time their convolution kernels differently (and then differ by rounding): one set
    # of kernels for all, so that only the interruption differs. A resumed run keeps its own choice anyway.
    common = ["--data", str(synthetic), "--epochs", "3", "--epochs-decay", "1", "--seed", "5", *TINY,
              "--no-cpu-conv-autotune"]
    train.main([*common, "--runs-dir", str(runs), "--name", "straight"])
    return runs / "straight", common


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(straight_run, tmp_path):
    reference, common = straight_run
    run_dir = tmp_path / "killed"
    process = launch([*common, "--runs-dir", str(tmp_path), "--name", "killed", "--checkpoint-every", "4"])
    # epoch 3 of 4 (12 steps each): 29 rows are on disk from step 30 on, after the checkpoint at step 28,
    # which is written in the background: killed once it is on disk
    wait_for_step(run_dir, 29, process)
    deadline = time.time() + 60
    while read_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"] < 28 and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = read_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert 12 < saved["step"] < 48 and saved["step_in_epoch"] > 0  # really killed in the middle of an epoch
    resumed = subprocess.run([sys.executable, "train.py", "--resume", str(run_dir)], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {run_dir} at epoch" in resumed.stdout
    assert_same_weights(final_generator(reference), final_generator(run_dir))
    steps = [int(line.split(",")[0]) for line in (run_dir / "losses.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 49))  # no step logged twice, none missing


def test_ctrl_c_saves_the_current_step_and_resume_continues(straight_run, tmp_path):
    reference, common = straight_run
    run_dir = tmp_path / "stopped"
    process = launch([*common, "--runs-dir", str(tmp_path), "--name", "stopped"])
    wait_for_step(run_dir, 20, process)  # in epoch 2 of 4 (losses are written every 10 steps)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, stderr[-2000:]
    assert "Traceback" not in stderr and "continue with --resume" in stdout
    saved = read_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert saved["step"] >= 15 and saved["step_in_epoch"] == saved["step"] - 12 * saved["epoch"] > 0
    stray = run_dir / "checkpoints" / "latest.pt.x1y2.tmp"  # as a write cut short by kill -9 leaves it
    stray.write_bytes(b"half a checkpoint")
    train.main(["--resume", str(run_dir)])
    assert_same_weights(final_generator(reference), final_generator(run_dir))
    assert (run_dir / "checkpoints" / "best.pt").is_file() and not stray.exists()


class RunsACommand:
    """A pickle payload: unpickling it would call os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_weights_file_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"generator": RunsACommand(marker)}, evil)
    with pytest.raises(ValueError, match="not a loadable weights file"):
        Generator.from_checkpoint(evil)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(RunsACommand(marker), protocol=2))
    with pytest.raises(SystemExit, match="evaluate: checkpoint: .*evil.pkl is not a loadable weights file"):
        evaluate.main(["--checkpoint", str(raw), "--data", str(tmp_path)])
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints_say_what_was_expected(tiny_run, tmp_path):
    whole = (tiny_run / "checkpoints" / "latest.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 3])
    with pytest.raises(ValueError, match="cut.pt is not a loadable weights file"):
        Generator.from_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": np.arange(3).tolist()}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="expected pix2pix U-Net generator weights .* found keys like weights"):
        Generator.from_checkpoint(tmp_path / "other.pt")


def test_a_crash_during_a_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    from train import save_checkpoint
    path = tmp_path / "latest.pt"
    save_checkpoint({"generator": {"w": torch.ones(3)}}, path)
    before = path.read_bytes()

    def dies_half_way(obj, f):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError):
        save_checkpoint({"generator": {"w": torch.zeros(3)}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temporary file left behind


def test_a_full_disk_at_an_epoch_end_names_the_path_and_errno(synthetic, tmp_path, monkeypatch):
    def full_disk(state, path):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(train, "save_checkpoint", full_disk)
    with pytest.raises(SystemExit, match=r"saving .*latest.pt failed \(ENOSPC: No space left on device\); the "
                                         "previous checkpoint there is intact"):
        train.main(["--data", str(synthetic), "--runs-dir", str(tmp_path), "--name", "full", "--epochs", "1",
                    "--epochs-decay", "0", *TINY])
    assert not (tmp_path / "full" / "checkpoints" / "latest.pt").exists()


def test_a_checkpoint_written_in_the_background_holds_the_step_it_was_taken_at(tmp_path, monkeypatch):
    """Training goes on changing the weights while the file is written: the saver must write a copy."""
    import threading
    release, real_save = threading.Event(), train.save_checkpoint

    def slow_save(state, path):
        release.wait(10)
        real_save(state, path)
    monkeypatch.setattr(train, "save_checkpoint", slow_save)
    weights = torch.ones(4)
    with train.CheckpointSaver() as saver:
        saver.save({"generator": {"w": weights}, "step": 7}, tmp_path / "latest.pt")
        weights.add_(1)  # the next training step, while the write waits
        release.set()
    saved = read_checkpoint(tmp_path / "latest.pt")
    assert saved["step"] == 7 and torch.equal(saved["generator"]["w"], torch.ones(4))


def test_best_checkpoint_keeps_its_epoch_after_latest_is_replaced(tmp_path):
    latest, best = tmp_path / "latest.pt", tmp_path / "best.pt"
    with train.CheckpointSaver() as saver:
        saver.save({"epoch": 3}, latest, best)
        saver.wait()
        assert os.path.samefile(latest, best)  # a hard link, not a second 690 MB file
        saver.save({"epoch": 4}, latest)
    assert read_checkpoint(latest)["epoch"] == 4 and read_checkpoint(best)["epoch"] == 3


def test_a_failed_background_write_stops_with_one_line(tmp_path):
    (tmp_path / "file").write_text("a file where the checkpoint folder should be")
    with pytest.raises(SystemExit, match=r"train: saving .*file.* failed \(EEXIST: .*\); the previous checkpoint"):
        with train.CheckpointSaver() as saver:
            saver.save({"epoch": 1}, tmp_path / "file" / "latest.pt")


def test_torch_saves_own_write_error_is_one_line_and_does_not_hide_the_error_that_ended_the_run(
        tmp_path, monkeypatch, capsys):
    def cut_short(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1024 vs 980\nframe #0 ...")
    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(SystemExit, match=r"^train: saving .*latest.pt failed, most likely for lack of space "
                                         r"\(\[enforce fail .* vs 980\); the previous checkpoint there is intact: "
                                         "free space, then --resume$"):
        with train.CheckpointSaver() as saver:
            saver.save({"epoch": 1}, tmp_path / "latest.pt")
            saver.pending[0].exception()  # the write has failed
            saver.check()
            pytest.fail("check() let a failed write pass")
    with pytest.raises(ValueError, match="the error that ended the run"):
        with train.CheckpointSaver() as saver:
            saver.save({"epoch": 1}, tmp_path / "latest.pt")
            raise ValueError("the error that ended the run")
    assert "train: saving" in capsys.readouterr().err  # the failed write is still said


def test_a_copied_state_dict_keeps_the_layer_versions_that_torch_save_stores():
    state = Generator(ngf=8).state_dict()
    copied = train.copied_to_cpu(state)
    assert copied._metadata == state._metadata and copied._metadata["down.1.norm"]["version"] == 2
    assert all(torch.equal(copied[k], v) and copied[k].data_ptr() != v.data_ptr() for k, v in state.items())


def test_resume_with_loss_scaling_switched_on(synthetic, tmp_path):
    """A run saved without fp16 loss scaling (CPU, bf16 GPU) resumes where --amp picks fp16 (older GPUs)."""
    common = ["--data", str(synthetic), "--runs-dir", str(tmp_path), "--name", "amp", "--epochs-decay", "0", *TINY]
    train.main([*common, "--epochs", "1", "--amp", "off"])
    history = train.main(["--resume", str(tmp_path / "amp"), "--epochs", "2", "--amp", "fp16"])
    assert len(history) == 1 and 0 < history[0] < 2
    assert read_checkpoint(tmp_path / "amp" / "checkpoints" / "latest.pt")["scaler"]  # now a live scaler state


def test_palette_fitting_on_missing_data_is_one_line(tmp_path):
    import palette
    with pytest.raises(SystemExit, match="palette: .*nowhere/train has no images; run `python dataset.py download"):
        palette.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.json")])


def test_a_failed_palette_write_keeps_the_old_file_and_a_broken_palette_is_named(tmp_path, monkeypatch):
    """evaluate.py reads map_palette.json: a half-written one would break every later evaluation."""
    import palette
    target = tmp_path / "map_palette.json"
    target.write_text(palette.PALETTE_FILE.read_text())
    before = target.read_bytes()
    monkeypatch.setattr(palette, "fit_palette", lambda *args, **kwargs: {"classes": [], "median_rgb": [0, 0, 0]})
    real_atomic_write = palette.atomic_write

    def disk_fills_halfway(path, write):
        def half(tmp):
            Path(tmp).write_text('{"classes": [')
            raise OSError(28, "No space left on device")
        real_atomic_write(path, half)
    monkeypatch.setattr(palette, "atomic_write", disk_fills_halfway)
    with pytest.raises(SystemExit, match="^palette: cannot write .*map_palette.json \\(No space left on device\\); "
                                         "free space or pass another --out$"):
        palette.main(["--data", str(tmp_path), "--out", str(target)])
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["map_palette.json"]
    target.write_text('{"classes": [')
    with pytest.raises(ValueError, match="map_palette.json cannot be read as a palette .*; write it with python "
                                         "palette.py"):
        palette.Palette(target)


def test_odd_checkpoint_contents_and_a_wrong_map_location_are_named(tiny_run, tmp_path):
    torch.save({0: torch.zeros(3)}, tmp_path / "int_keys.pt")
    with pytest.raises(ValueError, match="expected generator weights named by strings, found keys like 0"):
        Generator.from_checkpoint(tmp_path / "int_keys.pt")
    torch.save({"down.0.conv.weight": torch.zeros(3), "final.weight": [1, 2]}, tmp_path / "flat.pt")
    with pytest.raises(ValueError, match="down.0.conv.weight is \\(3,\\) and final.weight list, not 4-D"):
        Generator.from_checkpoint(tmp_path / "flat.pt")
    state = Generator(ngf=8).state_dict()
    state["up.0.norm.weight"] = "not a tensor"
    with pytest.raises(ValueError, match="wrong shape: up.0.norm.weight str \\(expected \\(64,\\)\\)"):
        Generator.from_state_dict(state)
    with pytest.raises(ValueError, match="map_location 'gpu0' is not a device; pass 'cpu' or 'cuda'"):
        Generator.from_checkpoint(tiny_run / "checkpoints" / "latest.pt", map_location="gpu0")


@pytest.mark.parametrize("names_the_file", [True, False])
def test_evaluate_stops_with_one_line_when_the_disk_fills(tiny_run, synthetic, tmp_path, monkeypatch,
                                                          names_the_file):
    def full_disk(image, path):  # open() names the file; a write() that fills the disk does not
        raise OSError(28, "No space left on device", *([str(path)] if names_the_file else []))
    monkeypatch.setattr(evaluate, "save_png", full_disk)
    written = ".*/out/inputs/00000_1.png" if names_the_file else "into .*/out"
    with pytest.raises(SystemExit, match=f"^evaluate: writing {written} failed \\(No space left on device\\); "
                                         "free space or choose another --out$"):
        evaluate.main(["--checkpoint", str(tiny_run / "checkpoints" / "latest.pt"), "--data", str(synthetic),
                       "--out", str(tmp_path / "out"), "--limit", "2", "--compile", "off"])


def test_evaluate_reports_a_data_folder_it_cannot_read_as_such(tiny_run, synthetic, tmp_path, monkeypatch):
    def unreadable(folder):
        raise PermissionError(13, "Permission denied", str(folder))
    monkeypatch.setattr("dataset.list_images", unreadable)
    with pytest.raises(SystemExit, match="^dataset: cannot read .*val \\(Permission denied\\); check its "
                                         "permissions$"):
        evaluate.main(["--checkpoint", str(tiny_run / "checkpoints" / "latest.pt"), "--data", str(synthetic),
                       "--out", str(tmp_path / "out"), "--compile", "off"])


def test_evaluate_refuses_a_seed_that_numpy_and_torch_cannot_take(tiny_run, capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--checkpoint", str(tiny_run / "checkpoints" / "latest.pt"), "--seed", str(2 ** 70)])
    assert "--seed must lie in [0, 2^32)" in capsys.readouterr().err


def test_a_second_interrupt_stops_at_once_with_one_line(capsys):
    stop = train.StopSignal()
    stop.handle(signal.SIGINT, None)
    assert stop.received == signal.SIGINT and "saving at the end of this step" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stopped:
        stop.handle(signal.SIGINT, None)
    assert stopped.value.code == 130 and "second interrupt: stopping without saving" in capsys.readouterr().err
