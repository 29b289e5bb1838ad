"""The two networks: sizes, shapes, layer choices, and the official weights' layout."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from discriminator import Discriminator
from generator import Generator, official_to_ours

KEYS_FILE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "official_pix2pix_keys.txt"


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_official_networks():
    assert count(Generator(ngf=64)) == 54_413_955
    assert count(Discriminator(ndf=64)) == 2_768_705


def test_generator_shapes_and_size_check():
    g = Generator(ngf=8)
    assert g(torch.randn(2, 3, 256, 256)).shape == (2, 3, 256, 256)
    assert g(torch.randn(1, 3, 256, 512)).shape == (1, 3, 256, 512)
    out = g(torch.randn(1, 3, 256, 256))
    assert out.min() >= -1 and out.max() <= 1
    with pytest.raises(ValueError, match="multiples of 256"):
        g(torch.randn(1, 3, 300, 256))


def test_discriminator_gives_30x30_patch_logits_and_reads_condition_first():
    d = Discriminator(ndf=8)
    x, y = torch.randn(1, 3, 256, 256), torch.randn(1, 3, 256, 256)
    assert d(x, y).shape == (1, 1, 30, 30)
    assert not torch.allclose(d(x, y), d(y, x))  # the order of the pair matters
    with torch.no_grad():
        d.layers[0].weight[:, 3:] = 0  # blind to the image: only the condition (first 3 channels) counts
    assert torch.allclose(d(x, y), d(x, torch.randn_like(y)))


def test_only_outer_convs_have_biases_and_dropout_sits_in_decoder_layers_2_to_4():
    g, d = Generator(ngf=8), Discriminator(ndf=8)
    g_biased = [n for n, m in g.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None]
    assert g_biased == ["final"]
    d_biased = [n for n, m in d.named_modules() if isinstance(m, nn.Conv2d) and m.bias is not None]
    assert d_biased == ["layers.0", "layers.11"]
    dropout_layers = [i + 1 for i, up in enumerate(g.up) if any(isinstance(m, nn.Dropout) for m in up)]
    assert dropout_layers == [2, 3, 4]
    norms = [i + 1 for i, down in enumerate(g.down) if any(isinstance(m, nn.BatchNorm2d) for m in down)]
    assert norms == [2, 3, 4, 5, 6, 7]


def test_decoder_batchnorm_gets_dense_channels_last_gradients_and_the_same_result(monkeypatch):
    """torch.cat's backward hands each part a strided channel slice under channels_last (BatchNorm's CPU
    backward is many times slower on it); the generator copies it back to dense NHWC, changing no value."""
    import generator as generator_module
    torch.manual_seed(0)
    g = Generator(ngf=8).to(memory_format=torch.channels_last)
    x = (torch.rand(1, 3, 256, 256) * 2 - 1).contiguous(memory_format=torch.channels_last)
    seen = []  # the gradients BatchNorm's backward receives (a node's pre-hook runs after the tensor hooks)

    def watch(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        output.grad_fn.register_prehook(lambda grads: seen.append(grads[0]))
    for up in g.up[1:]:
        up.norm.register_forward_hook(watch)

    def gradients() -> list[torch.Tensor]:
        seen.clear()
        g.zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        g(x).square().mean().backward()
        return [p.grad.clone() for p in g.parameters()]

    hooked = gradients()
    assert len(seen) == 6 and all(grad.is_contiguous(memory_format=torch.channels_last) for grad in seen)
    monkeypatch.setattr(generator_module, "_dense_gradient", lambda t: t)
    plain = gradients()
    assert not all(grad.is_contiguous(memory_format=torch.channels_last) for grad in seen)  # what it fixes
    for ours, theirs in zip(hooked, plain):
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    monkeypatch.undo()
    compiled = torch.compile(Generator(ngf=8).to(memory_format=torch.channels_last), backend="eager", fullgraph=True)
    compiled(x).mean().backward()  # a graph break (from registering the hook while tracing) would raise here


def test_initialisation_follows_the_paper():
    torch.manual_seed(0)
    g = Generator(ngf=64)
    conv = g.down[3].conv.weight
    assert abs(conv.std().item() - 0.02) < 0.001 and abs(conv.mean().item()) < 0.001
    gammas = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(gammas.mean().item() - 1.0) < 0.005 and abs(gammas.std().item() - 0.02) < 0.005
    assert torch.count_nonzero(g.final.bias) == 0


def official_layout() -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Keys and shapes of the official checkpoints, from the reference list."""
    if not KEYS_FILE.is_file():
        pytest.skip(f"{KEYS_FILE} not found")
    sections, current = {}, None
    for line in KEYS_FILE.read_text().splitlines():
        if line.startswith("#"):
            current = "G" if "generator" in line else "D"
            sections[current] = []
        elif line.strip():
            key, shape = line.split(" ", 1)
            sections[current].append((key, tuple(int(s) for s in shape.strip("() ").split(",") if s.strip())))
    return sections


