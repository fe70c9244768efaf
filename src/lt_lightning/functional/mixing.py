"""Batch mixing maths: the CutMix box of CMO and the two-target loss every mixing method trains with.

CMO (Park et al., CVPR 2022; naver-ai/cmo ``cifar_train.py:279-311``, ``rand_bbox`` at ``:351-367``): with
λ ~ Beta(1, 1), a box of side ratio sqrt(1 - λ) around a uniform centre, clipped to the image, is cut from the
foreground images and pasted into the background ones (one box for the whole batch); λ is then re-computed from the
clipped box, ``λ = 1 - area / (H W)``, and the loss is ``λ L(z, y_bg) + (1 - λ) L(z, y_fg)``.

Example:
    >>> import torch
    >>> box = cutmix_box(8, 8, lam=0.75, centre=(4, 4))
    >>> box, box_lambda(box, 8, 8)
    ((2, 6, 2, 6), 0.75)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Box = tuple[int, int, int, int]  # (row start, row end, column start, column end), ends exclusive


@dataclass(frozen=True)
class BatchMix:
    """How the current training batch was mixed: its inputs now carry ``lam`` of their own targets and ``1 - lam``
    of ``second_target``'s (set on the module by a batch-mixing callback such as CMO for one step)."""

    second_target: Tensor
    lam: float


def cutmix_box(height: int, width: int, lam: float, centre: tuple[int, int]) -> Box:
    """The reference's ``rand_bbox`` for a given centre: cut ``int(H sqrt(1 - λ))`` x ``int(W sqrt(1 - λ))``
    around ``centre`` (half-sides by floor division), clipped to the image.

    Example:
        >>> cutmix_box(8, 8, lam=0.0, centre=(0, 7))   # a full-size box at the corner, clipped to a quarter
        (0, 4, 3, 8)
    """
    ratio = (1.0 - lam) ** 0.5
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = centre
    top, bottom = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
    left, right = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
    return top, bottom, left, right


def random_cutmix_box(height: int, width: int, generator: torch.Generator) -> tuple[Box, float]:
    """λ ~ Beta(1, 1) (= uniform), a uniform centre, the box, and λ re-computed from the clipped box.

    Example:
        >>> import torch
        >>> box, lam = random_cutmix_box(32, 32, torch.Generator().manual_seed(0))
        >>> lam == box_lambda(box, 32, 32)
        True
    """
    lam = float(torch.rand((), generator=generator, dtype=torch.float64))
    cy = int(torch.randint(height, (), generator=generator))
    cx = int(torch.randint(width, (), generator=generator))
    box = cutmix_box(height, width, lam, (cy, cx))
    return box, box_lambda(box, height, width)


def box_lambda(box: Box, height: int, width: int) -> float:
    """``1 - box area / (H W)``: the weight of the background target."""
    top, bottom, left, right = box
    return 1.0 - (bottom - top) * (right - left) / (height * width)


def paste_box(background: Tensor, foreground: Tensor, box: Box) -> None:
    """``background[..., box] = foreground[..., box]`` in place, on (B, C, H, W) batches.

    Example:
        >>> import torch
        >>> bg = torch.zeros(1, 1, 4, 4)
        >>> paste_box(bg, torch.ones(1, 1, 4, 4), (1, 3, 0, 2))
        >>> int(bg.sum())
        4
    """
    top, bottom, left, right = box
    background[:, :, top:bottom, left:right] = foreground[:, :, top:bottom, left:right]


def mixed_target_loss(
    criterion: Callable[[Tensor, Tensor], Tensor], logits: Tensor, first: Tensor, second: Tensor, lam: float
) -> Tensor:
    """``λ L(z, y1) + (1 - λ) L(z, y2)``; per sample when the criterion does not reduce (ABSGD).

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> z, a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([0]), torch.tensor([1])
        >>> bool(mixed_target_loss(F.cross_entropy, z, a, b, 1.0) == F.cross_entropy(z, a))
        True
    """
    return lam * criterion(logits, first) + (1.0 - lam) * criterion(logits, second)
