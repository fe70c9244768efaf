"""Post-hoc and second-stage classifier maths: τ-normalisation, logit adjustment, LWS, MARC, and the τ sweep.

Notation: features ``f`` (B, D), head weight ``W`` (C, D) with rows ``w_c``, logits ``z`` (B, C), training priors
``π_c = n_c / N``.

=====================  ==========================================================  ================================
name                   logits                                                      source
=====================  ==========================================================  ================================
τ-normalisation        ``(w_c / ||w_c||^τ) · f``  (bias dropped by default)        Kang et al. 2020, ``tau_norm.py``
post-hoc logit adj.    ``z_c - log(π_c^τ + 1e-12)``                                Menon et al. 2021, ``main.py``
LWS                    ``s_c · z_c``  (bias included in z)                         Kang et al. 2020
MARC                   ``ω_c · z_c + β_c · ||w_c||``                               Wang et al. 2022
=====================  ==========================================================  ================================

Example:
    >>> import torch
    >>> tau_normalized_weight(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), 1.0)
    tensor([[1., 0.],
            [0., 1.]])
    >>> adjust_logits(torch.tensor([[1.0, 0.0]]), torch.tensor([0.9, 0.1]), 1.0).round(decimals=4)
    tensor([[1.1054, 2.3026]])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

# The official τ-norm sweep (classifier-balancing tau_norm.py: np.linspace(0, 2, 21)); also the logit-adjustment grid.
DEFAULT_TAU_GRID: tuple[float, ...] = tuple(round(0.1 * i, 10) for i in range(21))
# google-research logit_adjustment: log(prior^tau + 1e-12), so a zero prior stays finite.
LOG_PRIOR_EPS = 1e-12


def check_tau(tau: object, name: str = "tau") -> float:
    """A finite τ >= 0 as a float, or a ValueError naming ``name`` and the value.

    Example:
        >>> check_tau(0.5)
        0.5
    """
    if isinstance(tau, bool) or not isinstance(tau, int | float) or not math.isfinite(tau) or tau < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (0 leaves the model unchanged), got {tau!r}")
    return float(tau)


def check_tau_grid(grid: Sequence[float]) -> tuple[float, ...]:
    """A non-empty, strictly increasing grid of τ >= 0 (the sweep's ties go to the smallest τ, i.e. the first).

    Example:
        >>> check_tau_grid([0, 0.5, 1])
        (0.0, 0.5, 1.0)
    """
    if isinstance(grid, str) or not isinstance(grid, Sequence) or len(grid) == 0:
        raise ValueError(f"grid must be a non-empty sequence of numbers >= 0, got {grid!r}")
    values = tuple(check_tau(t, "every grid value") for t in grid)
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"grid must be strictly increasing, got {list(values)}")
    return values


def tau_normalized_weight(weight: Tensor, tau: float) -> Tensor:
    """``w_c / ||w_c||_2^τ`` for every row ``w_c`` of ``weight`` (C, D). A zero row stays zero.

    τ = 0 leaves the weight unchanged, τ = 1 gives unit rows.

    Example:
        >>> import torch
        >>> tau_normalized_weight(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), 0.5).norm(dim=1).pow(2).round()
        tensor([2., 1.])
    """
    norms = weight.norm(dim=1, keepdim=True)
    return weight / norms.clamp_min(torch.finfo(weight.dtype).tiny).pow(tau)


def tau_normalized_logits(features: Tensor, weight: Tensor, tau: float, bias: Tensor | None = None) -> Tensor:
    """``f · (w_c / ||w_c||^τ) (+ b_c)``: logits of the τ-normalised head (pass ``bias=None`` to drop it, as the
    official ``tau_norm.py`` does).

    Example:
        >>> import torch
        >>> W = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> tau_normalized_logits(torch.tensor([[1.0, 1.1]]), W, 1.0)
        tensor([[1.0000, 1.1000]])
    """
    logits = features @ tau_normalized_weight(weight, tau).t()
    return logits if bias is None else logits + bias


def log_priors(priors: Tensor, tau: float) -> Tensor:
    """``log(π^τ + 1e-12)``, the offset post-hoc logit adjustment subtracts (the official form).

    Example:
        >>> import torch
        >>> log_priors(torch.tensor([0.5, 0.25]), 1.0).exp()
        tensor([0.5000, 0.2500])
    """
    return torch.log(priors.pow(tau) + LOG_PRIOR_EPS)


def adjust_logits(logits: Tensor, priors: Tensor, tau: float) -> Tensor:
    """Post-hoc logit adjustment ``z_c - log(π_c^τ + 1e-12)`` (≈ ``z_c - τ log π_c``). τ = 0 is the identity.

    With priors (0.9, 0.1) and logits (1, 0) the prediction flips from class 0 to class 1 at τ = 1 / ln 9.

    Example:
        >>> import torch
        >>> z, pi = torch.tensor([[1.0, 0.0]]), torch.tensor([0.9, 0.1])
        >>> [int(adjust_logits(z, pi, t).argmax()) for t in (0.455, 0.456)]
        [0, 1]
    """
    return logits - log_priors(priors.to(logits), tau)


def priors_from_counts(class_counts: Sequence[int] | Tensor) -> Tensor:
    """Training priors ``π_c = n_c / N`` (float64).

    Example:
        >>> priors_from_counts([9, 1]).tolist()
        [0.9, 0.1]
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if counts.ndim != 1 or len(counts) == 0 or bool((counts < 0).any()) or float(counts.sum()) <= 0:
        raise ValueError(f"class_counts must be non-negative with a positive sum, got {counts.tolist()}")
    return counts / counts.sum()


