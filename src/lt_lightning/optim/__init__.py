"""Optimizers and learning-rate schedules."""

from lt_lightning.optim.sam import SAM
from lt_lightning.optim.schedulers import WarmupMultiStepLR, warmup_multistep_factor

__all__ = ["SAM", "WarmupMultiStepLR", "warmup_multistep_factor"]
