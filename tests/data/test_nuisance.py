"""Tests for the K49 nuisance transforms (rotation, background, dilation/erosion)."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

import lt_lightning.data.nuisance as nuisance_mod
from lt_lightning.data.nuisance import (
    NUISANCES,
    BackgroundNuisance,
    DilationErosionNuisance,
    RotationNuisance,
    create_nuisance,
    dilate,
    erode,
)

N_DRAWS = 200_000


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- distributions


def test_rotation_angles_uniform_on_minus180_180():
    theta = RotationNuisance().sample_params(_gen(0), N_DRAWS)
    assert theta.shape == (N_DRAWS,)
    assert theta.min() >= -180.0 and theta.max() < 180.0
    # Uniform[-180, 180): mean 0, sd 360/sqrt(12) ~ 104 -> standard error ~ 0.23; quartiles at -90, 0, 90.
    assert abs(theta.mean().item()) < 1.5
    q = torch.quantile(theta[:100_000], torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    assert torch.allclose(q, torch.tensor([-90.0, 0.0, 90.0], dtype=torch.float64), atol=2.0)
    # 36 bins of 10 degrees, each ~1/36 of the draws.
    hist = torch.histc(theta.float(), bins=36, min=-180, max=180) / N_DRAWS
    assert (hist - 1 / 36).abs().max() < 0.003


def test_background_levels_uniform_over_0_to_99():
    b = BackgroundNuisance().sample_params(_gen(1), N_DRAWS)
    counts = torch.bincount(b, minlength=100)
    assert counts.numel() == 100  # nothing above 99
    assert b.min() == 0 and b.max() == 99
    freq = counts.float() / N_DRAWS
    # each level 1%; binomial sd ~ 0.022% at 200k draws, so 0.15% is > 6 sd.
    assert (freq - 0.01).abs().max() < 0.0015


def test_dilation_branch_probability_and_kernel_sizes():
    params = DilationErosionNuisance().sample_params(_gen(2), N_DRAWS)
    assert params.shape == (N_DRAWS, 2) and params.dtype == torch.int64
    is_dil, k = params[:, 0], params[:, 1]
    assert set(is_dil.unique().tolist()) == {0, 1}
    assert abs(is_dil.float().mean().item() - 0.6) < 0.005
    dil_k, ero_k = k[is_dil == 1], k[is_dil == 0]
    assert set(dil_k.unique().tolist()) == {2, 3, 4}
    assert set(ero_k.unique().tolist()) == {1, 2}
    for value in (2, 3, 4):
        assert abs((dil_k == value).float().mean().item() - 1 / 3) < 0.01
    for value in (1, 2):
        assert abs((ero_k == value).float().mean().item() - 1 / 2) < 0.01


@pytest.mark.parametrize("name", sorted(NUISANCES))
def test_same_seed_same_params_different_seed_different(name):
    t = create_nuisance(name)
    a, b, c = t.sample_params(_gen(7), 50), t.sample_params(_gen(7), 50), t.sample_params(_gen(8), 50)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(NUISANCES))
def test_call_is_reproducible_and_independent_per_image(name):
    t = create_nuisance(name)
    x = torch.zeros(16, 1, 9, 9, dtype=torch.uint8)
    x[:, :, 3:6, 2:5] = 255
    x[:, :, 4, 6] = 128
    out1, out2 = t(x, generator=_gen(3)), t(x, generator=_gen(3))
    assert torch.equal(out1, out2)
    # __call__ is exactly sample_params then apply with the same generator state.
    assert torch.equal(out1, t.apply(x, t.sample_params(_gen(3), 16)))
    # per-image independent draws: identical inputs do not all get the same output.
    assert len({tuple(o.flatten().tolist()) for o in out1}) > 1


# ---------------------------------------------------------------------------------------------- rotation


def test_rotation_by_zero_is_identity():
    rot = RotationNuisance()
    xf = torch.rand(3, 3, 8, 11)
    assert torch.allclose(rot.apply(xf, torch.zeros(3)), xf, atol=1e-5)
    xu = (xf * 255).to(torch.uint8)
    assert torch.equal(rot.apply(xu, torch.zeros(3)), xu)


def test_rotation_multiples_of_90_on_square_image_are_exact_permutations():
    x = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)
    rot = RotationNuisance()
    # counter-clockwise as displayed == torch.rot90 over (H, W) with k=1.
    assert torch.allclose(rot.apply(x, torch.tensor([90.0])), torch.rot90(x, 1, dims=(2, 3)), atol=1e-4)
    assert torch.allclose(rot.apply(x, torch.tensor([180.0])), torch.rot90(x, 2, dims=(2, 3)), atol=1e-4)
    assert torch.allclose(rot.apply(x, torch.tensor([-90.0])), torch.rot90(x, -1, dims=(2, 3)), atol=1e-4)


def test_rotation_geometry_matches_torchvision_rotate(monkeypatch):
    # torchvision's tensor rotate has no bicubic mode; with our sampler switched to bilinear, the geometry
    # (centre, direction, aspect ratio, zero fill) must agree with torchvision's bilinear rotate.
    grid_sample = torch.nn.functional.grid_sample
    monkeypatch.setattr(
        nuisance_mod.F, "grid_sample", lambda *a, mode, **kw: grid_sample(*a, mode="bilinear", **kw), raising=True
    )
    x = torch.rand(2, 3, 7, 10)
    for angle in (30.0, -123.0, 171.0):
        ours = RotationNuisance().apply(x, torch.tensor([angle, angle]))
        ref = TF.rotate(x, angle, interpolation=InterpolationMode.BILINEAR)
        assert torch.allclose(ours, ref, atol=1e-5)


def test_rotation_uint8_output_in_range():
    x = torch.zeros(4, 1, 12, 12, dtype=torch.uint8)
    x[:, :, 4:8, 4:8] = 255
    out = RotationNuisance().apply(x, torch.tensor([10.0, 45.0, -60.0, 135.0]))
    assert out.dtype == torch.uint8 and out.shape == x.shape
    assert out.max() == 255  # bicubic overshoot is clamped, the centre stays bright
    assert out[:, :, 0, 0].eq(0).all()  # corners come from outside the canvas (zero fill)


# ---------------------------------------------------------------------------------------------- background


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_background_only_changes_zero_pixels(dtype):
    x = torch.tensor([[[0, 5, 0], [255, 0, 1]]], dtype=torch.uint8)  # (1, 2, 3)
    xb = x.unsqueeze(0).repeat(2, 1, 1, 1)
    if dtype == torch.float32:
        xb = xb.float() / 255
    out = BackgroundNuisance().apply(xb, torch.tensor([42, 99]))
    zero = xb == 0
    assert torch.equal(out[~zero], xb[~zero])
    scale = 1.0 if dtype == torch.uint8 else 1 / 255
    assert torch.allclose(out[0][zero[0]].float(), torch.full((3,), 42 * scale))
    assert torch.allclose(out[1][zero[1]].float(), torch.full((3,), 99 * scale))
    assert out.dtype == dtype


def test_background_colour_requires_all_channels_zero():
    x = torch.zeros(3, 1, 2, dtype=torch.uint8)
    x[0, 0, 1] = 9  # pixel (0, 1) is red-ish, not background; pixel (0, 0) is black
    out = BackgroundNuisance().apply(x, torch.tensor([50]))
    assert out[:, 0, 0].tolist() == [50, 50, 50]
    assert out[:, 0, 1].tolist() == [9, 0, 0]


# ---------------------------------------------------------------------------------------------- dilation / erosion


def test_dilate_k3_single_pixel_gives_3x3_square():
    x = torch.zeros(1, 1, 5, 5, dtype=torch.uint8)
    x[0, 0, 2, 2] = 200
    expected = torch.zeros(5, 5, dtype=torch.uint8)
    expected[1:4, 1:4] = 200
    assert torch.equal(dilate(x, 3)[0, 0], expected)


def test_erode_k3_square_gives_centre_pixel():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 1:4, 1:4] = 0.7
    expected = torch.zeros(5, 5)
    expected[2, 2] = 0.7
    assert torch.equal(erode(x, 3)[0, 0], expected)


def test_even_kernel_uses_cv2_anchor():
    # cv2 anchor (k//2, k//2) = (1, 1) for k=2: out[y, x] = max(x[y-1..y, x-1..x]); a spot at (1, 1) covers
    # (1..2, 1..2). For k=4, anchor 2: offsets -2..1, so the spot covers rows/cols 0..3 of a 6x6 image.
    x = torch.zeros(1, 1, 6, 6)
    x[0, 0, 1, 1] = 1.0
    assert dilate(x, 2)[0, 0].nonzero().tolist() == [[1, 1], [1, 2], [2, 1], [2, 2]]
    x4 = torch.zeros(1, 1, 6, 6)
    x4[0, 0, 2, 2] = 1.0
    rows, cols = dilate(x4, 4)[0, 0].nonzero().unbind(1)
    assert sorted(set(rows.tolist())) == [1, 2, 3, 4] and sorted(set(cols.tolist())) == [1, 2, 3, 4]
    # erosion with k=2 of a 2x2 block at (2..3, 2..3): only (3, 3) has its whole window (2..3, 2..3) inside.
    block = torch.zeros(1, 1, 6, 6)
    block[0, 0, 2:4, 2:4] = 1.0
    assert erode(block, 2)[0, 0].nonzero().tolist() == [[3, 3]]


def test_border_does_not_darken_or_brighten():
    # outside the image is neutral: -inf for dilation, +inf for erosion (cv2's default border value).
    x = torch.full((1, 1, 4, 4), 0.5)
    assert torch.equal(erode(x, 3), x)
    assert torch.equal(dilate(-x, 3), -x)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_erode_k1_is_identity(dtype):
    x = torch.randint(0, 256, (2, 3, 6, 7), dtype=torch.uint8).to(dtype)
    assert torch.equal(erode(x, 1), x)
    assert torch.equal(DilationErosionNuisance().apply(x, torch.tensor([[0, 1], [0, 1]])), x)


def test_dilation_nuisance_applies_each_row_to_its_image():
    x = torch.zeros(3, 1, 7, 7)
    x[:, 0, 3, 3] = 1.0
    x[2, 0, 2:5, 2:5] = 1.0
    out = DilationErosionNuisance().apply(x, torch.tensor([[1, 3], [0, 1], [0, 2]]))
    assert out[0, 0].sum() == 9 and out[0, 0, 2:5, 2:5].eq(1).all()
    assert torch.equal(out[1], x[1])
    assert torch.equal(out[2, 0], erode(x[2:3], 2)[0, 0])
    assert out[2, 0].sum() == 4


# ---------------------------------------------------------------------------------------------- shapes / errors


@pytest.mark.parametrize("name", sorted(NUISANCES))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_shapes_dtypes_single_and_batch(name, channels, dtype):
    t = create_nuisance(name)
    batch = torch.randint(0, 256, (4, channels, 10, 8), dtype=torch.uint8)
    batch[:, :, :3] = 0
    if dtype != torch.uint8:
        batch = batch.to(dtype) / 255
    out = t(batch, generator=_gen(0))
    assert out.shape == batch.shape and out.dtype == dtype
    single = t(batch[0], generator=_gen(0))
    assert single.shape == batch[0].shape and single.dtype == dtype
    # a single image is treated as a batch of one.
    assert torch.equal(single, t.apply(batch[:1], t.sample_params(_gen(0), 1))[0])


@pytest.mark.parametrize("name", sorted(NUISANCES))
@pytest.mark.parametrize("shape", [(8, 8), (1, 1, 1, 8, 8), (8,)])
def test_bad_shapes_raise(name, shape):
    t = create_nuisance(name)
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(B, C, H, W\).*got shape"):
        t(torch.zeros(shape))
    with pytest.raises(ValueError, match="got shape"):
        t.apply(torch.zeros(shape), t.sample_params(_gen(0), 1))


def test_bad_inputs_raise():
    with pytest.raises(TypeError, match="dtype"):
        RotationNuisance()(torch.zeros(1, 4, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="torch.Tensor"):
        BackgroundNuisance()([[0.0]])
    with pytest.raises(ValueError, match="one per image"):
        BackgroundNuisance().apply(torch.zeros(2, 1, 3, 3), torch.tensor([1]))
    with pytest.raises(ValueError, match="n must be"):
        RotationNuisance().sample_params(_gen(0), -1)
    with pytest.raises(ValueError, match="k must be"):
        dilate(torch.zeros(1, 3, 3), 0)
    with pytest.raises(ValueError, match="p_dilate"):
        DilationErosionNuisance(p_dilate=1.5)
    with pytest.raises(ValueError, match="low"):
        BackgroundNuisance(low=50, high=10)


def test_registry_and_unknown_name():
    assert set(NUISANCES) == {"rotation", "background", "dilation"}
    assert isinstance(create_nuisance("rotation"), RotationNuisance)
    assert create_nuisance("dilation", p_dilate=1.0).p_dilate == 1.0
    with pytest.raises(ValueError, match=r"unknown nuisance 'blur'.*\['background', 'dilation', 'rotation'\]"):
        create_nuisance("blur")
