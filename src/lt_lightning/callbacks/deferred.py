"""Deferred re-weighting (DRW) and deferred re-sampling (DRS) as drop-in callbacks.

Both switch at a 0-indexed epoch (default: 80 % of ``max_epochs``, i.e. 160 of 200 as in the LDAM-DRW recipe), and
both are pure functions of the epoch: nothing but the epoch decides what is in force, so resuming from a checkpoint
before or after the switch reproduces an uninterrupted run, and every DDP rank agrees.

Contracts (checked at fit start, with an error that says what is missing):

- ``DeferredReweighting``: the module exposes its loss as ``loss_module``, ``criterion`` or ``loss`` (or the name
  given by ``loss_attr``), and that loss has ``set_class_weight(weights)`` (every ``lt_lightning.losses`` loss has).
- ``DeferredResampling``: the training DataLoader's sampler is an ``lt_lightning`` ``LongTailSampler`` (what
  ``LongTailDataModule`` builds; in your own loader pass ``sampler=InstanceSampler(targets)``). Lightning's DDP
  wrapper around it is looked through.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lt_lightning.data.auxiliary import AuxPairedSampler
from lt_lightning.data.samplers import (
    SAMPLERS,
    ClassAwareCycleSampler,
    InversePowerSampler,
    LongTailSampler,
    create_sampler,
)
from lt_lightning.losses import warn_unusual
from lt_lightning.schedules import (
    check_stages,
    default_switch_epoch,
    deferred_beta,
    deferred_class_weights,
    training_horizon,
    warn_horizon_kept,
)

LOSS_ATTRS = ("loss_module", "criterion", "loss")


def _check_start(start_epoch: int | None) -> int | None:
    if start_epoch is not None and (
        isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0
    ):
        raise ValueError(f"start_epoch must be an integer >= 0 (0-indexed) or None, got {start_epoch!r}")
    return start_epoch


def _resolve_start(
    start_epoch: int | None, fraction: float, trainer: L.Trainer, name: str, restored: int | None = None, warn=True
) -> int:
    # The default is a fraction of the schedule horizon (the checkpoint's on resume, see training_horizon), so the
    # switch agrees with the LR milestones restored from the checkpoint; the warning is about the run's real end.
    max_epochs, horizon = trainer.max_epochs, training_horizon(trainer, restored)
    if start_epoch is None:
        if horizon is None or horizon < 1:
            raise ValueError(f"{name}: set start_epoch, or give the Trainer max_epochs so it can be 80 % of it")
        start_epoch = default_switch_epoch(horizon, fraction)
    if warn and max_epochs is not None and max_epochs >= 1 and start_epoch >= max_epochs:
        rank_zero_warn(
            f"{name}: start_epoch={start_epoch} >= max_epochs={max_epochs}: the second stage never runs "
            f"(epochs are 0-indexed)"
        )
    return start_epoch


class _HorizonState:
    """Save the schedule horizon in the callback's state, so a module of another project (which records none)
    resumes with the switch of its checkpoint's horizon too; warn there, once, when the new max_epochs differs."""

    _restored_horizon: int | None = None
    _horizon: int | None = None

    def state_dict(self) -> dict:
        return {"horizon": self._horizon} if self._horizon is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored_horizon = state_dict.get("horizon")

    def _resolve_after_restore(self, trainer: L.Trainer) -> None:
        # setup ran before the checkpoint was restored, i.e. against the new max_epochs; from the first epoch on,
        # the horizon (and a default start derived from it) is the checkpoint's. Quiet: setup already warned.
        self._horizon = training_horizon(trainer, self._restored_horizon)
        if getattr(self, "stages", None) is None:
            self.start_epoch = _resolve_start(
                self._start_epoch_arg, self.start_fraction, trainer, type(self).__name__, self._restored_horizon, False
            )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # LongTailClassifier restores (and warns about) its own horizon; other modules rely on this callback's.
        restored = self._restored_horizon
        if trainer.ckpt_path and restored is not None and getattr(pl_module, "schedule_horizon", None) is None:
            warn_horizon_kept(trainer.max_epochs, restored)


def find_loss(pl_module: L.LightningModule, loss_attr: str | None = None):
    """The module's loss with ``set_class_weight``; a clear error naming the attributes looked at otherwise."""
    names = (loss_attr,) if loss_attr else LOSS_ATTRS
    for name in names:
        loss = getattr(pl_module, name, None)
        if loss is not None and callable(getattr(loss, "set_class_weight", None)):
            return loss
    raise TypeError(
        f"DeferredReweighting needs a loss with replaceable class weights: {type(pl_module).__name__} has no "
        f"attribute {' / '.join(names)} with a set_class_weight(weights) method (every lt_lightning.losses loss "
        f"has one; or pass loss_attr='<name>')"
    )


