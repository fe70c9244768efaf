"""ABSGD (Qi et al.): attentional-biased SGD, a per-sample re-weighting of the loss by its own value.

Two stages, a pure function of the epoch (``train.py:246-249``, METHODS.md §6): plain SGD (``lambda = init_lam``,
200 = above the plain-averaging threshold) until ``switch_epoch`` (default 80 % of ``max_epochs``), then
:class:`~lt_lightning.reductions.AttentionalReduction` with ``lam``. One forward and one backward pass per step;
the optimizer is ordinary SGD with momentum. Composes with CE, focal and LDAM (+ ``DeferredReweighting`` for the
class weights, which then also enter the exponent, as in the reference). The moving average ``u`` is a buffer, so
it is checkpointed, and under DDP its batch statistic is all-gathered so every rank keeps the same ``u``.

Logged per epoch: ``absgd/lambda``, ``absgd/weight_max_over_mean`` (1 for uniform weights), ``absgd/ess_fraction``
(effective sample size / batch size) and ``absgd/weight_sum`` (about 1 / alpha; the reference's LR rescaling).

Example:
    >>> model = ABSGD(class_counts=(50, 20, 5), backbone="small_cnn", in_chans=1, lam=5.0, switch_epoch=160)
    >>> model.lam_at(159), model.lam_at(160), model.criterion.reduction
    (200.0, 5.0, 'none')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from lt_lightning.functional.attention import check_attention_args, effective_sample_size
from lt_lightning.methods.base import LongTailClassifier
from lt_lightning.reductions import AttentionalReduction
from lt_lightning.schedules import default_switch_epoch, training_horizon


class ABSGD(LongTailClassifier):
    """``LongTailClassifier`` whose batch loss is ABSGD's attentional reduction of per-sample losses.

    Args:
        class_counts: training images per class (linked from the datamodule by the CLI).
        lam: lambda of the second stage (5 for the CIFAR-10-LT recipe, 3 for CIFAR-100-LT; < 0 for noisy labels).
        init_lam: lambda of the first stage (200: plain averaging).
        switch_epoch: 0-indexed epoch where ``lam`` takes over; None = ``round(0.8 * max_epochs)``.
        gamma: moving-average rate of ``u`` in (0, 1] (``drogamma``).
        alpha: scale inside ``u`` (``abAlpha``).
        plain_threshold: lambda at or above which the reduction is a plain mean.
        **kwargs: any other ``LongTailClassifier`` argument (``loss``: ce / focal / ldam / ..., optimizer, ...).
    """

    def __init__(
        self,
        class_counts: Sequence[int],
        lam: float = 5.0,
        init_lam: float = 200.0,
        switch_epoch: int | None = None,
        gamma: float = 0.1,
        alpha: float = 0.5,
        plain_threshold: float = 200.0,
        **kwargs: Any,
    ) -> None:
        check_attention_args(lam, gamma, alpha)
        check_attention_args(init_lam, gamma, alpha)
        if switch_epoch is not None and (
            isinstance(switch_epoch, bool) or not isinstance(switch_epoch, int) or switch_epoch < 0
        ):
            raise ValueError(f"switch_epoch must be an integer >= 0 (0-indexed) or None, got {switch_epoch!r}")
        super().__init__(class_counts, **kwargs)
        if not hasattr(self.criterion, "reduction"):
            raise TypeError(
                f"ABSGD needs per-sample losses: the loss {type(self.criterion).__name__} has no `reduction` "
                "attribute to set to 'none' (every lt_lightning.losses loss has one)"
            )
        self.criterion.reduction = "none"
        self.attention = AttentionalReduction(init_lam, gamma, alpha, plain_threshold)

    def resolved_switch_epoch(self) -> int:
        if self.hparams.switch_epoch is not None:
            return self.hparams.switch_epoch
        return default_switch_epoch(training_horizon(self.trainer))  # a resume keeps its checkpoint's horizon

    def lam_at(self, epoch: int) -> float:
        """lambda in force at a 0-indexed epoch."""
        return float(self.hparams.lam if epoch >= self.resolved_switch_epoch() else self.hparams.init_lam)

    def on_train_epoch_start(self) -> None:
        self.attention.lam = self.lam_at(self.current_epoch)
        self.log("absgd/lambda", self.attention.lam, on_epoch=True, on_step=False)

    def training_loss(self, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        x, y = batch[0], batch[1]
        logits = self(x)
        per_sample = self.criterion_on(logits, y)  # the two-target loss per sample when CMO mixed the batch
        loss = self.attention(per_sample)
        weights = self.attention.last_weights
        stats = {
            "absgd/weight_max_over_mean": weights.max() / weights.mean(),
            "absgd/ess_fraction": effective_sample_size(weights) / weights.numel(),
            "absgd/weight_sum": weights.sum(),
        }
        self.log_dict({k: v.float() for k, v in stats.items()}, on_step=False, on_epoch=True, batch_size=len(y))
        return loss, logits, y
