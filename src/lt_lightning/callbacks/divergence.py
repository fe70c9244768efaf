"""``DivergenceGuard``: stop a run whose training diverged, before it writes a broken checkpoint.

A learning rate far too high rarely produces a NaN loss at once: the loss climbs by orders of magnitude while
staying finite (digits at lr 1000: 2e8 -> 2.7e15), accuracy sits at chance, and BatchNorm's running variance
overflows to ``inf``. Without a guard such a run exits 0 and its checkpoint is useless. The guard stops it when

- a training loss is non-finite, or exceeds ``factor * max(reference, 1)``, where ``reference`` is the smallest loss
  of the first ``reference_steps`` steps (the smallest, not the mean: at a wild learning rate the second step may
  already have exploded; the floor of 1 keeps a near-zero starting loss, e.g. fine-tuning, from turning ordinary
  noise into "divergence");
- a parameter or buffer holds NaN / inf (checked at validation start and train epoch end, i.e. before
  ``ModelCheckpoint`` saves: Lightning runs checkpoint callbacks after all others). A buffer already non-finite when
  training starts is left alone: it uses inf on purpose (ABSGD keeps ``log u = -inf`` for ``u = 0``);
- a checkpoint about to be written holds NaN / inf (``on_save_checkpoint`` runs before the file is written, so a
  broken checkpoint never replaces a good one).

It raises :class:`DivergenceError` naming the epoch, the global step, the learning rate(s) and what to try. Every
decision is reduced over processes (any rank diverged -> all stop), so DDP ranks never disagree. The reference loss
is kept in the callback's state, so a resumed run compares against the start of the original run.

Example:
    >>> guard = DivergenceGuard(factor=1e3)
    >>> guard.threshold() is None, guard.observe(2.3), guard.threshold()
    (True, None, 2300.0)
    >>> guard.observe(5e4)  # doctest: +ELLIPSIS
    'the training loss 5e+04 exceeds divergence_factor=1000 times its start (2.3)'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from typing_extensions import override

DEFAULT_HINT = "remove the DivergenceGuard callback"


class DivergenceError(RuntimeError):
    """Training diverged (exploding or non-finite loss, non-finite weights); the message says what to try."""


def check_divergence_factor(value: object, name: str = "divergence_factor") -> float | None:
    """``None`` (no check) or a finite number > 1; a ``ValueError`` naming the argument otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 1:
        raise ValueError(
            f"{name} must be a finite number > 1 (training stops when the loss exceeds that many times its start; "
            f"default 1e3) or None to disable the divergence check, got {value!r}"
        )
    return float(value)


def non_finite_tensors(named: Iterable[tuple[str, Any]]) -> list[str]:
    """Names of the floating-point tensors holding NaN or inf, with one device synchronisation for all of them."""
    names, flags = [], []
    for name, value in named:
        if torch.is_tensor(value) and (value.is_floating_point() or value.is_complex()) and value.numel():
            names.append(name)
            flags.append(torch.isfinite(value).all())
    if not flags:
        return []
    finite = torch.stack([flag.to(flags[0].device) for flag in flags]).tolist()
    return [name for name, ok in zip(names, finite, strict=True) if not ok]


def learning_rates(trainer: L.Trainer) -> list[float]:
    """The distinct learning rates of the trainer's optimizers, in order of appearance."""
    rates: list[float] = []
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            lr = float(group.get("lr", float("nan")))
            if lr not in rates:
                rates.append(lr)
    return rates


def divergence_message(trainer: L.Trainer, reason: str, disable_hint: str = DEFAULT_HINT) -> str:
    """One message: where it happened (epoch, global step, learning rates), what was seen, and what to try."""
    rates = learning_rates(trainer)
    lr_text = ", ".join(f"{lr:g}" for lr in rates) if rates else "unknown"
    lower = f" (e.g. {min(rates) / 10:g})" if rates and math.isfinite(min(rates)) else ""
    return (
        f"training diverged at epoch {trainer.current_epoch}, global step {trainer.global_step} "
        f"(learning rate {lr_text}): {reason}. Try a lower learning rate{lower}, gradient clipping "
        f"(trainer.gradient_clip_val: 1.0) or a longer warm-up; {disable_hint} to disable this check"
    )


def _loss_of(outputs: Any) -> Tensor | None:
    # Automatic optimisation hands the hook {"loss": ...}; manual optimisation whatever training_step returned.
    if isinstance(outputs, Mapping):
        outputs = outputs.get("loss")
    return outputs if torch.is_tensor(outputs) and outputs.numel() == 1 else None


