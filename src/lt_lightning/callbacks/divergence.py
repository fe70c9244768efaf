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

**No per-step host synchronisation on accelerators.** Reading a loss on the host (``float(loss)``) waits for the GPU
to finish the step, and the cross-rank decision is an all-reduce: doing both every step stalls the GPU's queue. On an
accelerator the guard therefore keeps the step losses on the device and reads them every ``check_every_n_steps``
steps (default 50; on the CPU, where a read costs nothing, every step), at every train epoch end, before validation
and before any checkpoint is written: one read and one reduction per check. The error still names the first bad
step (its epoch, global step and learning rate), a few steps later than an every-step check would stop.

Example:
    >>> guard = DivergenceGuard(factor=1e3)
    >>> guard.threshold() is None, guard.observe(2.3), guard.threshold()
    (True, None, 2300.0)
    >>> guard.observe(5e4)  # doctest: +ELLIPSIS
    'the training loss 5e+04 exceeds divergence_factor=1000 times its start (2.3)'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from itertools import chain
from typing import Any

import lightning as L
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from typing_extensions import override

DEFAULT_HINT = "remove the DivergenceGuard callback"
ACCELERATOR_CHECK_INTERVAL = 50  # check_every_n_steps=None on an accelerator


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


@dataclass(frozen=True)
class StepRecord:
    """Where a training step happened: what a deferred check names when that step's loss turns out bad."""

    epoch: int
    global_step: int
    learning_rates: tuple[float, ...]

    @classmethod
    def now(cls, trainer: L.Trainer) -> StepRecord:
        return cls(trainer.current_epoch, trainer.global_step, tuple(learning_rates(trainer)))


def divergence_message(
    trainer: L.Trainer, reason: str, disable_hint: str = DEFAULT_HINT, at: StepRecord | None = None
) -> str:
    """One message: where it happened (epoch, global step, learning rates), what was seen, and what to try.

    ``at`` is the step a deferred check found bad (default: the trainer's current step)."""
    at = at or StepRecord.now(trainer)
    rates = list(at.learning_rates)
    lr_text = ", ".join(f"{lr:g}" for lr in rates) if rates else "unknown"
    lower = f" (e.g. {min(rates) / 10:g})" if rates and math.isfinite(min(rates)) else ""
    now = trainer.global_step
    seen = "" if at.global_step == now else f" (found by the check at global step {now})"
    return (
        f"training diverged at epoch {at.epoch}, global step {at.global_step} "
        f"(learning rate {lr_text}): {reason}{seen}. Try a lower learning rate{lower}, gradient clipping "
        f"(trainer.gradient_clip_val: 1.0) or a longer warm-up; {disable_hint} to disable this check"
    )


def read_values(tensors: Sequence[Tensor]) -> list[float]:
    """The values of one-element tensors as Python floats, with ONE host read (device synchronisation) for all."""
    if not tensors:
        return []
    device = tensors[0].device
    dtype = reduce(torch.promote_types, (t.dtype for t in tensors))
    if dtype.is_floating_point and any(not t.is_floating_point() for t in tensors):
        if device.type == "mps":  # no float64 there: integers and floats read apart
            ints = [i for i, t in enumerate(tensors) if not t.is_floating_point()]
            values = dict(zip(ints, read_values([tensors[i] for i in ints]), strict=True))
            rest = [i for i in range(len(tensors)) if i not in values]
            values |= dict(zip(rest, read_values([tensors[i] for i in rest]), strict=True))
            return [values[i] for i in range(len(tensors))]
        dtype = torch.float64  # integers (the non-finite record's codes) stay exact up to 2**53
    return torch.stack([t.detach().reshape(()).to(device=device, dtype=dtype) for t in tensors]).tolist()


