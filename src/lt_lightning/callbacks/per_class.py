"""``PerClassAccuracy``: per-class, many / medium / few, balanced and worst-class accuracy for ANY classifier.

Contract with the LightningModule (nothing else of this package is needed):

- the validation / test batch is a tuple or list ``(inputs, targets, ...)``; and
- ``validation_step`` / ``test_step`` returns the logits ``(N, C)`` (a tensor, or a dict with ``"logits"`` and
  optionally ``"target"``). If the step returns nothing, its scalar loss, or a dict without ``"logits"``, the
  callback calls ``pl_module(inputs)`` itself under ``torch.no_grad()`` (one more forward per batch).

Class counts (for the shot groups and the plot) come from the ``class_counts`` argument, else from
``trainer.datamodule.class_counts``, else from ``pl_module.class_counts``.

Exact under DDP: the counts are summed across ranks, and the padded duplicates that Lightning's
``DistributedSampler`` adds to an evaluation set whose size does not divide by the world size are dropped (each
sample is identified by its dataset index, recovered from the loader's sampler).

Writes ``per_class_{stage}.csv`` (every evaluation) and ``per_class_{stage}.png`` (after fit and after test) into
the run's log directory, logs the figure to TensorBoard / Weights & Biases when such a logger is attached, logs the
scalars ``{stage}/per_class/{balanced_acc, worst_class_acc, many_acc, medium_acc, few_acc, acc_<class>}`` and
prints a compact table after the last validation of fit and after test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DistributedSampler
from typing_extensions import override

from lt_lightning.callbacks.plotting import per_class_figure, save_figure, write_per_class_csv
from lt_lightning.functional.metrics import shot_groups
from lt_lightning.metrics import PerClassAccuracyMetric

STAGES = ("validate", "test")


class PerClassAccuracy(Callback):
    """Per-class accuracy report for validation and test.

    Args:
        class_counts: training images per class; default: from the datamodule or the module.
        class_names: names for the table, CSV and plot; default: from the datamodule / module, else indices.
        many_threshold: classes with more than this many training images are ``many`` (100).
        few_threshold: classes with fewer than this many training images are ``few`` (20).
        log_per_class: also log one scalar per class (``{stage}/per_class/acc_<name>``).
        output_dir: where CSV and plots go; default: the trainer's log directory.
    """

    def __init__(
        self,
        class_counts: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        many_threshold: int = 100,
        few_threshold: int = 20,
        log_per_class: bool = True,
        output_dir: str | Path | None = None,
    ) -> None:
        if class_counts is not None:
            class_counts = tuple(int(c) for c in class_counts)
            if not class_counts or min(class_counts) < 1:
                raise ValueError(f"class_counts must be a non-empty sequence of positive integers, got {class_counts}")
        if class_names is not None and class_counts is not None and len(class_names) != len(class_counts):
            raise ValueError(f"class_names has {len(class_names)} entries but class_counts has {len(class_counts)}")
        shot_groups((1,), many_threshold, few_threshold)  # validates the thresholds with their own message
        self.class_counts = class_counts
        self.class_names = tuple(class_names) if class_names is not None else None
        self.many_threshold = many_threshold
        self.few_threshold = few_threshold
        self.log_per_class = log_per_class
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.metrics: dict[str, PerClassAccuracyMetric] = {}
        self.last_rows: dict[str, list[dict]] = {}
        self._index_cache: dict[int, list[list[int]]] = {}

    # ------------------------------------------------------------------ set-up
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.class_counts, self.class_names = class_info(
            "PerClassAccuracy", self.class_counts, self.class_names, trainer.datamodule, pl_module
        )
        for key in STAGES:
            self.metrics[key] = PerClassAccuracyMetric(
                len(self.class_counts), self.class_counts, self.many_threshold, self.few_threshold
            ).to(pl_module.device)

    # ------------------------------------------------------------------ collecting
    def _update(self, key: str, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dl_idx: int) -> None:
        logits, target = _logits_and_target(pl_module, outputs, batch)
        indices = self._batch_indices(trainer, key, batch_idx, dl_idx, len(target))
        metric = self.metrics[key]
        metric.to(logits.device)
        metric.update(logits.detach(), target, indices=indices)

    def _batch_indices(self, trainer, key: str, batch_idx: int, dl_idx: int, size: int) -> torch.Tensor | None:
        """Dataset indices of this batch when a DistributedSampler may have padded the set, else None.

        The indices come from the loader's own batch sampler (materialised once per evaluation), so any batch size or
        custom batch sampler over a ``DistributedSampler`` works.
        """
        loaders = trainer.val_dataloaders if key == "validate" else trainer.test_dataloaders
        if isinstance(loaders, Mapping):
            loaders = list(loaders.values())
        loader = loaders[dl_idx] if isinstance(loaders, list | tuple) else loaders
        batch_sampler = getattr(loader, "batch_sampler", None)
        sampler = getattr(batch_sampler, "sampler", None)
        if not isinstance(sampler, DistributedSampler) or sampler.num_replicas == 1:
            return None
        cache_key = id(batch_sampler)
        if cache_key not in self._index_cache:
            self._index_cache[cache_key] = [list(batch) for batch in batch_sampler]
        indices = self._index_cache[cache_key][batch_idx]
        if len(indices) != size:
            raise RuntimeError(
                f"PerClassAccuracy: batch {batch_idx} has {size} samples but its sampler gave {len(indices)}"
            )
        return torch.tensor(indices, dtype=torch.long)

    @override
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._update("validate", trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    @override
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update("test", trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    # ------------------------------------------------------------------ reporting
    def _finish(self, key: str, trainer, pl_module) -> list[dict]:
        metric = self.metrics[key]
        values = metric.compute()  # all ranks: the counts are reduced inside
        metric.reset()
        self._index_cache.clear()
        prefix = "val" if key == "validate" else "test"
        scalars = {
            f"{prefix}/per_class/{name}": float(values[name])
            for name in ("balanced_acc", "worst_class_acc", "many_acc", "medium_acc", "few_acc")
        }
        if self.log_per_class:
            for name, acc in zip(self.class_names, values["per_class"].tolist(), strict=True):
                scalars[f"{prefix}/per_class/acc_{name}"] = acc
        # NaN (an empty shot group, a class without support) is logged as NaN; keys are identical on every rank.
        pl_module.log_dict(scalars, sync_dist=False)
        groups = shot_groups(self.class_counts, self.many_threshold, self.few_threshold)
        support = values["support"].tolist()
        rows = [
            {
                "class": c,
                "name": self.class_names[c],
                "train_count": self.class_counts[c],
                "shot": groups[c],
                "support": int(support[c]),
                "correct": round(acc * support[c]) if not math.isnan(acc) else 0,
                "accuracy": acc,
            }
            for c, acc in enumerate(values["per_class"].tolist())
        ]
        self.last_rows[key] = rows
        self.last_summary = {k: float(values[k]) for k in ("acc", "balanced_acc", "worst_class_acc")} | {
            k: float(values[k]) for k in ("many_acc", "medium_acc", "few_acc")
        }
        out_dir = self._out_dir(trainer)  # on every rank: it may broadcast
        if trainer.is_global_zero:
            write_per_class_csv(out_dir / f"per_class_{prefix}.csv", rows)
        return rows

    @override
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._finish("validate", trainer, pl_module)

    @override
    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish("test", trainer, pl_module)
        self._report("test", trainer)

    @override
    def on_fit_end(self, trainer, pl_module) -> None:
        if "validate" in self.last_rows:
            self._report("validate", trainer)

    def _report(self, key: str, trainer) -> None:
        out_dir = self._out_dir(trainer)  # on every rank: it may broadcast
        if not trainer.is_global_zero:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        prefix = "val" if key == "validate" else "test"
        rows = self.last_rows[key]
        rank_zero_info(format_table(rows, self.last_summary, title=f"per-class accuracy ({prefix})"))
        fig = per_class_figure(rows, f"per-class {prefix} accuracy", self.many_threshold, self.few_threshold)
        save_figure(trainer, fig, out_dir / f"per_class_{prefix}.png", f"{prefix}/per_class_accuracy")

    def _out_dir(self, trainer) -> Path:
        """The report directory. Call it on EVERY rank: under DDP ``trainer.log_dir`` is a broadcast, and calling it
        from rank 0 alone hangs or crashes the run."""
        return self.output_dir or Path(trainer.log_dir or trainer.default_root_dir)


def format_table(rows: Sequence[dict], summary: dict[str, float], title: str) -> str:
    """A compact text table: one line per class (head to tail), then the summary numbers."""
    width = max(5, *(len(str(r["name"])) for r in rows))
    lines = [title, f"{'class':<{width}}  {'train':>6}  {'shot':<6}  {'test':>5}  {'acc':>6}"]
    for r in sorted(rows, key=lambda r: -r["train_count"]):
        acc = "   n/a" if math.isnan(r["accuracy"]) else f"{r['accuracy']:6.3f}"
        lines.append(f"{r['name']:<{width}}  {r['train_count']:>6}  {r['shot']:<6}  {r['support']:>5}  {acc}")
    lines.append("  ".join(f"{k}={'n/a' if math.isnan(v) else f'{v:.4f}'}" for k, v in summary.items()))
    return "\n".join(lines)


def class_info(owner: str, counts: Any, names: Any, *sources: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """``(class_counts, class_names)`` of a callback: its own when given, else the first of ``sources`` (the
    datamodule, the module) that has them; names default to ``"0", "1", ...``. One-line errors name ``owner``.

    Example:
        >>> from types import SimpleNamespace
        >>> class_info("X", None, None, SimpleNamespace(class_counts=[5, 2]))
        ((5, 2), ('0', '1'))
    """
    counts = counts or _first_attr("class_counts", *sources)
    if counts is None:
        raise ValueError(
            f"{owner} needs class counts: pass class_counts=..., or give the datamodule or the module a "
            "`class_counts` attribute (training images per class, label order)"
        )
    counts = tuple(int(c) for c in counts)
    names = names or _first_attr("class_names", *sources)
    names = tuple(map(str, names)) if names is not None else tuple(map(str, range(len(counts))))
    if len(names) != len(counts):
        raise ValueError(f"class_names has {len(names)} entries but class_counts has {len(counts)}")
    return counts, names


def _first_attr(name: str, *objects: Any) -> Any:
    for obj in objects:
        value = getattr(obj, name, None) if obj is not None else None
        if value is not None:
            return value
    return None


def _logits_and_target(pl_module, outputs: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    target = None
    if isinstance(outputs, dict):
        target = outputs.get("target")
        outputs = outputs.get("logits")
    if target is None:
        if not isinstance(batch, list | tuple) or len(batch) < 2:
            raise TypeError(
                "PerClassAccuracy expects batches (inputs, targets, ...) or a step returning "
                f"{{'logits': ..., 'target': ...}}; got a batch of type {type(batch).__name__}"
            )
        target = batch[1]
    if isinstance(outputs, torch.Tensor) and outputs.ndim < 2:
        # The step returned its loss (the commonest Lightning idiom), not logits: compute them as for ``None``.
        outputs = None
    if outputs is None:
        with torch.no_grad():
            outputs = pl_module(batch[0])
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"PerClassAccuracy expects logits as a tensor (N, C), got {type(outputs).__name__}")
    if outputs.ndim != 2 or len(outputs) != len(target):
        raise ValueError(
            f"PerClassAccuracy expects logits (N, C) for a batch of N = {len(target)} targets, got shape "
            f"{tuple(outputs.shape)}: make validation_step / test_step return the logits, a dict with 'logits', its "
            "loss, or nothing (then the callback calls the module on the inputs)"
        )
    return outputs, target
