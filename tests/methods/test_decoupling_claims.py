"""Issue 14's accuracy claims (``pytest -m slow``; minutes on 2 CPU cores): on the digits split of the other claims
(exponential rho = 50), with a balanced validation split of 20 images per class for the ``auto`` τ, the final CE model
of each seed is improved in balanced accuracy by post-hoc logit adjustment and by cRT (mean over 3 seeds), and MARC
with stage 1's BatchNorm statistics kept is not worse than CE on any seed. The same runs as
``benchmarks/decoupling.py --stage1 CE`` (its table is in benchmarks/README.md, with LWS, τ-norm and LDAM-DRW)."""

from __future__ import annotations

import statistics

import pytest
import torch

from lt_lightning.benchmarking import Method, run_second_stages
from lt_lightning.callbacks import PostHocLogitAdjustment
from lt_lightning.methods import LongTailClassifier

SEEDS = (0, 1, 2)
DATA = {"dataset": "digits", "imbalance_ratio": 50, "batch_size": 32, "val_per_class": 20}


def ce(counts, in_chans, max_epochs):
    return LongTailClassifier(counts, backbone="small_cnn", in_chans=in_chans), []


@pytest.mark.slow
def test_post_hoc_la_and_crt_raise_ce_balanced_accuracy_and_marc_never_lowers_it():
    torch.set_num_threads(1)
    runs = [
        run_second_stages(
            Method("CE", ce),
            seed,
            30,
            DATA,
            {"LA": lambda: PostHocLogitAdjustment(tau="auto")},
            {"cRT": {"mode": "crt"}, "MARC": {"mode": "marc"}, "MARC (BN eval)": {"mode": "marc", "bn_mode": "eval"}},
        )
        for seed in SEEDS
    ]

    def balanced(name):
        return [r[name]["balanced_acc"] for r in runs]

    for name in ("CE + LA", "CE + cRT", "CE + MARC", "CE + MARC (BN eval)"):
        gains = [round(100 * (a - b), 2) for a, b in zip(balanced(name), balanced("CE"), strict=True)]
        print(f"{name} - CE balanced accuracy per seed (points): {gains}")
    assert statistics.fmean(balanced("CE + LA")) > statistics.fmean(balanced("CE"))
    assert statistics.fmean(balanced("CE + cRT")) > statistics.fmean(balanced("CE"))
    # MARC keeps the frozen head: with the official BatchNorm re-estimation on this tiny set (a 3-image tail class
    # repeated all over the balanced stream) the features drift under it and MARC falls below CE on 2 of 3 seeds
    # (benchmarks/README.md); with stage 1's statistics kept it is above CE on every seed.
    assert all(m >= c for m, c in zip(balanced("CE + MARC (BN eval)"), balanced("CE"), strict=True))
