"""Batched, on-device equivalents of the default per-sample transforms (``data_on_device=True``).

The default CIFAR recipe ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()`` + ``ToDtype(float32, scale=True)``
+ ``Normalize(mean, std)`` runs per image on the CPU. Here the same maths runs on a whole uint8 batch ``(B, C, H, W)``
where it already lives (the training device), with one independent draw per sample, equal in distribution to
torchvision's: crop offsets ``top``, ``left`` uniform on ``[0, H + 2p - h]`` x ``[0, W + 2p - w]`` of the zero-padded
image (``fill=0``, ``padding_mode="constant"``), then a horizontal flip with probability ``p``; crop and flip are one
gather. Conversion and normalisation use torchvision's own formulas (``x.to(float32).mul_(1 / 255)``, then
``sub_(mean).div_(std)``), so evaluation batches match the loader path bit for bit on the CPU.

:func:`batched_recipe` reads a torchvision v2 transform (the defaults, or a user's built from the same pieces) into a
:class:`DeviceRecipe`, or returns why it cannot run batched (any other transform: a nuisance drawn per sample, a
rotation, a lambda, ...).

Example:
    >>> images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    >>> out = random_crop_flip(images, padding=1, generator=torch.Generator().manual_seed(0))
    >>> out.shape, out.dtype
    (torch.Size([1, 1, 4, 4]), torch.uint8)
    >>> normalise(images, mean=[0.5], std=[0.25]).dtype
    torch.float32
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.transforms import v2

__all__ = ["DeviceRecipe", "batched_recipe", "crop_flip_params", "normalise", "random_crop_flip"]


def crop_flip_params(
    n: int,
    padded_size: tuple[int, int],
    size: tuple[int, int],
    flip_p: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` independent draws ``(top, left, flipped)``: offsets uniform on ``[0, padded - size]`` (inclusive),
    ``flipped`` True with probability ``flip_p`` (torchvision: ``torch.rand(1) < p`` flips).

    Example:
        >>> top, left, flipped = crop_flip_params(5, (40, 40), (32, 32), 0.5, torch.Generator().manual_seed(0))
        >>> top.shape, bool(((0 <= top) & (top <= 8)).all()), flipped.dtype
        (torch.Size([5]), True, torch.bool)
    """
    device = generator.device if generator is not None else device
    kwargs = {"generator": generator, "device": device}
    top = torch.randint(0, padded_size[0] - size[0] + 1, (n,), **kwargs)
    left = torch.randint(0, padded_size[1] - size[1] + 1, (n,), **kwargs)
    flipped = torch.rand(n, **kwargs) < flip_p
    return top, left, flipped


def random_crop_flip(
    images: Tensor,
    padding: int,
    generator: torch.Generator | None = None,
    *,
    size: int | tuple[int, int] | None = None,
    flip_p: float = 0.5,
) -> Tensor:
    """Per-sample ``RandomCrop(size, padding)`` then ``RandomHorizontalFlip(flip_p)`` of a batch, in one gather.

    Args:
        images: ``(B, C, H, W)`` tensor (uint8 or float), on any device.
        padding: zeros added on every side before cropping (torchvision's ``padding=p``, ``fill=0``).
        generator: source of the draws, on ``images``' device (None: the global RNG of that device).
        size: crop side or ``(h, w)``; default ``(H, W)`` (the CIFAR recipe: crop back to the input size).
        flip_p: flip probability; 0 crops only.

    Returns:
        ``(B, C, h, w)`` of ``images``' dtype; pixels that come from the padding are 0.

    Example:
        >>> x = torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 2)
        >>> random_crop_flip(x, 0, flip_p=1.0).tolist()  # no padding, always flipped: the mirror image
        [[[[1, 0], [3, 2]]]]
    """
    if images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) batch, got shape {tuple(images.shape)}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an integer >= 0, got {padding!r}")
    batch, channels, height, width = images.shape
    h, w = (height, width) if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    padded = F.pad(images, (padding,) * 4) if padding else images
    if padded.shape[-2] < h or padded.shape[-1] < w:
        raise ValueError(f"crop size {(h, w)} is larger than the padded image {tuple(padded.shape[-2:])}")
    if generator is not None and generator.device != images.device:
        raise ValueError(f"generator is on {generator.device}, images on {images.device}: they must share a device")
    top, left, flipped = crop_flip_params(batch, tuple(padded.shape[-2:]), (h, w), flip_p, generator, images.device)
    dev = images.device
    rows = top[:, None] + torch.arange(h, device=dev)  # (B, h)
    columns = torch.arange(w, device=dev).expand(batch, w)
    # A flip after the crop reads the crop's columns right to left.
    columns = torch.where(flipped[:, None], w - 1 - columns, columns) + left[:, None]  # (B, w)
    b = torch.arange(batch, device=dev)[:, None, None, None]
    c = torch.arange(channels, device=dev)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], columns[:, None, None, :]]


def normalise(images: Tensor, mean: Sequence[float] | Tensor | None, std: Sequence[float] | Tensor | None) -> Tensor:
    """uint8 ``images`` -> float32 on [0, 1] (``ToDtype(float32, scale=True)``), then ``(x - mean) / std`` per
    channel (``Normalize``) unless ``mean`` is None; torchvision's operations in torchvision's order.

    Example:
        >>> normalise(torch.full((1, 1, 1, 1), 255, dtype=torch.uint8), [0.5], [0.5]).item()
        1.0
    """
    x = images.to(torch.float32).mul_(1.0 / 255)
    if mean is None:
        return x
    # Tensors already on the device (DeviceRecipe caches them) are used as they are: no host copy per batch.
    mean_t = (mean if isinstance(mean, Tensor) else torch.as_tensor(list(mean), dtype=x.dtype)).to(x.device, x.dtype)
    std_t = (std if isinstance(std, Tensor) else torch.as_tensor(list(std), dtype=x.dtype)).to(x.device, x.dtype)
    return x.sub_(mean_t.view(-1, 1, 1)).div_(std_t.view(-1, 1, 1))