class NonFiniteLossRecord:
    """The first non-finite training loss, recorded on the loss's device without reading it on the host.

    :meth:`LongTailClassifier.check_finite <lt_lightning.methods.LongTailClassifier.check_finite>` records here on
    accelerators (on the CPU it raises at once); the :class:`DivergenceGuard` reads it at its checks, and the module
    before a checkpoint is written and at the end of training. Bounded: two 0-d tensors, whatever the run's length.
    """

    def __init__(self) -> None:
        self._epoch: Tensor | None = None  # -1 until a non-finite loss is seen
        self._code: Tensor | None = None  # global step, batch index and detail packed in one int64
        self._details: list[str] = []

    def record(self, loss: Tensor, epoch: int, global_step: int, batch_idx: int, detail: str = "") -> None:
        """Record ``loss`` if it is the first non-finite one (device ops only, no host read)."""
        if detail not in self._details:
            self._details.append(detail)
        code = (global_step * _BATCH_SPAN + min(batch_idx, _BATCH_SPAN - 1)) * _DETAIL_SPAN + min(
            self._details.index(detail), _DETAIL_SPAN - 1
        )
        if self._epoch is None or self._epoch.device != loss.device:
            self._epoch = torch.full((), -1, dtype=torch.int64, device=loss.device)
            self._code = torch.full((), -1, dtype=torch.int64, device=loss.device)
        first = ~torch.isfinite(loss.detach()).all() & (self._epoch < 0)
        self._epoch = torch.where(first, epoch, self._epoch)
        self._code = torch.where(first, code, self._code)

    @property
    def pending(self) -> bool:
        """Whether something was recorded since the last :meth:`read` (a host-side flag: no read)."""
        return self._epoch is not None

    def take(self) -> list[Tensor]:
        """The recorded device tensors (none if nothing was recorded) for :meth:`describe` after a read; resets."""
        if self._epoch is None or self._code is None:
            return []
        tensors, self._epoch, self._code = [self._epoch, self._code], None, None
        return tensors

    def read(self) -> str | None:
        """One host read: a description of the first non-finite loss (epoch, global step, batch), or None; resets."""
        return self.describe(read_values(self.take()))

    def describe(self, values: Sequence[float]) -> str | None:
        """The first non-finite loss from the read values of :meth:`take`, or None."""
        if not values:
            return None
        epoch, code = (int(v) for v in values)
        if epoch < 0:
            return None
        detail = self._details[code % _DETAIL_SPAN] if code % _DETAIL_SPAN < len(self._details) else ""
        step, batch = divmod(code // _DETAIL_SPAN, _BATCH_SPAN)
        return f"epoch {epoch}, global step {step}, batch {batch}{detail}"


_BATCH_SPAN = 2**20
_DETAIL_SPAN = 2**4


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
        check_every_n_steps: how often the step losses are read on the host and the decision reduced over processes.
            ``None`` (default): every step on the CPU (a read costs nothing there) and every 50 steps on an
            accelerator, where each read waits for the device to finish its queued work. Between checks the losses
            stay on the device; every train epoch end, validation start and checkpoint save checks as well, and the
            error names the first bad step. Set 1 to stop at the very step on a GPU (at the cost of a sync per step),
            or larger to read even less often.
    """

    def __init__(
        self,
        factor: float = 1e3,
        reference_steps: int = 5,
        disable_hint: str = DEFAULT_HINT,
        check_every_n_steps: int | None = None,
    ) -> None:
        if check_divergence_factor(factor, "factor") is None:
            raise ValueError("factor must be a finite number > 1, got None (leave the callback out to disable it)")
        if isinstance(reference_steps, bool) or not isinstance(reference_steps, int) or reference_steps < 1:
            raise ValueError(f"reference_steps must be an integer >= 1, got {reference_steps!r}")
        if check_every_n_steps is not None and (
            isinstance(check_every_n_steps, bool) or not isinstance(check_every_n_steps, int) or check_every_n_steps < 1
        ):
            raise ValueError(
                f"check_every_n_steps must be an integer >= 1 or None (every step on CPU, every "
                f"{ACCELERATOR_CHECK_INTERVAL} on an accelerator), got {check_every_n_steps!r}"
            )
        self.factor = float(factor)
        self.reference_steps = reference_steps
        self.disable_hint = disable_hint
        self.check_every_n_steps = check_every_n_steps
        self.interval: int | None = check_every_n_steps  # resolved in setup when None
        self.first_losses: list[float] = []
        self.exempt: frozenset[str] = frozenset()  # buffers non-finite by design (see the module doc)
        # Step losses not yet read (device tensors) and where each step happened; emptied at every check.
        self._pending: list[tuple[Tensor, StepRecord]] = []

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

    def _observe_pending(self, values: list[float]) -> tuple[str | None, StepRecord | None]:
        """Observe read values of the pending steps in order; the first reason to stop and its step, or Nones."""
        pending, self._pending = self._pending, []
        for value, (_, at) in zip(values, pending, strict=True):
            reason = self.observe(value)
            if reason is not None:
                return reason, at
        return None, None

    # ----------------------------------------------------------------- hooks
    def _stop_if(self, trainer: L.Trainer, reason: str | None, at: StepRecord | None = None) -> None:
        # Every rank takes part in the reduction, so all of them raise together (no rank left waiting in a
        # collective); a rank that saw nothing wrong reports the other's finding.
        if trainer.strategy.reduce_boolean_decision(reason is not None, all=False):
            raise DivergenceError(
                divergence_message(
                    trainer, reason or "another process saw the divergence", self.disable_hint, at if reason else None
                )
            )

    def _check_pending(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A deferred check: one host read of the pending losses (and of the module's non-finite loss record), one
        reduction over processes. A no-op in every-step mode (nothing is pending there)."""
        record: NonFiniteLossRecord | None = getattr(pl_module, "non_finite_loss", None)
        if not isinstance(record, NonFiniteLossRecord):
            record = None
        if not self._pending and (record is None or not record.pending):
            return
        recorded = record.take() if record is not None else []
        values = read_values([loss for loss, _ in self._pending] + recorded)  # the one host read of the check
        reason, at = self._observe_pending(values[: len(values) - len(recorded)])
        first_bad = record.describe(values[len(values) - len(recorded) :]) if record is not None else None
        if reason is None and first_bad is not None:
            reason = f"a non-finite training loss at {first_bad}"
        self._stop_if(trainer, reason, at)

    def _check_weights(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        named = chain(pl_module.named_parameters(), pl_module.named_buffers())
        bad = non_finite_tensors((name, t) for name, t in named if name not in self.exempt)
        self._stop_if(trainer, _non_finite_reason(bad, "the model"))

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.check_every_n_steps is None:
            on_cpu = isinstance(trainer.accelerator, CPUAccelerator)
            self.interval = 1 if on_cpu else ACCELERATOR_CHECK_INTERVAL
        self._pending = []

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
        if loss is None:
            return
        if self.interval is None:  # used without setup (e.g. called directly): decide from the loss's device
            self.interval = 1 if loss.device.type == "cpu" else ACCELERATOR_CHECK_INTERVAL
        if self.interval == 1:
            self._stop_if(trainer, self.observe(float(loss.detach())))
            return
        # Deferred: keep the loss on the device (no host read, no collective) until the check. Every rank counts the
        # same steps, so all of them reach the check's reduction together.
        self._pending.append((loss.detach(), StepRecord.now(trainer)))
        if len(self._pending) >= self.interval:
            self._check_pending(trainer, pl_module)

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Precedes ModelCheckpoint's save in on_validation_end; only during fit (validate/test load a checkpoint).
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._check_pending(trainer, pl_module)
            self._check_weights(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_pending(trainer, pl_module)
        self._check_weights(trainer, pl_module)  # runs before ModelCheckpoint's on_train_epoch_end save

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_pending(trainer, pl_module)  # max_steps may end training between two checks

    @override
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._check_pending(trainer, pl_module)
            check_checkpoint_finite(trainer, checkpoint, self.disable_hint, self.exempt)

    @override
    def state_dict(self) -> dict[str, Any]:
        # Lightning asks for the state before on_save_checkpoint's check: losses still pending that would complete the
        # reference are read here (one host read, no collective), so the checkpoint holds the same reference an
        # every-step guard would have recorded. A bad one among them is reported by the check that follows.
        first = list(self.first_losses)
        if self._pending and len(first) < self.reference_steps:
            values = read_values([loss for loss, _ in self._pending])
            first += [v for v in values if math.isfinite(v)][: self.reference_steps - len(first)]
        return {"first_losses": first}

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
