"""Device-resident splits for ``LongTailDataModule(data_on_device=True)``: loaders of indices, images on the device.

The DataLoaders stay (same samplers, same batch size, same ``drop_last``), but over an :class:`IndexDataset`: a
batch is an :class:`IndexBatch` of sample indices (pairs for BBN's two streams). Lightning therefore wraps the
sampler for DDP exactly as for the image loaders (each rank gets the same shard of the same list, padded the same
way), calls ``set_epoch``, swaps samplers for DRS and resumes as before. After Lightning moves the index batch to the
training device, the datamodule's ``on_after_batch_transfer`` hook calls :meth:`DeviceData.batch`, which gathers
``images[indices]`` from a uint8 tensor held on that device (copied there once per split, on first use, after a
free-memory check) and runs the batched :class:`~lt_lightning.data.device_augment.DeviceRecipe` of the split's
transform: crop + flip + normalise for training, normalise only for evaluation.

Seeding of the augmentation: epoch ``e`` on global rank ``r`` draws from a ``torch.Generator`` on the device seeded
with ``SeedSequence([base, e, r, AUGMENT_STREAM])``, where ``base`` is ``PL_GLOBAL_SEED`` (set by
``seed_everything``, which the CLI calls), else one draw from the global torch RNG. So a seeded run is reproducible,
every rank draws differently, and a run resumed from an end-of-epoch checkpoint draws exactly what the uninterrupted
run drew (the per-sample loader path cannot promise that: its draws depend on the global RNG's history).

Example:
    >>> import numpy as np
    >>> from torchvision.transforms import v2
    >>> from lt_lightning.data.base import ArrayDataset
    >>> ds = ArrayDataset(np.arange(32, dtype=np.uint8).reshape(2, 4, 4), [0, 1])
    >>> data = DeviceData({"test": ds}, {"test": batched_recipe(v2.ToDtype(torch.float32, scale=True))}, "toy")
    >>> batch = collate_indices([1, 0], "test")
    >>> x, y = data.batch(batch)
    >>> x.shape, y.tolist()
    (torch.Size([2, 1, 4, 4]), [1, 0])
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lt_lightning.data.base import ArrayDataset, LabeledImages
from lt_lightning.data.device_augment import DeviceRecipe, batched_recipe
from lt_lightning.data.nuisance_lt import materialise

__all__ = [
    "AUGMENT_STREAM",
    "DeviceData",
    "IndexBatch",
    "IndexDataset",
    "augment_seed",
    "check_fits",
    "collate_indices",
    "free_device_memory",
    "plan_device_data",
]

AUGMENT_STREAM = 0x4445_5649  # "DEVI": keeps the augmentation seeds apart from every other SeedSequence stream
# The split may take at most this fraction of the free device memory: the rest is for the model and activations.
MAX_FREE_FRACTION = 0.9
_MB = 2**20


class IndexBatch:
    """A batch of sample indices of one split, ``(B,)`` or ``(B, 2)`` (two streams), movable with ``.to()``.

    Lightning moves it like a tensor (it has ``to``); the datamodule's ``on_after_batch_transfer`` turns it into
    ``[x, y]`` (or ``[x, y, x_r, y_r]``).
    """

    __slots__ = ("indices", "split")

    def __init__(self, indices: Tensor, split: str) -> None:
        self.indices = indices
        self.split = split

    def to(self, *args, **kwargs) -> IndexBatch:
        # Lightning passes non_blocking only to tensors: pinned indices (CUDA runs) are copied without blocking.
        if self.indices.is_pinned():
            kwargs.setdefault("non_blocking", True)
        return IndexBatch(self.indices.to(*args, **kwargs), self.split)

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"IndexBatch(split={self.split!r}, indices={self.indices.tolist()})"


def collate_indices(items: Sequence, split: str, pin_memory: bool = False) -> IndexBatch:
    """Indices (or index pairs) of a batch -> an :class:`IndexBatch` of int64 (in pinned memory if asked: CUDA)."""
    indices = torch.as_tensor(items, dtype=torch.long)
    return IndexBatch(indices.pin_memory() if pin_memory else indices, split)


class IndexDataset(Dataset):
    """``dataset[i] = i`` over ``length`` samples of ``split`` (a pair ``(i, j)`` passes through as well).

    ``__getitems__`` hands a whole batch of indices to :meth:`collate` at once (no per-item call).
    """

    def __init__(self, length: int, split: str, pin_memory: bool = False) -> None:
        self.length, self.split, self.pin_memory = int(length), split, pin_memory

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):
        return index

    def __getitems__(self, indices: list) -> list:
        return indices

    def collate(self, items: Sequence) -> IndexBatch:
        return collate_indices(items, self.split, self.pin_memory)


def free_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA ``device`` (``torch.cuda.mem_get_info``); None elsewhere (no check on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return None


def check_fits(nbytes: int, device: torch.device, what: str, free: int | None = None) -> None:
    """Raise a ``MemoryError`` (one line, sizes in MB) when ``nbytes`` exceed ``MAX_FREE_FRACTION`` of the free
    memory of ``device`` (``free``, default :func:`free_device_memory`; None: no check).

    Example:
        >>> check_fits(10 * 2**20, torch.device("cpu"), "the toy split", free=2**20)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        MemoryError: data_on_device=True: the toy split needs 10.0 MB as uint8 on cpu, which has 1.0 MB free ...
    """
    free = free_device_memory(device) if free is None else free
    if free is None or nbytes <= MAX_FREE_FRACTION * free:
        return
    raise MemoryError(
        f"data_on_device=True: {what} needs {nbytes / _MB:.1f} MB as uint8 on {device}, which has "
        f"{free / _MB:.1f} MB free (at most {MAX_FREE_FRACTION:.0%} may be used); set data_on_device=False to load "
        "batches from host memory"
    )


def augment_seed(epoch: int, rank: int, base: int | None = None) -> int:
    """Seed of the augmentation generator for ``epoch`` on global ``rank`` (see the module docstring); ``base``
    defaults to ``PL_GLOBAL_SEED``, else one draw from the global torch RNG.

    Example:
        >>> augment_seed(1, 0, base=7) == augment_seed(1, 0, base=7) != augment_seed(2, 0, base=7)
        True
        >>> augment_seed(1, 0, base=7) != augment_seed(1, 1, base=7)
        True
    """
    if base is None:
        env = os.environ.get("PL_GLOBAL_SEED")
        base = int(env) if env is not None else int(torch.randint(0, 2**62, ()))
    words = [base % 2**63, int(epoch), int(rank), AUGMENT_STREAM]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0])


class DeviceData:
    """Splits held on the device and their batched transforms.

    Args:
        sources: split name (``train``, ``val``, ``test``) -> in-memory dataset (its images and targets are read;
            the same object under two names is copied once).
        recipes: split name -> the batched transform of that split.
        name: dataset name, for messages.
    """

    def __init__(self, sources: dict[str, LabeledImages], recipes: dict[str, DeviceRecipe], name: str) -> None:
        self.sources, self.recipes, self.name = sources, recipes, name
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}
        self._generator: torch.Generator | None = None
        self._generator_key: tuple | None = None

    def __getstate__(self) -> dict:
        # Device tensors and generators do not travel (ddp_spawn pickles the datamodule): rebuilt on first use.
        return {**self.__dict__, "_cache": {}, "_generator": None, "_generator_key": None}

    @property
    def splits(self) -> frozenset[str]:
        return frozenset(self.recipes)

    def clear(self) -> None:
        """Release the device copies (they are rebuilt on the next batch)."""
        self._cache.clear()
        self._generator = self._generator_key = None

    def tensors(self, split: str, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(images uint8 (N, C, H, W), targets int64)`` of ``split`` on ``device``, copied there on first use."""
        source = self.sources[split]
        key = id(source)
        cached = self._cache.get(key)
        if cached is not None and cached[0].device == device:
            return cached
        self._cache.pop(key, None)  # a copy on another device goes first
        images = self.recipes[split].prepare_images(materialise(source))
        what = f"the {self.name} {split} split ({len(images)} images of {tuple(images.shape[1:])})"
        check_fits(images.numel() * images.element_size(), device, what)
        cached = images.to(device), torch.as_tensor(source.targets, dtype=torch.long).to(device)
        self._cache[key] = cached
        return cached

    def generator(self, device: torch.device, epoch: int, rank: int) -> torch.Generator:
        """The augmentation generator of ``epoch`` / ``rank`` on ``device`` (re-seeded when any of them changes)."""
        key = (device, int(epoch), int(rank))
        if self._generator is None or key != self._generator_key:
            self._generator = torch.Generator(device=device).manual_seed(augment_seed(epoch, rank))
            self._generator_key = key
        return self._generator

    def batch(self, batch: IndexBatch, epoch: int = 0, rank: int = 0) -> list[Tensor]:
        """``[x, y]`` (or ``[x, y, x_r, y_r]`` for index pairs) of ``batch``, on its device."""
        device = batch.indices.device
        images, targets = self.tensors(batch.split, device)
        recipe = self.recipes[batch.split]
        indices = batch.indices
        flat = indices.T.reshape(-1) if indices.ndim == 2 else indices  # stream 1, then stream 2
        generator = self.generator(device, epoch, rank) if recipe.random else None
        x, y = recipe(images[flat], generator), targets[flat]
        if indices.ndim == 1:
            return [x, y]
        x, x_r = x.chunk(2)
        y, y_r = y.chunk(2)
        return [x, y, x_r, y_r]