@dataclass
class DeviceRecipe:
    """A transform split into a deterministic part run ONCE per image before the images go to the device
    (``prepare``: resizes, centre crops) and a batched part run per batch (crop + flip, then normalise).

    Attributes:
        prepare: deterministic v2 transforms applied to the uint8 images once (in order).
        crop: ``(size, padding)`` of a ``RandomCrop``, or None.
        flip_p: probability of a horizontal flip (0: none).
        mean, std: of ``Normalize``, or None (scaling to [0, 1] only).
    """

    prepare: list[Callable] = field(default_factory=list)
    crop: tuple[tuple[int, int], int] | None = None
    flip_p: float = 0.0
    mean: list[float] | None = None
    std: list[float] | None = None
    # mean / std as tensors on each device used, made once: a copy from the host at every batch would wait for the
    # device's queue (a host synchronisation per step).
    _on_device: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_on_device": {}}  # device tensors never travel in a pickle (ddp_spawn)

    @property
    def random(self) -> bool:
        """Whether batches draw random numbers (training augmentation)."""
        return self.crop is not None or self.flip_p > 0

    def prepare_images(self, images: Tensor, chunk_size: int = 4096) -> Tensor:
        """``prepare`` applied to uint8 ``(N, C, H, W)`` images, ``chunk_size`` at a time (bounded memory)."""
        if not self.prepare:
            return images
        chunks = []
        for chunk in images.split(chunk_size):
            for step in self.prepare:
                chunk = step(chunk)
            chunks.append(chunk)
        return torch.cat(chunks)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """uint8 ``(B, C, H, W)`` (already prepared) -> the float32 batch the model sees."""
        if self.random:
            size, padding = self.crop if self.crop is not None else (None, 0)
            images = random_crop_flip(images, padding, generator, size=size, flip_p=self.flip_p)
        if self.mean is None:
            return normalise(images, None, None)
        key = str(images.device)
        if key not in self._on_device:
            values = (self.mean, self.std)
            self._on_device[key] = tuple(torch.tensor(v, dtype=torch.float32).to(images.device) for v in values)
        mean, std = self._on_device[key]
        return normalise(images, mean, std)


def _flatten(transform) -> list | None:
    if isinstance(transform, v2.Compose):
        steps = []
        for inner in transform.transforms:
            flat = _flatten(inner)
            if flat is None:
                return None
            steps += flat
        return steps
    return [transform]


def _crop(step: v2.RandomCrop) -> tuple[tuple[int, int], int] | str:
    padding = step.padding or [0, 0, 0, 0]
    fill = step.fill
    if len(set(padding)) != 1 or step.padding_mode != "constant" or step.pad_if_needed:
        return "RandomCrop with uneven padding, a non-constant padding_mode or pad_if_needed"
    if not (isinstance(fill, int | float) and fill == 0):
        return f"RandomCrop with fill={fill!r} (only 0 is supported)"
    return (int(step.size[0]), int(step.size[1])), int(padding[0])


def batched_recipe(transform: Callable | None) -> DeviceRecipe | str:
    """``transform`` as a :class:`DeviceRecipe`, or a one-line reason why it cannot run batched on the device.

    Understood (a ``v2.Compose``, nested or not, of): ``Resize`` / ``CenterCrop`` (deterministic, before any random
    step), at most one ``RandomCrop`` (``fill=0``, constant, even padding) and one ``RandomHorizontalFlip``, then
    ``ToDtype(torch.float32, scale=True)`` and an optional ``Normalize``.

    Example:
        >>> recipe = batched_recipe(v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
        ...     v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.25] * 3)]))
        >>> recipe.crop, recipe.flip_p, recipe.mean
        (((32, 32), 4), 0.5, [0.5, 0.5, 0.5])
        >>> batched_recipe(v2.RandomRotation(10))
        'RandomRotation cannot run batched on the device'
    """
    steps = _flatten(transform) if transform is not None else None
    if steps is None:
        return "no torchvision v2 transform to read (None or not a v2.Compose of known steps)"
    recipe, scaled = DeviceRecipe(), False
    for step in steps:
        name = type(step).__name__
        if scaled:
            if isinstance(step, v2.Normalize) and recipe.mean is None:
                recipe.mean, recipe.std = [float(m) for m in step.mean], [float(s) for s in step.std]
                continue
            return f"{name} after ToDtype cannot run batched on the device (only one Normalize can follow it)"
        if isinstance(step, v2.Resize | v2.CenterCrop):
            if recipe.random:
                return f"{name} after a random crop or flip cannot run batched on the device"
            recipe.prepare.append(step)
        elif isinstance(step, v2.RandomCrop) and recipe.crop is None:
            crop = _crop(step)
            if isinstance(crop, str):
                return f"{crop} cannot run batched on the device"
            recipe.crop = crop
        elif isinstance(step, v2.RandomHorizontalFlip) and recipe.flip_p == 0:
            recipe.flip_p = float(step.p)
        elif isinstance(step, v2.ToDtype):
            if step.dtype is not torch.float32 or not step.scale:
                return f"ToDtype({step.dtype}, scale={step.scale}) cannot run batched (needs float32, scale=True)"
            scaled = True
        else:
            return f"{name} cannot run batched on the device"
    if not scaled:
        return "the transform has no ToDtype(torch.float32, scale=True): its output is not a float batch"
    return recipe