class DivergenceGuard(Callback):
    """Stop training with :class:`DivergenceError` on an exploding loss or non-finite weights (see the module doc).

    ``LongTailClassifier`` attaches one through ``configure_callbacks`` (its ``divergence_factor`` argument; None
    disables it); in another project add ``DivergenceGuard()`` to the Trainer's callbacks.

    Args:
        factor: the loss may grow to ``factor * max(reference, 1)`` before the run counts as diverged (> 1).
        reference_steps: the reference is the smallest loss of this many first training steps.
        disable_hint: how the user turns the check off (ends the error message).
    """

    def __init__(self, factor: float = 1e3, reference_steps: int = 5, disable_hint: str = DEFAULT_HINT) -> None:
        if check_divergence_factor(factor, "factor") is None:
            raise ValueError("factor must be a finite number > 1, got None (leave the callback out to disable it)")
        if isinstance(reference_steps, bool) or not isinstance(reference_steps, int) or reference_steps < 1:
            raise ValueError(f"reference_steps must be an integer >= 1, got {reference_steps!r}")
        self.factor = float(factor)
        self.reference_steps = reference_steps
        self.disable_hint = disable_hint
        self.first_losses: list[float] = []
        self.exempt: frozenset[str] = frozenset()  # buffers non-finite by design (see the module doc)

    # ----------------------------------------------------------------- the loss rule (pure, no trainer)
    def reference(self) -> float | None:
        return min(self.first_losses) if self.first_losses else None

    def threshold(self) -> float | None:
        reference = self.reference()
        return None if reference is None else self.factor * max(reference, 1.0)

    def observe(self, loss: float) -> str | None:
        """Record one training loss; the reason it counts as divergence, or None."""
        if not math.isfinite(loss):
            return f"the training loss is {loss}"
        threshold = self.threshold()
        if threshold is not None and loss > threshold:
            return (
                f"the training loss {loss:.4g} exceeds divergence_factor={self.factor:g} times its start "
                f"({self.reference():.4g})"
            )
        if len(self.first_losses) < self.reference_steps:
            self.first_losses.append(loss)
        return None

    # ----------------------------------------------------------------- hooks
    def _stop_if(self, trainer: L.Trainer, reason: str | None) -> None:
        # Every rank takes part in the reduction, so all of them raise together (no rank left waiting in a
        # collective); a rank that saw nothing wrong reports the other's finding.
        if trainer.strategy.reduce_boolean_decision(reason is not None, all=False):
            raise DivergenceError(
                divergence_message(trainer, reason or "another process saw the divergence", self.disable_hint)
            )

    def _check_weights(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        named = chain(pl_module.named_parameters(), pl_module.named_buffers())
        bad = non_finite_tensors((name, t) for name, t in named if name not in self.exempt)
        self._stop_if(trainer, _non_finite_reason(bad, "the model"))

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the checkpoint (if any) is restored, for every strategy. Parameters get no such exemption: a
        # non-finite parameter is never by design (e.g. a resume from a broken checkpoint stops at once).
        self.exempt = frozenset(non_finite_tensors(pl_module.named_buffers()))

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = _loss_of(outputs)
        if loss is not None:
            self._stop_if(trainer, self.observe(float(loss.detach())))

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Precedes ModelCheckpoint's save in on_validation_end; only during fit (validate/test load a checkpoint).
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._check_weights(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_weights(trainer, pl_module)  # runs before ModelCheckpoint's on_train_epoch_end save

    @override
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            check_checkpoint_finite(trainer, checkpoint, self.disable_hint, self.exempt)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"first_losses": list(self.first_losses)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_losses = [float(v) for v in state_dict.get("first_losses", [])]


def _non_finite_reason(bad: list[str], what: str, after: str = "") -> str | None:
    if not bad:
        return None
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return f"{len(bad)} tensor(s) of {what} hold NaN or inf ({shown}){after}"


def check_checkpoint_finite(
    trainer: L.Trainer, checkpoint: dict, disable_hint: str = DEFAULT_HINT, exempt: Iterable[str] = ()
) -> None:
    """Raise :class:`DivergenceError` (on every rank) if the checkpoint's ``state_dict`` holds NaN or inf.

    Called from ``on_save_checkpoint``, which Lightning runs before it writes the file: the broken checkpoint is never
    written, and the checkpoints already on disk stay as they were.
    """
    exempt = set(exempt)
    bad = non_finite_tensors((k, v) for k, v in checkpoint.get("state_dict", {}).items() if k not in exempt)
    after = "; it was not written, earlier ones are kept"
    reason = _non_finite_reason(bad, "the checkpoint about to be written", after)
    if trainer.strategy.reduce_boolean_decision(reason is not None, all=False):
        reason = reason or "another process saw the divergence"
        raise DivergenceError(divergence_message(trainer, reason, disable_hint))
