"""``DivergenceGuard``: stop a diverging run loudly, and never write a checkpoint with non-finite weights.

A learning rate far too high rarely produces a NaN loss at once: the loss climbs (2e8, then 2.7e15) while staying
finite, accuracy sits at chance, and BatchNorm's ``running_var`` overflows to ``inf`` — a finite-loss check never
fires and the run "succeeds". The guard catches both signs:

- **an exploding loss**: the training loss of a step exceeds ``factor * max(L_0, 1)``, where ``L_0`` is the first
  training loss of the run (kept in the callback's state, so a resumed run compares against the same start; the
  floor of 1 keeps a loss that starts near 0 from tripping it);
- **non-finite weights**: any parameter is NaN / inf, or any buffer NaN / +inf, at the end of a training epoch,
  before validation, or when a checkpoint is about to be written (the check raises inside ``on_save_checkpoint``,
  before the file is written, so a good checkpoint is never replaced by a broken one).

Either stops the run with a :class:`DivergenceError` naming the epoch, the global step, the learning rates and what
to try. Under DDP the ranks agree (one ``any`` reduction of the flag per step), so they stop together.

``LongTailClassifier`` attaches one by itself (``divergence_factor``, default 1e3; ``None`` turns it off); in your
own Lightning project add it to the Trainer's callbacks.

Example:
    >>> guard = DivergenceGuard(factor=1e3)
    >>> guard.threshold(2.3), guard.threshold(0.01)
    (2300.0, 1000.0)
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


class DivergenceError(RuntimeError):
    """Training diverged (an exploding loss or non-finite weights)."""


def check_divergence_factor(factor: object, name: str = "divergence_factor") -> float | None:
    """``factor`` as a float > 1, or None (the guard is off); a ValueError naming ``name`` otherwise."""
    if factor is None:
        return None
    if isinstance(factor, bool) or not isinstance(factor, int | float) or not math.isfinite(factor) or factor <= 1:
        raise ValueError(f"{name} must be a finite number > 1 (the guard's loss ratio) or None (off), got {factor!r}")
    return float(factor)


def first_non_finite(module: torch.nn.Module) -> str | None:
    """The name of the first parameter holding a NaN / inf, or buffer holding a NaN / +inf, else None.

    A buffer may legitimately hold ``-inf`` (a log-domain "nothing accumulated yet", e.g. ABSGD's ``log u``); a
    diverged BatchNorm shows ``running_var = +inf``.

    Example:
        >>> layer = torch.nn.BatchNorm1d(2)
        >>> first_non_finite(layer) is None
        True
        >>> layer.running_var.fill_(float("inf")) is not None and first_non_finite(layer)
        'running_var'
    """
    for name, tensor in module.named_parameters():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    for name, tensor in module.named_buffers():
        if tensor.is_floating_point() and bool((torch.isnan(tensor) | (tensor == float("inf"))).any()):
            return name
    return None


def _learning_rates(trainer: L.Trainer) -> str:
    rates = sorted({float(group["lr"]) for opt in trainer.optimizers for group in opt.param_groups if "lr" in group})
    return ", ".join(f"{lr:g}" for lr in rates) or "unknown"


class DivergenceGuard(Callback):
    """Stop on an exploding training loss or non-finite weights (see the module docstring).

    Args:
        factor: the loss may grow to ``factor * max(first loss, 1)`` (default 1e3); must be > 1.
    """

    def __init__(self, factor: float = 1e3) -> None:
        checked = check_divergence_factor(factor, "factor")
        if checked is None:
            raise ValueError("factor must be a finite number > 1, got None (leave the guard out to turn it off)")
        self.factor = checked
        self.first_loss: float | None = None

    def threshold(self, first_loss: float) -> float:
        """The largest training loss allowed: ``factor * max(first_loss, 1)``."""
        return self.factor * max(first_loss, 1.0)

    def _stop(self, trainer: L.Trainer, what: str) -> None:
        raise DivergenceError(
            f"training diverged at epoch {trainer.current_epoch}, global step {trainer.global_step}: {what} "
            f"(learning rate {_learning_rates(trainer)}). Try a learning rate 10x lower, more warm-up epochs or "
            "gradient clipping (--trainer.gradient_clip_val 1.0); set divergence_factor: null to disable this check"
        )

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        value = float(loss.detach()) if torch.is_tensor(loss) and loss.numel() == 1 else None
        if value is not None and self.first_loss is None and math.isfinite(value):
            self.first_loss = value
        exploded = value is not None and self.first_loss is not None and not value <= self.threshold(self.first_loss)
        if trainer.strategy.reduce_boolean_decision(exploded, all=False):
            start = self.first_loss if self.first_loss is not None else float("nan")
            shown = f"{value:.4g}" if value is not None else "on another process"
            self._stop(trainer, f"training loss {shown} exceeds {self.factor:g} x its start ({start:.4g})")

    def _check_weights(self, trainer: L.Trainer, pl_module: L.LightningModule, when: str) -> None:
        name = first_non_finite(pl_module)
        if trainer.strategy.reduce_boolean_decision(name is not None, all=False):
            self._stop(trainer, f"non-finite values in {name or 'the weights of another process'} {when}")

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_weights(trainer, pl_module, "at the end of the epoch")

    @override
    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":  # not a stand-alone validate / test of a loaded model
            self._check_weights(trainer, pl_module, "before validation")

    @override
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Raised while the checkpoint is being assembled: the file is never written, the last good one stays.
        name = first_non_finite(pl_module)
        if name is not None:
            self._stop(trainer, f"non-finite values in {name}; the checkpoint was not written")

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"first_loss": self.first_loss}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_loss = state_dict.get("first_loss")