def marc_logits(logits: Tensor, omega: Tensor, beta: Tensor, weight_norms: Tensor) -> Tensor:
    """MARC's calibrated logits ``ω_c z_c + β_c ||w_c||`` (``||w_c||``: the frozen head's row norms, constants).

    ω = 1, β = 0 is the identity; ω = 0, β = 1 gives the norms themselves.

    Example:
        >>> import torch
        >>> z, norms = torch.tensor([[1.0, 2.0]]), torch.tensor([3.0, 0.5])
        >>> marc_logits(z, torch.zeros(2), torch.ones(2), norms)
        tensor([[3.0000, 0.5000]])
    """
    return omega * logits + beta * weight_norms


def sweep_correct_counts(
    logits_at: Callable[[float], Tensor], grid: Iterable[float], target: Tensor, num_classes: int
) -> tuple[Tensor, Tensor]:
    """Per-τ, per-class correct counts ``(T, C)`` and the support ``(C,)`` of ``target``, both int64.

    ``logits_at(τ)`` returns the (N, C) logits of the cached evaluation set at τ; integer counts add exactly across
    DDP ranks, so a sweep summed over shards equals the one-process sweep.

    Example:
        >>> import torch
        >>> z, y = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1])
        >>> correct, support = sweep_correct_counts(lambda t: z - t * torch.tensor([0.0, -2.0]), [0, 1], y, 2)
        >>> correct.tolist(), support.tolist()
        ([[1, 0], [0, 1]], [1, 1])
    """
    target = target.long()
    support = torch.bincount(target, minlength=num_classes)[:num_classes]
    rows = []
    for tau in grid:
        hit = logits_at(tau).argmax(dim=1) == target
        rows.append(torch.bincount(target[hit], minlength=num_classes)[:num_classes])
    return torch.stack(rows).cpu(), support.cpu()


def balanced_accuracies(correct: Tensor, support: Tensor) -> Tensor:
    """Balanced accuracy per grid row: the mean over classes with support of ``correct / support`` (float64).

    Example:
        >>> import torch
        >>> balanced_accuracies(torch.tensor([[1, 0], [2, 1]]), torch.tensor([2, 1])).tolist()
        [0.25, 1.0]
    """
    present = support > 0
    if not bool(present.any()):
        raise ValueError("the evaluation set has no samples: cannot choose tau")
    per_class = correct[:, present].double() / support[present].double()
    return per_class.mean(dim=1)


def best_tau_index(correct: Tensor, support: Tensor) -> int:
    """Row of the highest balanced accuracy; ties go to the first row (the smallest τ of an increasing grid).

    Example:
        >>> import torch
        >>> best_tau_index(torch.tensor([[1, 0], [1, 1], [1, 1]]), torch.tensor([1, 1]))
        1
    """
    scores = balanced_accuracies(correct, support)
    # Exact comparison on sums of integer ratios: identical on every rank that holds the same reduced counts.
    return int(torch.nonzero(scores == scores.max())[0, 0])
