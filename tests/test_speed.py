"""Speed settings are chosen from what the hardware has; benchmark.py reports what the README shows."""
import collections
import copy
import json
import os
import statistics
import time

import pytest
import torch

import benchmark
import utils


def test_bf16_only_where_it_is_native(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(utils, "cpu_flags", lambda: {"avx2", "fma"})
    assert utils.autocast_dtype(cpu, "auto") is None  # emulated bf16 is many times slower: stay in fp32
    monkeypatch.setattr(utils, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert utils.autocast_dtype(cpu, "auto") == torch.bfloat16
    monkeypatch.setattr(utils, "cpu_flags", lambda: {"amx_bf16"})
    assert utils.autocast_dtype(cpu, "auto") == torch.bfloat16
    assert utils.use_channels_last("auto", cpu, torch.bfloat16) and not utils.use_channels_last("auto", cpu, None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))  # Hopper: TF32 beats bf16
    assert utils.autocast_dtype(cuda, "auto") is None and utils.use_channels_last("auto", cuda, None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 5))  # Turing: bf16 only emulated
    assert utils.autocast_dtype(cuda, "auto") == torch.float16  # older GPUs: fp16 with a GradScaler
    assert utils.autocast_dtype(cpu, "off") is None and utils.autocast_dtype(cpu, "bf16") == torch.bfloat16


def test_train_step_with_a_grad_scaler_and_bf16_autocast_stays_finite():
    torch.manual_seed(0)
    from discriminator import Discriminator
    from generator import Generator
    g, d = Generator(ngf=8), Discriminator(ndf=8)
    opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True) for m in (g, d))
    x, y = torch.rand(1, 3, 256, 256) * 2 - 1, torch.rand(1, 3, 256, 256) * 2 - 1
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    losses = utils.train_step(g, d, opt_g, opt_d, x, y, 100.0, "vanilla", torch.bfloat16, scaler)
    assert losses.shape == (4,) and torch.isfinite(losses).all() and losses.dtype == torch.float32


def test_free_grads_drops_gradients_early_and_changes_no_weight():
    """Freed after each step, or G stepped parameter by parameter during its backward: the same weights
    as the official order, bit for bit."""
    from discriminator import Discriminator
    from generator import Generator
    x, y = torch.rand(1, 3, 256, 256) * 2 - 1, torch.rand(1, 3, 256, 256) * 2 - 1
    cpu, weights = torch.device("cpu"), []
    for free, during_backward in ((False, False), (True, False), (True, True)):
        torch.manual_seed(0)
        g, d = Generator(ngf=8), Discriminator(ndf=8)
        opt_g, opt_d = (torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True) for m in (g, d))
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        if during_backward:
            assert utils.step_during_backward(g, opt_g, cpu, scaler)
            seen = []  # G gradients left after ours ran: none, so each step saw only its own parameter
            for p in g.parameters():
                p.register_post_accumulate_grad_hook(
                    lambda _: seen.append(sum(q.grad is not None for q in g.parameters())))
        for _ in range(3):
            utils.train_step(g, d, opt_g, opt_d, x, y, 100.0, "vanilla", None, scaler, free_grads=free)
        grads = [p.grad for p in [*g.parameters(), *d.parameters()]]
        assert all(grad is None for grad in grads) if free else all(grad is not None for grad in grads)
        if during_backward:
            assert len(seen) == 3 * len(list(g.parameters())) and set(seen) == {0}
        weights.append({**g.state_dict(), **{f"d.{k}": v for k, v in d.state_dict().items()}})
    kept = weights[0]
    for freed in weights[1:]:
        assert all(torch.equal(kept[name], freed[name]) for name in kept)


