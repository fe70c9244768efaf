"""MUNITGenerator / MUNITDiscriminator: parameter-count and shape parity with the reference, AdaIN routing, seeding,
bad input (shared/research/git.md §1, §6e)."""

import pytest
import torch

import lt_lightning.generators.munit as munit_module
from lt_lightning.callbacks import GenerativeInvarianceTransfer
from lt_lightning.generators import MUNIT_CONFIGS, MUNITDiscriminator, MUNITGenerator, munit_config


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny(**kw) -> MUNITGenerator:
    return MUNITGenerator(1, 8, **{**MUNIT_CONFIGS["tiny"]["generator"], **kw})


def test_reference_parameter_counts_match_the_official_config():
    g = MUNITGenerator(1, 28, **MUNIT_CONFIGS["reference"]["generator"])
    assert _count(g) == 15_007_369
    assert (_count(g.enc_style), _count(g.enc_content), _count(g.mlp), _count(g.dec)) == (
        2_758_664,
        5_379_584,
        1_120_768,
        5_748_353,
    )
    assert g.dec.num_adain_params == 4096
    assert _count(MUNITGenerator(3, 32)) == 15_026_187
    assert _count(MUNITDiscriminator(1, **MUNIT_CONFIGS["reference"]["discriminator"])) == 2_755_009
    assert _count(MUNITDiscriminator(3)) == 2_757_057


def test_tiny_and_small_parameter_counts():
    assert _count(tiny()) == 160_393
    assert _count(MUNITDiscriminator(1, **MUNIT_CONFIGS["tiny"]["discriminator"])) == 8_529
    small = munit_config("small")
    assert _count(MUNITGenerator(1, 28, **small["generator"])) == 548_201
    assert _count(MUNITDiscriminator(1, **small["discriminator"])) == 41_393


@pytest.mark.parametrize(("chans", "side", "content", "patch"), [(1, 28, 7, 1), (3, 32, 8, 2)])
def test_reference_shapes(chans, side, content, patch):
    g = MUNITGenerator(chans, side)
    x = torch.rand(2, chans, side, side) * 2 - 1
    c, s = g.encode(x)
    assert c.shape == (2, 256, content, content) and s.shape == (2, 8, 1, 1)
    assert g.decode(c, s).shape == x.shape
    assert g(x.add(1).div(2)).shape == x.shape
    assert [o.shape for o in MUNITDiscriminator(chans)(x)] == [(2, 1, patch, patch)]


def test_multi_scale_discriminator_halves_each_scale():
    outputs = MUNITDiscriminator(3, num_scales=2)(torch.zeros(2, 3, 32, 32))
    assert [tuple(o.shape) for o in outputs] == [(2, 1, 2, 2), (2, 1, 1, 1)]


def test_tiny_shapes_at_8x8():
    c, s = tiny().encode(torch.zeros(3, 1, 8, 8))
    assert c.shape == (3, 32, 4, 4) and s.shape == (3, 8, 1, 1)


def test_decoder_routes_the_mlp_outputs_to_adain_as_bias_then_weight(monkeypatch):
    g = tiny()
    n = g.dec.num_adain_params  # 2 blocks x 2 AdaIN x (32 bias + 32 weight) = 256
    assert n == 256
    values = torch.cat([torch.linspace(-1, 1, 32), torch.linspace(0.5, 2.0, 32)] * 4)
    last = g.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(values)  # every style now maps to these AdaIN parameters
    outputs = []
    real = munit_module.adaptive_instance_norm

    def spy(x, weight, bias, eps=1e-5):
        out = real(x, weight, bias, eps=1e-10)
        outputs.append(out)
        return out

    monkeypatch.setattr(munit_module, "adaptive_instance_norm", spy)
    c, _ = g.encode(torch.rand(2, 1, 8, 8) * 2 - 1)
    g.decode(c, torch.randn(2, 8))
    assert len(outputs) == 4
    for out in outputs:  # each (sample, channel): mean = bias, std = weight
        torch.testing.assert_close(out.mean(dim=(2, 3)), values[:32].expand(2, 32), atol=1e-4, rtol=0)
        torch.testing.assert_close(
            out.std(dim=(2, 3), unbiased=False), values[32:64].expand(2, 32), atol=1e-3, rtol=1e-3
        )


def test_forward_is_seeded_keeps_range_and_uses_styles():
    g = tiny().eval()
    x = torch.rand(4, 1, 8, 8)
    a = g(x, generator=torch.Generator().manual_seed(1))
    b = g(x, generator=torch.Generator().manual_seed(1))
    c = g(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    style = torch.zeros(4, 8)
    assert torch.equal(g(x, style=style), g(x, style=style.view(4, 8, 1, 1)))


def test_the_git_callback_calls_it_as_a_generator():
    git = GenerativeInvarianceTransfer(tiny(), fraction=0.5, mean=[0.5], std=[0.5], start_epoch=0)
    x, y = torch.zeros(4, 1, 8, 8), torch.arange(4)
    before = x.clone()
    assert int(git.augment([x, y], class_probability=None, seed=0)) == 2
    assert torch.equal(x[:2], before[:2]) and not torch.equal(x[2:], before[2:])


def test_geometry_too_small_names_the_size_and_the_minimum():
    with pytest.raises(ValueError, match=r"image_size 8 is too small for style_downsample=4.*at least 16x16.*<= 3"):
        MUNITGenerator(1, 8)  # the reference config on 8x8 digits
    with pytest.raises(ValueError, match=r"image_size 8 is too small.*n_downsample=3"):
        MUNITGenerator(1, 8, n_downsample=3, style_downsample=2)
    with pytest.raises(ValueError, match="not divisible by 2\\*\\*n_downsample = 4"):
        MUNITGenerator(1, 30)
    with pytest.raises(ValueError, match="image_size 8 is too small"):
        MUNITGenerator(1)(torch.rand(1, 1, 8, 8))  # no image_size given: checked on the call


def test_channel_and_size_mismatch_are_named():
    with pytest.raises(ValueError, match="built for 1-channel images, got 3 channels"):
        tiny()(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="built for 8x8 images, got 16x16"):
        tiny()(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="built for 3-channel images"):
        MUNITDiscriminator(3)(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="dim must be an integer >= 1, got 0"):
        MUNITGenerator(1, 28, dim=0)
    with pytest.raises(ValueError, match="config must be one of"):
        munit_config("huge")
