"""The training loop: flags, one step, learning, the schedule, outputs, resume."""
import csv
import json
import shutil

import numpy as np
import pytest
import torch

import train
import utils
from config import Config, PRESETS, build_parser, parse_config
from dataset import PairedImageDataset
from discriminator import Discriminator
from generator import Generator, read_checkpoint
from tests.conftest import TINY


def test_flags_come_from_config_and_presets_yield_to_explicit_flags():
    parser = build_parser("test")
    cfg, _ = parse_config(parser, ["--lambda-l1", "10", "--no-flip", "--gan-mode", "lsgan"])
    assert (cfg.lambda_l1, cfg.flip, cfg.gan_mode, cfg.lr, cfg.batch_size) == (10.0, False, "lsgan", 2e-4, 1)
    cfg, _ = parse_config(parser, ["--preset", "demo", "--ngf", "8"])
    assert cfg.ngf == 8 and cfg.ndf == PRESETS["demo"]["ndf"] and cfg.data == PRESETS["demo"]["data"]
    cfg, _ = parse_config(parser, [], base={"ngf": 32, "epochs": 7})
    assert (cfg.ngf, cfg.epochs) == (32, 7)


def test_paper_defaults():
    cfg = Config()
    assert (cfg.batch_size, cfg.load_size, cfg.crop_size, cfg.flip) == (1, 286, 256, True)
    assert (cfg.lr, cfg.beta1, cfg.beta2, cfg.lambda_l1) == (2e-4, 0.5, 0.999, 100.0)
    assert (cfg.epochs, cfg.epochs_decay, cfg.ngf, cfg.ndf) == (100, 100, 64, 64)
    assert (cfg.direction, cfg.gan_mode, cfg.device) == ("AtoB", "vanilla", "auto")


@pytest.mark.parametrize("flags, message", [
    (["--crop-size", "300"], "multiple of 256"),
    (["--crop-size", "0"], "--crop-size 0 must be 256 or a larger multiple"),
    (["--name", ""], "must name a folder inside --runs-dir"),
    (["--name", "../elsewhere"], "must name a folder inside --runs-dir"),
    (["--name", "/abs"], "must name a folder inside --runs-dir"),
    (["--load-size", "200"], "smaller than --crop-size"),
    (["--lr", "0"], "--lr must be a positive number"),
    (["--lr", "nan"], "--lr must be a positive number"),
    (["--lambda-l1", "-1"], "--lambda-l1 must be a number >= 0"),
    (["--seed", "-1"], "--seed must lie in [0, 2^32)"),
    (["--epochs", "-1"], "--epochs must not be negative"),
    (["--direction", "up"], "invalid choice"),
])
def test_impossible_flags_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(build_parser("test"), flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_learning_rate_is_constant_then_decays_linearly():
    cfg = Config(epochs=100, epochs_decay=100)
    factors = [train.lr_factor(e, cfg) for e in range(200)]
    assert factors[0] == factors[99] == 1.0
    assert factors[100] == pytest.approx(1 - 1 / 101) and factors[199] == pytest.approx(1 / 101)
    assert all(a > b for a, b in zip(factors[99:], factors[100:]))


def test_one_step_changes_every_weight_of_g_and_d(synthetic, tmp_path):
    one = tmp_path / "one"
    (one / "train").mkdir(parents=True)
    (one / "val").symlink_to(synthetic / "val")
    (one / "train" / "1.jpg").symlink_to(synthetic / "train" / "1.jpg")
    train.main(["--data", str(one), "--runs-dir", str(tmp_path), "--name", "one", "--epochs", "1",
                "--epochs-decay", "0", "--seed", "3", *TINY])
    torch.manual_seed(3)  # train.py seeds, then builds G, then D: the same initial weights
    g0, d0 = Generator(ngf=8).state_dict(), Discriminator(ndf=8).state_dict()
    state = read_checkpoint(tmp_path / "one" / "checkpoints" / "latest.pt")
    assert state["step"] == 1
    for before, after in ((g0, state["generator"]), (d0, state["discriminator"])):
        for key, value in before.items():
            if value.is_floating_point() and "running" not in key:
                assert not torch.equal(value, after[key]), f"{key} did not change"


def test_short_training_lowers_validation_l1(synthetic, tmp_path):
    val = PairedImageDataset(synthetic, "val", train=False)
    torch.manual_seed(0)
    untrained = train.validation_l1(Generator(ngf=8), val, 0, torch.device("cpu"), seed=0)
    history = train.main(["--data", str(synthetic), "--runs-dir", str(tmp_path), "--name", "learn",
                          "--epochs", "4", "--epochs-decay", "2", "--lr", "1e-3", *TINY])
    assert len(history) == 6
    assert history[-1] < 0.6 * untrained, (untrained, history)


def test_run_folder_holds_samples_losses_curve_and_checkpoint(tiny_run):
    assert (tiny_run / "samples" / "epoch_001.png").is_file() and (tiny_run / "samples" / "epoch_002.png").is_file()
    assert (tiny_run / "loss_curve.png").stat().st_size > 10_000
    with open(tiny_run / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 25))  # 12 pairs x 2 epochs
    assert all(float(r["loss_G_l1"]) > 0 for r in rows)
    state = read_checkpoint(tiny_run / "checkpoints" / "latest.pt")
    assert (state["epoch"], state["step"], state["config"]["ngf"]) == (2, 24, 8)
    assert Generator.from_checkpoint(tiny_run / "checkpoints" / "latest.pt").down[0].conv.out_channels == 8