def test_channels_last_adam_steps_the_same_weights_without_copying_gradients():
    """Fused, on channels_last weights: bit for bit torch's fused Adam on the same weights in NCHW, without
    the copy of each gradient that torch's fused CPU kernel makes (and never reads); outside step() the
    weights, gradients and moments keep their shapes and layout."""
    from generator import Generator
    torch.manual_seed(0)
    ours = Generator(ngf=8).to(memory_format=torch.channels_last)
    theirs = Generator(ngf=8)
    theirs.load_state_dict(ours.state_dict())
    opt_ours = utils.ChannelsLastAdam(ours.parameters(), lr=1e-2, betas=(0.5, 0.999), fused=True)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=1e-2, betas=(0.5, 0.999), fused=True)
    for _ in range(3):
        for p, q in zip(ours.parameters(), theirs.parameters()):
            q.grad = torch.randn_like(q)
            p.grad = q.grad.clone(memory_format=torch.preserve_format).contiguous(
                memory_format=torch.channels_last if p.dim() == 4 else torch.contiguous_format)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
            opt_ours.step()
        assert not [event for event in profile.events() if event.name == "aten::clone"]
        opt_theirs.step()
    conv = ours.up[1].conv.weight
    assert conv.shape == (128, 64, 4, 4) and conv.grad.shape == conv.shape
    for tensor in (conv, conv.grad, opt_ours.state[conv]["exp_avg"], opt_ours.state[conv]["exp_avg_sq"]):
        assert tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(p, q)
        assert torch.equal(opt_ours.state[p]["exp_avg_sq"], opt_theirs.state[q]["exp_avg_sq"])
    opt_theirs.load_state_dict(opt_ours.state_dict())  # a checkpoint of ours fits torch's Adam on NCHW weights


def test_a_resumed_adam_steps_as_if_never_stopped_when_the_weights_changed_layout():
    """A checkpoint keeps its run's layout (NHWC from a GPU or bf16 CPU run, NCHW from an fp32 one); resumed
    in the other, the moments must follow each weight's layout: the fused CPU kernel pairs elements by memory."""
    from generator import Generator
    layouts = (torch.channels_last, torch.contiguous_format)

    def gradients(step: int, net: torch.nn.Module) -> None:
        noise = torch.Generator().manual_seed(step)
        for p in net.parameters():
            p.grad = torch.randn(p.shape, generator=noise).contiguous(
                memory_format=torch.channels_last if p.dim() == 4 and not p.is_contiguous() else torch.contiguous_format)

    for saved_layout, resumed_layout in (layouts, layouts[::-1]):
        torch.manual_seed(0)
        net = Generator(ngf=8).to(memory_format=saved_layout)
        opt = utils.ChannelsLastAdam(net.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)
        for step in range(2):
            gradients(step, net)
            opt.step()
        weights, moments = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())  # strides kept
        gradients(2, net)
        opt.step()  # the run that never stopped
        resumed = Generator(ngf=8).to(memory_format=resumed_layout)
        resumed.load_state_dict(weights)
        opt_resumed = utils.ChannelsLastAdam(resumed.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)
        opt_resumed.load_state_dict(moments)
        gradients(2, resumed)
        opt_resumed.step()
        assert resumed.down[1].conv.weight.is_contiguous(memory_format=resumed_layout)
        assert all(torch.equal(p, q) for p, q in zip(net.parameters(), resumed.parameters()))


def test_bf16_channels_last_training_steps_with_channels_last_adam_as_with_torchs():
    """The CPU path where bf16 is native (emulated here): G stepped during its backward through the views, D after
    it, the same weights bit for bit as with torch's own fused Adam."""
    from discriminator import Discriminator
    from generator import Generator
    cpu, weights = torch.device("cpu"), []
    x = (torch.rand(1, 3, 256, 256) * 2 - 1).contiguous(memory_format=torch.channels_last)
    for adam in (utils.ChannelsLastAdam, torch.optim.Adam):
        torch.manual_seed(0)
        g = Generator(ngf=8).to(memory_format=torch.channels_last)
        d = Discriminator(ndf=8).to(memory_format=torch.channels_last)
        opt_g, opt_d = (adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True) for m in (g, d))
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        assert utils.step_during_backward(g, opt_g, cpu, scaler)
        for _ in range(2):
            losses = utils.train_step(g, d, opt_g, opt_d, x, x, 100.0, "vanilla", torch.bfloat16, scaler)
        assert torch.isfinite(losses).all()
        weights.append([p.detach().clone() for p in [*g.parameters(), *d.parameters()]])
    assert all(torch.equal(ours, theirs) for ours, theirs in zip(*weights))


