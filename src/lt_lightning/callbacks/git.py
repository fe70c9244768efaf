"""``GenerativeInvarianceTransfer`` (GIT, Zhou et al., ICLR 2022): augment training batches with generated variants.

A nuisance generator ``G`` (a learned MUNIT from :class:`~lt_lightning.methods.NuisanceMUNIT`, the true transform as
an :class:`~lt_lightning.generators.OracleGenerator`, or any callable ``Tensor -> Tensor`` on [0, 1] images) is
trained class-agnostically on the whole long-tailed set, so the invariances it learns from head classes reach the
tail. From ``start_epoch`` on, the last ``floor(fraction * B)`` slots of every training batch are replaced IN PLACE,
before the training step, by ``normalise(G(unnormalise(x_slot)))`` with a fresh random style each; labels are kept
(the official ``train_baselines.py:420-433``). Because the batch itself changes, every method composes: CE, DRS,
LDAM-DRW, BBN (both streams), SAM (both passes see the same batch), ABSGD. Validation and test are never touched.

Class gate (the reference's ``--weighted_gen``): a slot of class ``c`` is replaced with probability ``q_c``:

- ``none``: ``q_c = 1`` (the shipped default of the reference);
- ``hard``: ``q_c = 1[n_c < K]`` (the paper's Algorithm 1);
- ``linear``: ``q_c = clip((K - n_c) / (K - n_min), 0, 1)`` (the reference code; ``K <= n_min`` gets a warning that
  nothing is augmented instead of the reference's division by zero).

Deliberate deviation: the reference generates from a second, independently drawn batch of the same sampler; here
the sources are the batch's own last slots. Under any sampler those are i.i.d. draws of that sampler too, so the
real part, the generated part and the gate's fall-back keep the reference's distributions, without a second loader
(which would hide the loader's sampler from ``DeferredResampling``) and without generating a full batch to keep
half of it.

Default start: one epoch after an attached ``DeferredResampling`` / ``DeferredReweighting`` switch (the reference
starts at ``epoch > E1`` while DRS starts at ``epoch >= E1``); 0 when neither is attached. Draws come from a
generator seeded by ``(seed, global_step, rank)``: a resumed run replays the same draws, and DDP ranks draw
independently.

Example:
    >>> import torch
    >>> git = GenerativeInvarianceTransfer("rotation", fraction=0.5, mean=[0.5], std=[0.5], start_epoch=0)
    >>> x, y = torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    >>> int(git.augment([x, y], class_probability=None, seed=1))
    2
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from typing_extensions import override

from lt_lightning.callbacks.deferred import DeferredResampling, DeferredReweighting
from lt_lightning.callbacks.preprocessing import cached_on_device, datamodule_normalisation
from lt_lightning.data.nuisance import NUISANCES, RotationNuisance
from lt_lightning.generators.oracle import OracleGenerator

GATES = ("none", "hard", "linear")
STREAMS = ("all", "first")


def class_gate_probabilities(
    class_counts: Sequence[int], gate: Literal["none", "hard", "linear"], threshold: int | None
) -> np.ndarray:
    """Per-class replacement probability ``q_c`` of a class gate (see the module docstring).

    Example:
        >>> class_gate_probabilities([5000, 1000, 500, 100, 50], "linear", 500).round(3).tolist()
        [0.0, 0.0, 0.0, 0.889, 1.0]
        >>> class_gate_probabilities([5000, 1000, 500, 100, 50], "hard", 500).tolist()
        [0.0, 0.0, 0.0, 1.0, 1.0]
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    if gate == "none":
        return np.ones_like(counts)
    if gate == "hard":
        return (counts < threshold).astype(np.float64)
    n_min = counts.min()
    if threshold <= n_min:
        return np.zeros_like(counts)  # the reference divides by K - n_min = 0 here, or gets all-zero probabilities
    return np.clip((threshold - counts) / (threshold - n_min), 0.0, 1.0)


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for one (seed, global step, rank): independent streams, replayed exactly on resume."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint64)[0] >> np.uint64(1))


