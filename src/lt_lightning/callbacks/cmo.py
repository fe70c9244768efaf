"""``CMO``: context-rich minority oversampling (Park et al., CVPR 2022), as naver-ai/cmo computes it.

Minority images are pasted into majority contexts: each training batch has a background stream ``(x, y)`` (the
ordinary sampler) and a foreground stream ``(x_fg, y_fg)`` drawn with per-sample weight ``n_y^(-alpha)``
(``LongTailDataModule(rebalancing_sampler="inverse_power", sampler_alpha=1.0)``: α = 1, the code's default, is
class-balanced sampling — not inverse class frequency). With probability ``prob`` (0.5), and only in the epochs
``start_data_aug < epoch < E - end_data_aug`` (0-indexed, E the schedule horizon; the reference's 3 and 3), one
CutMix box (λ ~ Beta(1, 1), side ratio sqrt(1 - λ), uniform centre, clipped) of the foregrounds is pasted into the
backgrounds, λ re-computed from the clipped box, and the module trains on ``λ L(z, y) + (1 - λ) L(z, y_fg)``
(``cifar_train.py:279-311``).

The batch is changed in place before the step and the second targets are handed to the module as
:attr:`LongTailClassifier.batch_mix`, which its ``criterion_on`` reads, so CMO composes with every loss (CE, CE-DRW,
LDAM-DRW, balanced softmax, ...), with SAM (both passes see the same mixed batch) and with ABSGD (the two-target loss
per sample). The box is drawn from a generator seeded by ``(seed, global step)`` (and the micro-batch under gradient
accumulation): every DDP rank pastes the same box
(as one process would), and a resumed run replays the same boxes. BBN, which reads the second stream as its
re-balancing branch, is refused.

Example:
    >>> cmo = CMO(prob=0.5)
    >>> [cmo.active(epoch, 10) for epoch in (3, 4, 6, 7)]
    [False, True, True, False]
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lt_lightning.functional.mixing import BatchMix, paste_box, random_cutmix_box
from lt_lightning.schedules import training_horizon

FOREGROUND_HINT = (
    "set data.init_args.rebalancing_sampler: inverse_power (CMO's foreground sampler; sampler_alpha 1 is class-"
    "balanced), so training batches are (x, y, x_fg, y_fg)"
)


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


class CMO(Callback):
    """Paste one CutMix box of the foreground stream into each training batch with probability ``prob``.

    Args:
        prob: probability that a batch is mixed (the reference's ``mixup_prob``, 0.5), in [0, 1].
        start_data_aug: mixing starts after this 0-indexed epoch (3).
        end_data_aug: mixing stops this many epochs before the end of the schedule (3).
        seed: base seed of the boxes (the same on every rank).
    """

    def __init__(self, prob: float = 0.5, start_data_aug: int = 3, end_data_aug: int = 3, seed: int = 0) -> None:
        if isinstance(prob, bool) or not isinstance(prob, int | float) or not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be a number in [0, 1] (the chance a batch is mixed), got {prob!r}")
        self.prob = float(prob)
        self.start_data_aug = _check_int("start_data_aug", start_data_aug)
        self.end_data_aug = _check_int("end_data_aug", end_data_aug)
        self.seed = _check_int("seed", seed)
        self.mixed_batches = 0

    def active(self, epoch: int, horizon: int) -> bool:
        """Whether a 0-indexed epoch is inside the mixing window ``start_data_aug < epoch < horizon - end_data_aug``."""
        return self.start_data_aug < epoch < horizon - self.end_data_aug

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not callable(getattr(pl_module, "criterion_on", None)):
            raise TypeError(
                f"CMO trains on two targets through the module's criterion_on(logits, target) (LongTailClassifier's "
                f"two-target loss); {type(pl_module).__name__} has none. Subclass LongTailClassifier, or compute "
                "lam * L(z, y) + (1 - lam) * L(z, pl_module.batch_mix.second_target) in your criterion_on"
            )
        if hasattr(pl_module, "rb_branch"):
            raise TypeError(
                "CMO cannot be combined with BBN or DBN-Mix: both read the second stream of the batch (as their "
                "second branch's input, CMO as foregrounds); use CMO with a single-stream method (CE, CE-DRW, "
                "LDAM-DRW, ...)"
            )
        datamodule = trainer.datamodule
        if datamodule is not None and getattr(datamodule, "rebalancing_sampler", "unknown") is None:
            raise ValueError(f"CMO needs the foreground stream: {FOREGROUND_HINT}")

    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        pl_module.batch_mix = None
        horizon = max(training_horizon(trainer) or 1, 1)
        if not self.active(trainer.current_epoch, horizon):
            return
        if not isinstance(batch, list | tuple) or len(batch) < 4:
            got = f"{len(batch)} elements" if isinstance(batch, list | tuple) else type(batch).__name__
            raise ValueError(
                f"CMO expects training batches (x, y, x_fg, y_fg), got a batch of {got}: {FOREGROUND_HINT}"
            )
        x, _, x_fg, y_fg = batch[:4]
        # The reference draws r ~ U(0, 1), then lambda and the box; one generator per step, without the rank.
        # One draw per micro-batch: with gradient accumulation the global step repeats, the micro-batch does not.
        accumulate = max(int(trainer.accumulate_grad_batches), 1)
        micro_step = trainer.global_step * accumulate + batch_idx % accumulate
        generator = torch.Generator().manual_seed(self._step_seed(micro_step))
        if float(torch.rand((), generator=generator, dtype=torch.float64)) >= self.prob:
            return
        box, lam = random_cutmix_box(x.shape[-2], x.shape[-1], generator)
        paste_box(x, x_fg, box)
        pl_module.batch_mix = BatchMix(second_target=y_fg, lam=lam)
        self.mixed_batches += 1

    def _step_seed(self, step: int) -> int:
        return int(np.random.SeedSequence([self.seed, step]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        pl_module.batch_mix = None

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        pl_module.batch_mix = None
