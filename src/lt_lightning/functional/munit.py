"""Pure tensor maths of MUNIT (Huang et al., ECCV 2018) as trained by GIT (Zhou et al., ICLR 2022).

The losses of the reference trainer (``core/munit/trainer.py``, ``networks.py`` of the GIT repository; see
``shared/research/git.md`` §2), with ``|.|_1`` the MEAN absolute error and LSGAN objectives summed over the
discriminator's scales:

- reconstruction: ``recon_l1(x, y) = mean |x - y|`` (images, styles and contents alike);
- LSGAN discriminator: ``sum_scales mean(D(fake)^2) + mean((D(real) - 1)^2)``;
- LSGAN generator: ``sum_scales mean((D(fake) - 1)^2)``;
- AdaIN: per sample and channel, ``weight * (x - mean) / sqrt(var + eps) + bias`` (biased variance, as the
  reference's ``F.batch_norm`` on a ``(1, B*C, H, W)`` view in training mode);
- MUNIT's layer norm: per sample over ``C*H*W``, ``(x - mean) / (std + eps)`` with the UNBIASED std (eps on the std),
  then a per-channel affine.

No state, no Lightning: :class:`lt_lightning.methods.NuisanceMUNIT` combines these with the loss weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def recon_l1(input: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error ``mean |input - target|`` (MUNIT's ``recon_criterion``; targets are NOT detached).

    Example:
        >>> recon_l1(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
        tensor(1.5000)
    """
    return (input - target).abs().mean()


def lsgan_discriminator_loss(fake_outputs: Sequence[Tensor], real_outputs: Sequence[Tensor]) -> Tensor:
    """LSGAN discriminator loss summed over scales: ``sum_s mean(D_s(fake)^2) + mean((D_s(real) - 1)^2)``.

    Pass the discriminator's outputs on DETACHED fakes (the reference's ``x_ba.detach()``).

    Example:
        >>> lsgan_discriminator_loss([torch.tensor([0.5, 0.5])], [torch.tensor([1.0, 0.0])])
        tensor(0.7500)
    """
    if len(fake_outputs) != len(real_outputs) or not fake_outputs:
        raise ValueError(
            f"need one output per scale for fakes and reals, got {len(fake_outputs)} and {len(real_outputs)}"
        )
    return sum(
        (f.pow(2).mean() + (r - 1).pow(2).mean() for f, r in zip(fake_outputs, real_outputs, strict=True)),
        torch.zeros((), device=fake_outputs[0].device),
    )


def lsgan_generator_loss(fake_outputs: Sequence[Tensor]) -> Tensor:
    """LSGAN generator loss summed over scales: ``sum_s mean((D_s(fake) - 1)^2)``.

    Example:
        >>> lsgan_generator_loss([torch.tensor([0.0, 1.0]), torch.tensor([3.0])])
        tensor(4.5000)
    """
    if not fake_outputs:
        raise ValueError("need at least one discriminator output")
    return sum(((o - 1).pow(2).mean() for o in fake_outputs), torch.zeros((), device=fake_outputs[0].device))


def adaptive_instance_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """AdaIN: normalise each (sample, channel) map of ``x`` (B, C, H, W) to zero mean / unit variance, then scale by
    ``weight`` (B, C) and shift by ``bias`` (B, C): the output's per-channel mean is ``bias`` and its std ``|weight|``
    (up to ``eps``). Nothing constrains ``weight`` to be positive (as in the reference).

    Example:
        >>> x = torch.tensor([[[[0.0, 2.0], [0.0, 2.0]]]])
        >>> adaptive_instance_norm(x, torch.tensor([[3.0]]), torch.tensor([[5.0]]), eps=0.0).flatten().tolist()
        [2.0, 8.0, 2.0, 8.0]
    """
    if x.ndim != 4 or weight.shape != x.shape[:2] or bias.shape != x.shape[:2]:
        raise ValueError(
            f"AdaIN needs x (B, C, H, W) and weight/bias (B, C), got {tuple(x.shape)}, {tuple(weight.shape)}, "
            f"{tuple(bias.shape)}"
        )
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), unbiased=False, keepdim=True)
    x_hat = (x - mean) / torch.sqrt(var + eps)
    return weight[:, :, None, None] * x_hat + bias[:, :, None, None]


def munit_layer_norm(x: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
    """MUNIT's LayerNorm: per sample over all ``C*H*W``, ``(x - mean) / (std + eps)`` with the UNBIASED std, then
    ``gamma`` (C,) and ``beta`` (C,) per channel.

    Example:
        >>> x = torch.tensor([[[[1.0, 3.0]]]])  # mean 2, unbiased std sqrt(2)
        >>> munit_layer_norm(x, torch.ones(1), torch.zeros(1), eps=0.0).flatten().tolist()
        [-0.7071067690849304, 0.7071067690849304]
    """
    flat = x.flatten(1)
    mean = flat.mean(1).view(-1, *([1] * (x.ndim - 1)))
    std = flat.std(1).view(-1, *([1] * (x.ndim - 1)))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean) / (std + eps) * gamma.view(shape) + beta.view(shape)
