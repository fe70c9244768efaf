"""Shared test helpers."""

from __future__ import annotations

import lightning as L

from lt_lightning.benchmarking import QUIET_TRAINER


def cpu_trainer(tmp_path, **overrides) -> L.Trainer:
    """A quiet one-process CPU Trainer: one epoch, no logger, checkpoints, progress bar or model summary.

    ``overrides`` replace any of these options or add others (callbacks, limits, devices for DDP tests).
    """
    options = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        **QUIET_TRAINER,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**{**options, **overrides})