class DeferredReweighting(_HorizonState, Callback):
    """Class weights all ones until ``start_epoch``, then class-balanced by effective number (DRW).

    Args:
        start_epoch: 0-indexed epoch of the switch; default ``round(start_fraction * max_epochs)`` (160 of 200).
        beta: effective-number beta after the switch (0.9999 in the LDAM-DRW recipe).
        stages: several stages ``[(epoch, beta), ...]`` instead of one switch (overrides ``start_epoch``/``beta``).
        start_fraction: fraction of ``max_epochs`` used when ``start_epoch`` is None.
        class_counts: training counts; default from the loss's ``class_counts`` buffer, the datamodule, the module.
        loss_attr: name of the module attribute holding the loss (default: ``loss_module``, ``criterion``, ``loss``).

    Example:
        >>> cb = DeferredReweighting(start_epoch=160)
        >>> cb.weights_at(159, (5000, 50)).tolist(), [round(w, 3) for w in cb.weights_at(160, (5000, 50)).tolist()]
        ([1.0, 1.0], [0.025, 1.975])
    """

    def __init__(
        self,
        start_epoch: int | None = None,
        beta: float = 0.9999,
        stages: Sequence[tuple[int, float]] | None = None,
        start_fraction: float = 0.8,
        class_counts: Sequence[int] | None = None,
        loss_attr: str | None = None,
    ) -> None:
        # The configured values stay apart from the resolved ones, so that a callback reused with another
        # Trainer (other max_epochs) or module (other counts) resolves afresh instead of keeping the first fit's.
        self._start_epoch_arg = self.start_epoch = _check_start(start_epoch)
        check_stages([(0, beta)])  # beta in [0, 1)
        self.beta = float(beta)
        self.stages = check_stages(stages) if stages is not None else None
        for _, stage_beta in self.stages or ((0, self.beta),):
            if stage_beta != 0:  # 0 is "unweighted"; below 0.9 the weights are almost uniform (CB paper's range)
                warn_unusual("DeferredReweighting", "beta", stage_beta, 0.9, 1, "0.9999 in LDAM-DRW", open_high=True)
        if not 0 < start_fraction <= 1:
            raise ValueError(f"start_fraction must be in (0, 1], got {start_fraction!r}")
        self.start_fraction = start_fraction
        self.class_counts = tuple(int(c) for c in class_counts) if class_counts is not None else None
        self._class_counts_arg = self.class_counts
        self.loss_attr = loss_attr
        self._loss = None

    def resolved_stages(self, trainer: L.Trainer | None = None) -> tuple[tuple[int, float], ...]:
        if self.stages is not None:
            return self.stages
        start = self.start_epoch
        if start is None:
            if trainer is None:
                raise ValueError("start_epoch is None: the stages depend on the trainer's max_epochs")
            start = default_switch_epoch(training_horizon(trainer, self._restored_horizon), self.start_fraction)
        return ((start, self.beta),)

    def weights_at(self, epoch: int, class_counts: Sequence[int], trainer: L.Trainer | None = None) -> torch.Tensor:
        """The class weights in force at a 0-indexed epoch."""
        return deferred_class_weights(epoch, class_counts, self.resolved_stages(trainer))

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._loss = find_loss(pl_module, self.loss_attr)
        self._restored_horizon = None  # setup precedes the checkpoint's restore: a fresh fit forgets an old one
        self._horizon = training_horizon(trainer)
        if self.stages is None:
            self.start_epoch = _resolve_start(
                self._start_epoch_arg, self.start_fraction, trainer, "DeferredReweighting"
            )
        elif trainer.max_epochs is not None and self.stages[0][0] >= trainer.max_epochs >= 1:
            rank_zero_warn(f"DeferredReweighting: the first stage starts at epoch {self.stages[0][0]} >= max_epochs")
        self.class_counts = self._class_counts_arg
        if self.class_counts is None:
            counts = getattr(self._loss, "class_counts", None)
            for source in (trainer.datamodule, pl_module):
                counts = counts if counts is not None else getattr(source, "class_counts", None)
            if counts is None:
                raise ValueError(
                    "DeferredReweighting needs class_counts: pass them, or expose class_counts on the loss"
                )
            self.class_counts = tuple(int(c) for c in (counts.tolist() if torch.is_tensor(counts) else counts))

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._resolve_after_restore(trainer)
        epoch = trainer.current_epoch
        weights = self.weights_at(epoch, self.class_counts, trainer)
        self._loss.set_class_weight(weights.to(pl_module.device))
        pl_module.log("drw/beta", deferred_beta(epoch, self.resolved_stages(trainer)), on_epoch=True, on_step=False)


