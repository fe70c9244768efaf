"""Dataset classes of the base datasets: in-memory arrays, lazily decoded image files, and ``BaseSplits``.

An item is ``(transform(image), label)`` with ``image`` a uint8 CHW tensor (grey images get one channel), which
torchvision ``transforms.v2`` accepts as is. The loaders that fill these classes live in ``datasets.py``.

Example:
    >>> ds = ArrayDataset(np.zeros((4, 2, 2, 3), np.uint8), [0, 1, 1, 0], transform=lambda x: x.float() + 1)
    >>> image, label = ds.subset([3, 3])[1]
    >>> image.shape, image.dtype, label
    (torch.Size([3, 2, 2]), torch.float32, 0)
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from lt_lightning.data.paths import PathTable


class _Keep(enum.Enum):
    KEEP = "keep"

    def __repr__(self) -> str:
        return "<keep>"


KEEP = _Keep.KEEP  # default of ``subset(transform=...)``: keep the parent's transform


def check_labels(targets: Any, n: int | None, name: str, num_classes: int | None = None) -> np.ndarray:
    """``targets`` as 1-D int64, checked for length ``n`` and range ``[0, num_classes)`` (``[0, inf)`` if None)."""
    targets = np.asarray(targets)
    if targets.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integer labels, got shape {targets.shape}")
    if targets.size and not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {targets.dtype}")
    if n is not None and len(targets) != n:
        raise ValueError(f"{name} has {len(targets)} labels for {n} images")
    targets = targets.astype(np.int64)
    upper = np.iinfo(np.int64).max if num_classes is None else num_classes
    bad = targets[(targets < 0) | (targets >= upper)]
    if bad.size:
        accepted = "labels >= 0" if num_classes is None else f"labels in [0, {num_classes})"
        raise ValueError(f"{name} has labels {np.unique(bad)[:10].tolist()}, accepted: {accepted}")
    return targets


class LabeledImages(torch.utils.data.Dataset):
    """Images with integer labels; ``ds[i]`` is ``(transform(image), label)`` with a uint8 CHW tensor image.

    Subclasses implement :meth:`image` (the untransformed image) and ``_take`` (a new dataset of some items).

    Attributes:
        targets: int64 labels, shape ``(N,)``.
        transform: callable applied to the uint8 CHW image tensor in ``__getitem__``, or None.
    """

    targets: np.ndarray
    transform: Callable | None

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` as a uint8 ``(C, H, W)`` tensor, before any transform."""
        raise NotImplementedError

    def _take(self, indices: np.ndarray, transform: Callable | None) -> LabeledImages:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image = self.image(i)
        return (image if self.transform is None else self.transform(image)), int(self.targets[i])

    def subset(self, indices: Any, transform: Callable | None | _Keep = KEEP) -> LabeledImages:
        """A new dataset of items ``indices`` (in that order, repeats allowed), with ``transform`` (default: same).

        Example:
            >>> ds = ArrayDataset(np.zeros((3, 2, 2), np.uint8), [0, 1, 2])
            >>> ds.subset([2, 2, 0]).targets.tolist()
            [2, 2, 0]
        """
        indices = np.asarray(indices)
        if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-D integer array, got dtype {indices.dtype} shape {indices.shape}")
        indices = indices.astype(np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise ValueError(f"indices must lie in [0, {len(self)}), got min {indices.min()} and max {indices.max()}")
        return self._take(indices, self.transform if transform is KEEP else transform)

    def __repr__(self) -> str:
        transform = None if self.transform is None else type(self.transform).__name__
        return f"{type(self).__name__}(n={len(self)}, transform={transform})"


class ArrayDataset(LabeledImages):
    """In-memory uint8 images, ``(N, H, W)`` grey or ``(N, H, W, C)``, kept as given.

    Args:
        images: uint8 array ``(N, H, W)`` or ``(N, H, W, C)``.
        targets: N non-negative integer labels.
        transform: applied to each uint8 ``(C, H, W)`` tensor.

    Example:
        >>> ds = ArrayDataset(np.arange(8, dtype=np.uint8).reshape(2, 2, 2), [1, 0])
        >>> image, label = ds[1]
        >>> image.tolist(), label
        ([[[4, 5], [6, 7]]], 0)
    """

    def __init__(self, images: np.ndarray, targets: Any, transform: Callable | None = None) -> None:
        if not isinstance(images, np.ndarray):
            raise TypeError(f"images must be a numpy array, got {type(images).__name__}")
        if images.dtype != np.uint8:
            raise ValueError(f"images must have dtype uint8 (0..255), got {images.dtype}")
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] < 1):
            raise ValueError(f"images must have shape (N, H, W) or (N, H, W, C), got {images.shape}")
        self.images = images
        self.targets = check_labels(targets, len(images), "targets")
        self.transform = transform

    def image(self, i: int) -> torch.Tensor:
        image = self.images[i]
        chw = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
        # A C-ordered copy: transforms must never write into the shared pool, and CHW must be contiguous.
        return torch.from_numpy(np.array(chw, order="C"))

    def _take(self, indices: np.ndarray, transform: Callable | None) -> ArrayDataset:
        return ArrayDataset(self.images[indices], self.targets[indices], transform)


