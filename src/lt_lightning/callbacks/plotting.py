"""Figures and tables for per-class reports (matplotlib, headless), and how the report callbacks write them."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from lightning.pytorch.utilities import rank_zero_warn

matplotlib.use("Agg")  # never needs a display; tests and servers are headless
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

PER_CLASS_COLUMNS = ("class", "name", "train_count", "shot", "support", "correct", "accuracy")
TAU_SWEEP_COLUMNS = ("tau", "many", "medium", "few", "all")


def log_figure(trainer, tag: str, fig: Figure) -> None:
    """Send ``fig`` to every logger of ``trainer`` that takes figures (TensorBoard, W&B) under ``tag``."""
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if type(logger).__name__ == "WandbLogger":
            logger.log_image(key=tag, images=[fig])
        elif hasattr(experiment, "add_figure"):  # TensorBoard
            experiment.add_figure(tag, fig, global_step=trainer.global_step)
        elif type(logger).__name__ != "CSVLogger":
            rank_zero_warn(f"cannot log figures to {type(logger).__name__}; the PNG is on disk")


def save_figure(trainer, fig: Figure, path: Path, tag: str) -> None:
    """Write ``fig`` to ``path`` (PNG, 120 dpi), send it to the trainer's loggers under ``tag``, and close it."""
    fig.savefig(path, dpi=120)
    log_figure(trainer, tag, fig)
    plt.close(fig)


def append_csv_rows(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Append ``rows`` to the CSV at ``path``, writing ``header`` first when the file is new (history files).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "history.csv"
        >>> append_csv_rows(path, ["epoch", "x"], [[0, 1.5]]); append_csv_rows(path, ["epoch", "x"], [[1, 2.5]])
        >>> path.read_text().split()
        ['epoch,x', '0,1.5', '1,2.5']
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(header)
        writer.writerows(rows)


def _write_rows(path: Path, columns: Sequence[str], rows: Sequence[dict], numbers: dict[str, str]) -> None:
    """A CSV of ``columns``; the float columns in ``numbers`` are formatted with their spec, NaN written empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            cells = {k: "" if math.isnan(row[k]) else format(row[k], spec) for k, spec in numbers.items()}
            writer.writerow({**row, **cells})


def write_per_class_csv(path: Path, rows: Sequence[dict]) -> None:
    """One row per class with :data:`PER_CLASS_COLUMNS`; accuracy is empty where the class had no support."""
    _write_rows(path, PER_CLASS_COLUMNS, rows, {"accuracy": ".6f"})


def write_tau_sweep_csv(path: Path, rows: Sequence[dict]) -> None:
    """One row per τ with :data:`TAU_SWEEP_COLUMNS` (balanced accuracies); empty where a shot group has no class."""
    _write_rows(path, TAU_SWEEP_COLUMNS, rows, {"tau": "g", "many": ".6f", "medium": ".6f", "few": ".6f", "all": ".6f"})


def per_class_figure(rows: Sequence[dict], title: str, many_threshold: int = 100, few_threshold: int = 20) -> Figure:
    """Bars: per-class accuracy, classes sorted head to tail by training count; line: the training count (log
    scale, right axis); dashed lines: the many / medium / few boundaries."""
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["train_count"])
    acc = [0.0 if math.isnan(rows[i]["accuracy"]) else rows[i]["accuracy"] for i in order]
    counts = [rows[i]["train_count"] for i in order]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(rows) + 3), 3.6), layout="constrained")
    ax.bar(range(len(order)), acc, color="tab:blue", alpha=0.8, label="accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("class (head → tail by training count)")
    ax.set_ylabel("accuracy")
    if len(rows) <= 30:
        ax.set_xticks(range(len(order)), [str(rows[i]["name"]) for i in order], rotation=90, fontsize=7)
    twin = ax.twinx()
    twin.plot(range(len(order)), counts, color="tab:orange", marker=".", label="training images")
    twin.set_yscale("log")
    twin.set_ylabel("training images")
    for threshold in (many_threshold, few_threshold):
        # the boundary sits between the last class above and the first class at or below the threshold
        position = sum(c > threshold for c in counts) - 0.5
        if 0 < position < len(order) - 1:
            ax.axvline(position, color="grey", linestyle="--", linewidth=1)
    ax.set_title(title)
    return fig


EKLD_COLUMNS = ("class", "name", "train_count", "shot", "pairs", "ekld", "consistency")


def write_ekld_csv(path: Path, rows: Sequence[dict]) -> None:
    """One row per class with :data:`EKLD_COLUMNS`; eKLD and consistency are empty for a class without pairs."""
    _write_rows(path, EKLD_COLUMNS, rows, {"ekld": ".6g", "consistency": ".6g"})


def ekld_scatter_figure(rows: Sequence[dict], title: str) -> Figure:
    """Per-class eKLD against training class size (log x axis), coloured by shot group, as GIT plots it."""
    colours = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}
    fig, ax = plt.subplots(figsize=(5.0, 3.6), layout="constrained")
    for shot, colour in colours.items():
        points = [(r["train_count"], r["ekld"]) for r in rows if r["shot"] == shot and not math.isnan(r["ekld"])]
        if points:
            ax.scatter(*zip(*points, strict=True), color=colour, label=shot, s=18)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("eKLD (nats)")
    ax.set_ylim(bottom=0)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title(title)
    return fig