def find_long_tail_sampler(loader) -> LongTailSampler | None:
    """The ``LongTailSampler`` behind a DataLoader, looking through Lightning's ``DistributedSamplerWrapper``."""
    for candidate in (
        getattr(loader, "sampler", None),
        getattr(getattr(loader, "batch_sampler", None), "sampler", None),
    ):
        # DistributedSamplerWrapper keeps the user's sampler in a _DatasetSamplerWrapper held as `.dataset`.
        inner = getattr(getattr(candidate, "dataset", None), "_sampler", None)
        for sampler in (candidate, inner):
            if isinstance(sampler, AuxPairedSampler):
                sampler = sampler.first  # the ID stream of an (x, y, x_aux) loader
            if isinstance(sampler, LongTailSampler):
                return sampler
    return None


class DeferredResampling(_HorizonState, Callback):
    """Instance sampling until ``start_epoch``, then ``sampler`` (class-balanced by default): DRS.

    The switch happens inside the loader's own sampler (``LongTailSampler.defer``), so it really changes what the
    loader draws, on one process and under DDP (Lightning's wrapper re-materialises the inner sampler every epoch).

    Args:
        start_epoch: 0-indexed epoch of the switch; default ``round(start_fraction * max_epochs)`` (160 of 200).
        sampler: the sampler from the switch on, by name (``class_balanced``, ``square_root``, ``reversed``, ...).
        start_fraction: fraction of ``max_epochs`` used when ``start_epoch`` is None.
        seed: seed of the deferred sampler (default: that of the loader's sampler).
        samples_per_class: ``k`` of ``class_aware_cycle`` (draws per visited class); unused by other samplers.
    """

    def __init__(
        self,
        start_epoch: int | None = None,
        sampler: str = "class_balanced",
        start_fraction: float = 0.8,
        seed: int | None = None,
        samples_per_class: int = 4,
    ) -> None:
        self._start_epoch_arg = self.start_epoch = _check_start(start_epoch)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        if not 0 < start_fraction <= 1:
            raise ValueError(f"start_fraction must be in (0, 1], got {start_fraction!r}")
        if isinstance(samples_per_class, bool) or not (isinstance(samples_per_class, int) and samples_per_class >= 1):
            raise ValueError(f"samples_per_class must be an integer >= 1, got {samples_per_class!r}")
        self.sampler = sampler
        self.samples_per_class = samples_per_class
        self.start_fraction = start_fraction
        self.seed = seed

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._restored_horizon = None  # setup precedes the checkpoint's restore: a fresh fit forgets an old one
            self._horizon = training_horizon(trainer)
            self.start_epoch = _resolve_start(self._start_epoch_arg, self.start_fraction, trainer, "DeferredResampling")

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every epoch, not once: reload_dataloaders_every_n_epochs builds a new loader (and sampler) before this
        # hook, which would silently drop the switch. The epoch's sampler iterator is created after this hook.
        self._resolve_after_restore(trainer)
        base = find_long_tail_sampler(trainer.train_dataloader)
        if base is None:
            raise TypeError(
                "DeferredResampling needs the training DataLoader's sampler to be an lt_lightning LongTailSampler "
                f"(got {type(getattr(trainer.train_dataloader, 'sampler', None)).__name__}); use LongTailDataModule, "
                "or build your loader with sampler=InstanceSampler(targets)"
            )
        deferred = base.deferred
        if deferred is not None and deferred[0] == self.start_epoch and type(deferred[1]) is SAMPLERS[self.sampler]:
            return  # already attached to this loader's sampler
        kwargs = {}
        if SAMPLERS[self.sampler] is ClassAwareCycleSampler:
            kwargs["samples_per_class"] = self.samples_per_class
        if SAMPLERS[self.sampler] is InversePowerSampler:
            # The datamodule's alpha (CMO's n^-alpha), as its own samplers use it.
            kwargs["alpha"] = float(getattr(trainer.datamodule, "sampler_alpha", 1.0))
        later = create_sampler(
            self.sampler,
            base.targets,
            seed=base.seed if self.seed is None else self.seed,
            num_samples=base.num_samples,
            num_classes=base.num_classes,
            **kwargs,
        )
        base.defer(later, self.start_epoch)
