"""Default per-dataset transforms (torchvision v2, on uint8 CHW tensors).

CIFAR (LDAM / BBN / SAM-LT recipe): RandomCrop(32, padding=4) + RandomHorizontalFlip for training, then scale to
[0, 1] and Normalize with the dataset's mean/std. Grey digit-like datasets: scale + Normalize only. Datasets of
varying image size (GTSRB, image folders) are resized to a square side first; GTSRB is never flipped (a mirrored
"turn left" sign is a "turn right" sign).

The large split-list benchmarks use the classifier-balancing / OLTR ``get_data_transform`` recipe at ``side``
(224 by default): training ``RandomResizedCrop(side)`` + flip (+ ``ColorJitter(0.4, 0.4, 0.4, 0)`` for ImageNet-LT
and Places-LT, not for iNaturalist), evaluation ``Resize(side * 256 / 224)`` (shorter edge) + ``CenterCrop(side)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

# Datasets whose training images get crop + flip augmentation by default, and those that get crop only.
CROP_FLIP = frozenset({"cifar10", "cifar100", "imagefolder"})
CROP_ONLY = frozenset({"gtsrb"})
# The 224-px recipe (RandomResizedCrop / Resize + CenterCrop), with and without colour jitter.
RESIZED_CROP_JITTER = frozenset({"imagenet_lt", "places_lt"})
RESIZED_CROP = frozenset({"inat2018", "split_lists"})
LARGE_IMAGE_SIDE = 224


def is_resized_crop(dataset: str) -> bool:
    """Whether ``dataset`` uses the 224-px RandomResizedCrop / CenterCrop recipe.

    Example:
        >>> is_resized_crop("imagenet_lt"), is_resized_crop("cifar10")
        (True, False)
    """
    return dataset in RESIZED_CROP_JITTER | RESIZED_CROP


def eval_resize_side(side: int) -> int:
    """Shorter-edge resize before the ``side`` centre crop: 256 for 224 (the ImageNet ratio 256 / 224).

    Example:
        >>> eval_resize_side(224), eval_resize_side(112)
        (256, 128)
    """
    return int(round(side * 256 / 224))


def _to_float(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def default_transforms(
    dataset: str, mean: Sequence[float], std: Sequence[float], image_size: int | None
) -> tuple[v2.Compose, v2.Compose]:
    """``(train_transform, eval_transform)`` for a dataset name; ``image_size`` resizes (or crops to) when given.

    Example:
        >>> train, test = default_transforms("cifar10", (0.5,) * 3, (0.25,) * 3, None)
        >>> train(torch.zeros(3, 32, 32, dtype=torch.uint8)).shape
        torch.Size([3, 32, 32])
        >>> train, test = default_transforms("imagenet_lt", (0.5,) * 3, (0.25,) * 3, 224)
        >>> test(torch.zeros(3, 375, 500, dtype=torch.uint8)).shape
        torch.Size([3, 224, 224])
    """
    if is_resized_crop(dataset):
        side = image_size or LARGE_IMAGE_SIDE
        augment: list[v2.Transform] = [v2.RandomResizedCrop(side, antialias=True), v2.RandomHorizontalFlip()]
        if dataset in RESIZED_CROP_JITTER:
            augment.append(v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0))
        evaluate = [v2.Resize(eval_resize_side(side), antialias=True), v2.CenterCrop(side)]
        return v2.Compose([*augment, *_to_float(mean, std)]), v2.Compose([*evaluate, *_to_float(mean, std)])
    resize = [v2.Resize((image_size, image_size), antialias=True)] if image_size else []
    augment = []
    if dataset in CROP_FLIP | CROP_ONLY:
        side = image_size or 32
        augment.append(v2.RandomCrop(side, padding=side // 8))
        if dataset in CROP_FLIP:
            augment.append(v2.RandomHorizontalFlip())
    train = v2.Compose([*resize, *augment, *_to_float(mean, std)])
    evaluate = v2.Compose([*resize, *_to_float(mean, std)])
    return train, evaluate
