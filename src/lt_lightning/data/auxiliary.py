"""An auxiliary (out-of-distribution) image stream next to the training stream (Open-Sampling, Wei et al. 2022).

``LongTailDataModule(aux_dataset=...)`` serves training batches ``(x, y, x_aux)``: ``x, y`` drawn by the configured
sampler, ``x_aux`` a batch of ``aux_batch_size`` unlabelled images from an auxiliary pool, through the SAME training
transform (so both streams share the normalisation of the in-distribution data). The pool is any base dataset of
:func:`~lt_lightning.data.datasets.load_dataset` (its training split; an image folder or npz under ``aux_root``),
a class subset of one (the digits open-set setting: ID digits 0-6, OOD pool the images of 7-9), or seeded synthetic
noise (:data:`NOISES`, the reference's ``dataset/utils.py`` ``create_ood_noise``).

One DataLoader carries both streams, as :mod:`lt_lightning.data.paired` does for BBN: :class:`AuxPairedSampler`
yields ``(i, (j_1, ..., j_k))`` — an ID index and the aux indices that ride with it — and :class:`AuxDataset` +
:func:`collate_aux` turn a batch of those into ``(x, y, x_aux)``. Item ``p`` of the epoch list carries
``floor((q + 1) A / B) - floor(q A / B)`` aux indices, ``q = p mod B`` (``A = aux_batch_size``, ``B = batch_size``),
so every full batch of one process holds exactly ``A`` aux images. The aux indices of epoch ``e`` are consecutive
seeded permutations of the pool (``torch.Generator().manual_seed(seed + e)``), cycled as often as the epoch needs.

Under DDP, Lightning's ``DistributedSamplerWrapper`` shards the list of ``(i, block)`` items like any sampler's
output, so the concatenated rank shards are the global draw and no aux image is used twice in a step. The aux
counts follow each item's position in its rank's batch, so every rank's full batch holds exactly ``A`` aux
images (the datamodule passes the trainer's world size).

Deliberate difference from the reference (``alg/oe.py``: ``zip(train_loader, train_loader_out)``, so the epoch is
as long as the SHORTER loader): here the epoch is the ID loader's and the aux pool cycles. With the reference's pool
(300k images for 50k ID images at 512 per 128) the two agree; with a small pool (the digits 7-9 set, a user's folder)
the zip would shorten every epoch, and with it every epoch-derived schedule.

Example:
    >>> import numpy as np
    >>> from lt_lightning.data.samplers import InstanceSampler
    >>> pairs = AuxPairedSampler(InstanceSampler(np.array([0, 0, 1]), seed=0), aux_size=5, aux_batch_size=4,
    ...                          batch_size=2, seed=7)
    >>> [len(block) for _, block in pairs]
    [2, 2, 2]
    >>> synthetic_noise("blobs", 3, (8, 8, 1), seed=0).shape
    (3, 8, 8, 1)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from lt_lightning.data.samplers import LongTailSampler

# Synthetic OOD pools of the reference (``dataset/utils.py:67-80``: "Gaussian", "Rademacher", "Blob").
NOISES = ("blobs", "gaussian", "rademacher")
DEFAULT_NOISE_SIZE = 10_000
# The aux stream's seed is sampler_seed + this offset + epoch: never one of the ID streams' seeds.
AUX_SEED_OFFSET = 2_000_003


def synthetic_noise(kind: str, n: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """``n`` uint8 noise images ``(n, H, W, C)`` of ``kind``, from ``numpy.random.default_rng(seed)``.

    The reference's recipes (values in [-1, 1] there, fed to the network unnormalised), mapped to uint8 [0, 255] so
    that the training transform (scale, normalise) treats them like the ID images:

    - ``gaussian``: ``clip(N(0, 0.5^2), -1, 1)`` per pixel, ``(v + 1) / 2 * 255``;
    - ``rademacher``: each pixel 0 or 255 with probability 1/2;
    - ``blobs``: Bernoulli(0.7) pixels, a Gaussian blur of sigma 1.5 over the (H, W, C) array (skimage's
      ``gaussian(..., multichannel=False)`` of the reference also blurs across channels; mode ``nearest``), values
      below 0.75 set to 0, times 255.

    Example:
        >>> x = synthetic_noise("rademacher", 2, (4, 4, 3), seed=0)
        >>> x.dtype, sorted(np.unique(x).tolist())
        (dtype('uint8'), [0, 255])
    """
    if kind not in NOISES:
        raise ValueError(f"noise kind must be one of {list(NOISES)}, got {kind!r}")
    rng = np.random.default_rng(seed)
    size = (n, *shape)
    if kind == "gaussian":
        values = (np.clip(rng.normal(scale=0.5, size=size), -1, 1) + 1) / 2
    elif kind == "rademacher":
        values = rng.binomial(1, 0.5, size=size).astype(np.float64)
    else:
        from scipy.ndimage import gaussian_filter

        values = rng.binomial(1, 0.7, size=size).astype(np.float64)
        values = gaussian_filter(values, sigma=(0, 1.5, 1.5, 1.5), mode="nearest", truncate=4.0)
        values[values < 0.75] = 0.0
    return np.rint(values * 255).astype(np.uint8)


def aux_counts(num_items: int, batch_size: int, aux_batch_size: int, world_size: int = 1) -> np.ndarray:
    """Aux images carried by each of ``num_items`` epoch items: a full batch of ``batch_size`` items carries exactly
    ``aux_batch_size``, spread as evenly as integers allow. Under DDP item ``p`` goes to rank ``p mod W`` at local
    position ``p // W`` (Lightning's ``DistributedSamplerWrapper``), so the spread follows that local position and
    every rank's full batch carries exactly ``aux_batch_size``.

    Example:
        >>> aux_counts(5, 2, 3).tolist()
        [1, 2, 1, 2, 1]
        >>> aux_counts(8, 2, 1, world_size=2).tolist()   # rank 0 gets items 0, 2, 4, 6: counts 0, 1, 0, 1
        [0, 0, 1, 1, 0, 0, 1, 1]
    """
    q = (np.arange(num_items) // world_size) % batch_size
    return (q + 1) * aux_batch_size // batch_size - q * aux_batch_size // batch_size


class AuxPairedSampler(Sampler[tuple[int, tuple[int, ...]]]):
    """The ID sampler's indices, each with its block of aux indices; ``set_epoch`` reaches both streams.

    Args:
        first: the ID sampler (any :class:`~lt_lightning.data.samplers.LongTailSampler`; ``DeferredResampling``
            finds and switches it through this wrapper).
        aux_size: images in the aux pool.
        aux_batch_size: aux images per (full) batch of ``batch_size`` ID images.
        batch_size: the ID batch size of the loader.
        seed: base seed of the aux stream; epoch ``e`` draws with ``seed + e``.
        world_size: processes the loader is sharded over (see :func:`aux_counts`).
    """

    def __init__(
        self,
        first: LongTailSampler,
        aux_size: int,
        aux_batch_size: int,
        batch_size: int,
        seed: int = 0,
        world_size: int = 1,
    ) -> None:
        checked = (
            ("aux_size", aux_size),
            ("aux_batch_size", aux_batch_size),
            ("batch_size", batch_size),
            ("world_size", world_size),
        )
        for name, value in checked:
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.first = first
        self.aux_size, self.aux_batch_size, self.batch_size = int(aux_size), int(aux_batch_size), int(batch_size)
        self.seed = int(seed)
        self.world_size = int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.first.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.first)

    def aux_draw(self, num: int) -> Tensor:
        """The epoch's first ``num`` aux indices: seeded permutations of the pool, end to end."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        reps = -(-num // self.aux_size)
        return torch.cat([torch.randperm(self.aux_size, generator=g) for _ in range(max(reps, 1))])[:num]

    def __iter__(self) -> Iterator[tuple[int, tuple[int, ...]]]:
        ids = list(self.first)
        counts = aux_counts(len(ids), self.batch_size, self.aux_batch_size, self.world_size)
        ends = np.cumsum(counts)
        drawn = self.aux_draw(int(ends[-1]) if len(ends) else 0).tolist()
        starts = ends - counts
        return iter([(i, tuple(drawn[s:e])) for i, s, e in zip(ids, starts.tolist(), ends.tolist(), strict=True)])


class AuxDataset(Dataset):
    """``dataset[(i, (j_1, ..., j_k))] -> (x_i, y_i, stack(aux_j_1, ..., aux_j_k))`` (aux labels are dropped).

    Args:
        dataset: the ID training set.
        aux: the aux pool, already with the training transform.
        aux_shape: shape of one transformed aux image (for blocks of zero images).
    """

    def __init__(self, dataset: Any, aux: Any, aux_shape: Sequence[int]) -> None:
        self.dataset, self.aux, self.aux_shape = dataset, aux, tuple(aux_shape)
        self.targets = getattr(dataset, "targets", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, Sequence[int]]) -> tuple[Any, int, Tensor]:
        i, block = item
        x, y = self.dataset[i][:2]
        images = [self.aux[j][0] for j in block]
        x_aux = torch.stack(images) if images else torch.empty((0, *self.aux_shape))
        return x, y, x_aux


def collate_aux(items: Sequence[tuple[Tensor, int, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """``[(x, y, x_aux_block), ...] -> (stack(x), tensor(y), cat(x_aux_block))`` (module level: picklable)."""
    xs, ys, blocks = zip(*items, strict=True)
    return torch.stack(xs), torch.as_tensor(ys, dtype=torch.int64), torch.cat(blocks)
