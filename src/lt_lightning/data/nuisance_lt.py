"""Nuisance long-tailed datasets (K49-ROT/BG/DIL-LT recipe, METHODS §1.2): a nuisance applied once per image.

GIT's ``make_kmnist_lt.py`` draws one transform per training image when the split is built and stores the result,
so the model sees the same transformed image every epoch; a class filled by cyclic reuse gets a fresh draw for
every copy. :func:`freeze_nuisance` does exactly that for any :class:`~lt_lightning.data.base.LabeledImages`:
all parameters are drawn first from one seeded generator (one per split, :func:`nuisance_generator`), then applied.

Example:
    >>> from lt_lightning.data.nuisance import BackgroundNuisance
    >>> ds = ArrayDataset(np.zeros((2, 2, 2), np.uint8), [0, 1])
    >>> frozen = freeze_nuisance(ds, BackgroundNuisance(low=5, high=6), nuisance_generator(0, "train"))
    >>> frozen.images[:, 0, 0].tolist(), frozen.nuisance_params.tolist()
    ([5, 5], [5, 5])
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from lt_lightning.data.base import ArrayDataset, LabeledImages
from lt_lightning.data.nuisance import Nuisance

__all__ = ["NUISANCE_STREAMS", "array_dataset", "freeze_nuisance", "materialise", "nuisance_generator"]

# Second entropy word of each stream. Not 0 (SeedSequence([s, 0]) equals SeedSequence(s), which
# ``np.random.default_rng(subset_seed)`` uses for the subset) nor 1 (``flip_labels`` uses [seed, 1]).
NUISANCE_STREAMS: dict[str, int] = {"train": 0x4E55_0001, "val": 0x4E55_0002, "test": 0x4E55_0003}


def nuisance_generator(seed: int, stream: str) -> torch.Generator:
    """An independent, reproducible CPU ``torch.Generator`` for one split's nuisance draws.

    Its seed is the first uint64 word of ``numpy.random.SeedSequence([seed, NUISANCE_STREAMS[stream]])``, so the
    streams ``train`` / ``val`` / ``test`` of one seed never coincide with each other, nor with the
    ``np.random.default_rng(seed)`` stream the subset is drawn from.

    Args:
        seed: integer >= 0 (the datamodule's ``subset_seed``, or 0 for the shared test set).
        stream: ``train``, ``val`` or ``test``.

    Example:
        >>> a = torch.rand(2, generator=nuisance_generator(0, "train"))
        >>> torch.equal(a, torch.rand(2, generator=nuisance_generator(0, "train")))
        True
        >>> torch.equal(a, torch.rand(2, generator=nuisance_generator(0, "val")))
        False
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if stream not in NUISANCE_STREAMS:
        raise ValueError(f"stream must be one of {sorted(NUISANCE_STREAMS)}, got {stream!r}")
    state = np.random.SeedSequence([int(seed), NUISANCE_STREAMS[stream]]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def materialise(dataset: LabeledImages, side: int | None = None) -> torch.Tensor:
    """All raw images of ``dataset`` (``dataset.image(i)``, before any transform) as a new uint8 ``(N, C, H, W)``.

    With ``side``, every image is first resized to ``side x side`` (torchvision v2 ``resize``, bilinear with
    antialias, uint8 kept), the resize the default transforms do. The result never shares memory with the
    dataset, so it may be written in place.

    Raises:
        ValueError: ``dataset`` is empty, ``side`` is not an int >= 1, or images differ in shape and ``side`` is
            None (set ``image_size``).

    Example:
        >>> ds = ArrayDataset(np.arange(8, dtype=np.uint8).reshape(2, 2, 2), [0, 1])
        >>> materialise(ds).shape, materialise(ds, side=4).shape
        (torch.Size([2, 1, 2, 2]), torch.Size([2, 1, 4, 4]))
    """
    if side is not None and (isinstance(side, bool) or not isinstance(side, int | np.integer) or side < 1):
        raise ValueError(f"side must be an integer >= 1 or None, got {side!r}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: there are no images to stack")
    if isinstance(dataset, ArrayDataset):
        # Fast path: one array, one shape; a copy so the pool is never written through.
        array = dataset.images[:, None] if dataset.images.ndim == 3 else dataset.images.transpose(0, 3, 1, 2)
        whole = torch.from_numpy(np.array(array, order="C"))
        # Chunks bound the resize's working memory on large pools; each image is resized on its own either way.
        images = list(whole.split(4096)) if side is not None else [whole]
    else:
        images = [dataset.image(i) for i in range(len(dataset))]
    if side is not None:
        size = [int(side), int(side)]
        images = [TF.resize(x, size, antialias=True) if tuple(x.shape[-2:]) != (side, side) else x for x in images]
    if isinstance(dataset, ArrayDataset):
        return images[0] if len(images) == 1 else torch.cat(images)
    shapes = sorted({tuple(x.shape) for x in images})
    if len(shapes) > 1:
        shown = ", ".join(str(s) for s in shapes[:5]) + (", ..." if len(shapes) > 5 else "")
        raise ValueError(
            f"images differ in shape ({len(shapes)} shapes (C, H, W): {shown}); set image_size to resize them "
            "to one square side"
        )
    return torch.stack(images)


def array_dataset(images: torch.Tensor, like: LabeledImages) -> ArrayDataset:
    """uint8 ``(N, C, H, W)`` ``images`` as an :class:`ArrayDataset` (its ``(N, H, W)`` grey / ``(N, H, W, C)``
    layout) with ``like``'s targets (a copy) and transform.

    Example:
        >>> ds = ArrayDataset(np.zeros((2, 3, 3), np.uint8), [1, 0], transform=abs)
        >>> out = array_dataset(torch.ones(2, 1, 4, 4, dtype=torch.uint8), ds)
        >>> out.images.shape, out.targets.tolist(), out.transform is abs
        ((2, 4, 4), [1, 0], True)
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(like):
        raise ValueError(
            f"images must be uint8 (N, C, H, W) with N = {len(like)}, got {images.dtype} {tuple(images.shape)}"
        )
    array = images.cpu().numpy()
    array = array[:, 0] if array.shape[1] == 1 else array.transpose(0, 2, 3, 1)
    return ArrayDataset(np.ascontiguousarray(array), np.array(like.targets, copy=True), like.transform)


def freeze_nuisance(
    dataset: LabeledImages,
    nuisance: Nuisance,
    generator: torch.Generator,
    *,
    side: int | None = None,
    chunk_size: int = 4096,
) -> ArrayDataset:
    """Apply ``nuisance`` once to every item of ``dataset`` and keep the result: ``x_i' = T(x_i; theta_i)``.

    All parameters ``theta_1..theta_N = nuisance.sample_params(generator, N)`` are drawn in one call before any
    image is transformed, so item i's draw depends only on the generator's state and i (not on ``chunk_size``).
    A repeated index (an image reused to fill a short class) is a separate item with its own draw. Images are
    taken raw (:func:`materialise`, resized to ``side`` first when given) and transformed ``chunk_size`` at a time.

    Args:
        dataset: the items to transform (its ``transform`` is kept for reading, not applied here).
        nuisance: a :class:`~lt_lightning.data.nuisance.Nuisance` (``sample_params`` / ``apply``).
        generator: the seeded source of the draws (see :func:`nuisance_generator`); it is advanced.
        side: resize images to ``side x side`` before the nuisance (the resolution the model sees).
        chunk_size: images transformed per ``apply`` call (bounds the float working memory).

    Returns:
        An :class:`~lt_lightning.data.base.ArrayDataset` of the transformed uint8 images (``(N, H, W)`` grey,
        ``(N, H, W, C)`` colour), ``dataset``'s targets (a copy) and transform, with the attribute
        ``nuisance_params``: the drawn parameters, one row per item, as ``sample_params`` returns them.

    Example:
        >>> from lt_lightning.data.nuisance import RotationNuisance
        >>> ds = ArrayDataset(np.eye(3, dtype=np.uint8)[None].repeat(2, 0) * 200, [0, 0])
        >>> frozen = freeze_nuisance(ds, RotationNuisance(), nuisance_generator(0, "train"))
        >>> frozen.images.shape, frozen.nuisance_params.shape  # one image reused: two different angles
        ((2, 3, 3), torch.Size([2]))
        >>> bool(frozen.nuisance_params[0] != frozen.nuisance_params[1])
        True
    """
    if not isinstance(nuisance, Nuisance):
        raise TypeError(f"nuisance must be a lt_lightning.data.nuisance.Nuisance, got {type(nuisance).__name__}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    params = nuisance.sample_params(generator, len(dataset))
    images = materialise(dataset, side)
    for start in range(0, len(images), int(chunk_size)):
        stop = start + int(chunk_size)
        images[start:stop] = nuisance.apply(images[start:stop], params[start:stop])
    frozen = array_dataset(images, dataset)
    frozen.nuisance_params = params
    return frozen