def test_auto_layout_runs_the_generators_innermost_convolutions_nchw_with_the_same_results():
    """--channels-last auto on a CPU: G's 8 convolutions nearest the bottleneck run in NCHW (torch hands back a
    weight gradient in the layout it computed in), all others in NHWC; output and gradients as with all NHWC."""
    from discriminator import Discriminator
    from generator import Generator
    cpu, x = torch.device("cpu"), torch.rand(1, 3, 256, 256) * 2 - 1
    inner = {f"{part}.{i}.conv.weight" for part, blocks in (("down", range(4, 8)), ("up", range(4))) for i in blocks}
    results = {}
    for setting, expected in (("auto", "on (G's 8 innermost convolutions NCHW)"), ("on", "on")):
        torch.manual_seed(0)
        g, d = Generator(ngf=8), Discriminator(ndf=8)
        memory_format, note = utils.lay_out(g, d, setting, cpu, torch.bfloat16)
        assert memory_format == torch.channels_last and note == expected
        out = g(x.contiguous(memory_format=memory_format))  # fp32, to compare closely
        out.square().mean().backward()
        grads = {name: p.grad for name, p in g.named_parameters() if p.dim() == 4}
        nchw = {name for name, grad in grads.items() if not grad.is_contiguous(memory_format=torch.channels_last)}
        assert nchw == (inner if setting == "auto" else set()) and len(grads) == 16
        assert all(grads[name].is_contiguous() for name in nchw)
        assert out.is_contiguous(memory_format=torch.channels_last)
        inner_input = torch.rand(1, 64, 8, 8).contiguous(memory_format=torch.channels_last)
        assert g.down[5].conv(inner_input).is_contiguous(memory_format=torch.channels_last)  # handed on as NHWC
        results[setting] = out, grads
    (out_auto, grads_auto), (out_on, grads_on) = results["auto"], results["on"]
    torch.testing.assert_close(out_auto, out_on, rtol=1e-4, atol=1e-5)
    for name in grads_on:
        torch.testing.assert_close(grads_auto[name], grads_on[name], rtol=1e-3, atol=1e-6)
    g, d = Generator(ngf=8), Discriminator(ndf=8)
    assert utils.lay_out(g, d, "auto", torch.device("cuda"), None)[1] == "on"  # only on the CPU (nothing runs here)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in g.parameters() if p.dim() == 4)
    assert utils.lay_out(Generator(ngf=8), d, "auto", cpu, None) == (torch.contiguous_format, "off")  # fp32 CPU


def test_step_during_backward_is_left_out_where_it_would_be_wrong_or_slow():
    from generator import Generator
    g = Generator(ngf=8)
    opt = torch.optim.Adam(g.parameters(), fused=True)
    off, on = torch.amp.GradScaler("cpu", enabled=False), torch.amp.GradScaler("cpu", enabled=True)
    assert not utils.step_during_backward(g, opt, torch.device("cuda"), off)  # one kernel launch per weight
    assert not utils.step_during_backward(g, opt, torch.device("cpu"), on)  # fp16 scaling checks all grads first
    assert not utils.step_during_backward(g, opt, torch.device("cpu"), off, processes=2)  # DDP averages later
    g(torch.rand(1, 3, 256, 256)).mean().backward()
    assert all(p.grad is not None for p in g.parameters()) and not opt.state  # no hook was left behind


