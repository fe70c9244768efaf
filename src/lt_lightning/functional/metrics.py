"""Per-class, balanced and many/medium/few-shot accuracy as pure tensor functions.

Everything derives from two integer vectors over the ``C`` classes of the *test* set:

* ``correct[c]``: test samples of class ``c`` predicted as ``c``;
* ``support[c]``: test samples of class ``c``.

Both are plain sums, so they are exact under DDP when all-reduced (see
:class:`lt_lightning.metrics.PerClassAccuracyMetric`).
A class with no test support has an *undefined* accuracy (NaN), never 0: torchmetrics' ``MulticlassAccuracy`` reports
0 for such a class and its ``"macro"`` average counts a class that was only predicted, so neither is "the mean over the
classes present in the test set" (LIGHTNING_NOTES B.6 / D.7).

Shot groups come from the *training* counts (OLTR / Decoupling / TDE convention): ``many`` (n > 100), ``medium``
(20 <= n <= 100), ``few`` (n < 20).

Example:
    >>> correct, support = per_class_counts(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 2]), num_classes=4)
    >>> correct.tolist(), support.tolist()
    ([1, 1, 1, 0], [2, 1, 1, 0])
    >>> acc = per_class_accuracy(correct, support)
    >>> acc.tolist()[:3], bool(acc[3].isnan())
    ([0.5, 1.0, 1.0], True)
    >>> round(float(balanced_accuracy(acc)), 4), float(overall_accuracy(correct, support))
    (0.8333, 0.75)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

ShotGroup = Literal["many", "medium", "few"]
SHOT_GROUPS: tuple[ShotGroup, ...] = ("many", "medium", "few")

__all__ = [
    "SHOT_GROUPS",
    "ShotGroup",
    "balanced_accuracy",
    "overall_accuracy",
    "per_class_accuracy",
    "per_class_counts",
    "shot_accuracy",
    "shot_groups",
    "worst_class_accuracy",
]


def _is_integer_dtype(t: Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _is_int(value: object) -> bool:
    # bool is an int subclass but never a meaningful count or threshold here.
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, Tensor):
        return value.ndim == 0 and _is_integer_dtype(value)
    # numpy integers implement __index__; floats (python or numpy) do not.
    return hasattr(value, "__index__")


def shot_groups(
    class_counts: Sequence[int] | Tensor, many_threshold: int = 100, few_threshold: int = 20
) -> tuple[ShotGroup, ...]:
    """Assign each class to a shot group from its *training* count.

    ``group(n) = "many" if n > many_threshold, "few" if n < few_threshold, else "medium"`` with strict
    inequalities, as in OLTR / Decoupling (``n > 100`` and ``n < 20``), so a class with exactly 100 or exactly 20
    training images is ``medium``.

    Args:
        class_counts: per-class training counts (non-negative integers), in label order.
        many_threshold: a class with more than this many images is ``many``.
        few_threshold: a class with fewer than this many images is ``few``; must be ``<= many_threshold``.

    Returns:
        One of ``"many"``, ``"medium"``, ``"few"`` per class.

    Raises:
        ValueError: on negative or non-integer counts, or thresholds outside ``0 <= few <= many``.

    Example:
        >>> shot_groups([500, 101, 100, 20, 19, 5])
        ('many', 'many', 'medium', 'medium', 'few', 'few')
    """
    for name, value in (("many_threshold", many_threshold), ("few_threshold", few_threshold)):
        if not _is_int(value) or int(value) < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if few_threshold > many_threshold:
        raise ValueError(
            f"few_threshold must be <= many_threshold, got few_threshold={few_threshold!r} "
            f"and many_threshold={many_threshold!r}"
        )
    counts = class_counts.tolist() if isinstance(class_counts, Tensor) else list(class_counts)
    bad = [c for c in counts if not _is_int(c) or int(c) < 0]
    if bad:
        raise ValueError(f"class_counts must be non-negative integers, got {list(counts)!r} (offending: {bad!r})")
    groups: list[ShotGroup] = []
    for n in counts:
        n = int(n)
        groups.append("many" if n > many_threshold else "few" if n < few_threshold else "medium")
    return tuple(groups)


def _check_counts_pair(correct: Tensor, support: Tensor) -> None:
    for name, t in (("correct", correct), ("support", support)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 1:
            raise ValueError(f"{name} must be a 1-D per-class vector, got shape {tuple(t.shape)}")
    if correct.shape != support.shape:
        raise ValueError(
            f"correct and support must have the same shape, got {tuple(correct.shape)} and {tuple(support.shape)}"
        )
    if bool(((correct < 0) | (correct > support)).any()):
        raise ValueError(
            f"need 0 <= correct <= support for every class, got correct={correct.tolist()} "
            f"and support={support.tolist()}"
        )


def _float_dtype(t: Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.get_default_dtype()


def per_class_accuracy(correct: Tensor, support: Tensor) -> Tensor:
    """Per-class accuracy (recall) ``acc_c = correct_c / support_c``, NaN where ``support_c == 0``.

    Args:
        correct: ``(C,)`` correctly classified test samples per class.
        support: ``(C,)`` test samples per class.

    Returns:
        ``(C,)`` floating tensor (the dtype of ``correct`` if floating, else the default dtype).

    Example:
        >>> per_class_accuracy(torch.tensor([3, 0, 0]), torch.tensor([4, 2, 0]))
        tensor([0.7500, 0.0000,    nan])
    """
    _check_counts_pair(correct, support)
    dtype = _float_dtype(correct)
    # 0 / 0 is NaN in IEEE arithmetic, which is exactly "undefined for a class with no test support".
    return correct.to(dtype) / support.to(dtype)


def per_class_counts(preds_or_logits: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Count ``correct`` and ``support`` per class for one batch.

    ``support_c = #{i : y_i = c}`` and ``correct_c = #{i : y_i = c and yhat_i = c}``, where ``yhat = argmax(logits)``
    for ``(N, C)`` scores or the given labels for ``(N,)`` integer predictions. Vectorised with ``bincount``;
    ``N = 0`` gives zeros.

    Args:
        preds_or_logits: ``(N, C)`` scores (logits or probabilities) or ``(N,)`` integer class predictions.
        target: ``(N,)`` integer labels in ``[0, num_classes)``.
        num_classes: ``C >= 1``.

    Returns:
        ``(correct, support)``, two ``(C,)`` int64 tensors on the device of ``target``.

    Raises:
        TypeError: non-tensor inputs, floating ``(N,)`` predictions or a non-integer target.
        ValueError: mismatched shapes, or labels outside ``[0, num_classes)``.

    Example:
        >>> logits = torch.tensor([[2.0, 0.1, 0.0], [0.0, 3.0, 0.0], [0.0, 1.0, 0.5]])
        >>> correct, support = per_class_counts(logits, torch.tensor([0, 1, 2]), num_classes=3)
        >>> correct.tolist(), support.tolist()
        ([1, 1, 0], [1, 1, 1])
    """
    if not _is_int(num_classes) or int(num_classes) < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    num_classes = int(num_classes)
    if not isinstance(preds_or_logits, Tensor):
        raise TypeError(f"preds_or_logits must be a torch.Tensor, got {type(preds_or_logits).__name__}")
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.ndim != 1:
        raise ValueError(f"target must be 1-D (N,) class labels, got shape {tuple(target.shape)}")
    if not _is_integer_dtype(target):
        raise TypeError(f"target must hold integer class labels, got dtype {target.dtype}")

    if preds_or_logits.ndim == 2:
        if preds_or_logits.shape[1] != num_classes:
            raise ValueError(
                f"logits have {preds_or_logits.shape[1]} columns but num_classes is {num_classes} "
                f"(got shape {tuple(preds_or_logits.shape)})"
            )
        preds = preds_or_logits.argmax(dim=1)
    elif preds_or_logits.ndim == 1:
        if not _is_integer_dtype(preds_or_logits):
            raise TypeError(
                f"1-D predictions must be integer class labels, got dtype {preds_or_logits.dtype}; "
                "pass (N, C) logits to take the argmax"
            )
        preds = preds_or_logits
    else:
        raise ValueError(
            f"preds_or_logits must be (N, C) logits or (N,) integer predictions, got shape "
            f"{tuple(preds_or_logits.shape)}"
        )
    if preds.shape[0] != target.shape[0]:
        raise ValueError(
            f"target has shape {tuple(target.shape)} but predictions have {preds.shape[0]} rows "
            f"(preds_or_logits shape {tuple(preds_or_logits.shape)})"
        )

    target = target.long()
    preds = preds.to(device=target.device, dtype=torch.long)
    if target.numel() > 0:
        for name, labels in (("target labels", target), ("predicted labels", preds)):
            if bool(((labels < 0) | (labels >= num_classes)).any()):
                raise ValueError(
                    f"{name} must lie in [0, {num_classes}), got min {int(labels.min())}, max {int(labels.max())}"
                )

    support = torch.bincount(target, minlength=num_classes)
    correct = torch.bincount(target[preds == target], minlength=num_classes)
    return correct, support


