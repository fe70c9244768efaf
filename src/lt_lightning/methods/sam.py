"""SAM for long-tailed data (Rangwani et al., NeurIPS 2022): any loss / re-weighting, with sharpness-aware steps.

Each training step runs two forward / backward passes on the same batch (at ``w`` and at ``w + e``, see
:class:`~lt_lightning.optim.SAM`) under Lightning's manual optimisation, so metrics and logs are updated ONCE per
step, from the first pass (the loss at ``w``). BatchNorm running statistics are updated by both passes, as in the
reference code (no BN freezing in the second pass). Under DDP each backward all-reduces, so the ascent direction
uses the global gradient.

``rho`` is one scalar for every parameter and class (the class dependence comes from the loss: DRW weights, LDAM
margins, VS scaling). It is constant (CIFAR recipe: 0.1 / 0.5 / 0.8, METHODS.md §5) or a step schedule
``[(epoch, rho), ...]`` that jumps when re-weighting starts (ImageNet-LT / iNaturalist recipe); either way a pure
function of the epoch, so resuming continues the same schedule.

Refused at fit start, with a message: gradient accumulation (SAM would see accumulated gradients; Lightning's
manual optimisation also refuses it) and 16-bit mixed precision with a gradient scaler (the scaler steps the
optimizer without SAM's second pass). ``32-true`` and ``bf16-mixed`` work.

Example:
    >>> model = SAMClassifier(class_counts=(50, 20, 5), backbone="small_cnn", in_chans=1, rho=0.5)
    >>> model.rho_at(0), model.automatic_optimization
    (0.5, False)
    >>> SAMClassifier((50, 20, 5), in_chans=1, rho_schedule=[(0, 0.05), (5, 0.1), (60, 0.5)]).rho_at(7)
    0.1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from lt_lightning.methods.base import LongTailClassifier
from lt_lightning.optim.sam import SAM, check_rho


def check_rho_schedule(schedule: Sequence[tuple[int, float]]) -> tuple[tuple[int, float], ...]:
    """``[(start_epoch, rho), ...]`` with strictly increasing 0-indexed epochs (the first at 0) and rho > 0."""
    checked: list[tuple[int, float]] = []
    for item in schedule:
        try:
            epoch, rho = item
        except (TypeError, ValueError):
            raise ValueError(f"rho_schedule must hold (epoch, rho) pairs, got {item!r}") from None
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"rho_schedule epochs must be integers >= 0 (0-indexed), got {epoch!r}")
        if checked and epoch <= checked[-1][0]:
            raise ValueError(f"rho_schedule epochs must increase strictly, got {[e for e, _ in schedule]}")
        checked.append((int(epoch), check_rho(rho)))
    if not checked or checked[0][0] != 0:
        raise ValueError(f"rho_schedule must start at epoch 0, got {list(schedule)!r}")
    return tuple(checked)


class SAMClassifier(LongTailClassifier):
    """``LongTailClassifier`` trained with SAM around its (configurable) base optimizer.

    Args:
        class_counts: training images per class (linked from the datamodule by the CLI).
        rho: constant ascent radius (> 0); ignored when ``rho_schedule`` is given.
        rho_schedule: ``[(epoch, rho), ...]``: rho of the last stage started (0-indexed epochs, first at 0). The
            ImageNet-LT recipe with DRW at 60 of 90 is ``[(0, 0.05), (5, 0.1), (60, 0.5), (75, 0.5)]``.
        adaptive: ASAM (element-wise ascent scaled by ``|w|``).
        **kwargs: any other ``LongTailClassifier`` argument; ``optimizer`` is the BASE optimizer that SAM wraps.
    """

    def __init__(
        self,
        class_counts: Sequence[int],
        rho: float = 0.05,
        rho_schedule: Sequence[tuple[int, float]] | None = None,
        adaptive: bool = False,
        **kwargs: Any,
    ) -> None:
        check_rho(rho)
        schedule = check_rho_schedule(rho_schedule) if rho_schedule is not None else None
        super().__init__(class_counts, **kwargs)
        self.rho_stages = schedule or ((0, float(rho)),)
        self.automatic_optimization = False

    def rho_at(self, epoch: int) -> float:
        """rho in force at a 0-indexed epoch."""
        value = self.rho_stages[0][1]
        for start, rho in self.rho_stages:
            if epoch >= start:
                value = rho
        return value

    def build_optimizer(self) -> SAM:
        return SAM(super().build_optimizer(), rho=self.rho_at(0), adaptive=self.hparams.adaptive)

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        if self.trainer.accumulate_grad_batches != 1:
            raise ValueError(
                f"SAM cannot accumulate gradients (accumulate_grad_batches={self.trainer.accumulate_grad_batches}): "
                "its ascent step would use the accumulated gradient. Use accumulate_grad_batches=1"
            )
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            raise ValueError(
                f"SAM does not support precision={self.trainer.precision!r} with a gradient scaler: the scaler "
                "steps the optimizer without SAM's second pass. Use precision='bf16-mixed' or '32-true'"
            )

    def sam_optimizer(self) -> SAM:
        optimizer = self.optimizers()
        return optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer

    def on_train_epoch_start(self) -> None:
        rho = self.rho_at(self.current_epoch)
        self.sam_optimizer().rho = rho
        self.log("sam/rho", rho, on_epoch=True, on_step=False)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        optimizer = self.optimizers()
        first: list[tuple[Tensor, Tensor, Tensor]] = []

        def closure() -> Tensor:
            # Called twice by SAM.step: at w (recorded for metrics and logs) and at w + e.
            optimizer.zero_grad()
            loss, logits, target = self.training_loss(batch)
            self.check_finite(loss, batch_idx, f" (SAM pass {len(first) + 1})")
            self.manual_backward(loss)
            if not first:
                first.append((loss.detach(), logits.detach(), target))
            return loss

        # Through LightningOptimizer.step: precision plugins, hooks and global_step stay Lightning's.
        optimizer.step(closure=closure)
        loss, logits, target = first[0]
        self.log_training(loss, logits, target)
        return loss

    def on_train_epoch_end(self) -> None:
        # Manual optimisation: the per-epoch LR schedule is stepped here.
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
