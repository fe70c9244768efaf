"""Expected KL divergence (eKLD) under a nuisance transform, as pure tensor functions (GIT, METHODS §2).

For a classifier with class posteriors ``p(. | x) = softmax(f(x))`` and a random nuisance transform ``T``:

    eKLD(c) = mean over pairs (i, k) of  KL( p(. | x_i) || p(. | T_k(x_i)) ),   x_i of class c

    KL(p || q) = sum_j p_j (log p_j - log q_j)

i.e. the direction is KL(original || transformed) (``kl_divergence(orig_dist, tfmd_dist)`` in GIT
``core/datasets/kdatasets.py:362-365``) and each pair holds the **same** image on both sides. The released GIT
helper pairs ``x_i`` with a transform of a *different* image of the same class (a random permutation,
``kdatasets.py:333-339``); that is treated as a bug and not reproduced here: callers pass row ``n`` of both logit
tensors from the same image. The companion *consistency* is the fraction of pairs whose argmax agrees.

Per-class aggregation is a plain mean over the pairs of each class; the raw per-class sums and counts are returned
as well, since sums are exact under a DDP all-reduce while means are not.

Example:
    >>> import math
    >>> orig = torch.tensor([[0.0, 0.0, -30.0], [2.0, 0.0, -30.0], [0.0, 1.0, -30.0]])
    >>> tfm = torch.tensor([[math.log(3.0), 0.0, -30.0], [2.0, 0.0, -30.0], [1.0, 0.0, -30.0]])
    >>> out = expected_kl_divergence(orig, tfm, torch.tensor([0, 0, 1]), num_classes=3)
    >>> [round(v, 4) for v in out["ekld"].tolist()[:2]], bool(out["ekld"][2].isnan())
    ([0.0719, 0.4621], True)
    >>> out["consistency"].tolist()[:2], out["count"].tolist()
    ([1.0, 0.0], [2, 1, 0])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lt_lightning.functional.metrics import shot_accuracy, shot_groups

__all__ = [
    "expected_kl_divergence",
    "pairwise_consistency",
    "pairwise_kl",
    "per_class_mean",
    "per_class_selection",
    "per_class_sums",
    "shot_group_means",
]


def _is_integer_dtype(t: Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def _check_num_classes(num_classes: object) -> int:
    # bool is an int subclass but never a meaningful class count.
    if isinstance(num_classes, bool) or not hasattr(num_classes, "__index__") or int(num_classes) < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return int(num_classes)


def _check_logit_pair(logits_original: Tensor, logits_transformed: Tensor) -> None:
    for name, t in (("logits_original", logits_original), ("logits_transformed", logits_transformed)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2 or t.shape[1] < 1:
            raise ValueError(f"{name} must be (N, C) logits with C >= 1, got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor of logits, got dtype {t.dtype}")
    if logits_original.shape != logits_transformed.shape:
        raise ValueError(
            "logits_original and logits_transformed must have the same (N, C) shape (row n of both from the same "
            f"image), got {tuple(logits_original.shape)} and {tuple(logits_transformed.shape)}"
        )


def _check_classes(classes: Tensor, num_pairs: int, num_classes: int) -> Tensor:
    if not isinstance(classes, Tensor):
        raise TypeError(f"classes must be a torch.Tensor, got {type(classes).__name__}")
    if classes.ndim != 1 or not _is_integer_dtype(classes):
        raise ValueError(
            f"classes must be a 1-D integer tensor of labels, got shape {tuple(classes.shape)} and dtype "
            f"{classes.dtype}"
        )
    if classes.shape[0] != num_pairs:
        raise ValueError(f"classes has {classes.shape[0]} entries but there are {num_pairs} values/pairs")
    if classes.numel() and bool(((classes < 0) | (classes >= num_classes)).any()):
        raise ValueError(
            f"classes must lie in [0, {num_classes}), got min {int(classes.min())}, max {int(classes.max())}"
        )
    return classes.long()


def pairwise_kl(logits_original: Tensor, logits_transformed: Tensor) -> Tensor:
    """Per-pair ``KL(p || q)`` with ``p = softmax(logits_original)`` and ``q = softmax(logits_transformed)``.

    ``KL_n = sum_j p_nj (log p_nj - log q_nj)``, computed from ``log_softmax`` so logits of any magnitude stay finite;
    terms with ``p_nj = 0`` contribute 0 (the ``0 log 0 = 0`` convention). Half-precision inputs are computed in
    float32. Note the direction: this is KL(original || transformed), not the reverse.

    Args:
        logits_original: ``(N, C)`` logits of the untransformed images.
        logits_transformed: ``(N, C)`` logits of the transformed images, row ``n`` from the same image as row ``n``
            of ``logits_original``.

    Returns:
        ``(N,)`` non-negative divergences (nats).

    Raises:
        TypeError: non-tensor or non-floating inputs.
        ValueError: inputs that are not 2-D or whose shapes differ.

    Example:
        >>> pairwise_kl(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[1.0986123, 0.0], [5.0, 5.0]]))
        tensor([0.1438, 0.0000])
    """
    _check_logit_pair(logits_original, logits_transformed)
    dtype = torch.promote_types(torch.promote_types(logits_original.dtype, logits_transformed.dtype), torch.float32)
    log_p = F.log_softmax(logits_original.to(dtype), dim=1)
    log_q = F.log_softmax(logits_transformed.to(dtype), dim=1)
    p = log_p.exp()
    # where(), not p * (...): a -inf original logit gives p = 0 and log_p = -inf, and 0 * -inf would be NaN.
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    # KL >= 0 exactly; summation rounding can leave -1e-8-sized negatives that would read as "less than invariant".
    return terms.sum(dim=1).clamp_min(0.0)


def pairwise_consistency(logits_original: Tensor, logits_transformed: Tensor) -> Tensor:
    """Per-pair prediction agreement ``argmax_j p(j | x_n) == argmax_j p(j | T(x_n))``.

    Args:
        logits_original: ``(N, C)`` logits of the untransformed images.
        logits_transformed: ``(N, C)`` logits of the transformed images (same row order).

    Returns:
        ``(N,)`` bool tensor; its mean is the consistency.

    Example:
        >>> pairwise_consistency(torch.tensor([[2.0, 0.0], [2.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        tensor([ True, False])
    """
    _check_logit_pair(logits_original, logits_transformed)
    return logits_original.argmax(dim=1) == logits_transformed.argmax(dim=1)


def per_class_sums(values: Tensor, classes: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class sum and count of per-pair values: ``sums_c = sum_{n : y_n = c} v_n``, ``counts_c = #{n : y_n = c}``.

    Both are plain sums, so they can be all-reduced across DDP ranks before dividing.

    Args:
        values: ``(N,)`` per-pair values (floating, or bool for agreement flags, summed as 0/1).
        classes: ``(N,)`` integer class of each pair, in ``[0, num_classes)``.
        num_classes: ``C >= 1``.

    Returns:
        ``(sums, counts)``: ``(C,)`` floating sums (dtype of ``values``, or the default dtype for bool/int values)
        and ``(C,)`` int64 counts.

    Raises:
        TypeError: non-tensor inputs.
        ValueError: non-1-D inputs, mismatched lengths, or classes outside ``[0, num_classes)``.

    Example:
        >>> sums, counts = per_class_sums(torch.tensor([1.0, 3.0, 2.0]), torch.tensor([0, 0, 2]), num_classes=3)
        >>> sums.tolist(), counts.tolist()
        ([4.0, 0.0, 2.0], [2, 0, 1])
    """
    num_classes = _check_num_classes(num_classes)
    if not isinstance(values, Tensor):
        raise TypeError(f"values must be a torch.Tensor, got {type(values).__name__}")
    if values.ndim != 1:
        raise ValueError(f"values must be a 1-D per-pair vector, got shape {tuple(values.shape)}")
    classes = _check_classes(classes, values.shape[0], num_classes).to(values.device)
    dtype = values.dtype if values.is_floating_point() else torch.get_default_dtype()
    sums = torch.zeros(num_classes, dtype=dtype, device=values.device).index_add_(0, classes, values.to(dtype))
    counts = torch.bincount(classes, minlength=num_classes)
    return sums, counts


def per_class_mean(values: Tensor, classes: Tensor, num_classes: int) -> Tensor:
    """Per-class mean ``sums_c / counts_c`` of per-pair values (see :func:`per_class_sums`); NaN where no pair.

    Example:
        >>> per_class_mean(torch.tensor([1.0, 3.0, 2.0]), torch.tensor([0, 0, 2]), num_classes=3)
        tensor([2., nan, 2.])
    """
    sums, counts = per_class_sums(values, classes, num_classes)
    # 0 / 0 = NaN: a class without pairs has an undefined mean, not 0 (which would read as "perfectly invariant").
    return sums / counts.to(sums.dtype)


def expected_kl_divergence(
    logits_original: Tensor, logits_transformed: Tensor, classes: Tensor, num_classes: int
) -> dict[str, Tensor]:
    """Per-class eKLD and consistency of a batch of (image, transformed image) logit pairs.

    ``eKLD_c = (1 / |P_c|) sum_{n in P_c} KL(p(. | x_n) || p(. | T(x_n)))`` and
    ``consistency_c = (1 / |P_c|) sum_{n in P_c} [argmax p(. | x_n) = argmax p(. | T(x_n))]``, where ``P_c`` is the
    set of pairs whose image belongs to class ``c`` (GIT draws 40 images x 100 transforms per class). Both are NaN
    for a class without pairs.

    Args:
        logits_original: ``(N, C)`` logits of the untransformed images.
        logits_transformed: ``(N, C)`` logits of their transforms (row ``n`` from the same image).
        classes: ``(N,)`` integer **true** class of each image (not the prediction), in ``[0, num_classes)``.
        num_classes: ``C``; must equal the number of logit columns.

    Returns:
        ``{"ekld": (C,), "consistency": (C,), "kl_sum": (C,), "consistent": (C,) int64, "count": (C,) int64}``;
        ``kl_sum``, ``consistent`` (agreeing pairs) and ``count`` are the DDP-summable states, and
        ``ekld = kl_sum / count``, ``consistency = consistent / count``.

    Raises:
        TypeError: non-tensor or wrongly typed inputs.
        ValueError: mismatched shapes, ``num_classes`` not matching the logits, or classes out of range.

    Example:
        >>> same = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
        >>> out = expected_kl_divergence(same, same.clone(), torch.tensor([1, 0]), num_classes=2)
        >>> out["ekld"].tolist(), out["consistency"].tolist()
        ([0.0, 0.0], [1.0, 1.0])
    """
    num_classes = _check_num_classes(num_classes)
    _check_logit_pair(logits_original, logits_transformed)
    if logits_original.shape[1] != num_classes:
        raise ValueError(
            f"logits have {logits_original.shape[1]} columns but num_classes is {num_classes} "
            f"(got shape {tuple(logits_original.shape)})"
        )
    kl = pairwise_kl(logits_original, logits_transformed)
    agree = pairwise_consistency(logits_original, logits_transformed)
    kl_sum, count = per_class_sums(kl, classes, num_classes)
    classes = classes.to(agree.device).long()
    consistent = torch.bincount(classes[agree], minlength=num_classes)
    denom = count.to(kl_sum.dtype)
    return {
        "ekld": kl_sum / denom,
        "consistency": consistent.to(kl_sum.dtype) / denom,
        "kl_sum": kl_sum,
        "consistent": consistent,
        "count": count,
    }


def shot_group_means(
    per_class: Tensor, class_counts: Sequence[int] | Tensor, many: int = 100, few: int = 20
) -> dict[str, float]:
    """Many / medium / few-shot means of a per-class quantity (e.g. eKLD), skipping NaN classes.

    Groups come from the *training* counts via :func:`lt_lightning.functional.metrics.shot_groups` (``many``:
    ``n > many``, ``few``: ``n < few``, else ``medium``); each group's value is the mean over its classes whose
    value is not NaN, and NaN when there is none.

    Args:
        per_class: ``(C,)`` floating per-class values, NaN where undefined.
        class_counts: ``C`` training counts per class.
        many: a class with more than this many training images is ``many``-shot.
        few: a class with fewer than this many training images is ``few``-shot.

    Returns:
        ``{"many": float, "medium": float, "few": float}``.

    Raises:
        ValueError: ``per_class`` not a 1-D floating vector, length mismatch, or bad counts/thresholds.

    Example:
        >>> means = shot_group_means(torch.tensor([0.1, 0.3, float("nan"), 0.9]), [500, 50, 30, 5])
        >>> {k: round(v, 4) for k, v in means.items()}
        {'many': 0.1, 'medium': 0.3, 'few': 0.9}
    """
    if not isinstance(per_class, Tensor):
        raise TypeError(f"per_class must be a torch.Tensor, got {type(per_class).__name__}")
    if per_class.ndim != 1 or not per_class.is_floating_point():
        raise ValueError(
            f"per_class must be a 1-D floating per-class vector, got shape {tuple(per_class.shape)} and dtype "
            f"{per_class.dtype}"
        )
    groups = shot_groups(class_counts, many_threshold=many, few_threshold=few)
    if len(groups) != per_class.shape[0]:
        raise ValueError(f"class_counts has {len(groups)} entries but per_class has {per_class.shape[0]} classes")
    return shot_accuracy(per_class, groups)


def per_class_selection(
    targets: Tensor, num_classes: int, images_per_class: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Which held-out images the eKLD uses: ``images_per_class`` per class, cycling through short classes.

    For class ``c`` with images ``I_c`` (in a seeded random order), slot ``i = 0 .. k-1`` takes ``I_c[i mod |I_c|]``,
    as the reference's ``i % n_ex`` (GIT ``kdatasets.py:330-339``): a class with fewer than ``k`` images repeats
    them, and every slot later gets its own transform draws. A class with no image gets no slot.

    Args:
        targets: ``(N,)`` integer labels of the held-out images, in ``[0, num_classes)``.
        num_classes: ``C >= 1``.
        images_per_class: ``k >= 1`` slots per class.
        generator: seeds the order within each class (CPU); None uses the global RNG.

    Returns:
        ``(indices, classes)``: int64 ``(S,)`` dataset indices of the slots, class by class, and their classes.

    Example:
        >>> idx, cls = per_class_selection(torch.tensor([1, 0, 1, 1]), 3, 2, torch.Generator().manual_seed(0))
        >>> cls.tolist(), idx[:2].tolist()  # class 0 has one image: it fills both slots; class 2 has none
        ([0, 0, 1, 1], [1, 1])
    """
    num_classes = _check_num_classes(num_classes)
    if isinstance(images_per_class, bool) or not isinstance(images_per_class, int) or images_per_class < 1:
        raise ValueError(f"images_per_class must be an integer >= 1, got {images_per_class!r}")
    targets = _check_classes(torch.as_tensor(targets), len(targets), num_classes).cpu()
    order = torch.randperm(len(targets), generator=generator)
    # Stable sort by class keeps the seeded order inside each class.
    by_class = order[torch.sort(targets[order], stable=True).indices]
    available = torch.bincount(targets, minlength=num_classes)
    starts = torch.cumsum(available, 0) - available
    present = torch.nonzero(available).squeeze(1)
    slot = torch.arange(images_per_class)
    positions = starts[present, None] + slot[None, :] % available[present, None]
    classes = present.repeat_interleave(images_per_class)
    return by_class[positions.reshape(-1)], classes
