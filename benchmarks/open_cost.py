"""Training-step time with ``PureNoiseOversampling`` (OPeN) off / on without DAR-BN / on with DAR-BN.

Same model, data and Trainer; the noise is active from the first step (``start_epoch=0``), delta 1/3, class counts
of digits-LT rho = 50 with uniformly drawn labels (the class-balanced stage OPeN runs in). Settings: ``digits``
(small CNN, 8x8, 1 channel, batch 32: the digits benchmark) and ``cifar`` (ResNet-20, 32x32, 3 channels, batch 128).
The three modes run round-robin ``--repeats`` times; median per-step time (the callback's replacement, forward,
backward, optimizer step; data fetching excluded) of each mode divided by that of "off".

    .venv/bin/python benchmarks/open_cost.py [--settings digits cifar] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.benchmarking import QUIET_TRAINER
from lt_lightning.callbacks import PureNoiseOversampling
from lt_lightning.methods import LongTailClassifier
from step_time import Timer  # first callback: its on_train_batch_start precedes the replacement

COUNTS = (134, 86, 56, 36, 23, 15, 9, 6, 4, 2)  # digits, exponential rho = 50
SETTINGS = {"digits": ("small_cnn", 1, 8, 32), "cifar": ("resnet20", 3, 32, 128)}
MODES = ("off", "open_no_dar_bn", "open")


def time_run(setting: str, mode: str, steps: int, warmup: int) -> tuple[float, float]:
    backbone, chans, side, batch = SETTINGS[setting]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch * (steps + warmup), chans, side, side, generator=g)
    y = torch.randint(0, len(COUNTS), (len(x),), generator=g)
    timer = Timer(warmup)
    callbacks: list[L.Callback] = [timer]
    if mode != "off":
        callbacks.append(
            PureNoiseOversampling(start_epoch=0, dar_bn=mode == "open", mean=[0.5] * chans, std=[0.25] * chans)
        )
    torch.manual_seed(0)
    model = LongTailClassifier(COUNTS, backbone=backbone, in_chans=chans)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, **QUIET_TRAINER, limit_val_batches=0, callbacks=callbacks
    )
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=batch))
    noise = float(trainer.callback_metrics.get("open/noise", 0.0)) / len(x)
    return statistics.median(timer.times), noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"cpu threads={torch.get_num_threads()} steps={args.steps} repeats={args.repeats}")
    print("| setting | s/step off | ratio OPeN without DAR-BN | ratio OPeN + DAR-BN | noise share |")
    print("|---|---|---|---|---|")
    for setting in args.settings:
        times: dict[str, list[float]] = {m: [] for m in MODES}
        share = 0.0
        for _ in range(args.repeats):
            for mode in MODES:
                t, noise = time_run(setting, mode, args.steps, args.warmup)
                times[mode].append(t)
                share = max(share, noise)
        off = statistics.median(times["off"])
        print(
            f"| {setting} | {off:.4f} | {statistics.median(times['open_no_dar_bn']) / off:.2f} | "
            f"{statistics.median(times['open']) / off:.2f} | {share:.2f} |"
        )


if __name__ == "__main__":
    main()
