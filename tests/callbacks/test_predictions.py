"""``PredictionWriter``: one CSV row per input in dataset order, on one process and on two (gloo, ddp_spawn)."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.callbacks import PredictionWriter
from tests.helpers import cpu_trainer

# Sample i has logits with the largest value at class i % 3 (margin 2) and a known second choice.
N = 7


def logits_of(ids: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(len(ids), 3)
    out[torch.arange(len(ids)), ids % 3] = 2.0
    out[torch.arange(len(ids)), (ids + 1) % 3] = 1.0
    return out


class ForeignModule(L.LightningModule):
    """A foreign module whose predict_step returns LOGITS (the writer applies the softmax)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def predict_step(self, batch, batch_idx):
        return logits_of(batch[0])


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(N), torch.arange(N) % 3), batch_size=2)


def _read(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _expected_probabilities() -> torch.Tensor:
    return logits_of(torch.arange(N)).softmax(1)


def test_rows_hold_top_k_classes_and_probabilities(tmp_path):
    writer = PredictionWriter(output_dir=tmp_path, class_names=["a", "b", "c"], top_k=2, verbose=False)
    cpu_trainer(tmp_path, callbacks=[writer]).predict(ForeignModule(), _loader())
    rows = _read(tmp_path / "predictions.csv")
    probs = _expected_probabilities()
    assert [int(r["index"]) for r in rows] == list(range(N))
    assert [r["class_name"] for r in rows] == ["abc"[i % 3] for i in range(N)]
    assert [r["top2_class"] for r in rows] == ["abc"[(i + 1) % 3] for i in range(N)]
    assert [r["target"] for r in rows] == ["abc"[i % 3] for i in range(N)]
    torch.testing.assert_close(
        torch.tensor([float(r["probability"]) for r in rows]), probs.max(1).values, atol=1e-6, rtol=0
    )
    assert "top3_class" not in rows[0]


def test_summary_lists_counts_and_accuracy(tmp_path, caplog):
    writer = PredictionWriter(output_dir=tmp_path, class_names=["a", "b", "c"])
    with caplog.at_level("INFO"):
        cpu_trainer(tmp_path, callbacks=[writer]).predict(ForeignModule(), _loader())
    assert "predictions: 7 inputs" in caplog.text and "accuracy against the folder labels: 1.0000" in caplog.text


def test_a_step_returning_something_else_is_named(tmp_path):
    class Scalar(ForeignModule):
        def predict_step(self, batch, batch_idx):
            return logits_of(batch[0]).sum()

    with pytest.raises(TypeError, match=r"class scores \(N, C\).*got \(\)"):
        cpu_trainer(tmp_path, callbacks=[PredictionWriter(output_dir=tmp_path)]).predict(Scalar(), _loader())


@pytest.mark.parametrize(("kwargs", "message"), [({"top_k": 0}, "top_k"), ({"filename": "a/b.csv"}, "filename")])
def test_constructor_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PredictionWriter(**kwargs)


@pytest.mark.ddp
def test_two_process_ddp_writes_each_input_once_in_order(tmp_path):
    # 7 inputs on 2 ranks: the distributed sampler pads one duplicate, which must not appear in the file.
    writer = PredictionWriter(output_dir=tmp_path, class_names=["a", "b", "c"], verbose=False)
    trainer = cpu_trainer(tmp_path, devices=2, strategy="ddp_spawn", callbacks=[writer])
    trainer.predict(ForeignModule(), _loader(), return_predictions=False)
    rows = _read(tmp_path / "predictions.csv")
    assert [int(r["index"]) for r in rows] == list(range(N))
    assert [r["class_name"] for r in rows] == ["abc"[i % 3] for i in range(N)]