def test_benchmark_reports_ratios_to_the_baseline(tmp_path, synthetic):
    out = tmp_path / "bench.json"
    summary = benchmark.main(["--quick", "--ngf", "8", "--ndf", "8", "--large-batch", "2", "--data", str(synthetic),
                              "--json", str(out), "--variants", "fused Adam, channels_last, CPU conv autotune"])
    saved = json.loads(out.read_text())
    assert saved["train_speedup"] == summary["train_speedup"] > 0
    for key in ("inference_speedup", "train_peak_memory_ratio", "hardware", "data_pairs_per_second"):
        assert key in saved
    variants = {(r["kind"], r["variant"]) for r in saved["results"]}
    assert {("train", "baseline"), ("train", "default"), ("train", "fused Adam"), ("inference", "channels_last")} \
        <= variants
    baseline = next(r for r in saved["results"] if r["variant"] == "baseline" and r["kind"] == "train")
    assert baseline["speedup"] == 1.0 and baseline["peak_memory_mb"] > 50
    assert ("train", "CPU conv autotune") in variants
    assert ("inference", "fused Adam") not in variants and ("inference", "CPU conv autotune") not in variants
    for name in ("baseline", "default"):  # the headline figures: each the median of three processes
        for row in (next(r for r in saved["results"] if r["variant"] == name and r.get("mode") == "paper"),
                    next(r for r in saved["results"] if r["variant"] == name and r.get("batch") == 1)):
            assert len(row["images_per_second_each_process"]) == 3
            timings = sorted(row["seconds_each"])  # every timed step or call of the three, pooled
            assert len(timings) > 3 and row["images_per_second"] == 1 / statistics.median(timings)
    assert saved["data_pairs_per_second"]["cached"] > saved["data_pairs_per_second"]["from_disk"]
    assert "torch.compile" in saved["skipped"] and "cuDNN autotune" in saved["skipped"] and not saved["partial"]
    assert saved["skipped"]["free grads"] == "not in --variants" and ("train", "free grads") not in variants


def test_a_benchmark_cut_short_has_ratios_for_the_rows_whose_baseline_was_measured():
    rows = [{"kind": "train", "variant": "baseline", "batch": 1, "images_per_second": 2.0, "peak_memory_mb": 100.0},
            {"kind": "train", "variant": "default", "batch": 1, "images_per_second": 3.0, "peak_memory_mb": 90.0},
            {"kind": "train", "variant": "default", "batch": 4, "images_per_second": 5.0, "peak_memory_mb": 95.0},
            {"kind": "inference", "variant": "baseline", "mode": "paper", "error": "stopped after 150 s (--timeout)"},
            {"kind": "inference", "variant": "default", "mode": "paper", "images_per_second": 9.0,
             "peak_memory_mb": 50.0}]
    benchmark.add_ratios(rows)
    assert rows[0]["speedup"] == 1.0 and rows[1]["speedup"] == 1.5 and rows[1]["memory_ratio"] == 0.9
    assert all("speedup" not in row for row in rows[2:])  # no batch-4 baseline; a failed one