def test_cache_keeps_the_val_pairs_scored_each_epoch_and_only_those(synthetic):
    cached_train, cached_val = train.load_data(Config(data=str(synthetic), cache=True))
    _, plain_val = train.load_data(Config(data=str(synthetic), cache=False))
    generator = Generator(ngf=8)
    first = train.validation_l1(generator, cached_val, 3, torch.device("cpu"), seed=0)
    assert sorted(cached_val.cache) == [0, 1, 2] and plain_val.cache is None
    assert train.validation_l1(generator, cached_val, 3, torch.device("cpu"), seed=0) == first  # from the cache
    assert train.validation_l1(generator, plain_val, 3, torch.device("cpu"), seed=0) == first
    assert cached_train.cache == {}  # filled by train.py's preload, not here


def test_loss_curve_of_a_paper_run_is_thinned_without_losing_a_spike():
    steps = np.arange(1, 219_201, dtype=float)
    values = 10 + np.sin(steps / 1000)
    values[123_456] = 99.0  # one step's spike
    mean_x, mean_y, band_x, low, high = train.loss_curve(steps, values, smooth=50, points=2000)
    assert len(mean_x) == len(mean_y) <= 2000 and len(band_x) == len(low) == len(high) <= 2000
    assert high.max() == 99.0 and low.min() == values.min()
    spike_at = band_x[high.argmax()]
    assert spike_at <= steps[123_456] < spike_at + 110  # the band point whose run of steps holds it
    assert np.all(low <= high) and np.all(np.diff(band_x) > 0)
    # the mean is the running mean of the 110 steps up to each point (50 asked; 110 steps per point)
    assert mean_y[100] == pytest.approx(values[int(mean_x[100]) - 110:int(mean_x[100])].mean())
    # a short run is drawn step by step, as logged
    mean_x, mean_y, band_x, low, high = train.loss_curve(steps[:300], values[:300], smooth=50, points=2000)
    assert np.array_equal(band_x, steps[:300]) and np.array_equal(low, values[:300]) and np.array_equal(high, low)
    assert len(mean_x) == 300 - 50 + 1


