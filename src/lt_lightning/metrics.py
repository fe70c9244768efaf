"""torchmetrics Metrics for long-tailed evaluation, exact under DDP.

:class:`PerClassAccuracyMetric` keeps two summed per-class counters (``correct``, ``support``) and derives every
number from them in ``compute()`` with :mod:`lt_lightning.functional.metrics`, so the DDP all-reduce of sums is
exact. Optional de-duplication by sample index removes the padded duplicates that ``DistributedSampler`` adds to
evaluation sets whose size does not divide by the world size (LIGHTNING_NOTES D.4).

:class:`ExpectedKLDivergenceMetric` keeps per-class sums of KL divergences, agreeing pairs and pair counts, so the
per-class eKLD and consistency are exact under DDP in the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lt_lightning.functional.ekld import expected_kl_divergence, shot_group_means
from lt_lightning.functional.metrics import (
    balanced_accuracy,
    overall_accuracy,
    per_class_accuracy,
    per_class_counts,
    shot_accuracy,
    shot_groups,
    worst_class_accuracy,
)

__all__ = ["ExpectedKLDivergenceMetric", "PerClassAccuracyMetric"]


class _ShotGroupedMetric(Metric):
    """Shared set-up of the per-class metrics: ``num_classes``, optional training ``class_counts`` and the
    many / few thresholds, validated once; the checked counts are in ``self._train_counts`` (list or None)."""

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor | None = None,
        many_threshold: int = 100,
        few_threshold: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        counts = None
        if class_counts is not None:
            counts = class_counts.tolist() if isinstance(class_counts, Tensor) else [int(c) for c in class_counts]
            if len(counts) != num_classes:
                raise ValueError(
                    f"class_counts must have num_classes={num_classes} entries, got {len(counts)}: {counts!r}"
                )
            shot_groups(counts, many_threshold=many_threshold, few_threshold=few_threshold)  # validates them
        self.num_classes = num_classes
        self.many_threshold = many_threshold
        self.few_threshold = few_threshold
        self._train_counts: list[int] | None = counts


class PerClassAccuracyMetric(_ShotGroupedMetric):
    """Overall, per-class, balanced, worst-class and many/medium/few accuracy from summed per-class counts.

    States (synced by sum): ``correct[c]`` and ``support[c]``, int64 of shape ``(C,)``. ``compute()`` returns:

    * ``"acc"``: ``sum(correct) / sum(support)`` (overall top-1);
    * ``"per_class"``: ``correct / support``, NaN where a class has no test support;
    * ``"balanced_acc"``: NaN-skipping mean of ``per_class``; ``"worst_class_acc"``: NaN-skipping minimum;
    * ``"support"``: the ``(C,)`` support vector (for CSV tables);
    * with ``class_counts``: ``"many_acc"``, ``"medium_acc"``, ``"few_acc"``, the mean per-class accuracy of each
      shot group's supported classes (groups from *training* counts, ``many > 100``, ``few < 20``); NaN for an empty
      group, where OLTR-style code reports 0.

    De-duplication: pass ``indices`` (the dataset index of each sample) to every ``update`` call, and each index is
    counted once over the whole epoch and across ranks (the first record in rank order wins). The metric then keeps
    ``(index, correct, target)`` rows in a ``"cat"`` list state instead of the sums. Pass ``indices`` to all updates
    or to none: mixing both raises in ``compute()``.

    Every rank must call ``compute()`` (it all-gathers); calling it only on rank 0 deadlocks.

    Args:
        num_classes: number of classes ``C``.
        class_counts: optional per-class *training* counts (length ``C``), used only for the shot groups; stored as
            a non-persistent buffer, not a state, so it is never summed across ranks.
        many_threshold: a class with more than this many training images is ``many``.
        few_threshold: a class with fewer than this many training images is ``few``.
        **kwargs: passed to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``, ``process_group``).

    Example:
        >>> metric = PerClassAccuracyMetric(num_classes=3, class_counts=(500, 50, 5))
        >>> metric.update(torch.tensor([0, 0, 1, 2]), torch.tensor([0, 0, 1, 1]))
        >>> out = metric.compute()
        >>> float(out["acc"]), out["per_class"].tolist()[:2], out["per_class"][2].isnan().item()
        (0.75, [1.0, 0.5], True)
        >>> float(out["balanced_acc"]), float(out["many_acc"]), out["few_acc"].isnan().item()
        (0.75, 1.0, True)
    """

    full_state_update: bool = False
    higher_is_better: bool = True
    is_differentiable: bool = False
    plot_lower_bound: float = 0.0
    plot_upper_bound: float = 1.0

    correct: Tensor
    support: Tensor
    records: list[Tensor] | Tensor
    class_counts: Tensor | None

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor | None = None,
        many_threshold: int = 100,
        few_threshold: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, class_counts, many_threshold, few_threshold, **kwargs)
        counts = self._train_counts
        self.groups: tuple[str, ...] | None = None
        if counts is not None:
            self.groups = shot_groups(counts, many_threshold=many_threshold, few_threshold=few_threshold)
            # A buffer, not a state: it follows .to(device) but is never reset or summed across ranks. Not
            # persistent, so checkpoints of models with and without class_counts load into each other.
            self.register_buffer("class_counts", torch.tensor(counts, dtype=torch.long), persistent=False)
        else:
            self.register_buffer("class_counts", None, persistent=False)

        self.add_state("correct", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("support", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        # Rows (index, correct 0/1, target), only filled when update() receives indices.
        self.add_state("records", default=[], dist_reduce_fx="cat")

    def update(self, preds_or_logits: Tensor, target: Tensor, indices: Tensor | None = None) -> None:
        """Accumulate one batch.

        Args:
            preds_or_logits: ``(N, C)`` scores (argmax is taken) or ``(N,)`` integer predictions.
            target: ``(N,)`` integer labels in ``[0, C)``.
            indices: optional ``(N,)`` integer dataset indices; when given, each index is counted once per epoch.
        """
        correct, support = per_class_counts(preds_or_logits, target, self.num_classes)
        if indices is None:
            if isinstance(self.records, list) and any(r.numel() for r in self.records):
                raise ValueError(
                    "indices=None but earlier update() calls passed indices; pass indices to every update() "
                    "of an epoch or to none"
                )
            self.correct += correct.to(self.correct.device)
            self.support += support.to(self.support.device)
            return
        if not isinstance(indices, Tensor):
            indices = torch.as_tensor(indices)
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TypeError(f"indices must hold integer dataset indices, got dtype {indices.dtype}")
        if indices.shape != target.shape:
            raise ValueError(
                f"indices has shape {tuple(indices.shape)} but target has shape {tuple(target.shape)}; "
                "pass one dataset index per sample"
            )
        # per_class_counts already validated shapes and labels, so recomputing the predictions is safe here.
        preds = preds_or_logits.argmax(dim=1) if preds_or_logits.ndim == 2 else preds_or_logits
        target = target.long()
        hit = (preds.to(target.device).long() == target).long()
        rows = torch.stack([indices.to(target.device).long(), hit, target], dim=1)
        self.records.append(rows.to(self.correct.device))

    def sync(
        self,
        dist_sync_fn: Callable | None = None,
        process_group: Any | None = None,
        should_sync: bool = True,
        distributed_available: Callable | None = None,
    ) -> None:
        """Sync states across ranks (see :meth:`torchmetrics.Metric.sync`).

        A rank whose ``records`` list is empty would otherwise send torchmetrics' 1-D float placeholder while another
        rank sends ``(k, 3)`` int64 rows, and the all-gather of mismatched shapes and dtypes fails; an empty
        ``(0, 3)`` int64 block keeps every rank consistent.
        """
        if isinstance(self.records, list) and len(self.records) == 0:
            self.records.append(torch.zeros((0, 3), dtype=torch.long, device=self.correct.device))
        super().sync(
            dist_sync_fn=dist_sync_fn,
            process_group=process_group,
            should_sync=should_sync,
            distributed_available=distributed_available,
        )

    def _deduplicated_counts(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        # Stable sort keeps the gathered (rank, update) order within one index, so "first" is the same on all ranks.
        order = torch.sort(rows[:, 0], stable=True).indices
        rows = rows[order]
        same_as_prev = rows[1:, 0] == rows[:-1, 0]
        if bool((same_as_prev & (rows[1:, 2] != rows[:-1, 2])).any()):
            raise ValueError(
                "indices must identify samples: the same index was given with different targets "
                f"(indices {rows[1:, 0][same_as_prev & (rows[1:, 2] != rows[:-1, 2])].unique().tolist()})"
            )
        keep = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
        keep[1:] = ~same_as_prev
        rows = rows[keep]
        support = torch.bincount(rows[:, 2], minlength=self.num_classes)
        correct = torch.bincount(rows[:, 2][rows[:, 1] == 1], minlength=self.num_classes)
        return correct, support

    def compute(self) -> dict[str, Tensor]:
        """Return overall, per-class, balanced, worst-class and (with ``class_counts``) shot-group accuracies."""
        correct, support = self.correct, self.support
        records = self.records
        if isinstance(records, list):
            records = dim_zero_cat(records) if len(records) > 0 else None
        if records is not None and records.numel() > 0:
            if bool(support.sum() > 0):
                raise ValueError(
                    "some update() calls passed indices and others did not (on this or another rank); pass indices "
                    "to every update() of an epoch or to none"
                )
            correct, support = self._deduplicated_counts(records.reshape(-1, 3).long())

        per_class = per_class_accuracy(correct, support)
        out: dict[str, Tensor] = {
            "acc": overall_accuracy(correct, support),
            "balanced_acc": balanced_accuracy(per_class),
            "worst_class_acc": worst_class_accuracy(per_class),
            "per_class": per_class,
            "support": support,
        }
        if self.groups is not None:
            for name, value in shot_accuracy(per_class, self.groups).items():
                out[f"{name}_acc"] = torch.tensor(value, dtype=per_class.dtype, device=per_class.device)
        return out


class ExpectedKLDivergenceMetric(_ShotGroupedMetric):
    """Per-class expected KL divergence under a nuisance transform, and prediction consistency (GIT eKLD).

    ``update(logits_original, logits_transformed, classes)`` takes pairs whose row ``n`` comes from the same image
    (original and transformed) and accumulates, per true class ``c``:

    * ``kl_sum[c] = sum_n KL(p(. | x_n) || p(. | T(x_n)))`` (float64),
    * ``consistent[c] = #{n : argmax p(. | x_n) = argmax p(. | T(x_n))}``, ``count[c] = #pairs``.

    All three are summed across ranks, so ``compute()`` gives the single-process answer whichever rank saw which
    pair. ``compute()`` returns ``ekld = kl_sum / count`` and ``consistency = consistent / count`` (NaN for a class
    without pairs), ``mean_ekld`` / ``mean_consistency`` (NaN-skipping means over classes), the raw states, and with
    ``class_counts`` the many / medium / few means of the per-class eKLD (``ekld_many`` etc.).

    Args:
        num_classes: number of classes ``C``.
        class_counts: optional per-class *training* counts, for the shot-group means.
        many_threshold: a class with more than this many training images is ``many``.
        few_threshold: a class with fewer than this many training images is ``few``.
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = ExpectedKLDivergenceMetric(num_classes=2)
        >>> same = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
        >>> metric.update(same, same.clone(), torch.tensor([0, 0]))
        >>> metric.update(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0986123, 0.0]]), torch.tensor([1]))
        >>> out = metric.compute()
        >>> [round(v, 4) for v in out["ekld"].tolist()], out["consistency"].tolist()
        ([0.0, 0.1438], [1.0, 1.0])
    """

    full_state_update: bool = False
    higher_is_better: bool = False
    is_differentiable: bool = False
    plot_lower_bound: float = 0.0

    kl_sum: Tensor
    consistent: Tensor
    count: Tensor

    def __init__(
        self,
        num_classes: int,
        class_counts: Sequence[int] | Tensor | None = None,
        many_threshold: int = 100,
        few_threshold: int = 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, class_counts, many_threshold, few_threshold, **kwargs)
        self.class_counts: tuple[int, ...] | None = None if self._train_counts is None else tuple(self._train_counts)
        # float64 sums: 4,000 pairs x 49 classes of small KL values, summed in any order across ranks, stay exact to
        # well below what is reported.
        self.add_state("kl_sum", default=torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("consistent", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits_original: Tensor, logits_transformed: Tensor, classes: Tensor) -> None:
        """Accumulate pairs: ``(N, C)`` logits of the images and of their transforms, ``(N,)`` true classes."""
        out = expected_kl_divergence(logits_original, logits_transformed, classes, self.num_classes)
        self.kl_sum += out["kl_sum"].to(self.kl_sum)
        self.consistent += out["consistent"].to(self.consistent)
        self.count += out["count"].to(self.count)

    def compute(self) -> dict[str, Tensor]:
        """Per-class eKLD / consistency (NaN where no pair), their means, states and shot-group means."""
        denom = self.count.to(torch.float64)
        ekld = self.kl_sum / denom
        consistency = self.consistent.to(torch.float64) / denom
        out: dict[str, Tensor] = {
            "ekld": ekld,
            "consistency": consistency,
            "mean_ekld": ekld.nanmean(),
            "mean_consistency": consistency.nanmean(),
            "kl_sum": self.kl_sum,
            "consistent": self.consistent,
            "count": self.count,
        }
        if self.class_counts is not None:
            groups = shot_group_means(ekld, self.class_counts, many=self.many_threshold, few=self.few_threshold)
            for name, value in groups.items():
                out[f"ekld_{name}"] = torch.tensor(value, dtype=torch.float64, device=ekld.device)
        return out
