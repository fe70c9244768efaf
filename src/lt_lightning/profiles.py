"""Imbalance profiles: how many training images each class keeps.

Every profile is a pure function returning per-class counts ``tuple[int, ...]`` ordered by *rank*
(rank 0 = head, the largest class). :func:`assign_class_order` maps ranks onto labels, either in label
order (the CIFAR-LT recipe: label 0 is the head) or by a seeded permutation (the K49-LT recipe).

Vocabulary: ``imbalance_ratio`` is rho = n_max / n_min >= 1 (CIFAR-LT "rho = 100" is ``imb_factor = 0.01``
in the reference code).

Example:
    >>> exponential_profile(5000, 10, 100)
    (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)
    >>> sum(zipf_profile(4800, 49, exponent=2.0, minimum=5))
    7822
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

ProfileName = Literal["exponential", "step", "zipf", "none"]
ClassOrder = Literal["label", "random"]


def _check_common(head_size: float, num_classes: int) -> None:
    if not (isinstance(num_classes, int | np.integer) and num_classes >= 1):
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if not (isinstance(head_size, int | float | np.integer | np.floating) and head_size >= 1):
        raise ValueError(f"head_size must be a number >= 1 (images in the largest class), got {head_size!r}")


def _check_ratio(imbalance_ratio: float) -> None:
    if not (isinstance(imbalance_ratio, int | float | np.integer | np.floating) and math.isfinite(imbalance_ratio)):
        raise ValueError(f"imbalance_ratio must be a finite number >= 1 (n_max / n_min), got {imbalance_ratio!r}")
    if imbalance_ratio < 1:
        raise ValueError(
            f"imbalance_ratio must be >= 1 (n_max / n_min; rho = 100 means imb_factor = 0.01), got {imbalance_ratio!r}"
        )


def _check_no_empty(counts: np.ndarray, profile: str, given: str = "") -> tuple[int, ...]:
    if (counts < 1).any():
        empty = np.flatnonzero(counts < 1).tolist()
        raise ValueError(
            f"profile {profile!r}{given} leaves classes at ranks {empty} with 0 samples "
            f"(counts {counts.tolist()}); lower imbalance_ratio or raise head_size"
        )
    return tuple(int(c) for c in counts)


def exponential_profile(head_size: float, num_classes: int, imbalance_ratio: float) -> tuple[int, ...]:
    """Exponential decay: ``n_i = int(head_size * (1 / rho) ** (i / (C - 1)))`` (LDAM ``imbalance_cifar.py``).

    ``int`` truncates, as the reference does, so CIFAR-10 at rho = 100 totals 12,406.

    Example:
        >>> exponential_profile(500, 100, 100)[-3:], sum(exponential_profile(500, 100, 100))
        ((5, 5, 5), 10847)
    """
    _check_common(head_size, num_classes)
    _check_ratio(imbalance_ratio)
    if num_classes == 1:
        return (int(head_size),)
    # The reference computes imb_factor ** (i / (C - 1)) with imb_factor = 1 / rho; same float path here.
    exponents = np.arange(num_classes, dtype=np.float64) / (num_classes - 1.0)
    counts = np.floor(float(head_size) * (1.0 / float(imbalance_ratio)) ** exponents).astype(np.int64)
    return _check_no_empty(counts, "exponential", f" with head_size={head_size}, imbalance_ratio={imbalance_ratio}")


def step_profile(
    head_size: float, num_classes: int, imbalance_ratio: float, num_head_classes: int | None = None
) -> tuple[int, ...]:
    """Step imbalance: the first ``num_head_classes`` (default ``C // 2``) keep ``head_size``, the rest
    ``int(head_size / rho)``.

    Example:
        >>> sum(step_profile(5000, 10, 100)), sum(step_profile(500, 100, 10))
        (25250, 27500)
    """
    _check_common(head_size, num_classes)
    _check_ratio(imbalance_ratio)
    n_head = num_classes // 2 if num_head_classes is None else num_head_classes
    if not (isinstance(n_head, int) and 0 <= n_head <= num_classes):
        raise ValueError(f"num_head_classes must be an integer in [0, {num_classes}], got {num_head_classes!r}")
    counts = np.full(num_classes, int(float(head_size) / float(imbalance_ratio)), dtype=np.int64)
    counts[:n_head] = int(head_size)
    return _check_no_empty(counts, "step", f" with head_size={head_size}, imbalance_ratio={imbalance_ratio}")


def zipf_profile(head_size: float, num_classes: int, exponent: float = 2.0, minimum: int = 5) -> tuple[int, ...]:
    """Zipf law by rank r = 1..C: ``n_r = max(int(head_size / r ** a), minimum)`` (GIT ``make_kmnist_lt.py``).

    With ``head_size=4800``, 49 classes and ``a = 2.0`` this is the K49-LT profile: 7,822 images.

    Example:
        >>> zipf_profile(4800, 49)[:6]
        (4800, 1200, 533, 300, 192, 133)
    """
    _check_common(head_size, num_classes)
    if not (isinstance(exponent, int | float) and math.isfinite(exponent) and exponent > 0):
        raise ValueError(f"zipf_exponent must be a finite number > 0, got {exponent!r}")
    if not (isinstance(minimum, int | np.integer) and minimum >= 1):
        raise ValueError(f"zipf_min must be an integer >= 1, got {minimum!r}")
    ranks = np.arange(1, num_classes + 1, dtype=np.float64)
    counts = np.maximum(np.floor(float(head_size) / ranks**exponent).astype(np.int64), int(minimum))
    return _check_no_empty(counts, "zipf")


def natural_profile(available: Sequence[int]) -> tuple[int, ...]:
    """The natural distribution: every class keeps all of its images (``profile="none"``), in label order."""
    counts = np.asarray(available, dtype=np.int64)
    if (counts < 1).any():
        # No ratio or head size is involved here: the pool itself lacks these classes.
        raise ValueError(
            f"profile 'none' keeps every image, but classes {np.flatnonzero(counts < 1).tolist()} have 0 samples in "
            f"the pool (available {counts.tolist()}); every label 0..{len(counts) - 1} needs training images"
        )
    return tuple(int(c) for c in counts)


def assign_class_order(rank_counts: Sequence[int], order: ClassOrder = "label", seed: int = 0) -> tuple[int, ...]:
    """Map counts by rank onto labels: ``"label"`` keeps label 0 as the head; ``"random"`` draws a seeded
    permutation (the class at rank r gets ``rank_counts[r]``). Global RNG state is never touched.

    Example:
        >>> assign_class_order((3, 2, 1))
        (3, 2, 1)
        >>> sorted(assign_class_order((3, 2, 1), "random", seed=1))
        [1, 2, 3]
    """
    if order == "label":
        return tuple(int(c) for c in rank_counts)
    if order != "random":
        raise ValueError(f"class_order must be one of ['label', 'random'], got {order!r}")
    rank_counts = np.asarray(rank_counts, dtype=np.int64)
    label_at_rank = np.random.default_rng(seed).permutation(len(rank_counts))
    counts = np.empty_like(rank_counts)
    counts[label_at_rank] = rank_counts
    return tuple(int(c) for c in counts)


PROFILES: dict[str, Callable[..., tuple[int, ...]]] = {
    "exponential": exponential_profile,
    "step": step_profile,
    "zipf": zipf_profile,
    "none": natural_profile,
}


def make_class_counts(
    profile: str,
    available: Sequence[int],
    *,
    imbalance_ratio: float = 100.0,
    head_size: int | None = None,
    zipf_exponent: float = 2.0,
    zipf_min: int = 5,
    class_order: ClassOrder = "label",
    seed: int = 0,
) -> tuple[int, ...]:
    """Per-class target counts in label order for a named profile.

    Args:
        profile: one of ``exponential``, ``step``, ``zipf``, ``none``.
        available: images each class has in the base training pool (label order).
        imbalance_ratio: rho = n_max / n_min (``exponential`` and ``step``).
        head_size: size of the head class; default ``min(available)``, the largest head every class can
            supply without reuse (5,000 on CIFAR-10). K49-LT uses 4,800 with reuse.
        zipf_exponent, zipf_min: the Zipf exponent ``a`` and the floor (``zipf``).
        class_order: ``label`` (label 0 is the head) or ``random`` (seeded permutation).
        seed: seed of the class-order permutation.

    Example:
        >>> make_class_counts("exponential", [5000] * 10, imbalance_ratio=10)[-1]
        500
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    available = [int(a) for a in available]
    if profile == "none":
        return natural_profile(available)
    size = min(available) if head_size is None else head_size
    num_classes = len(available)
    if profile == "exponential":
        ranked = exponential_profile(size, num_classes, imbalance_ratio)
    elif profile == "step":
        ranked = step_profile(size, num_classes, imbalance_ratio)
    else:
        ranked = zipf_profile(size, num_classes, zipf_exponent, zipf_min)
    return assign_class_order(ranked, class_order, seed)