def test_loss_plot_of_a_long_run_is_written_and_of_no_steps_is_skipped(tmp_path):
    csv_path = tmp_path / "losses.csv"
    csv_path.write_text("step,epoch,lr,loss_D_real,loss_D_fake,loss_G_gan,loss_G_l1\n")
    train.plot_losses(csv_path, tmp_path / "empty.png")
    assert not (tmp_path / "empty.png").exists()
    rows = "".join(f"{s},{s // 1096 + 1},0.0002,0.5,0.6,{1 + s / 1e5:.5f},{20 + s % 7}\n" for s in range(1, 30_001))
    csv_path.write_text(csv_path.read_text() + rows)
    train.plot_losses(csv_path, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 10_000


def test_existing_run_is_not_overwritten(tiny_run, capsys):
    before = (tiny_run / "checkpoints" / "latest.pt").read_bytes()
    with pytest.raises(SystemExit):
        train.main(["--data", "x", "--runs-dir", str(tiny_run.parent), "--name", tiny_run.name])
    assert "--resume" in capsys.readouterr().err
    assert (tiny_run / "checkpoints" / "latest.pt").read_bytes() == before


def test_a_folder_with_an_earlier_runs_checkpoints_is_not_overwritten(synthetic, tmp_path, capsys):
    """A run whose latest.pt was removed still holds its best.pt, which a new run of that name would replace."""
    checkpoints = tmp_path / "old" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "best.pt").write_bytes(b"an earlier run's best weights")
    with pytest.raises(SystemExit):
        train.main(["--data", str(synthetic), "--runs-dir", str(tmp_path), "--name", "old", *TINY])
    assert "holds checkpoints of an earlier run (best.pt)" in capsys.readouterr().err
    assert [p.name for p in checkpoints.iterdir()] == ["best.pt"]
    assert (checkpoints / "best.pt").read_bytes() == b"an earlier run's best weights"


def test_resuming_a_checkpoint_without_a_config_is_refused_with_one_line(tiny_run, tmp_path, capsys):
    state = read_checkpoint(tiny_run / "checkpoints" / "latest.pt")
    del state["config"]
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "run" / "checkpoints" / "latest.pt")
    with pytest.raises(SystemExit):
        train.main(["--resume", str(tmp_path / "run")])
    assert "is not a train.py checkpoint (no optimizer state, config or epoch)" in capsys.readouterr().err


def test_a_preset_that_changes_a_resumed_runs_network_is_named(tiny_run, capsys):
    with pytest.raises(SystemExit):
        train.main(["--resume", str(tiny_run), "--preset", "demo", "--epochs", "5"])
    assert "--ngf, --ndf cannot change" in (err := capsys.readouterr().err) and "(--preset demo sets it)" in err
    with pytest.raises(SystemExit):
        train.main(["--resume", str(tiny_run), "--preset", "demo", "--ngf", "8", "--ndf", "8", "--batch-size", "2"])
    assert "--batch-size cannot change" in (err := capsys.readouterr().err) and "--preset" not in err


