"""ABSGD's attentional per-sample weights (Qi et al., arXiv 2012.06951; ``mylosses.py:21-56``, METHODS.md §6).

For a batch of per-sample losses ``l_i`` (class weights already inside), temperature ``lambda``, moving-average rate
``gamma`` and scale ``alpha``::

    u   <- (1 - gamma) * u + gamma * alpha * mean_i exp(l_i / lambda)        (u starts at 0)
    p_i  = exp(l_i / lambda) / (u * B)                                        (no gradient through p)
    loss = sum_i p_i * l_i

``lambda > 0`` up-weights hard samples (class imbalance), ``lambda < 0`` down-weights them (noisy labels). The
weights are normalised by the running estimate ``u``, not the batch sum, so ``sum_i p_i`` is about ``1 / alpha``
(``1 / (gamma * alpha)`` on the first step): that rescaling of the effective learning rate is the reference's.

Stable: the reference computes ``exp(l / lambda)`` directly and overflows for large losses and small lambda. Here
``u`` is kept as ``log u`` and everything is computed in the log domain (log-sum-exp), which gives the same weights
wherever the reference is finite and finite weights where it is not.

Example:
    >>> import torch
    >>> losses = torch.tensor([1.0, 2.0, 3.0])
    >>> start = torch.tensor(float("-inf"))  # u = 0 before the first step
    >>> weights, log_u = attentional_weights(losses, lam=1.0, log_u=start, gamma=0.5, alpha=1.0)
    >>> e = losses.exp(); u = 0.5 * e.mean()
    >>> torch.allclose(weights, e / (u * 3)), torch.allclose(log_u.exp().float(), u)
    (True, True)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def check_attention_args(lam: float, gamma: float, alpha: float) -> None:
    """lambda != 0 (finite), gamma in (0, 1], alpha > 0."""
    if isinstance(lam, bool) or not isinstance(lam, int | float) or not math.isfinite(lam) or lam == 0:
        raise ValueError(
            f"lam (lambda) must be a finite non-zero number (> 0 imbalance, < 0 noisy labels), got {lam!r}"
        )
    if isinstance(gamma, bool) or not (isinstance(gamma, int | float) and 0 < gamma <= 1):
        raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
    if isinstance(alpha, bool) or not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")


def batch_log_mean_exp(losses: Tensor, lam: float) -> Tensor:
    """``log(mean_i exp(l_i / lambda))`` without overflow."""
    return torch.logsumexp(losses / lam, dim=0) - math.log(losses.numel())


def update_log_u(log_u: Tensor, log_mean_exp: Tensor, gamma: float, alpha: float) -> Tensor:
    """``log`` of ``(1 - gamma) * u + gamma * alpha * mean exp(l / lambda)``, with ``log 0 = -inf`` at the start."""
    decay = math.log1p(-gamma) if gamma < 1 else -math.inf
    return torch.logaddexp(log_u + decay, log_mean_exp + math.log(gamma * alpha))


def attentional_weights(
    losses: Tensor,
    lam: float,
    log_u: Tensor,
    gamma: float,
    alpha: float,
    log_mean_exp: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-sample weights ``p_i`` (detached) and the updated ``log u``.

    Args:
        losses: per-sample losses ``(B,)``; must be finite (checked on the CPU; on accelerators, where the check
            would cost a device synchronisation per step, a non-finite loss shows as a non-finite result).
        lam: temperature lambda (non-zero).
        log_u: current ``log u`` (``-inf`` before the first step), a 0-d tensor.
        gamma: moving-average rate in (0, 1].
        alpha: scale inside ``u``.
        log_mean_exp: ``log mean exp(l / lambda)`` over the GLOBAL batch when training on several processes
            (all ranks then keep the same ``u``); default: this batch's.
    """
    check_attention_args(lam, gamma, alpha)
    dtype = losses.dtype if losses.is_floating_point() else torch.float32
    losses = losses.detach().to(torch.float64)  # float64: exp(l / lambda) ratios near the extremes stay exact
    if losses.ndim != 1 or losses.numel() == 0:
        raise ValueError(f"losses must be a non-empty 1-D tensor of per-sample losses, got shape {tuple(losses.shape)}")
    # Checked where reading costs nothing (CPU). On an accelerator the check would synchronise the device every step;
    # a non-finite loss there makes the weights and the training loss non-finite, which the divergence guard reports.
    if losses.device.type == "cpu" and not torch.isfinite(losses).all():
        bad = torch.nonzero(~torch.isfinite(losses)).flatten()[:5].tolist()
        raise ValueError(f"per-sample losses must be finite; samples {bad} are not (reduce the learning rate)")
    if log_mean_exp is None:
        log_mean_exp = batch_log_mean_exp(losses, lam)
    new_log_u = update_log_u(log_u.to(torch.float64), log_mean_exp.to(torch.float64), gamma, alpha)
    weights = torch.exp(losses / lam - new_log_u - math.log(losses.numel()))
    return weights.to(dtype), new_log_u


def effective_sample_size(weights: Tensor) -> Tensor:
    """``(sum p)^2 / sum p^2``: B for uniform weights, 1 when one sample takes all the weight."""
    return weights.sum() ** 2 / (weights**2).sum()