def _check_per_class(per_class: Tensor) -> None:
    if not isinstance(per_class, Tensor):
        raise TypeError(f"per_class must be a torch.Tensor, got {type(per_class).__name__}")
    if per_class.ndim != 1 or not per_class.is_floating_point():
        raise ValueError(
            f"per_class must be a 1-D floating vector of per-class accuracies, got shape {tuple(per_class.shape)} "
            f"and dtype {per_class.dtype}"
        )


def balanced_accuracy(per_class: Tensor) -> Tensor:
    """Balanced accuracy: the mean per-class accuracy over classes with test support.

    ``bacc = (1 / |K|) * sum_{c in K} acc_c`` with ``K = {c : acc_c is not NaN}``; NaN if ``K`` is empty.

    Example:
        >>> balanced_accuracy(torch.tensor([1.0, 0.5, float("nan")]))
        tensor(0.7500)
    """
    _check_per_class(per_class)
    return torch.nanmean(per_class)


def worst_class_accuracy(per_class: Tensor) -> Tensor:
    """Worst-class accuracy ``min_{c in K} acc_c`` over classes with test support; NaN if there are none.

    Example:
        >>> worst_class_accuracy(torch.tensor([1.0, 0.5, float("nan")]))
        tensor(0.5000)
    """
    _check_per_class(per_class)
    nan = torch.full((), math.nan, dtype=per_class.dtype, device=per_class.device)
    if per_class.numel() == 0:
        return nan
    # No torch.nanmin: replace NaN by +inf, so the minimum is +inf only when every class is NaN.
    low = torch.where(per_class.isnan(), torch.full_like(per_class, math.inf), per_class).min()
    return torch.where(low.isinf() & (low > 0), nan, low)


