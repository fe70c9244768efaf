"""Epoch schedules of the two-stage methods, as pure functions of the 0-indexed epoch.

Because each value depends only on the epoch, a run resumed from a checkpoint on either side of a switch computes
exactly what an uninterrupted run would, and every DDP rank agrees without communication.

Deferred re-weighting (DRW, LDAM ``cifar_train.py:199-206``, METHODS.md §3.5)::

    beta(epoch) = beta_k for the last stage (start_k, beta_k) with start_k <= epoch;  0 before the first stage
    w(epoch)    = class-balanced weights of that beta, normalised to sum to C        (beta = 0 -> all ones)

The official recipe is one stage ``(160, 0.9999)`` for 200 epochs: ``idx = epoch // 160``.

One horizon for every schedule derived from ``max_epochs`` (LR milestones, DRW, DRS, BBN's alpha, ABSGD's lambda
switch, the progressive sampler): :func:`training_horizon`. A fresh run resolves against ``trainer.max_epochs``; a
resumed run keeps the horizon its checkpoint recorded (``checkpoint["schedule_horizon"]``), even when resumed with
another ``max_epochs``, because the LR scheduler's state (its milestones) comes back from the checkpoint anyway and
the schedules must not disagree with it. Epochs past the horizon keep the schedules' final values; a new horizon
needs a new run.

Example:
    >>> deferred_beta(159, [(160, 0.9999)]), deferred_beta(160, [(160, 0.9999)])
    (0.0, 0.9999)
    >>> [round(w, 4) for w in deferred_class_weights(170, (5000, 50), [(160, 0.9999)]).tolist()]
    [0.025, 1.975]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lt_lightning.functional.weights import effective_number_weights

Stages = Sequence[tuple[int, float]]


def default_switch_epoch(max_epochs: int, fraction: float = 0.8) -> int:
    """The deferral epoch as a fraction of the run: ``round(0.8 * 200) = 160`` (0-indexed), the CIFAR-LT recipe.

    Example:
        >>> default_switch_epoch(200), default_switch_epoch(50), default_switch_epoch(30)
        (160, 40, 24)
    """
    if not (isinstance(max_epochs, int) and max_epochs >= 1):
        raise ValueError(f"max_epochs must be an integer >= 1 to place the switch, got {max_epochs!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    return round(fraction * max_epochs)


def training_horizon(trainer: Any, restored: int | None = None) -> int | None:
    """The ``max_epochs`` every epoch-derived schedule resolves against.

    ``trainer.max_epochs`` in a fresh run. When the trainer resumes (``trainer.ckpt_path`` set), the horizon the
    checkpoint recorded: the module's ``schedule_horizon`` (``LongTailClassifier`` restores it), else ``restored``
    (what a drop-in callback saved in its own state, for modules of other projects), else ``trainer.max_epochs``
    (a checkpoint that recorded none).

    Example:
        >>> from types import SimpleNamespace
        >>> module = SimpleNamespace(schedule_horizon=4)
        >>> training_horizon(SimpleNamespace(max_epochs=8, ckpt_path=None, lightning_module=module))
        8
        >>> training_horizon(SimpleNamespace(max_epochs=8, ckpt_path="last.ckpt", lightning_module=module))
        4
    """
    max_epochs = getattr(trainer, "max_epochs", None)
    if getattr(trainer, "ckpt_path", None):
        for horizon in (getattr(getattr(trainer, "lightning_module", None), "schedule_horizon", None), restored):
            if horizon is not None:
                return int(horizon)
    return max_epochs


def warn_horizon_kept(max_epochs: int | None, horizon: int) -> None:
    """The one warning of a resume whose ``max_epochs`` differs from the checkpoint's schedule horizon."""
    if max_epochs is not None and max_epochs != horizon:
        rank_zero_warn(
            f"resumed with max_epochs={max_epochs} but the checkpoint's schedules were resolved for {horizon} epochs: "
            f"keeping {horizon} for every epoch-derived schedule (LR, DRW, DRS, BBN alpha, ABSGD lambda, progressive "
            "sampler; epochs past it keep their final values); start a new run to change the horizon"
        )


def check_stages(stages: Stages) -> tuple[tuple[int, float], ...]:
    """Validate ``[(start_epoch, beta), ...]``: epochs >= 0 and strictly increasing, each beta in [0, 1)."""
    checked = []
    for item in stages:
        try:
            epoch, beta = item
        except (TypeError, ValueError):
            raise ValueError(f"stages must be (epoch, beta) pairs, got {item!r}") from None
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"stage epoch must be an integer >= 0 (0-indexed), got {epoch!r}")
        if not (isinstance(beta, int | float) and math.isfinite(beta) and 0 <= beta < 1):
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        if checked and epoch <= checked[-1][0]:
            raise ValueError(f"stage epochs must increase strictly, got {[e for e, _ in stages]}")
        checked.append((int(epoch), float(beta)))
    if not checked:
        raise ValueError("stages must hold at least one (epoch, beta) pair")
    return tuple(checked)


def deferred_beta(epoch: int, stages: Stages) -> float:
    """The beta in force at a 0-indexed epoch: that of the last stage started, 0.0 (unweighted) before any."""
    beta = 0.0
    for start, stage_beta in stages:
        if epoch >= start:
            beta = stage_beta
    return beta


def deferred_class_weights(epoch: int, class_counts: Sequence[int], stages: Stages) -> Tensor:
    """Per-class weights at a 0-indexed epoch: all ones before the first stage, then class-balanced weights
    (effective number, normalised to sum to C) with the stage's beta."""
    return effective_number_weights(class_counts, deferred_beta(epoch, stages))


def bbn_alpha(epoch: int, max_epochs: int, form: str = "code") -> float:
    """BBN's cumulative-learning weight of the conventional branch at a 0-indexed epoch (METHODS.md §4).

    ``form="code"`` (the official ``combiner.py``), with T = epoch + 1 (1-indexed)::

        alpha = 1 - ((T - 1) / T_div) ** 2,   T_div = max_epochs, except 100 * (max_epochs // 100 + 1) when
                                              max_epochs is 90 or 180 (a quirk of the reference: alpha ends ~0.2)

    ``form="paper"``: ``alpha = 1 - (T / max_epochs) ** 2`` (reaches exactly 0 at the last epoch).

    Example:
        >>> [round(bbn_alpha(t - 1, 200), 4) for t in (1, 50, 100, 160, 200)]
        [1.0, 0.94, 0.755, 0.368, 0.01]
        >>> round(bbn_alpha(199, 200, form="paper"), 4), round(bbn_alpha(179, 180), 4)
        (0.0, 0.199)
    """
    if not (isinstance(max_epochs, int) and max_epochs >= 2):
        raise ValueError(f"max_epochs must be an integer >= 2 for BBN's cumulative learning, got {max_epochs!r}")
    if form not in ("code", "paper"):
        raise ValueError(f"alpha form must be one of ['code', 'paper'], got {form!r}")
    t = epoch + 1
    if form == "paper":
        return 1.0 - (min(t, max_epochs) / max_epochs) ** 2
    divisor = 100 * (max_epochs // 100 + 1) if max_epochs in (90, 180) else max_epochs
    return 1.0 - ((min(t, max_epochs) - 1) / divisor) ** 2
