"""Optimizers and learning-rate schedules."""

from lt_lightning.optim.schedulers import WarmupMultiStepLR, warmup_multistep_factor

__all__ = ["WarmupMultiStepLR", "warmup_multistep_factor"]
