"""Run methods on a long-tailed split over several seeds and summarise them (mean ± std), the way the accuracy
claims in ``benchmarks/README.md`` and the slow tests are measured.

A *method* is a name plus a factory ``(class_counts, in_chans, max_epochs) -> (LightningModule, callbacks)``, so a
comparison always gives every method the same data, seeds, epochs and batch size.

Example:
    >>> summary = summarise([{"balanced_acc": 0.5}, {"balanced_acc": 0.7}])
    >>> round(summary["balanced_acc"][0], 3), round(summary["balanced_acc"][1], 3)
    (0.6, 0.141)
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch

from lt_lightning.callbacks.per_class import PerClassAccuracy
from lt_lightning.data import LongTailDataModule
from lt_lightning.methods import ClassifierRetraining

MethodFactory = Callable[[tuple[int, ...], int, int], tuple[L.LightningModule, list[L.Callback]]]
# Trainer options of throw-away runs (benchmarks, tests): no logger, checkpoints, progress bar or model summary.
QUIET_TRAINER: dict[str, Any] = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}
REPORTED = ("acc", "balanced_acc", "many_acc", "medium_acc", "few_acc", "worst_class_acc")


@dataclass
class Method:
    """A named way to build the module and its callbacks for a split."""

    name: str
    build: MethodFactory
    data: dict[str, Any] = field(default_factory=dict)  # datamodule overrides, e.g. BBN's rebalancing_sampler


@dataclass
class StepTimer(L.Callback):
    """Median wall time of a training step (forward, backward, optimizer step), skipping the first epoch."""

    times: list[float] = field(default_factory=list)
    _start: float = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch > 0:
            self.times.append(time.perf_counter() - self._start)


def run_method(
    method: Method,
    seed: int,
    max_epochs: int,
    data_kwargs: dict[str, Any],
    accelerator: str = "cpu",
    precision: str = "32-true",
    default_root_dir: str | None = None,
    eval_split: str = "test",
) -> dict[str, float]:
    """Train ``method`` on the split ``data_kwargs`` with ``seed`` (training seed AND subset seed), evaluate the final
    model (no model selection on the test set), and return its metrics plus the median step time.

    ``eval_split="val"`` evaluates on the validation split instead of the test set: choose hyper-parameters there
    (with ``val_per_class > 0`` in ``data_kwargs``, so validation is not the test set), then report on ``"test"``.
    """
    if eval_split not in ("test", "val"):
        raise ValueError(f"eval_split must be 'test' or 'val', got {eval_split!r}")
    # Reports (CSV, plot) of throw-away runs go to a temporary folder unless asked for.
    default_root_dir = default_root_dir or tempfile.mkdtemp(prefix="lt_bench_")
    L.seed_everything(seed, workers=True, verbose=False)
    dm = LongTailDataModule(**{**data_kwargs, **method.data, "subset_seed": seed, "sampler_seed": seed})
    if eval_split == "val" and dm.val_set is dm.test_set:
        raise ValueError("eval_split='val' needs a validation split distinct from the test set: set val_per_class")
    model, callbacks = method.build(dm.class_counts, dm.in_chans, max_epochs)
    report, timer = PerClassAccuracy(log_per_class=False, output_dir=default_root_dir), StepTimer()
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=max_epochs,
        **QUIET_TRAINER,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[*callbacks, report, timer],
        default_root_dir=default_root_dir,
    )
    trainer.fit(model, datamodule=dm)
    if eval_split == "val":
        trainer.limit_val_batches = 1.0  # validation was off during fit (no per-epoch cost), on for this one pass
        trainer.validate(model, datamodule=dm, verbose=False)
    else:
        trainer.test(model, datamodule=dm, verbose=False)
    result = {k: report.last_summary[k] for k in REPORTED}
    result["step_s"] = statistics.median(timer.times) if timer.times else float("nan")
    return result


def _quiet_trainer(root: str, max_epochs: int, callbacks: list[L.Callback], accelerator: str) -> L.Trainer:
    return L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=max_epochs,
        **QUIET_TRAINER,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
        default_root_dir=root,
    )


def _test_metrics(model: L.LightningModule, dm: L.LightningDataModule, root: str, accelerator: str, *extra) -> dict:
    report = PerClassAccuracy(log_per_class=False, output_dir=root)
    _quiet_trainer(root, 1, [*extra, report], accelerator).test(model, datamodule=dm, verbose=False)
    return {k: report.last_summary[k] for k in REPORTED}


def run_second_stages(
    stage1: Method,
    seed: int,
    max_epochs: int,
    data_kwargs: dict[str, Any],
    posthoc: dict[str, Callable[[], L.Callback]],
    stage2: dict[str, dict[str, Any]],
    stage2_epochs: int = 10,
    stage2_sampler: str = "class_balanced",
    accelerator: str = "cpu",
) -> dict[str, dict[str, float]]:
    """Train ``stage1`` once (seed = subset seed), keep its FINAL checkpoint, then test it alone, with each post-hoc
    callback of ``posthoc`` (``name -> factory``; ``auto`` τ is chosen on the validation split, so ``data_kwargs``
    needs ``val_per_class``), and after each ``ClassifierRetraining`` of ``stage2`` (``name -> its arguments``, e.g.
    ``{"mode": "lws", "bn_mode": "eval"}``; trained ``stage2_epochs`` with its default recipe on ``stage2_sampler``).
    Returns ``{name: test metrics}``, names prefixed with the stage-1 method's."""
    root = tempfile.mkdtemp(prefix="lt_stage2_")
    data = {**data_kwargs, **stage1.data, "subset_seed": seed, "sampler_seed": seed}
    L.seed_everything(seed, workers=True, verbose=False)
    dm = LongTailDataModule(**data)
    model, callbacks = stage1.build(dm.class_counts, dm.in_chans, max_epochs)
    trainer = _quiet_trainer(root, max_epochs, callbacks, accelerator)
    trainer.fit(model, datamodule=dm)
    checkpoint = f"{root}/stage1.ckpt"
    trainer.save_checkpoint(checkpoint)

    out = {stage1.name: _test_metrics(model, dm, root, accelerator)}
    for name, make in posthoc.items():
        out[f"{stage1.name} + {name}"] = _test_metrics(model, dm, root, accelerator, make())
    balanced = LongTailDataModule(**{**data, "sampler": stage2_sampler, "rebalancing_sampler": None})
    for name, kwargs in stage2.items():
        L.seed_everything(seed, workers=True, verbose=False)
        model = ClassifierRetraining(checkpoint, class_counts=balanced.class_counts, **kwargs)
        _quiet_trainer(root, stage2_epochs, [], accelerator).fit(model, datamodule=balanced)
        out[f"{stage1.name} + {name}"] = _test_metrics(model, balanced, root, accelerator)
    return out


