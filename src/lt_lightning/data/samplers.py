"""Seeded, epoch-aware training samplers for long-tailed data.

Every sampler draws from a ``torch.Generator`` seeded with ``seed + epoch`` and never touches global RNG state, so
every DDP rank materialises the same list before Lightning's ``DistributedSamplerWrapper`` shards it; the draw
changes with ``set_epoch``, which Lightning calls at the start of every training epoch.

Class-aware samplers draw a class ``c`` with probability ``q_c``, then an instance of that class uniformly:

=================  ==================================================  ======================
name               q_c                                                 source
=================  ==================================================  ======================
``instance``       n_c / N (a plain shuffle, without replacement)      ERM
``class_balanced`` 1 / C                                               DRS, Kang et al. 2020
``square_root``    sqrt(n_c) / sum_k sqrt(n_k)                         Mahajan et al. 2018
``reversed``       (n_max / n_c) / sum_k (n_max / n_k)                 BBN re-balancing branch
``progressive``    (1 - t/T) n_c / N + (t/T) / C,  t = epoch           Kang et al. 2020
``inverse_power``  n_c^(1 - alpha) / sum_k n_k^(1 - alpha)               CMO (per-sample weight n^-alpha)
=================  ==================================================  ======================

``class_aware_cycle`` (:class:`ClassAwareCycleSampler`, the official classifier-balancing ``ClassAwareSampler``) is
not multinomial: it cycles through a shuffled list of the present classes and takes ``k`` consecutive instances
from each visited class's own shuffled cycle of its samples (so ``q_c = 1 / C`` exactly, not only on average).

Example:
    >>> import numpy as np
    >>> targets = np.array([0, 0, 0, 0, 1, 1, 2])
    >>> sampler = ClassBalancedSampler(targets, seed=0)
    >>> len(sampler), len(list(sampler))
    (7, 7)
    >>> ReversedSampler(targets).class_probabilities().round(3).tolist()
    [0.143, 0.286, 0.571]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from lt_lightning.data.subsets import grouped_by_class


class LongTailSampler(Sampler[int]):
    """Base class: holds the labels, the seed, the epoch and the number of draws per epoch.

    Args:
        targets: integer label of every training sample (the sampler's index space is ``range(len(targets))``).
        seed: base seed; epoch ``e`` draws with ``torch.Generator().manual_seed(seed + e)``.
        num_samples: draws per epoch (default: ``len(targets)``, one epoch of the dataset).
        num_classes: number of classes (default: ``max(targets) + 1``); classes with no sample get no mass.
    """

    def __init__(self, targets, seed: int = 0, num_samples: int | None = None, num_classes: int | None = None) -> None:
        targets = np.asarray(targets)
        if targets.ndim != 1 or targets.size == 0 or not np.issubdtype(targets.dtype, np.integer):
            raise ValueError(f"targets must be a non-empty 1-D array of integer labels, got shape {targets.shape}")
        if targets.min() < 0:
            raise ValueError(f"targets must be >= 0, got a label {int(targets.min())}")
        if not isinstance(seed, int | np.integer):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if num_samples is not None and not (isinstance(num_samples, int | np.integer) and num_samples >= 1):
            raise ValueError(f"num_samples must be an integer >= 1 or None, got {num_samples!r}")
        self.num_classes = int(targets.max()) + 1 if num_classes is None else int(num_classes)
        if targets.max() >= self.num_classes:
            raise ValueError(f"targets has label {int(targets.max())} outside [0, {self.num_classes})")
        self.targets = targets.astype(np.int64)
        self.seed = int(seed)
        self.num_samples = len(targets) if num_samples is None else int(num_samples)
        self.epoch = 0
        order, starts, counts = grouped_by_class(self.targets, self.num_classes)
        self._order = torch.from_numpy(order)
        self._starts = torch.from_numpy(starts)
        self.class_counts = torch.from_numpy(counts)

        self.deferred: tuple[int, LongTailSampler] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the draw of ``epoch``; Lightning calls this before each training epoch."""
        self.epoch = int(epoch)

    def defer(self, sampler: LongTailSampler, start_epoch: int) -> None:
        """From ``start_epoch`` on (0-indexed), draw with ``sampler`` instead (deferred re-sampling, DRS).

        The switch is a pure function of the epoch, so a resumed run draws exactly what an uninterrupted one would,
        and every DDP rank switches at the same epoch. ``sampler`` must index the same samples.
        """
        if not isinstance(sampler, LongTailSampler) or len(sampler.targets) != len(self.targets):
            raise ValueError("defer() needs a LongTailSampler over the same targets as this sampler")
        if not (isinstance(start_epoch, int | np.integer) and start_epoch >= 0):
            raise ValueError(f"start_epoch must be an integer >= 0, got {start_epoch!r}")
        if sampler.num_samples != self.num_samples:
            raise ValueError(
                f"the deferred sampler draws {sampler.num_samples} samples per epoch, not {self.num_samples}"
            )
        self.deferred = (int(start_epoch), sampler)

    def active(self) -> LongTailSampler:
        """The sampler that draws this epoch: ``self``, or the deferred one from its start epoch on."""
        if self.deferred is not None and self.epoch >= self.deferred[0]:
            later = self.deferred[1]
            later.set_epoch(self.epoch)
            return later
        return self

    def __iter__(self) -> Iterator[int]:
        sampler = self.active()
        return iter(sampler._draw().tolist())

    def _draw(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_samples

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed + self.epoch)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_samples={self.num_samples}, seed={self.seed}, epoch={self.epoch})"