class GenerativeInvarianceTransfer(Callback):
    """Replace a fraction of each training batch by generated variants of its own samples (labels kept).

    Args:
        generator: a nuisance name (``rotation``, ``background``, ``dilation``: the oracle), a path to a generator
            file (``generator.pt`` exported by ``NuisanceMUNIT``, or its Lightning checkpoint), or any module /
            callable mapping float ``(B, C, H, W)`` images in [0, 1] to the same shape (called with
            ``generator=<torch.Generator>`` when it accepts that keyword, to seed its draws).
        fraction: share of each batch replaced, ``floor(fraction * B)`` slots (the last ones), in [0, 1].
        start_epoch: first 0-indexed epoch with augmentation; None: one epoch after an attached deferred
            re-sampling / re-weighting switch, else 0.
        class_gate: ``none``, ``hard`` or ``linear`` (see the module docstring).
        class_size_threshold: K of the gate (needed by ``hard`` and ``linear``).
        streams: ``all`` augments every ``(x, y)`` pair of a batch (BBN's two streams), ``first`` only the first.
        mean: per-channel mean the inputs were normalised with (default: the datamodule's ``preprocessing``).
        std: per-channel std likewise.
        nuisance_kwargs: keyword arguments of an oracle nuisance given by name.
        seed: base seed of the draws.
    """

    def __init__(
        self,
        generator: str | Callable[..., Tensor],
        fraction: float = 0.5,
        start_epoch: int | None = None,
        class_gate: Literal["none", "hard", "linear"] = "none",
        class_size_threshold: int | None = None,
        streams: Literal["all", "first"] = "all",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        nuisance_kwargs: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}")
        if start_epoch is not None and (
            isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 0
        ):
            raise ValueError(f"start_epoch must be None or an integer >= 0, got {start_epoch!r}")
        if class_gate not in GATES:
            raise ValueError(f"class_gate must be one of {list(GATES)}, got {class_gate!r}")
        if class_gate != "none" and class_size_threshold is None:
            raise ValueError(f"class_gate={class_gate!r} needs class_size_threshold (K: classes below K are augmented)")
        if class_size_threshold is not None and (
            isinstance(class_size_threshold, bool)
            or not isinstance(class_size_threshold, int)
            or class_size_threshold < 1
        ):
            raise ValueError(f"class_size_threshold must be an integer >= 1, got {class_size_threshold!r}")
        if streams not in STREAMS:
            raise ValueError(f"streams must be one of {list(STREAMS)}, got {streams!r}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither (then the datamodule's preprocessing is used)")
        if std is not None and min(std) <= 0:
            raise ValueError(f"std must be positive, got {list(std)}")
        self.generator_spec = generator if isinstance(generator, str) else type(generator).__name__
        self.generator = _build_generator(generator, nuisance_kwargs)
        self.fraction = float(fraction)
        self._start_epoch_arg = start_epoch
        self.start_epoch = start_epoch
        self.class_gate = class_gate
        self.class_size_threshold = class_size_threshold
        self.streams = streams
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]
        self.seed = int(seed)
        self._class_probability: Tensor | None = None
        self._checked = False
        self._warned_empty = False
        self._on_device: dict = {}  # constants copied to the device once (cached_on_device)

    # ------------------------------------------------------------------ set-up
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._on_device = {}
        if self.mean is None:
            need = "GenerativeInvarianceTransfer needs the inputs' normalisation"
            self.mean, self.std = datamodule_normalisation(trainer, need)
        if isinstance(self.generator, nn.Module):
            self.generator.to(pl_module.device).eval().requires_grad_(False)
        _check_generator_geometry(self.generator, len(self.mean), getattr(trainer.datamodule, "preprocessing", None))
        _warn_if_oracle_cannot_compose(self.generator, trainer.datamodule)
        counts = getattr(trainer.datamodule, "class_counts", None) or getattr(pl_module, "class_counts", None)
        if self.class_gate != "none":
            if counts is None:
                raise ValueError("a class gate needs class_counts on the datamodule or the module")
            q = class_gate_probabilities(counts, self.class_gate, self.class_size_threshold)
            if not q.any():
                rank_zero_warn(
                    f"GenerativeInvarianceTransfer: class_size_threshold={self.class_size_threshold} is at or below "
                    f"the smallest class ({min(counts)} images): nothing is augmented"
                )
            elif self.class_gate == "hard" and q.all():
                rank_zero_warn(
                    f"GenerativeInvarianceTransfer: class_size_threshold={self.class_size_threshold} is above the "
                    f"largest class ({max(counts)} images): every class is augmented"
                )
            self._class_probability = torch.as_tensor(q, dtype=torch.float32, device=pl_module.device)

    @override
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resolved here, not at on_train_start: by now every callback's on_train_start has run, so the deferred
        # switches are final (a resumed run re-resolves them against the checkpoint's horizon there).
        self.start_epoch = self._start_epoch_arg if self._start_epoch_arg is not None else _after_switch(trainer)

    # ------------------------------------------------------------------ the augmentation
    @override
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        active = trainer.current_epoch >= self.start_epoch
        seed = step_seed(self.seed, trainer.global_step, trainer.global_rank)
        generated = self.augment(batch, self._class_probability, seed) if active else 0
        pl_module.log("git/active", float(active), on_step=False, on_epoch=True)
        pl_module.log("git/generated", generated, on_step=False, on_epoch=True, reduce_fx="sum")

    def augment(self, batch: Any, class_probability: Tensor | None, seed: int) -> Tensor | int:
        """Replace the last ``floor(fraction * B)`` slots of each ``(x, y)`` pair of ``batch`` in place (gated by
        ``class_probability[y]`` when given); returns how many samples were replaced."""
        if not isinstance(batch, list | tuple) or len(batch) < 2 or not isinstance(batch[0], Tensor):
            raise TypeError(
                "GenerativeInvarianceTransfer needs training batches (x, y, ...) of tensors, got "
                f"{type(batch).__name__}"
            )
        pairs = range(0, len(batch) - 1, 2) if self.streams == "all" else range(1)
        device = batch[0].device
        rng = torch.Generator(device=device).manual_seed(seed)
        total: Tensor | int = 0
        for i in pairs:
            x, y = batch[i], batch[i + 1]
            if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.ndim != 4 or len(x) != len(y):
                continue
            k = math.floor(self.fraction * len(x))
            if k == 0:
                if not self._warned_empty and self.fraction > 0:
                    rank_zero_warn(
                        f"GenerativeInvarianceTransfer: floor({self.fraction} * {len(x)}) = 0 samples per batch: "
                        "nothing is generated; raise fraction or the batch size"
                    )
                    self._warned_empty = True
                continue
            slots = torch.arange(len(x) - k, len(x), device=device)
            if class_probability is not None:
                gate = (  # the callback's own gate is copied once; one passed by a direct caller as given
                    cached_on_device(self._on_device, "class_probability", class_probability, device)
                    if class_probability is self._class_probability
                    else class_probability.to(device)
                )
                keep = torch.rand(k, generator=rng, device=device) < gate[y[slots]]
                slots = slots[keep]
            fresh = self._generate(x[slots], rng)
            x[slots] = fresh.to(x.dtype)
            total = total + len(slots)
        return total

    def _generate(self, x: Tensor, rng: torch.Generator) -> Tensor:
        mean = cached_on_device(self._on_device, "mean", self.mean, x.device).view(1, -1, 1, 1)
        std = cached_on_device(self._on_device, "std", self.std, x.device).view(1, -1, 1, 1)
        if x.shape[1] != mean.shape[1]:
            raise ValueError(f"GenerativeInvarianceTransfer: batch has {x.shape[1]} channels, mean/std {mean.shape[1]}")
        with torch.no_grad():
            raw = (x.float() * std + mean).clamp(0, 1)
            out = _call(self.generator, raw, rng)
            if not isinstance(out, Tensor) or out.shape != raw.shape:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise RuntimeError(
                    f"the GIT generator must return images of the input's shape {tuple(raw.shape)}, got {shape}"
                )
            if not self._checked:  # once: a per-batch finiteness check would cost a device sync every step
                if not out.is_floating_point() or not bool(torch.isfinite(out).all()):
                    raise RuntimeError("the GIT generator returned non-finite or non-float images")
                self._checked = True
            return (out.float() - mean) / std

    # ------------------------------------------------------------------ checkpointing
    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator_spec,
            "fraction": self.fraction,
            "start_epoch": self.start_epoch,
            "class_gate": self.class_gate,
            "class_size_threshold": self.class_size_threshold,
            "seed": self.seed,
        }