def shot_accuracy(per_class: Tensor, groups: Sequence[str]) -> dict[str, float]:
    """Many / medium / few-shot accuracy: the mean per-class accuracy of each group's classes.

    ``acc_g = (1 / |K_g|) * sum_{c in K_g} acc_c`` with ``K_g = {c in group g : acc_c is not NaN}`` (classes with
    test support). An empty group, or one whose classes all lack test support, gives **NaN**; OLTR-style reference
    code reports 0 there, which is indistinguishable from "every sample wrong".

    Args:
        per_class: ``(C,)`` per-class accuracies, NaN for classes without test support.
        groups: ``C`` group names from :func:`shot_groups`.

    Returns:
        ``{"many": float, "medium": float, "few": float}``.

    Example:
        >>> acc = shot_accuracy(torch.tensor([0.9, 0.7, 0.5, 0.1]), ("many", "medium", "medium", "medium"))
        >>> {k: round(v, 4) for k, v in acc.items()}
        {'many': 0.9, 'medium': 0.4333, 'few': nan}
    """
    _check_per_class(per_class)
    groups = tuple(groups)
    if len(groups) != per_class.shape[0]:
        raise ValueError(f"groups has {len(groups)} entries but per_class has {per_class.shape[0]} classes")
    unknown = sorted({g for g in groups if g not in SHOT_GROUPS})
    if unknown:
        raise ValueError(f"groups must only contain {SHOT_GROUPS}, got {unknown}")
    values = per_class.detach().double().cpu()
    result: dict[str, float] = {}
    for name in SHOT_GROUPS:
        members = values[[i for i, g in enumerate(groups) if g == name]]
        result[name] = float(torch.nanmean(members)) if members.numel() else math.nan
    return result


def overall_accuracy(correct: Tensor, support: Tensor) -> Tensor:
    """Overall (micro) top-1 accuracy ``sum_c correct_c / sum_c support_c``; NaN when there are no samples.

    Example:
        >>> overall_accuracy(torch.tensor([3, 0, 0]), torch.tensor([4, 2, 0]))
        tensor(0.5000)
    """
    _check_counts_pair(correct, support)
    dtype = _float_dtype(correct)
    return correct.sum().to(dtype) / support.sum().to(dtype)
