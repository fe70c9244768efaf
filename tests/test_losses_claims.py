"""Accuracy claims of the ``cdt`` and ``mm`` losses on the embedded default (``pytest -m slow``; ~3 min on 2 cores).

Same setting as ``tests/methods/test_accuracy_claims.py`` and ``benchmarks/methods.py --lr-gamma 0.1``: digits,
exponential rho = 50, seeds 0-2 (training seed = subset seed), 30 epochs, batch 32, small CNN, SGD 0.1 with 5 warm-up
epochs and x0.1 drops at 80 % / 90 %, DRW (beta 0.9999) from epoch 24, the final model tested. Both losses at their
defaults (CDT gamma 0.2; MM = HMM, s 30, max_m 0.5, gamma 10, positive "code"), nothing tuned. The table is
reproduced by ``benchmarks/methods.py --lr-gamma 0.1 --methods CE CE-DRW LDAM-DRW CDT CDT-DRW MM-DRW``; measured
2026-12 on the 2-core VM (balanced accuracy %, seeds 0 / 1 / 2):

==========  =====================  ==========
method      per seed               mean ± std
==========  =====================  ==========
CE          91.75 / 88.00 / 92.25  90.7 ± 2.3
CE-DRW      93.00 / 89.00 / 93.50  91.8 ± 2.5
LDAM-DRW    96.00 / 89.25 / 95.75  93.7 ± 3.8
CDT         94.00 / 95.50 / 97.50  95.7 ± 1.8
CDT-DRW     95.50 / 96.00 / 97.50  96.3 ± 1.0
MM-DRW      97.25 / 88.75 / 94.75  93.6 ± 4.4
==========  =====================  ==========
"""

from __future__ import annotations

import statistics
from functools import partial

import pytest
import torch

from lt_lightning.benchmarking import Method, compare
from lt_lightning.callbacks import DeferredReweighting
from lt_lightning.methods import LDAMDRW, LongTailClassifier
from lt_lightning.optim import WarmupMultiStepLR

SEEDS = (0, 1, 2)
DATA = {"dataset": "digits", "imbalance_ratio": 50, "batch_size": 32}
EPOCHS = 30
SCHEDULE = partial(WarmupMultiStepLR, gamma=0.1)


@pytest.fixture(autouse=True)
def one_thread():
    # Same thread count as benchmarks/methods.py (its default), so the numbers printed here match its table.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def plain(loss, drw):
    def build(counts, in_chans, max_epochs):
        model = LongTailClassifier(counts, backbone="small_cnn", in_chans=in_chans, loss=loss, lr_scheduler=SCHEDULE)
        return model, [DeferredReweighting()] if drw else []

    return build


def ldam_drw(counts, in_chans, max_epochs):
    return LDAMDRW(counts, backbone="small_cnn", in_chans=in_chans, lr_scheduler=SCHEDULE), []


def balanced(runs):
    return [r["balanced_acc"] for r in runs]


@pytest.mark.slow
def test_cdt_drw_beats_ce_drw_on_every_seed(tmp_path):
    """CDT-DRW 96.3 ± 1.0 vs CE-DRW 91.8 ± 2.5 (+4.5 points; +2.5 / +7.0 / +4.0 per seed): asserted, mean and
    every seed."""
    methods = [Method("CE-DRW", plain("ce", True)), Method("CDT-DRW", plain("cdt", True))]
    results = compare(methods, SEEDS, EPOCHS, DATA, default_root_dir=str(tmp_path))
    cdt, ce = balanced(results["CDT-DRW"]), balanced(results["CE-DRW"])
    margin = statistics.fmean(cdt) - statistics.fmean(ce)
    print(f"CDT-DRW - CE-DRW balanced accuracy over seeds {SEEDS}: {100 * margin:+.2f} points; {cdt} vs {ce}")
    assert margin > 0
    assert all(a >= b for a, b in zip(cdt, ce, strict=True))


@pytest.mark.slow
def test_mm_drw_matches_ldam_drw_and_beats_ce(tmp_path):
    """MM-DRW does NOT beat LDAM-DRW here: 93.6 ± 4.4 vs 93.7 ± 3.8 (−0.1; +1.25 / −0.5 / −1.0 per seed), a gap far
    inside the 4-point seed spread (the paper's ~1-point edge over LDAM cannot be resolved with 3 digits seeds).
    Asserted: MM-DRW's mean is not worse than LDAM-DRW's − 1 point, and MM-DRW is above plain CE on every seed
    (+5.5 / +0.75 / +2.5)."""
    methods = [Method("CE", plain("ce", False)), Method("LDAM-DRW", ldam_drw), Method("MM-DRW", plain("mm", True))]
    results = compare(methods, SEEDS, EPOCHS, DATA, default_root_dir=str(tmp_path))
    mm, ldam, ce = balanced(results["MM-DRW"]), balanced(results["LDAM-DRW"]), balanced(results["CE"])
    margin = statistics.fmean(mm) - statistics.fmean(ldam)
    print(f"MM-DRW - LDAM-DRW balanced accuracy over seeds {SEEDS}: {100 * margin:+.2f} points; {mm} vs {ldam}")
    assert margin >= -0.01
    assert all(a > b for a, b in zip(mm, ce, strict=True)), (mm, ce)