class InstanceSampler(LongTailSampler):
    """Uniform over instances: a seeded permutation (without replacement) of the whole set each epoch."""

    def class_probabilities(self) -> np.ndarray:
        counts = self.class_counts.double().numpy()
        return counts / counts.sum()

    def _draw(self) -> torch.Tensor:
        g = self._generator()
        n = len(self.targets)
        reps = -(-self.num_samples // n)  # ceil: extra permutations when more draws than samples are asked for
        return torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[: self.num_samples]


class ClassAwareSampler(LongTailSampler):
    """Draw a class with probability ``class_probabilities()``, then one of its instances uniformly (with
    replacement). Subclasses define ``class_probabilities``; classes without samples get probability 0."""

    def class_probabilities(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _normalise(self, mass: np.ndarray) -> np.ndarray:
        mass = np.where(self.class_counts.numpy() > 0, mass, 0.0)
        return mass / mass.sum()

    def _draw(self) -> torch.Tensor:
        g = self._generator()
        q = torch.as_tensor(self.class_probabilities(), dtype=torch.float64)
        classes = torch.multinomial(q, self.num_samples, replacement=True, generator=g)
        size = self.class_counts.index_select(0, classes)
        offset = (torch.rand(self.num_samples, generator=g, dtype=torch.float64) * size).long()
        # index_select: the same gather as fancy indexing, ~3x faster on 1M indices.
        return self._order.index_select(0, self._starts.index_select(0, classes) + offset)


class ClassBalancedSampler(ClassAwareSampler):
    """Every class equally likely: ``q_c = 1 / C`` (the DRS / class-balanced re-sampling rule)."""

    def class_probabilities(self) -> np.ndarray:
        return self._normalise(np.ones(self.num_classes))


class SquareRootSampler(ClassAwareSampler):
    """``q_c`` proportional to ``sqrt(n_c)``."""

    def class_probabilities(self) -> np.ndarray:
        return self._normalise(np.sqrt(self.class_counts.double().numpy()))


class ReversedSampler(ClassAwareSampler):
    """BBN's reversed sampler: ``q_c`` proportional to ``n_max / n_c``."""

    def class_probabilities(self) -> np.ndarray:
        counts = self.class_counts.double().numpy()
        with np.errstate(divide="ignore"):
            return self._normalise(np.where(counts > 0, counts.max() / counts, 0.0))


class InversePowerSampler(ClassAwareSampler):
    """Per-sample weight ``n_y^(-alpha)`` with replacement, i.e. ``q_c`` proportional to ``n_c^(1 - alpha)``: CMO's
    foreground sampler (naver-ai/cmo ``imbalance_cifar.py``, a ``WeightedRandomSampler``). ``alpha = 1`` (CMO's
    default) is ``class_balanced``, ``0.5`` is ``square_root``, ``0`` draws classes with their instance frequencies.

    Args:
        alpha: the exponent, a finite number >= 0.

    Example:
        >>> import numpy as np
        >>> InversePowerSampler(np.array([0, 0, 0, 0, 1]), alpha=0.0).class_probabilities().tolist()
        [0.8, 0.2]
    """

    def __init__(
        self, targets, seed: int = 0, num_samples: int | None = None, num_classes: int | None = None, alpha: float = 1.0
    ) -> None:
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"sampler_alpha must be a finite number >= 0 (1: class-balanced), got {alpha!r}")
        super().__init__(targets, seed, num_samples, num_classes)
        self.alpha = float(alpha)

    def class_probabilities(self) -> np.ndarray:
        counts = self.class_counts.double().numpy()
        with np.errstate(divide="ignore"):
            return self._normalise(np.where(counts > 0, counts ** (1.0 - self.alpha), 0.0))


class ProgressiveSampler(ClassAwareSampler):
    """Progressively balanced: ``q_c(t) = (1 - t/T) n_c/N + (t/T)/C`` with ``t`` the epoch (clamped to ``T``).

    Args:
        total_epochs: T, the epoch from which sampling is fully class-balanced (usually ``max_epochs - 1``).
    """

    def __init__(
        self,
        targets,
        seed: int = 0,
        num_samples: int | None = None,
        num_classes: int | None = None,
        total_epochs: int = 100,
    ) -> None:
        super().__init__(targets, seed, num_samples, num_classes)
        if not (isinstance(total_epochs, int | np.integer) and total_epochs >= 1):
            raise ValueError(f"total_epochs must be an integer >= 1, got {total_epochs!r}")
        self.total_epochs = int(total_epochs)

    def class_probabilities(self) -> np.ndarray:
        t = min(self.epoch, self.total_epochs) / self.total_epochs
        counts = self.class_counts.double().numpy()
        balanced = self._normalise(np.ones(self.num_classes))
        return (1 - t) * counts / counts.sum() + t * balanced


class ClassAwareCycleSampler(LongTailSampler):
    """The official classifier-balancing ``ClassAwareSampler`` (Kang et al. 2020, ``data/ClassAwareSampler.py``).

    Not multinomial: the sampler walks a shuffled list of the present classes (reshuffled each time it is used up)
    and, for every class it visits, takes ``samples_per_class`` consecutive instances from that class's own cycle:
    a shuffled list of its samples, drawn without replacement and reshuffled only once all of them were used.
    Every window of ``C * samples_per_class`` draws aligned to a class cycle therefore holds each of the ``C``
    present classes exactly ``samples_per_class`` times; classes without samples are skipped. An epoch has
    ``num_samples`` draws (default ``len(targets)``, the official epoch length).

    Deviation from the official sampler, which uses the unseeded global ``random`` module and carries its cycles
    over from one epoch to the next: here every epoch restarts both cycles from the epoch's generator
    (``seed + epoch``), so the draw is a pure function of (seed, epoch, targets), identical on every DDP rank and
    on resume. Drawing 10^6 targets over 1000 classes takes about 0.2 s on one CPU core (0.4 s with ``list(sampler)``).

    Args:
        samples_per_class: ``k``, consecutive draws per visited class (``num_samples_cls`` of the official code;
            4 in its configurations).
    """

    def __init__(
        self,
        targets,
        seed: int = 0,
        num_samples: int | None = None,
        num_classes: int | None = None,
        samples_per_class: int = 4,
    ) -> None:
        if isinstance(samples_per_class, bool) or not (
            isinstance(samples_per_class, int | np.integer) and samples_per_class >= 1
        ):
            raise ValueError(f"samples_per_class must be an integer >= 1, got {samples_per_class!r}")
        super().__init__(targets, seed, num_samples, num_classes)
        self.samples_per_class = int(samples_per_class)
        self._present = torch.nonzero(self.class_counts > 0).flatten()

    def class_probabilities(self) -> np.ndarray:
        """Uniform over the present classes (exact per class cycle, not only in expectation)."""
        mass = (self.class_counts.numpy() > 0).astype(np.float64)
        return mass / mass.sum()

    def _draw(self) -> torch.Tensor:
        g = self._generator()
        k, present = self.samples_per_class, self._present
        visits = -(-self.num_samples // k)  # class visits this epoch, k draws each (the last one truncated)
        # The class cycle: ceil(visits / C) independent shuffles of the present classes, end to end.
        cycles = -(-visits // len(present))
        keys = torch.rand(cycles, len(present), generator=g, dtype=torch.float64)
        visited = present.index_select(0, keys.argsort(dim=1).flatten()[:visits])
        # Visits grouped by class, in visiting order: class c's j-th visit takes items [jk, (j+1)k) of its cycle.
        rows = torch.argsort(visited, stable=True)
        per_class = torch.bincount(visited, minlength=self.num_classes)
        streams = []
        for c in present.tolist():
            need, size, start = int(per_class[c]) * k, int(self.class_counts[c]), int(self._starts[c])
            if need == 0:
                continue
            # ceil(need / size) independent shuffles of the class's samples, end to end, cut to what is needed.
            shuffles = torch.rand(-(-need // size), size, generator=g, dtype=torch.float64).argsort(dim=1)
            streams.append(self._order[start + shuffles.flatten()[:need]])
        drawn = torch.empty(visits, k, dtype=torch.int64)
        drawn[rows] = torch.cat(streams).view(visits, k)
        return drawn.flatten()[: self.num_samples]

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, samples_per_class={self.samples_per_class})"


SAMPLERS: dict[str, type[LongTailSampler]] = {
    "instance": InstanceSampler,
    "class_balanced": ClassBalancedSampler,
    "class_aware_cycle": ClassAwareCycleSampler,
    "square_root": SquareRootSampler,
    "reversed": ReversedSampler,
    "progressive": ProgressiveSampler,
    "inverse_power": InversePowerSampler,
}


def create_sampler(name: str, targets, seed: int = 0, **kwargs) -> LongTailSampler:
    """Build a sampler by name (see :data:`SAMPLERS`); unknown names raise a ValueError listing the accepted ones."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {name!r}")
    return SAMPLERS[name](targets, seed=seed, **kwargs)
