"""What ``compile_backbone`` and ``channels_last`` cost and buy: compile time and per-step time, measured in one run.

ResNet-32, random 32x32 images, batch 128, plain CE (``LongTailClassifier``), the same Trainer for every variant.
The first training step of a compiled variant includes the compilation (forward and backward graphs); it is reported
apart ("first step"), and the per-step time is the median over the steps after ``--warmup``. On the CPU torch.compile
builds C++ kernels (needs a C++ compiler); channels-last mostly pays on GPUs with tensor cores, in bf16.

    .venv/bin/python benchmarks/compile_cost.py [--steps 10] [--warmup 3] [--variants eager compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.benchmarking import QUIET_TRAINER
from lt_lightning.methods import LongTailClassifier

COUNTS = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)
BATCH = 128
VARIANTS = {
    "eager": {},
    "channels_last": {"channels_last": True},
    "compile": {"compile_backbone": True},
    "compile+channels_last": {"compile_backbone": True, "channels_last": True},
}


class StepTimes(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._t = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._t)


def run(variant: str, steps: int, warmup: int, accelerator: str, precision: str) -> tuple[float, float]:
    """(first step s, median later step s) of one variant."""
    torch.manual_seed(0)
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH * (steps + warmup), 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (len(x),), generator=g)
    model = LongTailClassifier(
        COUNTS,
        backbone="resnet32",
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lr_scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0),
        **VARIANTS[variant],
    )
    timer = StepTimes()
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=1,
        max_steps=steps + warmup,
        **QUIET_TRAINER,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(model, DataLoader(TensorDataset(x, y), batch_size=BATCH))
    return timer.times[0], statistics.median(timer.times[warmup:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    args = parser.parse_args()
    results = {v: run(v, args.steps, args.warmup, args.accelerator, args.precision) for v in args.variants}
    print(
        f"{args.accelerator} {args.precision} threads={torch.get_num_threads()} steps={args.steps} "
        f"warmup={args.warmup} batch={BATCH} resnet32"
    )
    print("| variant | first step s (incl. compile) | s/step | ratio to eager |")
    print("|---|---|---|---|")
    base = results.get("eager", next(iter(results.values())))[1]
    for name, (first, step) in results.items():
        print(f"| {name} | {first:.2f} | {step:.4f} | {step / base:.3f} |")


if __name__ == "__main__":
    main()
