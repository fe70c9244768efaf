"""``PredictionWriter``: ``predict`` results as a CSV in the run directory, and a short summary on screen.

One row per input, in dataset order: ``index``, ``path`` (for image files), ``target`` (when the batches carry
labels), ``prediction`` (class index), ``class_name``, ``probability``, then ``top2_class``, ``top2_probability``, ...
up to ``top_k``. The module's ``predict_step`` must return one row per input, ``(N, C)``: probabilities (what
:class:`~lt_lightning.methods.LongTailClassifier` returns) or logits (any other module; a softmax is applied when
the rows are not already distributions). Exact under DDP: rows are gathered, the distributed sampler's padded
duplicates dropped, and rank 0 writes the file.

Example:
    >>> import lightning as L, torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> class Tiny(L.LightningModule):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.layer = torch.nn.Linear(2, 3)
    ...     def predict_step(self, batch, batch_idx):
    ...         return self.layer(batch[0])
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> writer = PredictionWriter(output_dir=out, class_names=["a", "b", "c"], verbose=False)
    >>> trainer = L.Trainer(callbacks=[writer], logger=False, enable_progress_bar=False, enable_model_summary=False)
    >>> _ = trainer.predict(Tiny(), DataLoader(TensorDataset(torch.randn(5, 2)), batch_size=2))
    >>> len(writer.rows), sorted(writer.rows[0])[:4], (writer.path.parent == Path(out))
    (5, ['class_name', 'index', 'prediction', 'probability'], True)
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override


class PredictionWriter(BasePredictionWriter):
    """Write the predictions of ``trainer.predict`` to ``predictions.csv`` and print a summary.

    Args:
        output_dir: where the CSV goes; default: the run's log directory (else ``default_root_dir``).
        filename: the CSV's name.
        top_k: how many most likely classes each row lists (at most the number of classes).
        class_names: names for the classes; default: the datamodule's, else the module's, else indices.
        verbose: print the summary (rank 0).
    """

    def __init__(
        self,
        output_dir: str | Path | None = None,
        filename: str = "predictions.csv",
        top_k: int = 3,
        class_names: Sequence[str] | None = None,
        verbose: bool = True,
    ) -> None:
        super().__init__(write_interval="batch")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        if not filename or Path(filename).name != filename:
            raise ValueError(f"filename must be a plain file name, got {filename!r}")
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.filename = filename
        self.top_k = top_k
        self.class_names = tuple(map(str, class_names)) if class_names is not None else None
        self.verbose = verbose
        self.rows: list[dict[str, Any]] = []
        self.path: Path | None = None

    @override
    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self.rows = []

    @override
    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        if not isinstance(prediction, torch.Tensor) or prediction.ndim != 2:
            shape = tuple(prediction.shape) if isinstance(prediction, torch.Tensor) else type(prediction).__name__
            raise TypeError(f"PredictionWriter needs predict_step to return class scores (N, C) per batch, got {shape}")
        probs = _as_probabilities(prediction.detach().float().cpu())
        if batch_indices is None or len(batch_indices) != len(probs):
            raise RuntimeError(f"PredictionWriter: batch {batch_idx} has {len(probs)} rows but no matching indices")
        dataset = _dataset(trainer, dataloader_idx)
        paths = getattr(dataset, "paths", None)
        targets = batch[1] if isinstance(batch, list | tuple) and len(batch) > 1 else None
        names = self._names(trainer, pl_module, probs.shape[1])
        k = min(self.top_k, probs.shape[1])
        top_p, top_c = probs.topk(k, dim=1)
        for row, index in enumerate(batch_indices):
            record: dict[str, Any] = {"index": int(index)}
            if paths is not None:
                record["path"] = str(paths[int(index)])
            if isinstance(targets, torch.Tensor) and targets.ndim == 1:
                record["target"] = names[int(targets[row])]
            for rank in range(k):
                c, p = int(top_c[row, rank]), float(top_p[row, rank])
                if rank == 0:
                    record |= {"prediction": c, "class_name": names[c], "probability": round(p, 6)}
                else:
                    record |= {f"top{rank + 1}_class": names[c], f"top{rank + 1}_probability": round(p, 6)}
            self.rows.append(record)

    @override
    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        out_dir = self.output_dir or Path(trainer.log_dir or trainer.default_root_dir)  # every rank: may broadcast
        rows = self.rows
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            gathered: list[list[dict]] = [[] for _ in range(trainer.world_size)]
            dist.all_gather_object(gathered, rows)
            unique = {r["index"]: r for part in gathered for r in part}  # padded duplicates share an index
            rows = [unique[i] for i in sorted(unique)]
        else:
            rows = sorted(rows, key=lambda r: r["index"])
        self.rows = rows
        self.path = out_dir / self.filename
        if not trainer.is_global_zero:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        fields = list(dict.fromkeys(key for row in rows for key in row))
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        if self.verbose:
            rank_zero_info(summarise(rows, self.path))

    def _names(self, trainer, pl_module, num_classes: int) -> tuple[str, ...]:
        if self.class_names is None:
            for owner in (trainer.datamodule, pl_module):
                names = getattr(owner, "class_names", None) if owner is not None else None
                if names is not None and len(names) == num_classes:
                    self.class_names = tuple(map(str, names))
                    break
            else:
                self.class_names = tuple(map(str, range(num_classes)))
        if len(self.class_names) != num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} entries but predictions have {num_classes}")
        return self.class_names


def summarise(rows: Sequence[dict[str, Any]], path: Path, shown: int = 5) -> str:
    """A few lines for the screen: how many predictions, where, the commonest classes and the first rows."""
    counts = Counter(r["class_name"] for r in rows)
    lines = [f"predictions: {len(rows)} inputs -> {path}"]
    lines.append("predicted classes: " + ", ".join(f"{name} {n}" for name, n in counts.most_common(10)))
    if "target" in (rows[0] if rows else {}):
        correct = sum(r["target"] == r["class_name"] for r in rows)
        lines.append(f"accuracy against the folder labels: {correct / len(rows):.4f}")
    for r in rows[:shown]:
        source = r.get("path", f"#{r['index']}")
        lines.append(f"  {source}: {r['class_name']} ({r['probability']:.3f})")
    if len(rows) > shown:
        lines.append(f"  ... {len(rows) - shown} more in {path.name}")
    return "\n".join(lines)


def _as_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` if every row is already a distribution, else their softmax."""
    if (
        scores.numel()
        and bool((scores >= 0).all())
        and torch.allclose(scores.sum(1), torch.ones(len(scores)), atol=1e-4)
    ):
        return scores
    return scores.softmax(dim=1)


def _dataset(trainer, dataloader_idx: int) -> Any:
    loaders = trainer.predict_dataloaders
    loader = loaders[dataloader_idx] if isinstance(loaders, list | tuple) else loaders
    return getattr(loader, "dataset", None)
