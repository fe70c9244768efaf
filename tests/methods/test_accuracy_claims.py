"""Accuracy claims on the embedded default, averaged over seeds (``pytest -m slow``; minutes on 2 CPU cores).

Every method gets the same split (digits, exponential rho = 50), seeds, epochs (30), batch size (32), backbone
(small CNN) and optimisation recipe; the final model is tested. Measured margins are recorded in
benchmarks/README.md ("Methods on the embedded default").
"""

from __future__ import annotations

import statistics

import pytest
import torch

from lt_lightning.benchmarking import Method, compare
from lt_lightning.callbacks import DeferredReweighting
from lt_lightning.methods import ABSGD, BBN, LDAMDRW, LongTailClassifier, SAMClassifier

SEEDS = (0, 1, 2)
DATA = {"dataset": "digits", "imbalance_ratio": 50, "batch_size": 32}
EPOCHS = 30


@pytest.fixture(autouse=True)
def one_thread():
    # Same thread count as benchmarks/methods.py (its default), so the margins printed here match its table.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def ce(counts, in_chans, max_epochs):
    return LongTailClassifier(counts, backbone="small_cnn", in_chans=in_chans, loss="ce"), []


def ldam_drw(counts, in_chans, max_epochs):
    return LDAMDRW(counts, backbone="small_cnn", in_chans=in_chans), []


def bbn(counts, in_chans, max_epochs):
    return BBN(counts, backbone="small_cnn", in_chans=in_chans), []


def ldam_drw_sam(counts, in_chans, max_epochs):
    model = SAMClassifier(counts, backbone="small_cnn", in_chans=in_chans, loss="ldam", rho=0.8)
    return model, [DeferredReweighting()]


def absgd_drw(counts, in_chans, max_epochs):
    model = ABSGD(counts, backbone="small_cnn", in_chans=in_chans, loss="ce", lam=5.0, gamma=0.7, alpha=0.5)
    return model, [DeferredReweighting()]


def mean_balanced(runs):
    return statistics.fmean(r["balanced_acc"] for r in runs)


@pytest.mark.slow
def test_ldam_drw_beats_ce_in_balanced_accuracy(tmp_path):
    results = compare(
        [Method("CE", ce), Method("LDAM-DRW", ldam_drw)], SEEDS, EPOCHS, DATA, default_root_dir=str(tmp_path)
    )
    margin = mean_balanced(results["LDAM-DRW"]) - mean_balanced(results["CE"])
    print(f"LDAM-DRW - CE balanced accuracy over seeds {SEEDS}: {100 * margin:+.2f} points")
    assert margin > 0


@pytest.mark.slow
def test_bbn_beats_ce_in_balanced_accuracy(tmp_path):
    methods = [Method("CE", ce), Method("BBN", bbn, data={"rebalancing_sampler": "reversed"})]
    results = compare(methods, SEEDS, EPOCHS, DATA, default_root_dir=str(tmp_path))
    margin = mean_balanced(results["BBN"]) - mean_balanced(results["CE"])
    print(f"BBN - CE balanced accuracy over seeds {SEEDS}: {100 * margin:+.2f} points")
    assert margin > 0


@pytest.mark.slow
def test_sam_is_not_worse_than_ldam_drw(tmp_path):
    methods = [Method("LDAM-DRW", ldam_drw), Method("LDAM-DRW+SAM", ldam_drw_sam)]
    results = compare(methods, SEEDS, EPOCHS, DATA, default_root_dir=str(tmp_path))
    margin = mean_balanced(results["LDAM-DRW+SAM"]) - mean_balanced(results["LDAM-DRW"])
    print(f"LDAM-DRW+SAM - LDAM-DRW balanced accuracy over seeds {SEEDS}: {100 * margin:+.2f} points")
    # "not worse": within one test image per class (0.25 points on 40 test images per class) or better
    assert margin >= -0.0025


@pytest.mark.slow
def test_absgd_with_drw_beats_ce_in_balanced_accuracy(tmp_path):
    results = compare(
        [Method("CE", ce), Method("ABSGD+DRW", absgd_drw)], SEEDS, EPOCHS, DATA, default_root_dir=str(tmp_path)
    )
    margin = mean_balanced(results["ABSGD+DRW"]) - mean_balanced(results["CE"])
    print(f"ABSGD+DRW - CE balanced accuracy over seeds {SEEDS}: {100 * margin:+.2f} points")
    assert margin > 0
