"""Default per-dataset transforms (torchvision v2, on uint8 CHW tensors).

CIFAR (LDAM / BBN / SAM-LT recipe): RandomCrop(32, padding=4) + RandomHorizontalFlip for training, then scale to
[0, 1] and Normalize with the dataset's mean/std. Grey digit-like datasets: scale + Normalize only. Datasets of
varying image size (GTSRB, image folders) are resized to a square side first; GTSRB is never flipped (a mirrored
"turn left" sign is a "turn right" sign).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

# Datasets whose training images get crop + flip augmentation by default, and those that get crop only.
CROP_FLIP = frozenset({"cifar10", "cifar100", "imagefolder"})
CROP_ONLY = frozenset({"gtsrb"})


def _to_float(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def default_transforms(
    dataset: str, mean: Sequence[float], std: Sequence[float], image_size: int | None
) -> tuple[v2.Compose, v2.Compose]:
    """``(train_transform, eval_transform)`` for a dataset name; ``image_size`` resizes when given.

    Example:
        >>> train, test = default_transforms("cifar10", (0.5,) * 3, (0.25,) * 3, None)
        >>> train(torch.zeros(3, 32, 32, dtype=torch.uint8)).shape
        torch.Size([3, 32, 32])
    """
    resize = [v2.Resize((image_size, image_size), antialias=True)] if image_size else []
    augment: list[v2.Transform] = []
    if dataset in CROP_FLIP | CROP_ONLY:
        side = image_size or 32
        augment.append(v2.RandomCrop(side, padding=side // 8))
        if dataset in CROP_FLIP:
            augment.append(v2.RandomHorizontalFlip())
    train = v2.Compose([*resize, *augment, *_to_float(mean, std)])
    evaluate = v2.Compose([*resize, *_to_float(mean, std)])
    return train, evaluate