def _build_generator(spec: Any, nuisance_kwargs: dict[str, Any] | None) -> Callable[..., Tensor]:
    if isinstance(spec, str):
        if spec in NUISANCES:
            return OracleGenerator(spec, nuisance_kwargs)
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(
                f"generator must be a nuisance name {sorted(NUISANCES)}, an existing generator file, or a callable; "
                f"got {spec!r} (no such file)"
            )
        if nuisance_kwargs:
            raise ValueError("nuisance_kwargs only apply to an oracle generator given by nuisance name")
        from lt_lightning.generators import load_generator

        return load_generator(path)
    if nuisance_kwargs:
        raise ValueError("nuisance_kwargs only apply to an oracle generator given by nuisance name")
    if not callable(spec):
        raise TypeError(f"generator must be a name, a path or a callable, got {type(spec).__name__}")
    return spec


def _call(generator: Callable[..., Tensor], images: Tensor, rng: torch.Generator) -> Tensor:
    try:
        return generator(images, generator=rng)
    except TypeError as err:
        if "generator" not in str(err):
            raise
        return generator(images)  # a plain callable without a seed keyword


def _check_generator_geometry(generator: Any, channels: int, preprocessing: dict | None) -> None:
    """A learned generator for other images than the data's: name both (channels, image size)."""
    gen_chans = getattr(generator, "in_chans", None)
    if gen_chans is not None and gen_chans != channels:
        raise ValueError(f"the GIT generator takes {gen_chans}-channel images but the data has {channels} channels")
    gen_size = getattr(generator, "image_size", None)
    data_size = (preprocessing or {}).get("image_size")
    if gen_size is not None and data_size is not None and gen_size != data_size:
        raise ValueError(
            f"the GIT generator was built for {gen_size}x{gen_size} images but the data is {data_size}x{data_size}"
        )