class OfficialStyleUnetBlock(nn.Module):
    """The official nested U-Net block, re-written here from its description, to compare outputs."""

    def __init__(self, outer, inner, sub=None, outermost=False, innermost=False, dropout=False):
        super().__init__()
        down = nn.Conv2d(outer if not outermost else 3, inner, 4, 2, 1, bias=False)
        if outermost:
            layers = [down, sub, nn.ReLU(True), nn.ConvTranspose2d(inner * 2, 3, 4, 2, 1), nn.Tanh()]
        elif innermost:
            layers = [nn.LeakyReLU(0.2, True), down, nn.ReLU(True),
                      nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=False), nn.BatchNorm2d(outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), down, nn.BatchNorm2d(inner), sub, nn.ReLU(True),
                      nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1, bias=False), nn.BatchNorm2d(outer)]
            layers += [nn.Dropout(0.5)] if dropout else []
        self.outermost = outermost
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)  # in-place LeakyReLU edits x


def official_style_unet(ngf: int) -> nn.Module:
    block = OfficialStyleUnetBlock(ngf * 8, ngf * 8, innermost=True)
    for _ in range(3):
        block = OfficialStyleUnetBlock(ngf * 8, ngf * 8, block, dropout=True)
    for mult in (4, 2, 1):
        block = OfficialStyleUnetBlock(ngf * mult, ngf * mult * 2, block)
    wrapper = nn.Module()
    wrapper.model = OfficialStyleUnetBlock(3, ngf, block, outermost=True)
    wrapper.forward = lambda x: wrapper.model(x)
    return wrapper


@pytest.mark.parametrize("with_counters", [True, False])
def test_official_generator_weights_load_by_renaming_and_give_the_same_output(with_counters):
    layout = official_layout()["G"]
    torch.manual_seed(0)
    official = {key: torch.randn(shape) * 0.05 if shape else torch.tensor(7) for key, shape in layout}
    for key in official:
        if key.endswith("running_var"):
            official[key] = official[key].abs() + 0.5
    if not with_counters:
        official = {k: v for k, v in official.items() if not k.endswith("num_batches_tracked")}
    ours = Generator.from_state_dict(dict(official))
    assert sum(v.numel() for k, v in official.items() if "running" not in k and "num_batches" not in k) \
        == count(ours) == 54_413_955
    mapping = official_to_ours([k for k, _ in layout])
    assert len(set(mapping.values())) == len(layout)  # one-to-one: every tensor used exactly once
    for key, value in official.items():
        assert torch.equal(ours.state_dict()[mapping[key]], value)

    reference = official_style_unet(64)
    reference.load_state_dict(official, strict=with_counters)
    x = torch.randn(1, 3, 256, 256)
    ours.eval(), reference.eval()
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), atol=1e-5)


def test_official_discriminator_keys_match_ours_by_renaming():
    from discriminator import official_to_ours as rename_d
    layout = official_layout()["D"]
    ours = Discriminator(ndf=64).state_dict()
    mapping = rename_d([k for k, _ in layout])
    assert sorted(mapping.values()) == sorted(ours)
    for key, shape in layout:
        assert tuple(ours[mapping[key]].shape) == shape


def test_wrong_weights_are_refused_with_a_clear_message():
    g = Generator(ngf=8).state_dict()
    del g["final.bias"]
    with pytest.raises(ValueError, match="do not fit a U-Net 256 generator: missing: final.bias"):
        Generator.from_state_dict(g)
    with pytest.raises(ValueError, match="expected pix2pix U-Net generator weights"):
        Generator.from_state_dict(Discriminator(ndf=8).state_dict())