def test_benchmark_names_the_rows_when_asked_for_one_that_does_not_exist(capsys):
    with pytest.raises(SystemExit) as stopped:
        benchmark.main(["--variants", "default,bf16"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "no row named bf16" in error and "bf16 autocast" in error and "default without CUDA graphs" in error


def _raises() -> dict:
    raise ValueError("out of range\nsecond line")


def _dies() -> dict:
    os._exit(3)


def _hangs() -> dict:
    time.sleep(60)
    return {}


def test_a_measurement_that_fails_dies_or_hangs_becomes_one_line_and_the_run_goes_on():
    assert benchmark.isolated(_raises, timeout=60) == {"error": "ValueError: out of range"}
    assert benchmark.isolated(_dies, timeout=60) == {"error": "the measuring process died (exit code 3)"}
    started = time.perf_counter()
    assert benchmark.isolated(_hangs, timeout=1) == {"error": "stopped after 1 s (--timeout)"}
    assert time.perf_counter() - started < 30  # the hanging process was killed, not waited for


def kernels_run(call) -> set[str]:
    """The convolution kernels that call() ran, forward and backward, by their ATen names."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        call()
    return {event.key for event in profile.key_averages() if "conv" in event.key}


@pytest.mark.parametrize("layer", [torch.nn.Conv2d(16, 32, 4, stride=2, padding=1),
                                   torch.nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)],
                         ids=["conv", "transposed"])
def test_pytorch_kernels_compute_the_same_convolution_and_leave_onednn_on(layer):
    torch.manual_seed(0)
    inputs = torch.randn(1, layer.in_channels, 32, 32, requires_grad=True)
    grad_output = torch.randn_like(layer(inputs))

    def forward_backward():
        inputs.grad, layer.weight.grad, layer.bias.grad = None, None, None
        output = layer(inputs)
        assert torch.backends.mkldnn.enabled  # back on between this layer's calls
        output.backward(grad_output)
        return output.detach(), inputs.grad, layer.weight.grad

    pytorch_forward = {"aten::_slow_conv2d_forward", "aten::slow_conv_transpose2d"}
    onednn_kernels = kernels_run(forward_backward)
    assert not onednn_kernels & pytorch_forward  # without the switch, oneDNN runs it here
    reference = forward_backward()
    utils.use_pytorch_kernels(layer)
    pytorch_kernels = kernels_run(forward_backward)
    assert pytorch_kernels & pytorch_forward and "aten::mkldnn_convolution" not in pytorch_kernels
    if isinstance(layer, torch.nn.Conv2d):  # (the transposed backward has no kernel name of its own to see)
        assert "aten::mkldnn_convolution" in onednn_kernels
        assert "aten::_slow_conv2d_backward" in pytorch_kernels  # the backward switched too
    assert torch.backends.mkldnn.enabled
    for ours, theirs in zip(forward_backward(), reference):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError):
        layer(torch.randn(1, layer.in_channels + 1, 32, 32))  # a failing call still switches oneDNN back on
    assert torch.backends.mkldnn.enabled


def test_pytorch_kernels_also_switch_the_backward_of_a_layer_that_lay_out_runs_in_nchw():
    """A resumed fp32 run's kernel choice can name one of G's innermost layers, whose forward hook (lay_out's)
    hands on an NHWC copy of the output: the switch must wrap the convolution's own backward, not the copy's."""
    layer = torch.nn.Conv2d(8, 16, 4, stride=2, padding=1).to(memory_format=torch.channels_last)
    utils._run_nchw(layer)
    utils.use_pytorch_kernels(layer)
    inputs = torch.randn(1, 8, 32, 32).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    output = layer(inputs)
    assert output.is_contiguous(memory_format=torch.channels_last)
    assert "aten::_slow_conv2d_backward" in kernels_run(lambda: output.sum().backward())
    assert torch.backends.mkldnn.enabled


def test_onednn_held_to_avx2_makes_bf16_emulated_and_the_hardware_line_says_so(monkeypatch):
    """How the README measures the AVX2 case on an AMX machine: with oneDNN held to AVX2 bf16 is no longer
    native, so the defaults become fp32, and the benchmark's hardware line records the caps."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(utils, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(name, raising=False)
    assert utils.autocast_dtype(cpu, "auto") == torch.bfloat16 and "held to" not in utils.hardware_summary(cpu)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    amp_dtype = utils.autocast_dtype(cpu, "auto")
    assert amp_dtype is None and not utils.use_channels_last("auto", cpu, amp_dtype)
    summary = utils.hardware_summary(cpu)
    assert "bf16 emulated" in summary and "oneDNN held to AVX2" in summary and "ATen held to AVX2" in summary
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")  # a cap that keeps bf16
    assert utils.autocast_dtype(cpu, "auto") == torch.bfloat16
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX512_CORE")  # oneDNN's older name for the variable
    assert utils.autocast_dtype(cpu, "auto") is None


def test_convolutions_are_timed_in_fp32_only(monkeypatch):
    """Under bf16 autocast oneDNN keeps every layer without a timing (PyTorch's kernels have no native bf16)."""
    from discriminator import Discriminator
    from generator import Generator
    timed = collections.Counter()
    monkeypatch.setattr(utils, "_seconds_forward_backward", lambda conv, *args: timed.update([id(conv)]) or 0.01)
    g, d, example = Generator(ngf=8), Discriminator(ndf=8), torch.zeros(1, 3, 256, 256)
    names, note = utils.convolution_kernels(True, False, g, d, example.contiguous(memory_format=torch.channels_last),
                                            torch.bfloat16, saved=None)
    assert names == [] and not timed and "not timed under autocast" in note and "oneDNN for all 21" in note
    names, note = utils.convolution_kernels(True, False, g, d, example, None, saved=None)
    assert names == [] and len(timed) == 21 and "timed at start" in note


def test_choose_cpu_convolutions_switches_only_clearly_faster_layers_and_touches_no_state(monkeypatch):
    """With made-up timings: PyTorch's kernels 2x faster for G.up.1 (chosen), 20x faster but by under 2 ms
    for G.down.1 (left), slower elsewhere. Timing runs no BatchNorm update, dropout draw or optimizer."""
    from discriminator import Discriminator
    from generator import Generator
    torch.manual_seed(0)
    g, d = Generator(ngf=8), Discriminator(ndf=8)
    layers = utils.convolution_layers(g, d)
    assert len(layers) == 21 and {"G.up.1.conv", "G.final", "D.layers.0"} <= set(layers)
    timings = {id(layers["G.up.1.conv"]): (0.010, 0.005), id(layers["G.down.1.conv"]): (0.0004, 0.00002),
               id(layers["G.up.2.conv"]): (0.010, 0.0095)}  # 5% faster: not enough, and timed in every round
    calls = collections.Counter()

    def made_up_seconds(conv, *args):
        calls[id(conv)] += 1
        return timings.get(id(conv), (0.010, 0.020))[not torch.backends.mkldnn.enabled]
    monkeypatch.setattr(utils, "_seconds_forward_backward", made_up_seconds)
    before = {k: v.clone() for k, v in {**g.state_dict(), **d.state_dict()}.items()}
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    random_state = torch.get_rng_state()
    assert utils.choose_cpu_convolutions(g, d, x) == ["G.up.1.conv"]
    # two rounds of both kernels where one is clearly faster; all four, the warm-up included, where it is close
    assert calls[id(layers["G.up.2.conv"])] == 8 and calls[id(layers["G.final"])] == 4
    assert g.training and d.training and torch.equal(random_state, torch.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in {**g.state_dict(), **d.state_dict()}.items())
    monkeypatch.undo()
    assert "aten::slow_conv_transpose2d" not in kernels_run(lambda: g(x).mean().backward())
    utils.use_pytorch_kernels(layers["G.up.1.conv"])
    assert "aten::slow_conv_transpose2d" in kernels_run(lambda: g(x).mean().backward())


def test_every_benchmark_json_the_readme_names_is_there_with_its_hardware_and_rows():
    """The README's speed figures point at the JSON each run wrote; a renamed or lost file would leave them unbacked."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    linked = set(re.findall(r"Visualization/[\w.]+\.json", (root / "README.md").read_text()))
    assert len(linked) >= 20
    for name in sorted(linked):
        assert (root / name).is_file(), f"README names {name}, which is missing"
        run = json.loads((root / name).read_text())
        assert run["hardware"] and run["results"], name
        if "train_speedup" in run:  # (absent only where a run was cut short)
            assert run["train_speedup"] > 0 and run["inference_speedup"] > 0, name