def _warn_if_oracle_cannot_compose(generator: Any, datamodule: Any) -> None:
    """Background and dilation are not closed under composition: on images that already carry the nuisance
    (``nuisance_mode: static``) the oracle changes nothing (background) or compounds it (dilation)."""
    if not isinstance(generator, OracleGenerator) or isinstance(generator.nuisance, RotationNuisance):
        return
    hparams = getattr(datamodule, "hparams", {}) or {}
    if getattr(datamodule, "nuisance", None) is not None and hparams.get("nuisance_mode") == "static":
        rank_zero_warn(
            f"GenerativeInvarianceTransfer: the {generator.extra_repr()} oracle on images that already carry the "
            "nuisance (nuisance_mode: static) re-draws nothing for a background and compounds a dilation; use "
            "nuisance_mode: oracle (clean images, fresh draws), as the reference oracle does"
        )


def _after_switch(trainer: L.Trainer) -> int:
    """One epoch after the first deferred re-sampling / re-weighting switch among the callbacks, else 0."""
    switches = []
    for callback in trainer.callbacks:
        if isinstance(callback, DeferredResampling) and callback.start_epoch is not None:
            switches.append(callback.start_epoch)
        elif isinstance(callback, DeferredReweighting):
            switches.append(callback.resolved_stages(trainer)[0][0])
    return min(switches) + 1 if switches else 0