@pytest.mark.parametrize("with_counters", [True, False])
def test_official_discriminator_weights_load_and_match_a_functional_forward(with_counters):
    layout = official_layout()["D"]
    torch.manual_seed(1)
    official = {key: torch.randn(shape) * 0.05 if shape else torch.tensor(3) for key, shape in layout}
    official = {k: (v.abs() + 0.5 if k.endswith("running_var") else v) for k, v in official.items()
                if with_counters or not k.endswith("num_batches_tracked")}
    ours = Discriminator.from_state_dict(dict(official)).eval()
    x, y = torch.randn(1, 3, 256, 256), torch.randn(1, 3, 256, 256)

    def conv_bn_lrelu(h, conv, norm, stride):
        h = F.conv2d(h, official[f"model.{conv}.weight"], official.get(f"model.{conv}.bias"), stride, 1)
        if norm is not None:
            h = F.batch_norm(h, official[f"model.{norm}.running_mean"], official[f"model.{norm}.running_var"],
                             official[f"model.{norm}.weight"], official[f"model.{norm}.bias"], False)
        return F.leaky_relu(h, 0.2)

    h = conv_bn_lrelu(torch.cat([x, y], 1), 0, None, 2)
    h = conv_bn_lrelu(h, 2, 3, 2)
    h = conv_bn_lrelu(h, 5, 6, 2)
    h = conv_bn_lrelu(h, 8, 9, 1)
    expected = F.conv2d(h, official["model.11.weight"], official["model.11.bias"], 1, 1)
    with torch.no_grad():
        assert torch.allclose(ours(x, y), expected, atol=1e-5)


def test_a_discriminator_file_is_not_taken_for_a_generator(tmp_path):
    path = tmp_path / "d.pt"
    torch.save(Discriminator(ndf=8).state_dict(), path)
    with pytest.raises(ValueError, match="expected pix2pix U-Net generator weights"):
        Generator.from_checkpoint(path)
    assert Discriminator.from_checkpoint(path).layers[0].out_channels == 8
    torch.save(Generator(ngf=16).state_dict(), path)
    with pytest.raises(ValueError, match="expected 70x70 PatchGAN weights"):
        Discriminator.from_checkpoint(path)


def test_an_unreachable_url_fails_with_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # torch.hub's cache folder, made even when nothing arrives
    with pytest.raises(FileNotFoundError, match="cannot download http://127.0.0.1:9/.*by hand"):
        Generator.from_checkpoint("http://127.0.0.1:9/sat2map.pth")


def test_official_generator_weights_match_a_functional_forward_in_the_official_order():
    """torch.nn.functional calls straight on the official keys: down path, then up path with skips [x, up]."""
    layout = official_layout()["G"]
    torch.manual_seed(2)
    w = {key: torch.randn(shape) * 0.05 if shape else torch.tensor(1) for key, shape in layout}
    w = {k: (v.abs() + 0.5 if k.endswith("running_var") else v) for k, v in w.items()}
    ours = Generator.from_state_dict(dict(w)).eval()

    def bn(h, key):
        return F.batch_norm(h, w[key + ".running_mean"], w[key + ".running_var"], w[key + ".weight"],
                            w[key + ".bias"], False)

    def block(h, level):
        """Official UnetSkipConnectionBlock at depth `level` (1 = just inside the outermost)."""
        p = "model.model.1." + "model.3." * (level - 1) + "model."
        inner = F.leaky_relu(h, 0.2)  # the official in-place LeakyReLU also changes h, the skip below
        if level == 7:  # innermost: LeakyReLU, conv, ReLU, transposed conv, BatchNorm
            down = F.conv2d(inner, w[p + "1.weight"], stride=2, padding=1)
            up = bn(F.conv_transpose2d(F.relu(down), w[p + "3.weight"], stride=2, padding=1), p + "4")
        else:
            down = bn(F.conv2d(inner, w[p + "1.weight"], stride=2, padding=1), p + "2")
            up = bn(F.conv_transpose2d(F.relu(block(down, level + 1)), w[p + "5.weight"], stride=2, padding=1),
                    p + "6")
        return torch.cat([inner, up], 1)

    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        first = F.conv2d(x, w["model.model.0.weight"], stride=2, padding=1)
        expected = torch.tanh(F.conv_transpose2d(F.relu(block(first, 1)), w["model.model.3.weight"],
                                                 w["model.model.3.bias"], stride=2, padding=1))
        assert torch.allclose(ours(x), expected, atol=1e-5)
