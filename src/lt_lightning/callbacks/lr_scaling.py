"""Scale the configured learning rates with the global batch size (Goyal et al. 2017 linear rule, or square root).

A preset's learning rates are meant for one global batch (the paper's, e.g. 128 on CIFAR-LT, 512 on ImageNet-LT).
Under DDP the global batch is ``batch_size x world_size x accumulate_grad_batches``, where ``batch_size`` is the
per-device batch of the DataLoader. :class:`ScaleLearningRate` multiplies every learning rate by::

    factor = (global_batch / reference_batch_size)            rule="linear"
    factor = (global_batch / reference_batch_size) ** 0.5     rule="sqrt"

It scales each param group's ``lr`` and ``initial_lr`` (and ``max_lr`` / ``min_lr`` where a cyclic schedule keeps
them) and every LR scheduler's ``base_lrs`` (looking into ``SequentialLR`` / ``ChainedScheduler``), so warm-up,
cosine and multi-step schedules follow: the lr of every epoch is ``factor`` times the unscaled one. A schedule's
absolute floor (``CosineAnnealingLR(eta_min=...)``) is not an lr of the optimizer and is left as configured.

When: ``on_train_start``, after Lightning built the optimizers and, on resume, restored their states from the
checkpoint. The factor in force is saved in the callback's state, so a resumed run does not scale twice: the restored
optimizer and scheduler are already scaled, and only the ratio ``new / saved`` is applied (1 unless the global batch
changed, e.g. a resume on another number of GPUs).

Example:
    >>> ScaleLearningRate(256).factor_for(128)
    0.5
    >>> round(ScaleLearningRate(256, rule="sqrt").factor_for(128), 6)
    0.707107
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

RULES = ("linear", "sqrt")
_GROUP_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")


def per_device_batch_size(trainer: L.Trainer) -> int:
    """The per-device training batch: ``trainer.datamodule.batch_size`` if the datamodule has one, else the training
    DataLoader's ``batch_size`` (or its batch sampler's)."""
    datamodule = getattr(trainer, "datamodule", None)
    size = getattr(datamodule, "batch_size", None)
    if size is None:
        loader = trainer.train_dataloader
        size = getattr(loader, "batch_size", None)
        if size is None:
            size = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(
            "ScaleLearningRate: cannot find the per-device batch size (no `batch_size` on the datamodule, and the "
            f"training DataLoader's batch_size is {size!r}); give the datamodule an integer `batch_size` attribute"
        )
    return size


def _scale_scheduler(scheduler: Any, ratio: float, seen: set[int]) -> None:
    if id(scheduler) in seen:
        return
    seen.add(id(scheduler))
    if isinstance(getattr(scheduler, "base_lrs", None), list):
        scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]
    if isinstance(getattr(scheduler, "max_lrs", None), list):  # CyclicLR keeps its peak here, not in the groups
        scheduler.max_lrs = [lr * ratio for lr in scheduler.max_lrs]
    for inner in getattr(scheduler, "_schedulers", ()):  # SequentialLR, ChainedScheduler
        _scale_scheduler(inner, ratio, seen)


class ScaleLearningRate(Callback):
    """Multiply the configured learning rates by ``(global_batch / reference_batch_size) ** p`` (p = 1 or 1/2).

    Args:
        reference_batch_size: the global batch the configured learning rates were tuned for (the paper's batch).
        rule: ``"linear"`` (p = 1) or ``"sqrt"`` (p = 1/2).

    Attributes:
        factor: the factor in force after fit start (``None`` before).
        global_batch_size: ``batch_size x world_size x accumulate_grad_batches`` of the last fit.
    """

    def __init__(self, reference_batch_size: int, rule: Literal["linear", "sqrt"] = "linear") -> None:
        if isinstance(reference_batch_size, bool) or not isinstance(reference_batch_size, int):
            raise ValueError(f"reference_batch_size must be an integer >= 1, got {reference_batch_size!r}")
        if reference_batch_size < 1:
            raise ValueError(f"reference_batch_size must be an integer >= 1, got {reference_batch_size!r}")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        self.reference_batch_size = reference_batch_size
        self.rule = rule
        self.factor: float | None = None
        self.global_batch_size: int | None = None
        self._restored_factor: float | None = None

    def factor_for(self, global_batch_size: int) -> float:
        """The LR factor for a global batch of ``global_batch_size``."""
        ratio = global_batch_size / self.reference_batch_size
        return ratio if self.rule == "linear" else math.sqrt(ratio)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batch = per_device_batch_size(trainer)
        world, accumulate = int(trainer.world_size), int(trainer.accumulate_grad_batches)
        self.global_batch_size = batch * world * accumulate
        factor = self.factor_for(self.global_batch_size)
        restored, self._restored_factor = self._restored_factor, None
        # On resume the optimizer and scheduler states came from the checkpoint, already scaled by `restored`.
        ratio = factor if restored is None else factor / restored
        if ratio != 1.0:
            self._apply(trainer, ratio)
        self.factor = factor
        how = "" if restored is None else f" (resumed at x{restored:g}: applied x{ratio:g})"
        rank_zero_info(
            f"ScaleLearningRate: global batch {batch} x {world} devices x {accumulate} accumulated = "
            f"{self.global_batch_size} vs reference {self.reference_batch_size} ({self.rule}): lr x{factor:g}{how}"
        )

    @staticmethod
    def _apply(trainer: L.Trainer, ratio: float) -> None:
        groups: dict[int, dict] = {}
        for optimizer in trainer.optimizers:  # SAM shares its base optimizer's group dicts: count each once
            for group in optimizer.param_groups:
                groups[id(group)] = group
        for group in groups.values():
            for key in _GROUP_KEYS:
                if isinstance(group.get(key), float | int) and not isinstance(group.get(key), bool):
                    group[key] = group[key] * ratio
        seen: set[int] = set()
        for config in trainer.lr_scheduler_configs:
            _scale_scheduler(config.scheduler, ratio, seen)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"factor": self.factor, "reference_batch_size": self.reference_batch_size, "rule": self.rule}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_factor = state_dict.get("factor")
