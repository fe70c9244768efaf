"""Training-step time with the ``GenerativeInvarianceTransfer`` callback on / off, same model, data and Trainer.

The generator is a MUNIT of the given configuration (random weights: the cost does not depend on training); the
classifier is the GIT presets' ResNet-20 with CE; batch 128; GIT replaces ``fraction`` of each batch (0.5, the
default) from the first step. Settings: ``tiny`` (8x8, 1 channel: the embedded Digits-BG-LT generator) and
``small`` (28x28, 1 channel: K49's geometry with the small configuration). On and off are run round-robin
``--repeats`` times; the median per-step time (the GIT callback's batch replacement, forward, backward, optimizer
step; data fetching excluded) of "on" is divided by that of "off". Target of issue 13: <= 1.6 for the small
generator.

    .venv/bin/python benchmarks/git_cost.py [--settings tiny small] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.benchmarking import QUIET_TRAINER
from lt_lightning.callbacks import GenerativeInvarianceTransfer
from lt_lightning.generators import MUNIT_CONFIGS, MUNITGenerator
from lt_lightning.methods import LongTailClassifier

# The step timer of step_time.py (this directory is on sys.path when a benchmark runs as a script); it must be the
# first callback so that its on_train_batch_start precedes GIT's batch replacement.
from step_time import Timer

SETTINGS = {"tiny": ("tiny", 8), "small": ("small", 28)}
COUNTS = (114, 28, 12, 7, 5, 5, 5, 5, 5, 5)
BATCH = 128


def generator(config: str, side: int) -> MUNITGenerator:
    torch.manual_seed(0)
    return MUNITGenerator(in_chans=1, image_size=side, **MUNIT_CONFIGS[config]["generator"]).eval()


def time_run(setting: str, git_on: bool, steps: int, warmup: int) -> float:
    config, side = SETTINGS[setting]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH * (steps + warmup), 1, side, side, generator=g)
    y = torch.randint(0, len(COUNTS), (len(x),), generator=g)
    timer = Timer(warmup)
    callbacks: list[L.Callback] = [timer]
    if git_on:
        callbacks.append(
            GenerativeInvarianceTransfer(generator(config, side), fraction=0.5, start_epoch=0, mean=[0.5], std=[0.5])
        )
    torch.manual_seed(0)
    model = LongTailClassifier(COUNTS, backbone="resnet20", in_chans=1)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, **QUIET_TRAINER, limit_val_batches=0, callbacks=callbacks
    )
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=BATCH))
    return statistics.median(timer.times)


def images_per_second(setting: str, repeats: int = 5) -> float:
    config, side = SETTINGS[setting]
    net = generator(config, side)
    x = torch.rand(BATCH // 2, 1, side, side)
    with torch.no_grad():
        net(x)
        start = time.perf_counter()
        for _ in range(repeats):
            net(x)
    return repeats * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"cpu threads={torch.get_num_threads()} batch={BATCH} steps={args.steps} repeats={args.repeats}")
    print("| setting | generator img/s | s/step GIT off | s/step GIT on | ratio | per-repeat ratios | target <= 1.6 |")
    print("|---|---|---|---|---|---|---|")
    for setting in args.settings:
        off, on = [], []
        for _ in range(args.repeats):
            off.append(time_run(setting, False, args.steps, args.warmup))
            on.append(time_run(setting, True, args.steps, args.warmup))
        ratio = statistics.median(on) / statistics.median(off)
        per = ", ".join(f"{a / b:.2f}" for a, b in zip(on, off, strict=True))
        verdict = "met" if ratio <= 1.6 else "missed"
        print(
            f"| {setting} | {images_per_second(setting):.0f} | {statistics.median(off):.4f} | "
            f"{statistics.median(on):.4f} | {ratio:.2f} | {per} | {verdict} |"
        )


if __name__ == "__main__":
    main()
