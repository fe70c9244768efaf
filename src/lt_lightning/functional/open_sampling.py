"""Open-Sampling maths (Wei et al., ICML 2022; hongxin001/open-sampling ``alg/ood_noise.py:16-40``): the
complementary label distribution of out-of-distribution images and their weighted cross-entropy.

With ``pi_c = n_c / N`` the training prior, the reference's "minimum complementary distribution" is
``Gamma_c = max(pi) + min(pi) - pi_c`` (the head gets ``min(pi)``, the tail ``max(pi)``), or ``alpha - pi_c`` for
``alpha > 0``. Each OOD image gets a label drawn from ``Categorical(Gamma / sum Gamma)``, anew at every step, and the
OOD loss is ``CE(z_ood, y_ood; weight = Gamma / sum(Gamma) * C)`` — PyTorch's weighted mean, so the scale of the
weights cancels and only their ratios matter.

Example:
    >>> [round(g, 6) for g in complementary_distribution((60, 30, 10)).tolist()]  # 0.6 + 0.1 - pi
    [0.1, 0.4, 0.6]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def complementary_distribution(class_counts: Sequence[int], alpha: float | None = None) -> Tensor:
    """Unnormalised ``Gamma`` (float64): ``max(pi) + min(pi) - pi`` (``alpha`` None or <= 0), else ``alpha - pi``.

    Args:
        class_counts: training images per class.
        alpha: the reference's ``--alpha``; must be ``>= max(pi)`` so that no class gets negative mass.

    Example:
        >>> complementary_distribution((3, 1), alpha=1.0).tolist()
        [0.25, 0.75]
    """
    counts = torch.as_tensor(list(class_counts), dtype=torch.float64)
    if counts.ndim != 1 or len(counts) < 1 or bool((counts < 0).any()) or float(counts.sum()) <= 0:
        raise ValueError(f"class_counts must be non-negative counts with a positive sum, got {list(class_counts)!r}")
    pi = counts / counts.sum()
    if alpha is None or alpha <= 0:
        return pi.max() + pi.min() - pi
    if not (isinstance(alpha, int | float | np.integer | np.floating) and np.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number or None, got {alpha!r}")
    if alpha < float(pi.max()):
        raise ValueError(
            f"alpha must be >= max(pi) = {float(pi.max()):.6g} (else a class gets negative mass), got {alpha!r}"
        )
    if alpha == float(pi.max()) and len(pi) == 1:
        raise ValueError(f"alpha = {alpha!r} leaves no mass on any class")
    return alpha - pi


def complementary_weights(gamma: Tensor) -> Tensor:
    """Class weights of the OOD cross-entropy: ``Gamma / sum(Gamma) * C`` (the reference's ``weight``)."""
    return gamma / gamma.sum() * len(gamma)


def sample_complementary_labels(gamma: Tensor, num: int, generator: torch.Generator | None = None) -> Tensor:
    """``num`` labels drawn i.i.d. from ``Categorical(gamma / sum(gamma))`` (int64, on ``gamma``'s device when the
    generator is a CPU one: drawn on the CPU, then moved).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sample_complementary_labels(torch.tensor([0.0, 1.0]), 4, g).tolist()
        [1, 1, 1, 1]
    """
    if num == 0:
        return torch.empty(0, dtype=torch.int64, device=gamma.device)
    probs = gamma.detach().double().cpu()
    return torch.multinomial(probs, num, replacement=True, generator=generator).to(gamma.device)


def open_sampling_ood_loss(logits: Tensor, labels: Tensor, gamma: Tensor) -> Tensor:
    """``F.cross_entropy(logits, labels, weight=Gamma / sum(Gamma) * C)`` (weighted mean over the OOD batch).

    Example:
        >>> gamma = torch.tensor([1.0, 3.0])
        >>> round(open_sampling_ood_loss(torch.zeros(2, 2), torch.tensor([0, 1]), gamma).item(), 4)  # log 2
        0.6931
    """
    weight = complementary_weights(gamma).to(dtype=logits.dtype, device=logits.device)
    return F.cross_entropy(logits, labels, weight=weight)