def plan_device_data(
    name: str,
    splits: dict[str, LabeledImages],
    transforms: dict[str, object],
    reasons: dict[str, str],
) -> tuple[DeviceData, str | None]:
    """Which splits can live on the device, and the one warning for those that cannot.

    Args:
        name: dataset name (messages).
        splits: ``train``, ``val``, ``test`` -> the served dataset.
        transforms: ``train`` / ``eval`` -> the transform the loader path would apply.
        reasons: ``train`` / ``eval`` -> a reason known by the caller to keep that part on the loader path.

    Raises:
        ValueError: a split is not in memory (image files): ``data_on_device`` needs an in-memory dataset.

    Returns:
        The :class:`DeviceData` of the splits that go on the device, and a warning text (None when all do).
    """
    for split, dataset in splits.items():
        if not isinstance(dataset, ArrayDataset):
            raise ValueError(
                f"data_on_device=True needs an in-memory dataset (digits, mnist, fashion_mnist, kmnist, k49, cifar10, "
                f"cifar100, npz, or a nuisance set), but the {name!r} {split} split reads image files "
                f"({type(dataset).__name__}); set data_on_device=False"
            )
    recipes, fallback = {}, []
    for part in ("train", "eval"):
        reason = reasons.get(part)
        if reason is None:
            recipe = batched_recipe(transforms[part])
            reason = recipe if isinstance(recipe, str) else None
            if reason is not None:
                reason = f"its {part}_transform: {reason}"
        if reason is not None:
            fallback.append(f"{'training' if part == 'train' else 'evaluation'} batches ({reason})")
            continue
        for split in ("train",) if part == "train" else ("val", "test"):
            recipes[split] = recipe
    data = DeviceData({s: d for s, d in splits.items() if s in recipes}, recipes, name)
    if not fallback:
        return data, None
    kept = ""
    if recipes:
        kept = "; " + ("training" if "train" in recipes else "val/test") + " batches stay on the device"
    warning = f"data_on_device=True: {name!r} keeps the normal DataLoader path for " + " and ".join(fallback) + kept
    return data, warning