def summarise(results: Sequence[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """``{metric: (mean, sample std)}`` over seeds; NaN entries (an empty shot group) are skipped."""
    out = {}
    for key in results[0]:
        values = [r[key] for r in results if not math.isnan(r[key])]
        mean = statistics.fmean(values) if values else float("nan")
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out[key] = (mean, std)
    return out


def compare(
    methods: Sequence[Method],
    seeds: Sequence[int],
    max_epochs: int,
    data_kwargs: dict[str, Any],
    **run_kwargs: Any,
) -> dict[str, list[dict[str, float]]]:
    """Every method on every seed; seeds outer, so machine-load drifts hit all methods alike."""
    results: dict[str, list[dict[str, float]]] = {m.name: [] for m in methods}
    for seed in seeds:
        for method in methods:
            results[method.name].append(run_method(method, seed, max_epochs, data_kwargs, **run_kwargs))
    return results


def markdown_table(results: dict[str, list[dict[str, float]]], baseline: str | None = None) -> str:
    """Mean ± std per method (percentages), and the step-time ratio to ``baseline``."""
    header = "| method | " + " | ".join(REPORTED) + " | step time ratio |"
    lines = [header, "|" + "---|" * (len(REPORTED) + 2)]
    base_step = summarise(results[baseline])["step_s"][0] if baseline else None
    for name, runs in results.items():
        s = summarise(runs)
        cells = [f"{100 * s[k][0]:.1f} ± {100 * s[k][1]:.1f}" if not math.isnan(s[k][0]) else "n/a" for k in REPORTED]
        ratio = f"{s['step_s'][0] / base_step:.2f}" if base_step else "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def sgd_recipe(lr: float = 0.1, nesterov: bool = False) -> Callable:
    """The CIFAR-LT optimizer (SGD momentum 0.9, wd 2e-4) as an ``OptimizerCallable``."""

    def build(params):
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=2e-4, nesterov=nesterov)

    return build