def test_resume_continues_at_the_saved_epoch_and_matches_an_uninterrupted_run(synthetic, tmp_path, capsys,
                                                                              monkeypatch):
    """Both runs time the convolutions alike (made-up timings: PyTorch's kernels faster for the 8 transposed
    ones); the resumed run keeps that choice although its own timings would now pick none. In fp32: under
    bf16 (native on some CPUs) the convolutions are not timed."""
    def made_up(conv, *args):
        faster = isinstance(conv, torch.nn.ConvTranspose2d) and not torch.backends.mkldnn.enabled
        return 0.001 if faster else 0.01
    monkeypatch.setattr(utils, "_seconds_forward_backward", made_up)
    common = ["--data", str(synthetic), "--runs-dir", str(tmp_path), "--epochs-decay", "0", "--lr", "5e-4", *TINY,
              "--amp", "off"]
    train.main([*common, "--name", "straight", "--epochs", "2"])
    train.main([*common, "--name", "split", "--epochs", "1"])
    assert capsys.readouterr().out.count("convolution kernels timed at start (") == 2
    monkeypatch.setattr(utils, "_seconds_forward_backward", lambda *args: 0.01)
    history = train.main(["--resume", str(tmp_path / "split"), "--epochs", "2", "--name", "ignored"])
    assert len(history) == 1  # only the second epoch ran
    assert "convolution kernels as chosen when the run started: PyTorch's own for 8 of 21" in capsys.readouterr().out
    assert json.loads((tmp_path / "split" / "config.json").read_text())["name"] == "split"  # where it really is
    straight = read_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt")
    resumed = read_checkpoint(tmp_path / "split" / "checkpoints" / "latest.pt")
    assert (resumed["epoch"], resumed["step"]) == (straight["epoch"], straight["step"]) == (2, 24)
    assert resumed["pytorch_convolutions"] == straight["pytorch_convolutions"] == ["G.up.0.conv", "G.up.1.conv",
        "G.up.2.conv", "G.up.3.conv", "G.up.4.conv", "G.up.5.conv", "G.up.6.conv", "G.final"]
    for key, value in straight["generator"].items():
        assert torch.allclose(value.float(), resumed["generator"][key].float(), atol=1e-6), key
    with open(tmp_path / "split" / "losses.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 25))


def test_lsgan_mode_trains(synthetic, tmp_path):
    history = train.main(["--data", str(synthetic), "--runs-dir", str(tmp_path), "--name", "ls",
                          "--gan-mode", "lsgan", "--epochs", "1", "--epochs-decay", "0", *TINY])
    assert len(history) == 1 and 0 < history[0] < 2


def test_real_pairs_train_a_few_steps(real_maps, tmp_path):
    subset = tmp_path / "real"
    for split in ("train", "val"):
        (subset / split).mkdir(parents=True)
        for path in sorted((real_maps / split).glob("*.jpg"))[:2]:
            (subset / split / path.name).symlink_to(path)
    history = train.main(["--data", str(subset), "--runs-dir", str(tmp_path), "--name", "real",
                          "--epochs", "1", "--epochs-decay", "0", *TINY])
    assert len(history) == 1 and 0 < history[0] < 2
    assert (tmp_path / "real" / "samples" / "epoch_001.png").is_file()


def test_default_speed_settings_learn_like_the_official_baseline(synthetic, tmp_path, capsys, monkeypatch):
    """Fused Adam, freed gradients, CPU tuning, channels_last, and either (where native) bf16 or PyTorch's own
    convolution kernels (made to time faster for every layer, so that all 21 run with them) change nothing
    learned."""
    common = ["--data", str(synthetic), "--runs-dir", str(tmp_path), "--epochs", "3", "--epochs-decay", "1",
              "--lr", "1e-3", *TINY]
    monkeypatch.setattr(utils, "_seconds_forward_backward", lambda *args: 0.01 if torch.backends.mkldnn.enabled else 0.001)
    fast = train.main([*common, "--name", "fast"])
    out = capsys.readouterr().out
    bf16 = utils.autocast_dtype(torch.device("cpu"), "auto") == torch.bfloat16
    assert "free grads on, G stepped during backward" in out
    assert ("not timed under autocast" if bf16 else "PyTorch's own for 21 of 21") in out
    baseline = train.main([*common, "--name", "baseline", "--amp", "off", "--channels-last", "off", "--no-fused-adam",
                                  "--no-free-grads", "--no-cpu-tuning", "--no-cpu-conv-autotune"])
    out = capsys.readouterr().out
    assert "free grads off" in out and "convolution kernels" not in out
    assert abs(fast[-1] - baseline[-1]) / baseline[-1] < 0.10, (fast, baseline)
    config = (tmp_path / "baseline" / "config.json").read_text()
    assert '"fused_adam": false' in config and '"channels_last": "off"' in config


def test_compile_flag_trains(synthetic, tmp_path, monkeypatch, capsys):
    """--compile wraps G and D in torch.compile's modules (here with the eager backend: inductor's C++
    build takes a minute); a wrapped module used as a truth value raised TypeError in train_step."""
    compile_eagerly = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: compile_eagerly(module, backend="eager"))
    history = train.main(["--data", str(synthetic), "--runs-dir", str(tmp_path), "--name", "compiled", "--compile",
                          "--epochs", "1", "--epochs-decay", "0", *TINY])
    assert len(history) == 1 and 0 < history[0] < 2
    assert "compile on" in capsys.readouterr().out


