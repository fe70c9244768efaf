"""CMO's accuracy claim (issue 15; ``pytest -m slow``; minutes on 2 CPU cores), in the setting of the other claims
(digits, exponential rho = 50, 30 epochs, batch 32, small CNN, LR x0.1 at 80 % and 90 %, seeds 0-2, final models):
CE-DRW+CMO (class-balanced foregrounds, p = 0.5, epochs 4-26) against CE-DRW. Measured with
``benchmarks/methods.py --lr-gamma 0.1 --methods CE CE-DRW CE+CMO CE-DRW+CMO`` (benchmarks/README.md): balanced
accuracy 94.5 ± 0.9 vs 91.8 ± 2.5, above on every seed (+0.5, +6.25, +1.25), few-shot +1.5, +13.0, +4.5."""

from __future__ import annotations

import statistics
from functools import partial

import pytest
import torch

from lt_lightning.benchmarking import Method, compare
from lt_lightning.callbacks import CMO, DeferredReweighting
from lt_lightning.methods import LongTailClassifier
from lt_lightning.optim import WarmupMultiStepLR

SEEDS = (0, 1, 2)
DATA = {"dataset": "digits", "imbalance_ratio": 50, "batch_size": 32}


def ce_drw(*mixers):
    def build(counts, in_chans, max_epochs):
        model = LongTailClassifier(
            counts, backbone="small_cnn", in_chans=in_chans, lr_scheduler=partial(WarmupMultiStepLR, gamma=0.1)
        )
        return model, [DeferredReweighting(), *(make() for make in mixers)]

    return build


@pytest.mark.slow
def test_cmo_raises_ce_drw_balanced_and_few_shot_accuracy():
    torch.set_num_threads(1)
    methods = [
        Method("CE-DRW", ce_drw()),
        Method("CE-DRW+CMO", ce_drw(CMO), data={"rebalancing_sampler": "inverse_power"}),
    ]
    results = compare(methods, SEEDS, 30, DATA)
    base, cmo = results["CE-DRW"], results["CE-DRW+CMO"]
    gains = [round(100 * (c["balanced_acc"] - b["balanced_acc"]), 2) for b, c in zip(base, cmo, strict=True)]
    print(f"CE-DRW+CMO - CE-DRW balanced accuracy per seed (points): {gains}")
    assert statistics.fmean(r["balanced_acc"] for r in cmo) > statistics.fmean(r["balanced_acc"] for r in base)
    assert sum(c["few_acc"] >= b["few_acc"] for b, c in zip(base, cmo, strict=True)) >= 2
