"""``PureNoiseOversampling`` (OPeN, Zaken, Schwartz, Heyman, Wolf, "Pure Noise to the Rescue of Insufficient Data",
ICML 2022): replace training samples by pure-noise images, more often in small classes, and route them through DAR-BN.

From ``start_epoch`` on, each training sample ``i`` is replaced IN PLACE, before the training step, by a pure-noise
image with probability ``delta * (1 - n_{y_i} / n_max)`` (the head class never; its label is kept). A noise image
draws every pixel of channel ``c`` from ``N(mu_c, sigma_c)``, the dataset's per-channel statistics, clamped to
[0, 1]. The official code was never released; this follows the reproduction ``seungjaeryanlee/pure-noise``
(``replace_with_pure_noise.py:14-47``; ``delta = 1/3`` of ``default_cifar10lt.yaml:63``), with two documented
choices:

- ``noise_space="pixel"`` (default): the noise is an image in [0, 1] pixel space, then normalised with the inputs'
  mean / std like every real image, so it sits in the same space as the natural samples (what the paper describes:
  noise from the dataset's statistics). ``noise_space="normalized"`` mirrors the reproduction's quirk
  (``train.py:206`` normalises, ``:224-231`` then inserts raw [0, 1] noise next to normalised images).
- clamping to [0, 1]: the reproduction's ``sample_noise_images`` carries ``# TODO: add clipping`` at one commit;
  the paper's noise images are images, so here they are clamped.

The schedule is the paper's: ERM, then class-balanced oversampling plus noise from the same epoch (its
``oversampling_start_epoch = open_start_epoch = 160`` of 200). Attach :class:`DeferredResampling` for the sampling
part: the default ``start_epoch`` is its switch epoch, else ``round(start_fraction * horizon)`` of the schedule
horizon (:func:`~lt_lightning.schedules.training_horizon`). Without ``DeferredResampling`` the noise is added to
instance-sampled batches.

DAR-BN: with ``dar_bn=True`` (default) the callback converts the module's BatchNorm layers in ``setup``
(:func:`~lt_lightning.models.dar_bn.convert_dar_bn`, in place, state-dict compatible) and puts the batch's noise
masks in force from ``on_train_batch_start`` to ``on_train_batch_end``, so each converted layer normalises the noise
samples by their own statistics and keeps them out of the running statistics. ``noise_masks`` holds the per-stream
masks of the current batch (one per ``(x, y)`` pair; None where a stream gets no noise).

Because the batch itself changes, every method composes: CE, LDAM-DRW, BBN (both streams by default), SAM (both
passes see the one batch and the same masks), ABSGD. Draws come from a generator seeded by
``(seed, global_step, rank)``: a resumed run replays the same draws, and DDP ranks draw independently.

Example:
    >>> noise_probabilities([100, 50, 10], delta=1 / 3).round(3).tolist()
    [0.0, 0.167, 0.3]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from typing_extensions import override

from lt_lightning.callbacks.deferred import DeferredResampling
from lt_lightning.callbacks.git import STREAMS, step_seed
from lt_lightning.callbacks.preprocessing import cached_on_device, datamodule_normalisation
from lt_lightning.models.dar_bn import convert_dar_bn, has_dar_bn, reset_dar_bn_masks, set_dar_bn_masks
from lt_lightning.schedules import default_switch_epoch, training_horizon

NOISE_SPACES = ("pixel", "normalized")

__all__ = ["NOISE_SPACES", "PureNoiseOversampling", "noise_probabilities", "pure_noise"]


def noise_probabilities(class_counts: Sequence[int], delta: float) -> np.ndarray:
    """Per-class replacement probability ``delta * (1 - n_c / n_max)`` (0 for the largest class)."""
    counts = np.asarray(class_counts, dtype=np.float64)
    return delta * (1.0 - counts / counts.max())


def pure_noise(
    count: int,
    shape: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    clamp: bool = True,
) -> Tensor:
    """``count`` images of ``shape = (C, H, W)``, every pixel of channel c from ``N(mean[c], std[c])``, clamped to
    [0, 1] unless ``clamp=False``.

    Example:
        >>> pure_noise(2, (1, 4, 4), [0.5], [0.2], torch.Generator().manual_seed(0)).shape
        torch.Size([2, 1, 4, 4])
    """
    channels = shape[0]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"pure_noise: {channels}-channel images but {len(mean)} means and {len(std)} stds")
    m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    noise = torch.randn((count, *shape), generator=generator, device=device) * s + m
    return noise.clamp(0.0, 1.0) if clamp else noise


class PureNoiseOversampling(Callback):
    """OPeN: replace training samples by pure noise with probability ``delta * (1 - n_y / n_max)``; DAR-BN routing.

    Args:
        delta: δ of the paper, in [0, 1] (1/3 in the reproduction's CIFAR-10-LT config).
        start_epoch: first 0-indexed epoch with noise; None: the attached ``DeferredResampling``'s switch epoch,
            else ``round(start_fraction * horizon)``.
        start_fraction: fraction of the schedule horizon used when neither ``start_epoch`` nor a
            ``DeferredResampling`` gives the start, in (0, 1].
        noise_space: ``pixel`` (noise drawn as a [0, 1] image, then normalised like the inputs; default) or
            ``normalized`` (the reproduction: raw [0, 1] noise placed among normalised inputs).
        dar_bn: convert the module's BatchNorm layers to DAR-BN in ``setup`` and route the noise samples.
        streams: ``all`` puts noise in every ``(x, y)`` pair of a batch (BBN's two streams), ``first`` only the first.
        mean: per-channel mean of the data on the [0, 1] scale (default: the datamodule's ``preprocessing``); the
            noise's mean, and the normalisation of ``noise_space="pixel"``.
        std: per-channel standard deviation likewise.
        class_counts: per-class training counts (default: the datamodule's, else the module's).
        seed: base seed of the draws.
    """

    def __init__(
        self,
        delta: float = 1 / 3,
        start_epoch: int | None = None,
        start_fraction: float = 0.8,
        noise_space: Literal["pixel", "normalized"] = "pixel",
        dar_bn: bool = True,
        streams: Literal["all", "first"] = "all",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        class_counts: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 <= delta <= 1:
            raise ValueError(f"delta must be a number in [0, 1], got {delta!r}")
        if start_epoch is not None and (
            isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0
        ):
            raise ValueError(f"start_epoch must be None or an integer >= 0 (0-indexed), got {start_epoch!r}")
        if isinstance(start_fraction, bool) or not isinstance(start_fraction, int | float) or start_fraction <= 0:
            raise ValueError(f"start_fraction must be in (0, 1], got {start_fraction!r}")
        if start_fraction > 1:
            raise ValueError(f"start_fraction must be in (0, 1], got {start_fraction!r}")
        if noise_space not in NOISE_SPACES:
            raise ValueError(f"noise_space must be one of {list(NOISE_SPACES)}, got {noise_space!r}")
        if not isinstance(dar_bn, bool):
            raise ValueError(f"dar_bn must be True or False, got {dar_bn!r}")
        if streams not in STREAMS:
            raise ValueError(f"streams must be one of {list(STREAMS)}, got {streams!r}")
        if (mean is None) != (std is None):
            raise ValueError(
                f"give both mean and std, or neither (then the datamodule's preprocessing is used); got mean={mean!r}, "
                f"std={std!r}"
            )
        if std is not None and (len(std) != len(mean) or min(std) <= 0):
            raise ValueError(f"std must be positive, one per channel of mean={list(mean)}, got std={list(std)}")
        if class_counts is not None and (len(class_counts) == 0 or min(class_counts) < 0 or max(class_counts) < 1):
            raise ValueError(f"class_counts must be non-negative with at least one sample, got {list(class_counts)}")
        self.delta = float(delta)
        self._start_epoch_arg = self.start_epoch = start_epoch
        self.start_fraction = float(start_fraction)
        self.noise_space = noise_space
        self.dar_bn = dar_bn
        self.streams = streams
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]
        self.class_counts = None if class_counts is None else tuple(int(c) for c in class_counts)
        self.seed = int(seed)
        self.noise_masks: list[Tensor | None] | None = None
        self._probability: Tensor | None = None
        self._routing = False
        self._on_device: dict = {}  # constants copied to the device once (cached_on_device)

    # ------------------------------------------------------------------ set-up
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._on_device = {}
        if self.mean is None:
            need = "PureNoiseOversampling needs the data's per-channel mean and std (the noise's statistics)"
            self.mean, self.std = datamodule_normalisation(trainer, need)
        counts = (
            self.class_counts
            or getattr(trainer.datamodule, "class_counts", None)
            or getattr(pl_module, "class_counts", None)
        )
        if counts is None:
            raise ValueError(
                "PureNoiseOversampling needs class_counts: pass class_counts, or use a datamodule or module with them"
            )
        self._probability = torch.as_tensor(
            noise_probabilities(counts, self.delta), dtype=torch.float32, device=pl_module.device
        )
        if hasattr(pl_module, "rb_head"):
            raise TypeError(
                "PureNoiseOversampling cannot be combined with DBN-Mix: DBN-Mix forwards mixtures of the two streams, "
                "so no sample is purely natural or purely noise; use it with CE, CE-DRS, LDAM-DRW, SAM or BBN"
            )
        if self.dar_bn and getattr(trainer.datamodule, "aux_set", None) is not None:
            raise ValueError(
                "PureNoiseOversampling(dar_bn=True) cannot route Open-Sampling's joint forward (ID + auxiliary images "
                "in one batch); set dar_bn=False or drop aux_dataset"
            )
        if self.dar_bn:
            convert_dar_bn(pl_module)

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.dar_bn and not has_dar_bn(pl_module):
            raise RuntimeError(
                "PureNoiseOversampling(dar_bn=True): the module's DAR-BN layers were replaced after setup (e.g. by "
                "Trainer(sync_batchnorm=True), which DAR-BN does not support); turn that off or set dar_bn=False"
            )

    def resolve_start(self, trainer: L.Trainer) -> int:
        """``start_epoch``, else the attached ``DeferredResampling``'s switch, else a fraction of the horizon."""
        if self._start_epoch_arg is not None:
            return self._start_epoch_arg
        for callback in trainer.callbacks:
            if isinstance(callback, DeferredResampling) and callback.start_epoch is not None:
                return callback.start_epoch
        horizon = training_horizon(trainer)
        if horizon is None or horizon < 1:
            raise ValueError("PureNoiseOversampling: set start_epoch, or give the Trainer max_epochs")
        return default_switch_epoch(horizon, self.start_fraction)

    # ------------------------------------------------------------------ the replacement
    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Resolved per batch: by now every callback's epoch-start hook has run, so a deferred switch is final.
        self.start_epoch = self.resolve_start(trainer)
        active = trainer.current_epoch >= self.start_epoch
        self.noise_masks = None
        replaced: Tensor | float = 0.0
        if active:
            # One draw per micro-batch: with gradient accumulation the global step repeats, the micro-batch does not.
            accumulate = max(int(trainer.accumulate_grad_batches), 1)
            micro_step = trainer.global_step * accumulate + batch_idx % accumulate
            self.noise_masks = self.replace(batch, step_seed(self.seed, micro_step, trainer.global_rank))
            replaced = sum((m.sum(dtype=torch.float32) for m in self.noise_masks if m is not None), start=replaced)
            if self.dar_bn:
                # Only BBN forwards every stream of a paired batch; any other method forwards the first one, and a
                # second pass over it (SAM) must get the first mask again, not the next stream's.
                forwarded = self.noise_masks if hasattr(pl_module, "rb_branch") else self.noise_masks[:1]
                set_dar_bn_masks(*forwarded)
                self._routing = True
        pl_module.log("open/active", float(active), on_step=False, on_epoch=True)
        pl_module.log("open/noise", replaced, on_step=False, on_epoch=True, reduce_fx="sum")

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._stop_routing()

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop_routing()

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stop_routing()

    def _stop_routing(self) -> None:
        if self._routing:
            reset_dar_bn_masks()
            self._routing = False

    def replace(self, batch: Any, seed: int) -> list[Tensor | None]:
        """Replace samples of each ``(x, y)`` pair of ``batch`` in place by noise; returns one bool mask per pair
        (None for a pair left alone)."""
        if not isinstance(batch, list | tuple) or len(batch) < 2 or not isinstance(batch[0], Tensor):
            raise TypeError(f"PureNoiseOversampling needs training batches (x, y, ...) of tensors, got {type(batch)}")
        if self._probability is None or self.mean is None:
            raise RuntimeError("PureNoiseOversampling.replace before setup: call trainer.fit with the callback")
        device = batch[0].device
        rng = torch.Generator(device=device).manual_seed(seed)
        probability = cached_on_device(self._on_device, "probability", self._probability, device)
        masks: list[Tensor | None] = []
        for number, i in enumerate(range(0, len(batch) - 1, 2)):
            x, y = batch[i], batch[i + 1]
            if (self.streams == "first" and number > 0) or not _is_pair(x, y):
                masks.append(None)
                continue
            if x.shape[1] != len(self.mean):
                raise ValueError(f"PureNoiseOversampling: batch has {x.shape[1]} channels, mean/std {len(self.mean)}")
            mask = torch.rand(len(y), generator=rng, device=device) < probability[y]
            where = mask.nonzero().view(-1)
            if len(where):
                x[where] = self._noise_inputs(len(where), x.shape[1:], rng, device).to(x.dtype)
            masks.append(mask)
        return masks

    def _noise_inputs(self, count: int, shape: Sequence[int], rng: torch.Generator, device: torch.device) -> Tensor:
        mean = cached_on_device(self._on_device, "mean", self.mean, device)
        std = cached_on_device(self._on_device, "std", self.std, device)
        noise = pure_noise(count, shape, mean, std, rng, device)
        if self.noise_space == "normalized":
            return noise  # the reproduction's quirk: raw [0, 1] noise next to normalised images
        return (noise - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

    @property
    def noise_mask(self) -> Tensor | None:
        """The first stream's noise mask of the current batch (None before ``start_epoch``)."""
        return None if not self.noise_masks else self.noise_masks[0]


def _is_pair(x: Any, y: Any) -> bool:
    return isinstance(x, Tensor) and isinstance(y, Tensor) and x.ndim == 4 and y.ndim == 1 and len(x) == len(y)
