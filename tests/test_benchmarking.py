"""Tests for the seed-averaged comparison helpers behind benchmarks/ and the slow accuracy claims."""

from __future__ import annotations

import math

import pytest

from lt_lightning.benchmarking import Method, run_method, summarise
from lt_lightning.methods import LongTailClassifier

DATA = {"dataset": "digits", "imbalance_ratio": 10, "batch_size": 64}


def small_cnn(counts, in_chans, max_epochs):
    return LongTailClassifier(counts, backbone="small_cnn", in_chans=in_chans), []


def test_summarise_mean_and_sample_std_skip_nan():
    out = summarise([{"a": 0.5, "b": float("nan")}, {"a": 0.7, "b": 0.2}, {"a": 0.9, "b": 0.4}])
    assert out["a"][0] == pytest.approx(0.7) and out["a"][1] == pytest.approx(0.2)
    assert out["b"] == pytest.approx((0.3, math.sqrt(0.02)))


def test_eval_split_val_scores_the_validation_split(tmp_path):
    method = Method("CE", small_cnn)
    val = run_method(method, 0, 1, {**DATA, "val_per_class": 5}, default_root_dir=str(tmp_path), eval_split="val")
    # 10 classes x 5 validation images: every accuracy is a multiple of 1/5 per class, 1/50 overall
    assert 0.0 <= val["acc"] <= 1.0 and (val["acc"] * 50) == pytest.approx(round(val["acc"] * 50))
    assert (tmp_path / "per_class_val.csv").is_file() and not (tmp_path / "per_class_test.csv").exists()


@pytest.mark.parametrize(
    ("data", "split", "pattern"),
    [
        (DATA, "train", r"eval_split must be 'test' or 'val', got 'train'"),
        (DATA, "val", r"needs a validation split distinct from the test set: set val_per_class"),
    ],
)
def test_eval_split_bad_input(tmp_path, data, split, pattern):
    with pytest.raises(ValueError, match=pattern):
        run_method(Method("CE", small_cnn), 0, 1, data, default_root_dir=str(tmp_path), eval_split=split)
