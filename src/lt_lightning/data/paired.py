"""Two sampling streams from ONE DataLoader (BBN's conventional + re-balancing branches).

:class:`PairedSampler` yields index pairs ``(i, j)``: ``i`` from the first sampler (uniform instances), ``j`` from
the second (e.g. BBN's reversed sampler), both seeded by epoch. :class:`PairedDataset` turns a pair into
``(x_i, y_i, x_j, y_j)``. Under DDP, Lightning's ``DistributedSamplerWrapper`` shards the list of pairs like any
other sampler's output, so each rank gets a disjoint shard of one epoch's pairs.

Example:
    >>> import numpy as np
    >>> from lt_lightning.data.samplers import InstanceSampler, ReversedSampler
    >>> targets = np.array([0, 0, 0, 1])
    >>> pairs = PairedSampler(InstanceSampler(targets, seed=0), ReversedSampler(targets, seed=1))
    >>> len(pairs), all(len(p) == 2 for p in pairs)
    (4, True)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import Dataset, Sampler

from lt_lightning.data.samplers import LongTailSampler


class PairedSampler(Sampler[tuple[int, int]]):
    """Zip two samplers over the same samples; ``set_epoch`` reaches both.

    Args:
        first: the conventional stream (usually :class:`~lt_lightning.data.samplers.InstanceSampler`).
        second: the re-balancing stream (usually :class:`~lt_lightning.data.samplers.ReversedSampler`), with a
            different seed so the two streams are independent.
    """

    def __init__(self, first: LongTailSampler, second: LongTailSampler) -> None:
        if len(first.targets) != len(second.targets):
            raise ValueError("PairedSampler needs two samplers over the same samples")
        if len(first) != len(second):
            raise ValueError(f"both streams must draw as many samples per epoch, got {len(first)} and {len(second)}")
        self.first, self.second = first, second

    def set_epoch(self, epoch: int) -> None:
        self.first.set_epoch(epoch)
        self.second.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.first)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(iter(self.first), iter(self.second), strict=True)


class PairedDataset(Dataset):
    """``dataset[(i, j)] -> (x_i, y_i, x_j, y_j)``: one batch carries both streams."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.targets = getattr(dataset, "targets", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, pair: tuple[int, int]) -> tuple[Any, int, Any, int]:
        i, j = pair
        x_i, y_i = self.dataset[i][:2]
        x_j, y_j = self.dataset[j][:2]
        return x_i, y_i, x_j, y_j
