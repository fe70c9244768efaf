"""``ClassHessianSpectrum``: the Hessian spectrum of each class's training loss (Saddle-LongTail's diagnostic).

For every class ``c``, on up to ``samples_per_class`` of its **training** images (seeded, no duplicates, no
augmentation), the Hessian of the class-mean loss w.r.t. the chosen parameters is probed with HVPs only
(:mod:`lt_lightning.functional.hessian`): Lanczos / SLQ gives ``lambda_max``, ``lambda_min`` (a negative value is a
saddle direction; the paper finds tail classes at far more negative ``lambda_min``), residual bounds, the negative
mass of the density, and Hutchinson gives the trace.

Contract with the LightningModule: ``forward(x)`` returns ``(N, C)`` logits (the training landscape, not
``predict_logits``). The loss is ``loss="auto"``: the module's ``loss_module`` or ``criterion`` (its ``reduction`` is
forced to ``"mean"`` during the measurement when it has one), else cross-entropy; ``"ce"`` (the paper's setting) or
any ``(logits, target) -> loss`` callable. Class weights (DRW, CB) cancel in a one-class mean; LDAM margins and
scale do not, so compare spectra under one loss. Images come from ``dataset=`` (items ``(x, y)``, already
transformed) or from ``trainer.datamodule.eval_view(split)`` (:class:`~lt_lightning.data.LongTailDataModule`: the
training split with its eval transform).

During a measurement the module is in ``eval()`` (BN running statistics, no dropout); every submodule's
``training`` flag is restored afterwards, buffers are never written, ``.grad`` is never touched, the global RNG is
never drawn from (own per-class generators), autocast is off and attention uses the math SDPA backend (the fused
kernels have no double backward). It works inside Lightning's ``inference_mode`` test loop.

Exact under DDP: every rank builds the same plan, measures the classes at positions ``rank, rank + world, ...`` of
the plan (classes sorted by sample count, largest first), writes them into a zero-filled table and ONE sum
all-reduce assembles it: the numbers equal a one-process run.

When it runs: after training (``at_fit_end``), at ``trainer.test`` (``at_test``; still on the ``split`` images, so
``lt-lightning test --ckpt_path ...`` analyses any saved checkpoint), and every ``every_n_epochs`` epochs with the
cheaper ``epoch_*`` settings. Under ``fast_dev_run``: at most 2 samples, 3 Lanczos steps, 2 probes per class.

Outputs: scalars ``{hessian, fit/hessian, test/hessian}/{all, many, medium, few, class_<name>}/{lambda_max,
lambda_min, neg_ratio, trace}`` (periodic, after fit, at test), ``hessian_{fit,test}.csv`` (one row per class),
``hessian_density_{fit,test}.npz`` (SLQ nodes and weights), ``hessian_{fit,test}.png`` (lambda_max / lambda_min
against class size, densities of the head and tail classes; also sent to TensorBoard / W&B) and
``hessian_history.csv`` (periodic runs), in the log directory. ``results[tag]`` keeps the last rows.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.nn import functional as F
from typing_extensions import override

from lt_lightning.callbacks.per_class import _first_attr, class_info
from lt_lightning.callbacks.plotting import append_csv_rows, save_figure
from lt_lightning.functional.hessian import class_subsets, hessian_spectrum, make_hvp, spectral_density
from lt_lightning.functional.metrics import shot_groups

__all__ = ["ClassHessianSpectrum"]

# Per-class table columns (float64, summed over ranks); ``measured`` is 1 on the rank that measured the class.
FIELDS = (
    "measured",
    "samples",
    "lambda_max",
    "lambda_max_err",
    "lambda_min",
    "lambda_min_err",
    "neg_ratio",
    "neg_mass",
    "trace",
    "trace_se",
    "hvps",
    "seconds",
)
CSV_COLUMNS = ("class", "name", "train_count", "shot", *FIELDS[1:])
LOGGED = ("lambda_max", "lambda_min", "neg_ratio", "trace")
PRESETS = {"paper": {"samples_per_class": None, "lanczos_steps": 100, "loss": "ce", "trace_probes": 100}}
WARN_SECONDS = 600.0


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def _ce(logits: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(logits, target)


class ClassHessianSpectrum(Callback):
    """Per-class Hessian spectrum (lambda_max, lambda_min, negative mass, trace) of the training loss.

    Args:
        loss: ``"auto"`` (the module's ``loss_module`` / ``criterion``, else CE), ``"ce"`` or a callable
            ``(logits, target) -> scalar batch-mean loss``.
        split: the datamodule split measured (``eval_view(split)``); ``"train"`` as the paper.
        dataset: items ``(x, y)`` (already transformed) to use instead of the datamodule's.
        samples_per_class: images per class (seeded subset without duplicates); None: all (the paper).
        classes: None (all), a list of class indices, or an int ``k``: k classes evenly spaced head to tail.
        params: ``"all"`` (every trainable parameter of the module, the loss's own excluded), ``"head"`` (the
            classifier head: ``classifier_head()``, ``backbone.head`` or ``head``) or ``callable(name, p) -> bool``.
        lanczos_steps, slq_runs, trace_probes: spectrum settings after fit and at test.
        batch_size: images per forward in an HVP.
        seed: seeds the subsets and the per-class Lanczos / probe draws (same at every run).
        every_n_epochs: also measure after every N-th training epoch (None or 0: never), with
            ``epoch_samples_per_class``, ``epoch_lanczos_steps`` and ``epoch_trace_probes``.
        at_fit_end: measure once after training.
        at_test: measure during ``trainer.test`` (on the ``split`` images, not the test images).
        preset: ``"paper"`` sets the official settings (all samples, 100 Lanczos steps, CE, 100 trace probes),
            overriding the arguments above.
        class_counts, class_names: default from the datamodule or the module.
        many_threshold, few_threshold: shot groups (100, 20).
        log_per_class: log the per-class scalars too.
        save_density: write the SLQ nodes / weights ``.npz``.
        output_dir: where files go; default: the trainer's log directory.

    Example:
        >>> cb = ClassHessianSpectrum(preset="paper")
        >>> cb.samples_per_class, cb.lanczos_steps, cb.loss
        (None, 100, 'ce')
    """

    def __init__(
        self,
        loss: Literal["auto", "ce"] | Callable[[Tensor, Tensor], Tensor] = "auto",
        split: str = "train",
        dataset: Any = None,
        samples_per_class: int | None = 100,
        classes: int | Sequence[int] | None = None,
        params: Literal["all", "head"] | Callable[[str, Tensor], bool] = "all",
        lanczos_steps: int = 48,
        slq_runs: int = 1,
        trace_probes: int = 16,
        batch_size: int = 128,
        seed: int = 0,
        every_n_epochs: int | None = None,
        epoch_samples_per_class: int | None = 32,
        epoch_lanczos_steps: int = 16,
        epoch_trace_probes: int = 0,
        at_fit_end: bool = True,
        at_test: bool = False,
        preset: Literal["paper"] | None = None,
        class_counts: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        many_threshold: int = 100,
        few_threshold: int = 20,
        log_per_class: bool = True,
        save_density: bool = True,
        output_dir: str | Path | None = None,
    ) -> None:
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"preset must be one of {sorted(PRESETS)} or None, got {preset!r}")
            p = PRESETS[preset]
            samples_per_class, lanczos_steps = p["samples_per_class"], p["lanczos_steps"]
            loss, trace_probes = p["loss"], p["trace_probes"]
        if not (loss in ("auto", "ce") or callable(loss)):
            raise ValueError(f"loss must be 'auto', 'ce' or a callable (logits, target) -> loss, got {loss!r}")
        if not (params in ("all", "head") or callable(params)):
            raise ValueError(f"params must be 'all', 'head' or a callable (name, parameter) -> bool, got {params!r}")
        self.loss, self.params, self.split, self.dataset, self.preset = loss, params, split, dataset, preset
        self.samples_per_class = _check_int("samples_per_class", samples_per_class, 1, allow_none=True)
        if classes is not None and not isinstance(classes, int | np.integer):
            classes = [int(c) for c in classes]
            if not classes or len(set(classes)) != len(classes) or min(classes) < 0:
                raise ValueError(f"classes must be distinct non-negative class indices, got {classes}")
        elif classes is not None:
            classes = _check_int("classes", classes, 1)
        self.classes = classes
        self.lanczos_steps = _check_int("lanczos_steps", lanczos_steps, 1)
        self.slq_runs = _check_int("slq_runs", slq_runs, 1)
        self.trace_probes = _check_int("trace_probes", trace_probes, 0)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.seed = _check_int("seed", seed, 0)
        self.every_n_epochs = _check_int("every_n_epochs", every_n_epochs or 0, 0)
        self.epoch_samples_per_class = _check_int("epoch_samples_per_class", epoch_samples_per_class, 1, True)
        self.epoch_lanczos_steps = _check_int("epoch_lanczos_steps", epoch_lanczos_steps, 1)
        self.epoch_trace_probes = _check_int("epoch_trace_probes", epoch_trace_probes, 0)
        self.at_fit_end, self.at_test = bool(at_fit_end), bool(at_test)
        if class_counts is not None:
            class_counts = tuple(int(c) for c in class_counts)
            if not class_counts or min(class_counts) < 0:
                raise ValueError(f"class_counts must be a non-empty sequence of counts, got {class_counts}")
        shot_groups((1,), many_threshold, few_threshold)  # validates the thresholds
        self.class_counts = class_counts
        self.class_names = tuple(map(str, class_names)) if class_names is not None else None
        self.many_threshold, self.few_threshold = many_threshold, few_threshold
        self.log_per_class, self.save_density = bool(log_per_class), bool(save_density)
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.results: dict[str, list[dict]] = {}
        self.densities: dict[str, tuple[Tensor, Tensor]] = {}
        self._data: tuple[Any, Tensor] | None = None

    # ------------------------------------------------------------------ set-up
    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        self._data = None  # a new fit / test call may bring another datamodule
        self.class_counts, self.class_names = class_info(
            "ClassHessianSpectrum", self.class_counts, self.class_names, dm, pl_module
        )
        if isinstance(self.classes, list) and max(self.classes) >= len(self.class_counts):
            raise ValueError(f"classes {self.classes} out of range for {len(self.class_counts)} classes")
        if self.dataset is None and not callable(getattr(dm, "eval_view", None)):
            raise ValueError(
                "ClassHessianSpectrum needs training images without augmentation: pass dataset=... (items (x, y), "
                "already transformed), or use a datamodule with an eval_view(split) method such as LongTailDataModule"
            )

    # ------------------------------------------------------------------ hooks
    @override
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            rows, scalars = self.measure(
                trainer,
                pl_module,
                "epoch",
                self.epoch_samples_per_class,
                self.epoch_lanczos_steps,
                self.epoch_trace_probes,
                prefix="hessian",
            )
            pl_module.log_dict(scalars, sync_dist=False)  # identical on every rank: the table is already reduced
            self._append_history(trainer, rows)

    @override
    def on_train_end(self, trainer, pl_module) -> None:
        # on_train_end, not on_fit_end: the strategy is still set up (the model on its device, the process group up).
        if self.at_fit_end:
            rows, scalars = self.measure(
                trainer, pl_module, "fit", self.samples_per_class, self.lanczos_steps, self.trace_probes, "fit/hessian"
            )
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=trainer.global_step)
            self._report("fit", trainer, rows)

    @override
    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if self.at_test:
            rows, scalars = self.measure(
                trainer,
                pl_module,
                "test",
                self.samples_per_class,
                self.lanczos_steps,
                self.trace_probes,
                "test/hessian",
            )
            pl_module.log_dict(scalars, sync_dist=False)
            self._report("test", trainer, rows)

    # ------------------------------------------------------------------ measuring
    def measure(
        self,
        trainer,
        pl_module,
        tag: str,
        samples_per_class: int | None,
        lanczos_steps: int,
        trace_probes: int,
        prefix: str = "hessian",
    ) -> tuple[list[dict], dict[str, float]]:
        """Measure now (every rank must call it); returns one row per class and the scalars under ``prefix``."""
        if trainer.fast_dev_run:
            samples_per_class = min(samples_per_class or 2, 2)
            lanczos_steps, trace_probes = min(lanczos_steps, 3), min(trace_probes, 2)
        device = pl_module.device
        runs, num_classes = self.slq_runs, len(self.class_counts)
        loss_fn, restore_loss = self._loss(pl_module)
        modes = [(module, module.training) for module in pl_module.modules()]
        pl_module.eval()
        try:
            with ExitStack() as stack:
                stack.enter_context(torch.inference_mode(False))
                stack.enter_context(torch.enable_grad())
                stack.enter_context(torch.autocast(device.type, enabled=False))
                stack.enter_context(_math_sdpa())
                # Created here, not under the test loop's inference mode: they are written in place below.
                table = torch.zeros(num_classes, len(FIELDS), dtype=torch.float64)
                nodes = torch.zeros(num_classes, runs, lanczos_steps, dtype=torch.float64)
                weights = torch.zeros_like(nodes)
                dataset, subsets, plan = self._plan(trainer, samples_per_class)
                mine = plan[trainer.global_rank :: trainer.world_size]
                params = self._params(pl_module)
                dim = sum(p.numel() for p in params)
                per_class_hvps = lanczos_steps * runs + trace_probes
                total_images = sum(len(subsets[c]) for c in mine) * per_class_hvps
                warned = False
                for c in mine:
                    index = subsets[c]
                    if len(index) == 0:
                        continue
                    start = time.perf_counter()
                    x, y = _load(dataset, index)
                    hvp = make_hvp(pl_module, loss_fn, x.to(device), y.to(device), params, self.batch_size)
                    if not warned:  # time one HVP of the first class to estimate the whole run
                        warned = True
                        t0 = time.perf_counter()
                        hvp(torch.zeros(dim, dtype=hvp.dtype, device=device))
                        per_image = (time.perf_counter() - t0) / len(index)
                        estimate = per_image * total_images
                        if estimate > WARN_SECONDS:
                            rank_zero_warn(
                                f"ClassHessianSpectrum ({tag}): about {estimate / 60:.0f} min for {len(mine)} classes "
                                f"x {per_class_hvps} HVPs ({dim} parameters); lower samples_per_class, lanczos_steps "
                                "or trace_probes, or pass classes=k or params='head'"
                            )
                    generator = torch.Generator().manual_seed(self.seed * 1_000_003 + c)
                    spectrum, n, w = hessian_spectrum(
                        hvp, dim, generator, lanczos_steps, runs, trace_probes, dtype=hvp.dtype, device=device
                    )
                    del hvp
                    table[c] = torch.tensor(
                        [1.0, len(index)]
                        + [float(getattr(spectrum, k)) for k in FIELDS[2:-1]]
                        + [time.perf_counter() - start],
                        dtype=torch.float64,
                    )
                    nodes[c, :, : n.shape[1]], weights[c, :, : w.shape[1]] = n, w
                    if n.shape[1] < lanczos_steps:
                        nodes[c, :, n.shape[1] :] = math.nan
        finally:
            for module, training in modes:
                module.training = training
            restore_loss()
        flat = torch.cat([table.flatten(), nodes.flatten(), weights.flatten()]).to(device)
        flat = trainer.strategy.reduce(flat, reduce_op="sum").cpu()  # ONE all-reduce; zeros elsewhere: exact
        table = flat[: table.numel()].view_as(table)
        nodes = flat[table.numel() : table.numel() + nodes.numel()].view_as(nodes)
        weights = flat[table.numel() + nodes.numel() :].view_as(weights)
        rows = self._rows(table)
        self.results[tag] = rows
        self.densities[tag] = (nodes, weights)
        return rows, self._scalars(rows, prefix)

    def _plan(self, trainer, samples_per_class: int | None) -> tuple[Any, list[Tensor], list[int]]:
        if self._data is None:
            dataset = self.dataset if self.dataset is not None else trainer.datamodule.eval_view(self.split)
            self._data = (dataset, _targets(dataset))
        dataset, targets = self._data
        num_classes = len(self.class_counts)
        generator = torch.Generator().manual_seed(self.seed)
        subsets = class_subsets(targets, num_classes, samples_per_class, generator)
        chosen = self._chosen()
        empty = [c for c in chosen if len(subsets[c]) == 0]
        if empty:
            rank_zero_warn(
                f"ClassHessianSpectrum: no image of class(es) {[self.class_names[c] for c in empty]} in the "
                f"{'given dataset' if self.dataset is not None else self.split + ' split'}; their values are NaN"
            )
        plan = sorted(chosen, key=lambda c: (-len(subsets[c]), c))  # largest first: round-robin balances the ranks
        return dataset, subsets, plan

    def _chosen(self) -> list[int]:
        num_classes = len(self.class_counts)
        if self.classes is None:
            return list(range(num_classes))
        if isinstance(self.classes, list):
            return list(self.classes)
        head_to_tail = sorted(range(num_classes), key=lambda c: (-self.class_counts[c], c))
        k = min(self.classes, num_classes)
        picks = np.unique(np.round(np.linspace(0, num_classes - 1, k)).astype(int))
        return sorted(head_to_tail[i] for i in picks)

    def _loss(self, pl_module) -> tuple[Callable[[Tensor, Tensor], Tensor], Callable[[], None]]:
        if self.loss == "ce":
            return _ce, lambda: None
        if callable(self.loss):
            return self.loss, lambda: None
        module = _first_attr("loss_module", pl_module)
        module = _first_attr("criterion", pl_module) if module is None else module
        if module is None:
            return _ce, lambda: None
        if hasattr(module, "reduction"):
            before = module.reduction
            module.reduction = "mean"

            def restore() -> None:
                module.reduction = before

            return module, restore
        return module, lambda: None

    def _params(self, pl_module) -> list[Tensor]:
        loss = getattr(pl_module, "criterion", None)
        skip = {id(p) for p in loss.parameters()} if isinstance(loss, nn.Module) else set()
        if self.params == "head":
            head = None
            if callable(getattr(pl_module, "classifier_head", None)):
                head = pl_module.classifier_head()
            head = (
                head or getattr(getattr(pl_module, "backbone", None), "head", None) or getattr(pl_module, "head", None)
            )
            if not isinstance(head, nn.Module):
                raise ValueError(
                    "params='head' needs the module to have classifier_head(), backbone.head or head; pass a "
                    "callable (name, parameter) -> bool instead"
                )
            chosen = [p for p in head.parameters() if p.requires_grad]
        elif self.params == "all":
            chosen = [p for p in pl_module.parameters() if p.requires_grad and id(p) not in skip]
        else:
            chosen = [p for name, p in pl_module.named_parameters() if p.requires_grad and self.params(name, p)]
        if not chosen:
            raise ValueError(f"ClassHessianSpectrum: params={self.params!r} selects no trainable parameter")
        if any(p.dtype in (torch.float16, torch.bfloat16) for p in chosen):
            rank_zero_warn("ClassHessianSpectrum: half-precision parameters; the spectrum is computed in that dtype")
        return chosen

    # ------------------------------------------------------------------ reporting
    def _rows(self, table: Tensor) -> list[dict]:
        groups = shot_groups(self.class_counts, self.many_threshold, self.few_threshold)
        rows = []
        for c, values in enumerate(table.tolist()):
            row = {
                "class": c,
                "name": self.class_names[c],
                "train_count": self.class_counts[c],
                "shot": groups[c],
            }
            measured = values[0] > 0
            for k, v in zip(FIELDS[1:], values[1:], strict=True):
                row[k] = v if measured else math.nan
            row["samples"] = int(values[1])
            row["hvps"] = int(values[FIELDS.index("hvps")]) if measured else 0
            row["measured"] = measured
            rows.append(row)
        return rows

    def _scalars(self, rows: list[dict], prefix: str) -> dict[str, float]:
        scalars: dict[str, float] = {}
        for group in ("all", "many", "medium", "few"):
            members = [r for r in rows if r["measured"] and (group == "all" or r["shot"] == group)]
            for k in LOGGED:
                values = [r[k] for r in members if not math.isnan(r[k])]
                scalars[f"{prefix}/{group}/{k}"] = float(np.mean(values)) if values else math.nan
        if self.log_per_class:
            for r in rows:
                if r["measured"]:
                    for k in LOGGED:
                        scalars[f"{prefix}/class_{r['name']}/{k}"] = r[k]
        return scalars

    def _report(self, tag: str, trainer, rows: list[dict]) -> None:
        out_dir = self._out_dir(trainer)  # on every rank: it may broadcast
        if not trainer.is_global_zero:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        write_hessian_csv(out_dir / f"hessian_{tag}.csv", rows)
        measured = [r for r in rows if r["measured"]]
        if self.save_density:
            nodes, weights = self.densities[tag]
            keep = [r["class"] for r in measured]
            np.savez(
                out_dir / f"hessian_density_{tag}.npz",
                nodes=nodes[keep].numpy(),
                weights=weights[keep].numpy(),
                classes=np.asarray(keep),
            )
        lines = [
            f"{r['name']}: n={r['samples']} lambda_max={r['lambda_max']:.4g} lambda_min={r['lambda_min']:.4g}"
            for r in sorted(measured, key=lambda r: -r["train_count"])
        ]
        rank_zero_info(f"Hessian spectrum per class ({tag}):\n  " + "\n  ".join(lines))
        if not measured:
            return
        fig = hessian_figure(rows, self.densities[tag], f"class Hessian spectrum ({tag})")
        save_figure(trainer, fig, out_dir / f"hessian_{tag}.png", f"{tag}/hessian")

    def _append_history(self, trainer, rows: list[dict]) -> None:
        out_dir = self._out_dir(trainer)
        if not trainer.is_global_zero:
            return
        append_csv_rows(
            out_dir / "hessian_history.csv",
            ["epoch", *CSV_COLUMNS],
            ([trainer.current_epoch, *(_cell(r[k]) for k in CSV_COLUMNS)] for r in rows if r["measured"]),
        )

    def _out_dir(self, trainer) -> Path:
        """The report directory; call it on EVERY rank (``trainer.log_dir`` is a broadcast under DDP)."""
        return self.output_dir or Path(trainer.log_dir or trainer.default_root_dir)


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else format(value, ".17g")
    return value


def write_hessian_csv(path: Path, rows: Sequence[dict]) -> None:
    """One row per class with :data:`CSV_COLUMNS` (full float precision; NaN empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([_cell(r[k]) for k in CSV_COLUMNS])


def hessian_figure(rows: Sequence[dict], density: tuple[Tensor, Tensor], title: str):
    """(a) lambda_max and lambda_min against training class size (log x, symlog y) by shot group; (b) the broadened
    SLQ densities of the largest and the smallest measured class (symlog x, log y), as the paper's Fig. 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    colours = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.0, 3.6), layout="constrained")
    measured = [r for r in rows if r["measured"]]
    for shot, colour in colours.items():
        pts = [r for r in measured if r["shot"] == shot]
        if pts:
            counts = [max(r["train_count"], 1) for r in pts]
            ax.scatter(counts, [r["lambda_max"] for r in pts], color=colour, marker="^", s=18, label=f"{shot} λ_max")
            ax.scatter(counts, [r["lambda_min"] for r in pts], color=colour, marker="v", s=18, label=f"{shot} λ_min")
    extremes = [abs(r[k]) for r in measured for k in ("lambda_max", "lambda_min") if math.isfinite(r[k])]
    linthresh = max(1e-2 * max(extremes, default=1.0), 1e-12)  # two decades of log scale on each side
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale("symlog", linthresh=linthresh)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("Ritz value")
    ax.legend(fontsize=6)
    nodes, weights = density
    ends = sorted(measured, key=lambda r: -r["train_count"])
    for r, colour in ((ends[0], "tab:blue"), (ends[-1], "tab:red")) if len(ends) > 1 else ((ends[0], "tab:blue"),):
        grid, dens = spectral_density(nodes[r["class"]], weights[r["class"]], num_bins=2000)
        floor = float(dens.max()) * 1e-6
        bx.plot(
            grid.numpy(), dens.clamp_min(floor).numpy(), color=colour, label=f"class {r['name']} (n={r['samples']})"
        )
    bx.set_xscale("symlog", linthresh=linthresh)
    bx.set_yscale("log")
    bx.set_xlabel("eigenvalue")
    bx.set_ylabel("density")
    bx.legend(fontsize=7)
    fig.suptitle(title)
    return fig


class _math_sdpa:
    """Force the math SDPA backend (flash / efficient attention have no double backward)."""

    def __enter__(self):
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError:  # older torch: nothing to force
            self._ctx = None
            return self
        self._ctx = sdpa_kernel(SDPBackend.MATH)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            return self._ctx.__exit__(*exc)
        return False


def _targets(dataset: Any) -> Tensor:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [int(dataset[i][1]) for i in range(len(dataset))]
    return torch.as_tensor(np.asarray(targets), dtype=torch.long)


def _load(dataset: Any, index: Tensor) -> tuple[Tensor, Tensor]:
    items = [dataset[i] for i in index.tolist()]
    x = torch.stack([torch.as_tensor(item[0]) for item in items])
    y = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
    if x.is_inference():
        x = x.clone()
    return x, y
