"""MUNIT loss terms and AdaIN against their formulas on fixed tiny inputs (shared/research/git.md §1-2)."""

import pytest
import torch

from lt_lightning.functional.munit import (
    adaptive_instance_norm,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    munit_layer_norm,
    recon_l1,
)


def test_recon_l1_is_the_mean_absolute_error():
    x = torch.tensor([[1.0, -2.0], [0.5, 4.0]])
    y = torch.tensor([[0.0, 0.0], [1.5, 1.0]])
    assert recon_l1(x, y).item() == pytest.approx((1 + 2 + 1 + 3) / 4)


def test_lsgan_losses_sum_over_scales():
    fake = [torch.tensor([[0.5, -1.0]]), torch.tensor([2.0])]
    real = [torch.tensor([[1.0, 0.0]]), torch.tensor([3.0])]
    # scale 0: mean(0.25, 1) + mean(0, 1) = 0.625 + 0.5; scale 1: 4 + 4
    assert lsgan_discriminator_loss(fake, real).item() == pytest.approx(0.625 + 0.5 + 4 + 4)
    # scale 0: mean(0.25, 4) = 2.125; scale 1: 1
    assert lsgan_generator_loss(fake).item() == pytest.approx(2.125 + 1.0)
    with pytest.raises(ValueError, match="one output per scale"):
        lsgan_discriminator_loss(fake, real[:1])


def test_adain_output_has_the_injected_mean_and_std():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, 6, generator=g) * 3 + 1
    weight = torch.rand(3, 4, generator=g) * 2 + 0.1
    bias = torch.randn(3, 4, generator=g)
    out = adaptive_instance_norm(x, weight, bias, eps=1e-8)
    torch.testing.assert_close(out.mean(dim=(2, 3)), bias, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), weight, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="AdaIN needs"):
        adaptive_instance_norm(x, weight[:, :2], bias)


def test_adain_matches_the_reference_batch_norm_view():
    # The reference normalises a (1, B*C, H, W) view with F.batch_norm in training mode (biased variance, eps 1e-5).
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    weight, bias = torch.rand(2, 3), torch.randn(2, 3)
    ref = torch.nn.functional.batch_norm(
        x.reshape(1, 6, 4, 4), None, None, weight.reshape(6), bias.reshape(6), True, 0.1, 1e-5
    ).view(2, 3, 4, 4)
    torch.testing.assert_close(adaptive_instance_norm(x, weight, bias), ref)


def test_munit_layer_norm_uses_the_unbiased_std_with_eps_on_the_std():
    x = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    gamma, beta = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.0, 1.0, -1.0])
    flat = x.flatten(1)
    mean, std = flat.mean(1), flat.std(1, unbiased=True)
    expected = (x - mean.view(2, 1, 1, 1)) / (std.view(2, 1, 1, 1) + 1e-5) * gamma.view(1, 3, 1, 1)
    expected = expected + beta.view(1, 3, 1, 1)
    torch.testing.assert_close(munit_layer_norm(x, gamma, beta), expected)
