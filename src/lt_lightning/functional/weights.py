"""Per-class quantities derived from the training class counts: loss weights, margins, sampling probabilities.

Every function takes ``class_counts`` (a sequence of ints, a 1-D integer numpy array or tensor; head to tail
in label order), validates it with :func:`check_class_counts`, computes in float64 and returns a CPU
``torch.float32`` tensor of length ``C``. Modules copy the result into a registered buffer, so device and
dtype then follow the module.

Example:
    >>> counts = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)  # CIFAR-10-LT, rho = 100
    >>> [round(w, 4) for w in effective_number_weights(counts, beta=0.9999).tolist()][-2:]
    [2.4092, 3.9927]
    >>> [round(m, 3) for m in ldam_margins(counts).tolist()][:2]
    [0.158, 0.18]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "ClassCounts",
    "check_class_counts",
    "effective_number_weights",
    "inverse_frequency_weights",
    "ldam_margins",
    "log_priors",
    "reversed_probabilities",
    "vs_scaling",
]

ClassCounts = Sequence[int] | np.ndarray | Tensor


def check_class_counts(class_counts: ClassCounts, num_classes: int | None = None) -> tuple[int, ...]:
    """Validate per-class training counts and return them as a tuple of Python ints.

    Args:
        class_counts: number of training images of each class, a non-empty 1-D sequence of integers >= 1
            (list, tuple, integer numpy array or integer tensor).
        num_classes: when given, the number of entries ``class_counts`` must have.

    Returns:
        The counts as ``tuple[int, ...]``.

    Raises:
        TypeError: ``class_counts`` is not a sequence, array or tensor.
        ValueError: it is empty, not 1-D, holds a non-integer or a count < 1, or has the wrong length.

    Example:
        >>> check_class_counts([50, 5], num_classes=2)
        (50, 5)
        >>> check_class_counts([50, 0])
        Traceback (most recent call last):
        ...
        ValueError: class_counts must be positive integers, got 0 at class 1
    """
    if isinstance(class_counts, Tensor | np.ndarray):
        if class_counts.ndim != 1:
            raise ValueError(f"class_counts must be 1-D (one count per class), got shape {tuple(class_counts.shape)}")
        values = class_counts.tolist()
    elif isinstance(class_counts, Sequence) and not isinstance(class_counts, str | bytes):
        values = list(class_counts)
    else:
        raise TypeError(
            f"class_counts must be a sequence of ints, an integer array or tensor, got {type(class_counts).__name__}"
        )
    if len(values) == 0:
        raise ValueError("class_counts must be non-empty (one count per class), got 0 entries")
    for index, value in enumerate(values):
        # bool is an int subclass but never a count; floats are rejected even when integral, since a float
        # count usually means the caller passed weights or frequencies by mistake.
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"class_counts must be positive integers, got {value!r} at class {index}")
    if num_classes is not None and len(values) != num_classes:
        raise ValueError(f"class_counts has {len(values)} entries but num_classes is {num_classes}")
    return tuple(int(v) for v in values)


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def _counts64(class_counts: ClassCounts) -> Tensor:
    return torch.tensor(check_class_counts(class_counts), dtype=torch.float64)


def _normalise_to_num_classes(weights: Tensor) -> Tensor:
    return (weights * (weights.numel() / weights.sum())).to(torch.float32)


def effective_number_weights(class_counts: ClassCounts, beta: float = 0.9999) -> Tensor:
    """Class-balanced weights by effective number (Cui et al., CVPR 2019; METHODS §3.2).

    ``w_c = (1 - beta) / (1 - beta ** n_c)``, then ``w <- w * C / sum(w)`` so the weights sum to ``C`` and the
    loss keeps the scale of unweighted cross-entropy. ``beta = 0`` gives all ones; ``beta -> 1`` tends to
    inverse frequency. Computed in float64 (``1 - beta ** n`` loses digits in float32 when beta is near 1).

    Args:
        class_counts: training images per class.
        beta: hyper-parameter in ``[0, 1)``; 0.9999 in the LDAM-DRW / CB CIFAR recipes, 0.999999 in BBN's CSCE.

    Returns:
        Float32 tensor of shape ``(C,)`` summing to ``C``.

    Example:
        >>> effective_number_weights([100, 10], beta=0.0).tolist()
        [1.0, 1.0]
        >>> [round(w, 4) for w in effective_number_weights([100, 10], beta=0.9).tolist()]
        [0.7889, 1.2111]
    """
    counts = _counts64(class_counts)
    beta = _check_real("beta", beta)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    if beta == 0.0:
        return torch.ones(counts.numel(), dtype=torch.float32)
    # 1 - beta**n written as -expm1(n * log(beta)) keeps its digits when beta is close to 1.
    one_minus_beta_n = -torch.expm1(counts * math.log(beta))
    return _normalise_to_num_classes((1.0 - beta) / one_minus_beta_n)


def inverse_frequency_weights(class_counts: ClassCounts, power: float = 1.0) -> Tensor:
    """Inverse-frequency weights ``w_c ∝ n_c ** -power``, normalised to sum to ``C`` (METHODS §3.4).

    Args:
        class_counts: training images per class.
        power: exponent >= 0; 1 is plain inverse frequency, 0.5 the square-root variant, 0 all ones.

    Returns:
        Float32 tensor of shape ``(C,)`` summing to ``C``.

    Example:
        >>> inverse_frequency_weights([30, 10]).tolist()
        [0.5, 1.5]
    """
    counts = _counts64(class_counts)
    power = _check_real("power", power)
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power!r}")
    return _normalise_to_num_classes(counts.pow(-power))


def ldam_margins(class_counts: ClassCounts, max_margin: float = 0.5) -> Tensor:
    """LDAM per-class margins ``Delta_j = max_margin * n_j^(-1/4) / max_k n_k^(-1/4)`` (Cao et al.; METHODS §3.1).

    The rarest class gets ``max_margin``; the margin is subtracted from the true-class logit before scaling.

    Args:
        class_counts: training images per class.
        max_margin: margin of the rarest class, > 0 (0.5 on CIFAR, 0.3 on iNaturalist / ImageNet-LT).

    Returns:
        Float32 tensor of shape ``(C,)``.

    Example:
        >>> ldam_margins([16, 1], max_margin=0.5).tolist()
        [0.25, 0.5]
    """
    counts = _counts64(class_counts)
    max_margin = _check_real("max_margin", max_margin)
    if max_margin <= 0:
        raise ValueError(f"max_margin must be > 0, got {max_margin!r}")
    inv_root = counts.pow(-0.25)
    return (inv_root * (max_margin / inv_root.max())).to(torch.float32)


def reversed_probabilities(class_counts: ClassCounts) -> Tensor:
    """BBN's "reversed" class-sampling probabilities ``P_i = (n_max/n_i) / sum_j (n_max/n_j)`` (METHODS §4).

    Args:
        class_counts: training images per class.

    Returns:
        Float32 tensor of shape ``(C,)`` summing to 1, largest for the rarest class.

    Example:
        >>> reversed_probabilities([30, 10]).tolist()
        [0.25, 0.75]
    """
    counts = _counts64(class_counts)
    ratio = counts.max() / counts
    return (ratio / ratio.sum()).to(torch.float32)


def log_priors(class_counts: ClassCounts) -> Tensor:
    """Log class priors ``log(n_c / sum_k n_k)`` of the training set (logit adjustment, VS loss offsets).

    Args:
        class_counts: training images per class.

    Returns:
        Float32 tensor of shape ``(C,)`` (all <= 0).

    Example:
        >>> [round(v, 4) for v in log_priors([3, 1]).tolist()]
        [-0.2877, -1.3863]
    """
    counts = _counts64(class_counts)
    return torch.log(counts / counts.sum()).to(torch.float32)


def vs_scaling(class_counts: ClassCounts, gamma: float = 0.3) -> Tensor:
    """VS-loss multiplicative logit scaling ``(n_j / n_max) ** gamma`` = ``1 / Delta_j`` (METHODS §3.8).

    Args:
        class_counts: training images per class.
        gamma: exponent >= 0 (0.3 in SAM-LT); 0 gives all ones.

    Returns:
        Float32 tensor of shape ``(C,)`` in ``(0, 1]``, 1 for the largest class.

    Example:
        >>> vs_scaling([16, 1], gamma=0.5).tolist()
        [1.0, 0.25]
    """
    counts = _counts64(class_counts)
    gamma = _check_real("gamma", gamma)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    return (counts / counts.max()).pow(gamma).to(torch.float32)
