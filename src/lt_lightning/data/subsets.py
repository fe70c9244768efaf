"""Seeded selection of which images a long-tailed split keeps.

For each class, its indices are put in a seeded random order; the training subset takes the first ``n_c`` of
them and an optional balanced validation split takes the next ``val_per_class`` (so it is disjoint from the
training subset and drawn from what the profile left unused). Vectorised: one permutation and one stable
sort for the whole label array, whatever the number of classes.

Example:
    >>> import numpy as np
    >>> targets = np.repeat(np.arange(3), 10)
    >>> train, val = long_tail_indices(targets, (10, 5, 2), seed=0, val_per_class=0)
    >>> np.bincount(targets[train]).tolist(), len(val)
    ([10, 5, 2], 0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_targets(targets: np.ndarray, num_classes: int, name: str = "targets") -> np.ndarray:
    """Return ``targets`` as a 1-D int64 array, raising if any label lies outside ``[0, num_classes)``."""
    targets = np.asarray(targets)
    if targets.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {targets.shape}")
    if targets.size and not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {targets.dtype}")
    targets = targets.astype(np.int64, copy=False)
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        bad = targets[(targets < 0) | (targets >= num_classes)]
        raise ValueError(f"{name} has labels {np.unique(bad)[:10].tolist()} outside [0, {num_classes})")
    return targets


def grouped_by_class(targets: np.ndarray, num_classes: int, rng: np.random.Generator | None = None):
    """Indices grouped by class (random order within a class when ``rng`` is given) and each class's start.

    Returns ``(order, starts, available)``: ``order[starts[c]:starts[c] + available[c]]`` are class c's indices.
    """
    index = np.arange(len(targets)) if rng is None else rng.permutation(len(targets))
    keys = targets[index]
    if keys.size and keys.min() >= 0 and keys.max() <= np.iinfo(np.uint16).max:
        # Same order, faster: numpy's stable sort is a radix sort for 16-bit keys (~6x at 1M labels).
        keys = keys.astype(np.uint16)
    order = index[np.argsort(keys, kind="stable")]
    available = np.bincount(targets, minlength=num_classes)
    starts = np.concatenate(([0], np.cumsum(available)[:-1]))
    return order, starts, available


def long_tail_indices(
    targets: np.ndarray,
    class_counts: Sequence[int],
    seed: int = 0,
    *,
    val_per_class: int = 0,
    fill_short_classes: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Pick a seeded long-tailed training subset and a disjoint balanced validation subset.

    Args:
        targets: integer label of every image of the base training pool.
        class_counts: images to keep per class (label order).
        seed: subset seed; global RNG state is never read or changed.
        val_per_class: images per class held out for validation, after the training ones.
        fill_short_classes: a class with fewer real images than its count is filled by cyclic reuse
            (``i % available``, the K49-LT recipe) instead of raising.

    Returns:
        ``(train_indices, val_indices)``, each sorted by class then by the seeded order.
    """
    counts = np.asarray(class_counts, dtype=np.int64)
    num_classes = len(counts)
    if (counts < 1).any():
        raise ValueError(f"class_counts must all be >= 1, got {counts.tolist()}")
    if not (isinstance(val_per_class, int | np.integer) and val_per_class >= 0):
        raise ValueError(f"val_per_class must be an integer >= 0, got {val_per_class!r}")
    targets = check_targets(targets, num_classes)
    order, starts, available = grouped_by_class(targets, num_classes, np.random.default_rng(seed))

    # Each class must supply its validation images plus its training images (at least one when reusing).
    needed = val_per_class + (np.ones_like(counts) if fill_short_classes else counts)
    too_short = np.flatnonzero(available < needed)
    if len(too_short):
        c = int(too_short[0])
        need = int(needed[c])
        hint = "" if fill_short_classes else " (or pass fill_short_classes=True to reuse images)"
        raise ValueError(
            f"class {c} has {int(available[c])} images but the split needs {need} "
            f"({int(counts[c])} train + {val_per_class} val); lower head_size / val_per_class{hint}"
        )

    # Rank of each position within its class block; keep ranks < n_c (train) and the next val_per_class (val).
    class_of_pos = np.repeat(np.arange(num_classes), available)
    rank = np.arange(len(order)) - starts[class_of_pos]
    reserved_val = np.maximum(available - val_per_class, 0)  # val takes the last val_per_class of each block
    val_mask = rank >= reserved_val[class_of_pos]
    train_mask = (rank < counts[class_of_pos]) & ~val_mask
    train = order[train_mask]
    val = order[val_mask] if val_per_class else np.empty(0, dtype=np.int64)

    short = np.flatnonzero(counts > available - val_per_class)
    if fill_short_classes and len(short):
        extra = []
        for c in short:  # few classes: a loop is clearest here
            base = order[starts[c] : starts[c] + available[c] - val_per_class]
            extra.append(base[np.arange(int(counts[c])) % len(base)])
        keep = ~np.isin(targets[train], short)
        train = np.concatenate([train[keep], *extra])
        train = train[np.argsort(targets[train], kind="stable")]
    return train.astype(np.int64), val.astype(np.int64)


def flip_labels(targets: np.ndarray, num_classes: int, rate: float, seed: int) -> np.ndarray:
    """Symmetric label noise: each label is, with probability ``rate``, replaced by a uniformly drawn OTHER class.

    Seeded and independent of global RNG state; returns a new array.

    Example:
        >>> noisy = flip_labels(np.zeros(1000, dtype=np.int64), 4, 0.3, seed=0)
        >>> bool(0.25 < (noisy != 0).mean() < 0.35), set(noisy.tolist()) <= {0, 1, 2, 3}
        (True, True)
    """
    if not (isinstance(rate, int | float) and 0 <= rate < 1):
        raise ValueError(f"label_noise must be in [0, 1), got {rate!r}")
    if rate and num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    # Its own stream ([seed, 1]): the subset permutation draws from default_rng(seed) with the same seed.
    rng = np.random.default_rng([seed, 1])
    flip = rng.random(len(targets)) < rate
    # adding 1..C-1 modulo C always lands on another class, uniformly
    shift = rng.integers(1, max(num_classes, 2), size=len(targets))
    return np.where(flip, (targets + shift) % num_classes, targets).astype(np.int64)
