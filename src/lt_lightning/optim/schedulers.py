"""The CIFAR-LT learning-rate schedule: linear warm-up, then multiplicative drops at milestones (per epoch).

LDAM / SAM-LT / GIT (METHODS.md §3.7), 0-indexed epoch ``k``::

    factor(k) = start + (1 - start) * (k + 1) / warmup      for k < warmup
              = gamma ** (number of milestones <= k)          otherwise

With ``start = 0``, ``warmup = 5``, milestones 160 and 180, gamma 0.01: lr = 0.02, 0.04, ..., 0.1 (epochs 0-4), 0.1
until epoch 159, 0.001 from epoch 160, 1e-5 from 180. BBN uses ``start = 1/3`` and milestones 120, 160.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_multistep_factor(
    epoch: int, warmup_epochs: int, milestones: Sequence[int], gamma: float, warmup_start_factor: float = 0.0
) -> float:
    """LR multiplier at a 0-indexed epoch.

    Example:
        >>> [round(warmup_multistep_factor(k, 5, (160, 180), 0.01), 6) for k in (0, 4, 5, 159, 160, 180)]
        [0.2, 1.0, 1.0, 1.0, 0.01, 0.0001]
        >>> round(warmup_multistep_factor(0, 5, (120, 160), 0.01, warmup_start_factor=1 / 3), 4)
        0.4667
    """
    if epoch < warmup_epochs:
        return warmup_start_factor + (1.0 - warmup_start_factor) * (epoch + 1) / warmup_epochs
    return gamma ** sum(epoch >= m for m in milestones)


class WarmupMultiStepLR(LambdaLR):
    """Linear warm-up then ``gamma`` drops at milestones; step it once per epoch.

    Args:
        optimizer: the wrapped optimizer.
        warmup_epochs: epochs of linear warm-up (0 for none).
        milestones: 0-indexed epochs of the drops. Default: ``milestone_fractions`` of ``max_epochs``.
        milestone_fractions: drops at these fractions of ``max_epochs`` when ``milestones`` is not given
            (0.8 and 0.9: epochs 160 and 180 of 200).
        gamma: multiplier at each milestone (0.01 in the CIFAR-LT recipe).
        warmup_start_factor: multiplier the warm-up starts from (0 for LDAM, 1/3 for BBN).
        max_epochs: total epochs; the module fills it from the trainer when left ``None``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: int = 5,
        milestones: Sequence[int] | None = None,
        milestone_fractions: Sequence[float] = (0.8, 0.9),
        gamma: float = 0.01,
        warmup_start_factor: float = 0.0,
        max_epochs: int | None = None,
    ) -> None:
        if not (isinstance(warmup_epochs, int) and warmup_epochs >= 0):
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        if not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
        if not 0 <= warmup_start_factor <= 1:
            raise ValueError(f"warmup_start_factor must be in [0, 1], got {warmup_start_factor!r}")
        if any(not 0 < f <= 1 for f in milestone_fractions):
            raise ValueError(f"milestone_fractions must lie in (0, 1], got {list(milestone_fractions)!r}")
        self.warmup_epochs = warmup_epochs
        self.fixed_milestones = None if milestones is None else tuple(int(m) for m in milestones)
        self.milestone_fractions = tuple(milestone_fractions)
        self.gamma = gamma
        self.warmup_start_factor = warmup_start_factor
        self.max_epochs = max_epochs
        super().__init__(optimizer, self.factor)

    @property
    def milestones(self) -> tuple[int, ...]:
        """The 0-indexed drop epochs in force."""
        if self.fixed_milestones is not None:
            return self.fixed_milestones
        if self.max_epochs is None:
            return ()  # unknown until the trainer sets max_epochs; only the warm-up applies before that
        return tuple(round(f * self.max_epochs) for f in self.milestone_fractions)

    def factor(self, epoch: int) -> float:
        return warmup_multistep_factor(epoch, self.warmup_epochs, self.milestones, self.gamma, self.warmup_start_factor)

    def state_dict(self) -> dict:
        # LambdaLR would try to pickle the bound method; everything it needs is in plain attributes.
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)
