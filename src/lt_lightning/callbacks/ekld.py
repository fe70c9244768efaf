"""``ExpectedKLDivergence``: how invariant a classifier is to a nuisance transform, class by class (GIT eKLD).

For every class ``c`` of a held-out split, ``images_per_class`` images (cycled when the class has fewer) each get
``transforms_per_image`` independent nuisance draws, and

    eKLD(c) = mean over the pairs of  KL( p(. | x) || p(. | T(x)) ),   p = softmax(model(preprocess(.)))

with the SAME image ``x`` on both sides (the released GIT helper pairs different images; see
:mod:`lt_lightning.functional.ekld`). The consistency (argmax agreement rate) comes with it. Defaults follow the
reference: 40 images x 100 transforms per class.

Contract with the LightningModule: ``predict_logits(x)`` if it has one, else ``forward(x)``, returns ``(N, C)``
logits. Held-out images come from the ``dataset`` argument, else from ``trainer.datamodule.invariance_set(stage)``
(:class:`~lt_lightning.data.LongTailDataModule` provides it); they must be raw images (uint8 0..255 or float in
[0, 1], ``(C, H, W)``, one shape), since the nuisance acts on pixels (the background transform looks for 0 pixels);
``preprocess`` (default: the datamodule's ``eval_transform``) normalises them after the transform, batched.

When it runs: after training (``at_fit_end``, full sample), at test (``at_test``, on the test split's images) and
every ``every_n_epochs`` training epochs with the cheaper ``epoch_images_per_class`` x
``epoch_transforms_per_image``. The images and the transform draws are seeded (``seed``) and the same at every
run, so values are comparable across epochs and checkpoints. Under ``fast_dev_run`` every run uses at most 2 images
x 2 transforms per class.

Exact under DDP: every rank builds the same plan, takes every ``world_size``-th image with its draws, and the
per-class sums are all-reduced (:class:`~lt_lightning.metrics.ExpectedKLDivergenceMetric`).

Outputs: scalars ``{val,fit,test}/ekld/{mean, many, medium, few, consistency, class_<name>}`` (``val`` = every N
epochs, ``fit`` = after training), ``ekld_{fit,test}.csv`` and a scatter ``ekld_{fit,test}.png`` of eKLD against
training class size (log scale) in the run directory, the figure on TensorBoard / W&B when attached, and
``ekld_history.csv`` (one row per class per periodic run). ``results[tag]`` keeps the last rows in Python.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lt_lightning.callbacks.per_class import class_info
from lt_lightning.callbacks.plotting import append_csv_rows, ekld_scatter_figure, save_figure, write_ekld_csv
from lt_lightning.data.nuisance import NUISANCES, Nuisance, create_nuisance
from lt_lightning.functional.ekld import per_class_selection
from lt_lightning.functional.metrics import shot_groups
from lt_lightning.metrics import ExpectedKLDivergenceMetric

__all__ = ["ExpectedKLDivergence"]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class _Plan:
    """The seeded sample of one run: slot images (CPU), their classes and one parameter row per pair."""

    images: Tensor  # (S, C, H, W), raw pixels
    classes: Tensor  # (S,)
    params: Tensor  # (S * transforms, ...): pair p = slot * transforms + k
    transforms: int


class ExpectedKLDivergence(Callback):
    """Per-class eKLD and consistency of any classifier under a nuisance transform, on held-out images.

    Args:
        nuisance: ``rotation``, ``background``, ``dilation`` or a :class:`~lt_lightning.data.nuisance.Nuisance`;
            default: the datamodule's ``nuisance``.
        nuisance_kwargs: options of a nuisance given by name (e.g. ``{"low": -30, "high": 30}``).
        images_per_class: held-out images per class after fit and at test (40, as GIT).
        transforms_per_image: nuisance draws per image after fit and at test (100, as GIT).
        every_n_epochs: also measure after every N-th training epoch (0: never).
        epoch_images_per_class: images per class of the periodic runs (cheaper).
        epoch_transforms_per_image: draws per image of the periodic runs.
        at_fit_end: measure once after training.
        at_test: measure during ``trainer.test`` on the test split's held-out images.
        dataset: held-out images for every stage (items ``(raw image, label)``), instead of the datamodule's.
        preprocess: applied to batches after the nuisance (default: the datamodule's ``eval_transform``, else none).
        class_counts: training images per class (groups, scatter); default: from the datamodule or the module.
        class_names: names for the CSV and the per-class scalars; default: datamodule / module, else indices.
        batch_size: images per forward pass.
        seed: seed of the image selection and of the transform draws.
        many_threshold: classes with more than this many training images are ``many`` (100).
        few_threshold: classes with fewer than this many training images are ``few`` (20).
        log_per_class: log one scalar per class as well.
        output_dir: where CSV and plots go; default: the trainer's log directory.

    Example:
        >>> cb = ExpectedKLDivergence("rotation", images_per_class=4, transforms_per_image=8)
        >>> cb.nuisance.high, cb.images_per_class * cb.transforms_per_image
        (180.0, 32)
    """

    def __init__(
        self,
        nuisance: str | Nuisance | None = None,
        nuisance_kwargs: dict[str, Any] | None = None,
        images_per_class: int = 40,
        transforms_per_image: int = 100,
        every_n_epochs: int = 0,
        epoch_images_per_class: int = 10,
        epoch_transforms_per_image: int = 10,
        at_fit_end: bool = True,
        at_test: bool = True,
        dataset: Any = None,
        preprocess: Callable[[Tensor], Tensor] | None = None,
        class_counts: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        batch_size: int = 256,
        seed: int = 0,
        many_threshold: int = 100,
        few_threshold: int = 20,
        log_per_class: bool = True,
        output_dir: str | Path | None = None,
    ) -> None:
        if isinstance(nuisance, str):
            if nuisance not in NUISANCES:
                raise ValueError(f"nuisance must be one of {sorted(NUISANCES)} or a Nuisance, got {nuisance!r}")
            nuisance = create_nuisance(nuisance, **(nuisance_kwargs or {}))
        elif nuisance_kwargs:
            raise ValueError(f"nuisance_kwargs needs a nuisance given by name, got nuisance={nuisance!r}")
        elif nuisance is not None and not isinstance(nuisance, Nuisance):
            raise TypeError(f"nuisance must be a name, a Nuisance or None, got {type(nuisance).__name__}")
        self.nuisance: Nuisance | None = nuisance
        self.images_per_class = _check_int("images_per_class", images_per_class, 1)
        self.transforms_per_image = _check_int("transforms_per_image", transforms_per_image, 1)
        self.every_n_epochs = _check_int("every_n_epochs", every_n_epochs, 0)
        self.epoch_images_per_class = _check_int("epoch_images_per_class", epoch_images_per_class, 1)
        self.epoch_transforms_per_image = _check_int("epoch_transforms_per_image", epoch_transforms_per_image, 1)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be callable, got {type(preprocess).__name__}")
        if class_counts is not None:
            class_counts = tuple(int(c) for c in class_counts)
            if not class_counts or min(class_counts) < 1:
                raise ValueError(f"class_counts must be a non-empty sequence of positive integers, got {class_counts}")
        shot_groups((1,), many_threshold, few_threshold)  # validates the thresholds with their own message
        self.at_fit_end, self.at_test = bool(at_fit_end), bool(at_test)
        self.dataset = dataset
        self.preprocess = preprocess
        self.class_counts = class_counts
        self.class_names = tuple(map(str, class_names)) if class_names is not None else None
        self.many_threshold, self.few_threshold = many_threshold, few_threshold
        self.log_per_class = log_per_class
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.results: dict[str, list[dict]] = {}
        self._plans: dict[tuple[str, int, int], _Plan] = {}

    # ------------------------------------------------------------------ set-up
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        self._plans.clear()  # a new fit / test call may bring another datamodule: never reuse its images
        if self.nuisance is None:
            self.nuisance = getattr(dm, "nuisance", None)
            if self.nuisance is None:
                raise ValueError(
                    "ExpectedKLDivergence needs a nuisance transform: pass nuisance='rotation' (or 'background', "
                    "'dilation', a Nuisance), or use a datamodule built with nuisance=..."
                )
        self.class_counts, self.class_names = class_info(
            "ExpectedKLDivergence", self.class_counts, self.class_names, dm, pl_module
        )
        if self.dataset is None and not callable(getattr(dm, "invariance_set", None)):
            raise ValueError(
                "ExpectedKLDivergence needs held-out images: pass dataset=... (items (raw image, label)), or use a "
                "datamodule with an invariance_set(stage) method such as LongTailDataModule"
            )

    # ------------------------------------------------------------------ hooks
    @override
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            rows, scalars = self.measure(
                trainer, pl_module, "fit", self.epoch_images_per_class, self.epoch_transforms_per_image, prefix="val"
            )
            pl_module.log_dict(scalars, sync_dist=False)  # identical on every rank: the sums are already reduced
            self._append_history(trainer, rows)

    @override
    def on_train_end(self, trainer, pl_module) -> None:
        # on_train_end, not on_fit_end: the strategy is still set up (the model on its device, the process group up).
        if self.at_fit_end:
            rows, scalars = self.measure(
                trainer, pl_module, "fit", self.images_per_class, self.transforms_per_image, prefix="fit"
            )
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=trainer.global_step)
            self._report("fit", trainer, rows, scalars)

    @override
    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if self.at_test:
            rows, scalars = self.measure(
                trainer, pl_module, "test", self.images_per_class, self.transforms_per_image, prefix="test"
            )
            pl_module.log_dict(scalars, sync_dist=False)
            self._report("test", trainer, rows, scalars)

    # ------------------------------------------------------------------ measuring
    def measure(
        self, trainer, pl_module, stage: str, images_per_class: int, transforms_per_image: int, prefix: str
    ) -> tuple[list[dict], dict[str, float]]:
        """Measure now; returns one row per class and the scalars to log under ``{prefix}/ekld/``.

        Every rank must call it (the sums are all-reduced).
        """
        if trainer.fast_dev_run:  # a smoke test of the whole path, like Lightning's own batch limits
            images_per_class, transforms_per_image = min(images_per_class, 2), min(transforms_per_image, 2)
        plan = self._plan(trainer, stage, images_per_class, transforms_per_image)
        metric = ExpectedKLDivergenceMetric(
            len(self.class_counts), self.class_counts, self.many_threshold, self.few_threshold
        ).to(pl_module.device)
        slots = torch.arange(trainer.global_rank, len(plan.classes), trainer.world_size)
        # Per-module modes, restored exactly: a user may keep some submodules in eval (frozen BatchNorm) on purpose.
        modes = [(module, module.training) for module in pl_module.modules()]
        pl_module.eval()
        try:
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                self._accumulate(metric, pl_module, plan, slots, self._preprocess(trainer))
        finally:
            for module, training in modes:
                module.training = training
        values = metric.compute()
        rows = self._rows(values)
        self.results[prefix] = rows
        return rows, self._scalars(values, prefix)

    def _accumulate(self, metric, pl_module, plan: _Plan, slots: Tensor, preprocess: Callable) -> None:
        device = pl_module.device
        predict = getattr(pl_module, "predict_logits", pl_module)

        def logits(images: Tensor) -> Tensor:
            out = predict(preprocess(images))
            if not isinstance(out, Tensor) or out.ndim != 2:
                raise TypeError(f"the model must return (N, C) logits, got {getattr(out, 'shape', type(out))}")
            return out.float()

        original = torch.cat([logits(plan.images[chunk].to(device)) for chunk in slots.split(self.batch_size)])
        t = plan.transforms
        local = torch.arange(len(slots)).repeat_interleave(t)  # pair -> position in this rank's slots
        pair = slots[local] * t + torch.arange(t).repeat(len(slots))  # pair -> global index into plan.params
        for chunk in torch.arange(len(local)).split(self.batch_size):
            slot = slots[local[chunk]]
            transformed = self.nuisance.apply(plan.images[slot].to(device), plan.params[pair[chunk]])
            metric.update(original[local[chunk].to(device)], logits(transformed), plan.classes[slot].to(device))

    def _plan(self, trainer, stage: str, images_per_class: int, transforms_per_image: int) -> _Plan:
        key = (stage, images_per_class, transforms_per_image)
        if key not in self._plans:
            dataset = self.dataset if self.dataset is not None else trainer.datamodule.invariance_set(stage)
            targets = _targets(dataset)
            generator = torch.Generator().manual_seed(self.seed)
            indices, classes = per_class_selection(targets, len(self.class_counts), images_per_class, generator)
            missing = sorted(set(range(len(self.class_counts))) - set(classes.tolist()))
            if missing:
                rank_zero_warn(
                    f"ExpectedKLDivergence: the held-out images ({stage}) have no image of class(es) "
                    f"{[self.class_names[c] for c in missing]}; their eKLD is NaN and they are left out of the means"
                )
            images = _load_images(dataset, indices)
            params = self.nuisance.sample_params(generator, len(indices) * transforms_per_image)
            self._plans[key] = _Plan(images, classes, params, transforms_per_image)
        return self._plans[key]

    def _preprocess(self, trainer) -> Callable[[Tensor], Tensor]:
        if self.preprocess is not None:
            return self.preprocess
        transform = getattr(trainer.datamodule, "eval_transform", None) if self.dataset is None else None
        return transform if transform is not None else (lambda x: x)

    # ------------------------------------------------------------------ reporting
    def _rows(self, values: dict[str, Tensor]) -> list[dict]:
        groups = shot_groups(self.class_counts, self.many_threshold, self.few_threshold)
        ekld, consistency, count = (values[k].tolist() for k in ("ekld", "consistency", "count"))
        return [
            {
                "class": c,
                "name": self.class_names[c],
                "train_count": self.class_counts[c],
                "shot": groups[c],
                "pairs": int(count[c]),
                "ekld": ekld[c],
                "consistency": consistency[c],
            }
            for c in range(len(self.class_counts))
        ]

    def _scalars(self, values: dict[str, Tensor], prefix: str) -> dict[str, float]:
        scalars = {
            f"{prefix}/ekld/mean": float(values["mean_ekld"]),
            f"{prefix}/ekld/consistency": float(values["mean_consistency"]),
        } | {f"{prefix}/ekld/{g}": float(values[f"ekld_{g}"]) for g in ("many", "medium", "few")}
        if self.log_per_class:
            for name, value in zip(self.class_names, values["ekld"].tolist(), strict=True):
                scalars[f"{prefix}/ekld/class_{name}"] = value
        return scalars

    def _report(self, tag: str, trainer, rows: list[dict], scalars: dict[str, float]) -> None:
        out_dir = self._out_dir(trainer)  # on every rank: it may broadcast
        if not trainer.is_global_zero:
            return
        write_ekld_csv(out_dir / f"ekld_{tag}.csv", rows)
        summary = ", ".join(
            f"{k.rsplit('/', 1)[1]} {'n/a' if math.isnan(v) else f'{v:.4f}'}"
            for k, v in scalars.items()
            if "/class_" not in k
        )
        rank_zero_info(f"eKLD under {type(self.nuisance).__name__} ({tag}): {summary}")
        fig = ekld_scatter_figure(rows, f"eKLD per class ({tag})")
        save_figure(trainer, fig, out_dir / f"ekld_{tag}.png", f"{tag}/ekld_scatter")

    def _append_history(self, trainer, rows: list[dict]) -> None:
        out_dir = self._out_dir(trainer)
        if not trainer.is_global_zero:
            return
        header = ["epoch", "class", "name", "train_count", "pairs", "ekld", "consistency"]
        append_csv_rows(
            out_dir / "ekld_history.csv",
            header,
            (
                [trainer.current_epoch, r["class"], r["name"], r["train_count"], r["pairs"]]
                + ["" if math.isnan(r[k]) else f"{r[k]:.6g}" for k in ("ekld", "consistency")]
                for r in rows
            ),
        )

    def _out_dir(self, trainer) -> Path:
        """The report directory; call it on EVERY rank (``trainer.log_dir`` is a broadcast under DDP)."""
        return self.output_dir or Path(trainer.log_dir or trainer.default_root_dir)


def _targets(dataset: Any) -> Tensor:
    targets = getattr(dataset, "targets", None)
    if targets is None:  # a generic dataset: read the labels (held-out splits are small)
        targets = [int(dataset[i][1]) for i in range(len(dataset))]
    return torch.as_tensor(np.asarray(targets), dtype=torch.long)


def _load_images(dataset: Any, indices: Tensor) -> Tensor:
    """The selected images stacked ``(S, C, H, W)``; each distinct image is read once."""
    unique, inverse = torch.unique(indices, return_inverse=True)
    images = []
    for i in unique.tolist():
        image = dataset[i][0]
        raw = isinstance(image, Tensor) and (image.dtype == torch.uint8 or image.is_floating_point())
        if not raw or image.ndim != 3:
            raise ValueError(
                "ExpectedKLDivergence needs raw (C, H, W) uint8 or float image tensors from the held-out dataset; "
                f"item {i} is {type(image).__name__} with shape {tuple(getattr(image, 'shape', ()))} and dtype "
                f"{getattr(image, 'dtype', None)}"
            )
        if images and image.shape != images[0].shape:
            raise ValueError(
                f"held-out images must all have one shape to be batched, got {tuple(images[0].shape)} and "
                f"{tuple(image.shape)} (item {i}); resize them (LongTailDataModule: image_size=...)"
            )
        images.append(image)
    return torch.stack(images)[inverse]