class ImageFileDataset(LabeledImages):
    """Image files decoded with PIL on access (converted to ``mode``: ``"RGB"`` or grey ``"L"``).

    Paths are stored in a :class:`~lt_lightning.data.paths.PathTable` (one bytes buffer + offsets, no Python object
    per item), which DataLoader workers share without copy-on-read and which pickles small; ``ds.paths[i]`` is a
    ``str``. ``paths`` may be a sequence of paths or a PathTable (taken as is: loaders of 10^5 items build it from
    the bytes of their list files, never from ``str`` objects).

    Example:
        >>> ds = ImageFileDataset(["/data/a.jpg", "/data/b.jpg"], [1, 0])
        >>> ds.subset([1]).paths[0], len(ds)
        ('/data/b.jpg', 2)

    Raises:
        OSError: when ``ds[i]`` is read and its file cannot be decoded (``FileNotFoundError`` if it is gone);
            the message names the path.
    """

    def __init__(
        self,
        paths: Sequence[str | Path] | PathTable,
        targets: Any,
        transform: Callable | None = None,
        mode: str = "RGB",
    ) -> None:
        if mode not in ("RGB", "L"):
            raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
        # Duck-typed: pytest's importlib doctest collection may load paths.py twice (two PathTable classes).
        is_table = isinstance(paths, PathTable) or getattr(type(paths), "IS_PATH_TABLE", False)
        self.paths: PathTable = paths if is_table else PathTable.from_paths(paths)  # type: ignore[assignment]
        self.targets = check_labels(targets, len(self.paths), "targets")
        self.transform = transform
        self.mode = mode

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` as a uint8 ``(C, H, W)`` tensor (colour images: a channels-last view, not contiguous)."""
        path = self.paths[int(i)]
        try:
            with Image.open(path) as img:
                array = np.array(img.convert(self.mode), dtype=np.uint8)
        except FileNotFoundError:
            raise FileNotFoundError(f"image file {path} does not exist") from None
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise OSError(f"cannot decode image file {path}: {err}") from err
        pixels = torch.from_numpy(array)  # a fresh array per read: transforms may write into it
        # (C, H, W) as a view of the decoded (H, W, C) pixels, not a copy: torch's uint8 resize (RandomResizedCrop,
        # Resize) is about 3x faster on this channels-last layout than on a contiguous CHW copy (benchmarks/README).
        return pixels[None] if array.ndim == 2 else pixels.permute(2, 0, 1)

    def _take(self, indices: np.ndarray, transform: Callable | None) -> ImageFileDataset:
        return ImageFileDataset(self.paths.take(indices), self.targets[indices], transform, self.mode)


@dataclass(frozen=True)
class BaseSplits:
    """A dataset's training pool and test set, class names and normalisation constants (on the [0, 1] scale).

    ``image_size`` is the side of the square images, or None when sizes vary (image folders, GTSRB, split lists).
    ``val`` is a validation set the dataset ships (the split lists of ImageNet-LT and Places-LT), or None: the
    datamodule then validates on ``val_per_class`` images held out of the pool, or on the test set. ``note`` is one
    line the datamodule's split report prints (e.g. that iNaturalist 2018's val list is its test set), or None.
    """

    train: LabeledImages
    test: LabeledImages
    class_names: tuple[str, ...]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int | None
    val: LabeledImages | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels or min(self.std) <= 0:
            raise ValueError(f"mean and std need {self.channels} values, std > 0; got {self.mean}, {self.std}")
        for split in (self.train, self.test) if self.val is None else (self.train, self.val, self.test):
            check_labels(split.targets, None, "targets", self.num_classes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)
