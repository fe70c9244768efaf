"""OPeN on the embedded default vs CE-DRS, the paper's key ablation (``pytest -m slow``; minutes on 2 CPU cores).

The setting of ``tests/methods/test_accuracy_claims.py`` and ``benchmarks/methods.py --lr-gamma 0.1``: digits,
exponential rho = 50, small CNN, 30 epochs, batch 32, seeds 0-2, SGD 0.1 with 5 warm-up epochs and x0.1 at 80 % / 90
%; the final model is tested. Both runs switch to class-balanced sampling at epoch 24; OPeN adds pure-noise
replacement (delta 1/3) and DAR-BN from that switch. The measured table is in benchmarks/README.md.
"""

from __future__ import annotations

import statistics
from functools import partial

import pytest
import torch

from lt_lightning.benchmarking import Method, compare
from lt_lightning.callbacks import DeferredResampling, PureNoiseOversampling
from lt_lightning.methods import LongTailClassifier
from lt_lightning.optim import WarmupMultiStepLR

SEEDS = (0, 1, 2)
DATA = {"dataset": "digits", "imbalance_ratio": 50, "batch_size": 32}
EPOCHS = 30
SCHEDULE = partial(WarmupMultiStepLR, gamma=0.1)


def ce_drs(counts, in_chans, max_epochs, *extra):
    model = LongTailClassifier(counts, backbone="small_cnn", in_chans=in_chans, loss="ce", lr_scheduler=SCHEDULE)
    return model, [DeferredResampling(), *(make() for make in extra)]


def open_(counts, in_chans, max_epochs):
    return ce_drs(counts, in_chans, max_epochs, PureNoiseOversampling)


@pytest.mark.slow
def test_open_against_ce_drs_on_digits(tmp_path):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # as benchmarks/methods.py, so the numbers match its table
    try:
        results = compare(
            [Method("CE-DRS", ce_drs), Method("OPeN", open_)], SEEDS, EPOCHS, DATA, default_root_dir=str(tmp_path)
        )
    finally:
        torch.set_num_threads(previous)
    drs = [r["balanced_acc"] for r in results["CE-DRS"]]
    open_acc = [r["balanced_acc"] for r in results["OPeN"]]
    margin = statistics.fmean(open_acc) - statistics.fmean(drs)
    print(f"balanced accuracy CE-DRS {drs}, OPeN {open_acc}, margin {100 * margin:+.1f} points")
    # Measured (benchmarks/README.md): CE-DRS 85.6 ± 1.3, OPeN 91.1 ± 2.3; per seed 87.0 / 85.2 / 84.5 vs
    # 92.0 / 88.5 / 92.7. Asserted with room for machine-level float drift: a mean gain of at least 2 points and a
    # gain on every seed. (Against plain CE, 90.7 ± 2.3, OPeN is a tie: +0.4, within the seeds' spread.)
    assert margin >= 0.02
    assert all(o > d for o, d in zip(open_acc, drs, strict=True))