def test_losses_are_written_every_10_steps_and_no_sample_grid_is_asked(synthetic, tmp_path, monkeypatch):
    """Losses reach the CSV in blocks (one device sync per block, not per step); --sample-count 0 is valid."""
    on_disk = []
    real_step = train.train_step

    def counting_step(*args, **kwargs):
        losses = tmp_path / "blocks" / "losses.csv"
        on_disk.append(len(losses.read_text().splitlines()) - 1 if losses.exists() else 0)
        return real_step(*args, **kwargs)
    monkeypatch.setattr(train, "train_step", counting_step)
    train.main(["--data", str(synthetic), "--runs-dir", str(tmp_path), "--name", "blocks", "--epochs", "2",
                "--epochs-decay", "0", *TINY, "--sample-count", "0"])
    assert on_disk[:12] == [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 10, 10]  # step 1 at once, then steps 2..10 together
    assert on_disk[12:15] == [12, 12, 12]  # the epoch's end writes what is left
    assert (tmp_path / "blocks" / "checkpoints" / "latest.pt").is_file()
    assert not (tmp_path / "blocks" / "samples").exists()


def test_a_new_run_starts_fresh_logs_where_a_failed_run_left_some(synthetic, tmp_path):
    run_dir = tmp_path / "again"
    run_dir.mkdir()
    (run_dir / "losses.csv").write_text("step,epoch,lr,loss_D_real\n1,1,0.0002,0.5\n2,1,0.0002,0.5\n")
    (run_dir / "val.csv").write_text("epoch,step,val_l1,seconds\n1,2,0.5,1.0\n")
    train.main(["--data", str(synthetic), "--runs-dir", str(tmp_path), "--name", "again", "--epochs", "1",
                "--epochs-decay", "0", *TINY])
    steps = [int(line.split(",")[0]) for line in (run_dir / "losses.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 13))  # the old rows are gone, no step twice
    assert len((run_dir / "val.csv").read_text().splitlines()) == 2


def test_resuming_a_finished_run_says_so(tiny_run, capsys):
    with pytest.raises(SystemExit):
        train.main(["--resume", str(tiny_run)])
    assert "has finished all its 2 epochs; raise --epochs or --epochs-decay" in capsys.readouterr().err


def test_resume_of_a_checkpoint_without_a_kernel_choice_stays_on_onednn_and_a_foreign_choice_is_refused(
        tiny_run, tmp_path, capsys):
    """A checkpoint from before the per-layer choice ran all on oneDNN, and so does its continuation."""
    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    latest = run / "checkpoints" / "latest.pt"
    state = torch.load(latest, weights_only=False)
    del state["pytorch_convolutions"]
    torch.save(state, latest)
    train.main(["--resume", str(run), "--epochs", "2"])
    assert "convolution kernels as chosen when the run started: oneDNN for all 21" in capsys.readouterr().out
    state = torch.load(latest, weights_only=False)
    assert state["epoch"] == 3 and state["pytorch_convolutions"] == []
    state["pytorch_convolutions"] = ["G.up.9.conv"]
    torch.save(state, latest)
    with pytest.raises(SystemExit, match=r"lists convolutions this model does not have \(G.up.9.conv\); resume "
                                         "with --no-cpu-conv-autotune"):
        train.main(["--resume", str(run), "--epochs", "3"])
