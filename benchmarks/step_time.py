"""Training-step time of each method relative to plain CE, same model, data and Trainer, measured in one run.

ResNet-32, random 32x32 images, batch 128, CIFAR-10-LT rho = 100 class counts; every method is in its *second*
stage from the first step (DRW weights on), so the cost of the re-balancing itself is what is timed. Methods are
run round-robin ``--repeats`` times (so drifts in machine load hit all of them alike); the median per-step time of
each is divided by CE's.

    .venv/bin/python benchmarks/step_time.py [--steps 20] [--repeats 3] [--methods CE LDAM-DRW]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.benchmarking import QUIET_TRAINER
from lt_lightning.methods import ABSGD, BBN, LDAMDRW, LongTailClassifier, SAMClassifier

COUNTS = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)
BATCH = 128


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=2e-4)


def constant(optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


METHODS = {
    "CE": lambda: LongTailClassifier(COUNTS, backbone="resnet32", loss="ce", optimizer=sgd, lr_scheduler=constant),
    "LDAM-DRW": lambda: LDAMDRW(COUNTS, drw_start_epoch=0, optimizer=sgd, lr_scheduler=constant),
    "ABSGD": lambda: ABSGD(
        COUNTS, backbone="resnet32", loss="ce", switch_epoch=0, optimizer=sgd, lr_scheduler=constant
    ),
    "BBN": lambda: BBN(COUNTS, backbone="resnet32", optimizer=sgd, lr_scheduler=constant),
    "CE+SAM": lambda: SAMClassifier(
        COUNTS, backbone="resnet32", loss="ce", rho=0.1, optimizer=sgd, lr_scheduler=constant
    ),
}
# Methods whose training batches carry two streams (x_c, y_c, x_r, y_r).
PAIRED = {"BBN"}


class Timer(L.Callback):
    """Per-step wall time (forward, backward, optimizer step and the module's logging), after ``warmup`` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.times, self._t = warmup, [], 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup and trainer.current_epoch == 0:
            self.times.append(time.perf_counter() - self._t)


def time_method(name: str, steps: int, warmup: int, accelerator: str = "cpu", precision: str = "32-true") -> float:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH * (steps + warmup), 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (len(x),), generator=g)
    tensors = (x, y, x.flip(0), y.flip(0)) if name in PAIRED else (x, y)
    timer = Timer(warmup)
    # max_epochs=2 keeps BBN's alpha schedule defined; max_steps stops after the one epoch of timed steps.
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision=precision,
        max_epochs=2,
        max_steps=steps + warmup,
        **QUIET_TRAINER,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(METHODS[name](), DataLoader(TensorDataset(*tensors), batch_size=BATCH))
    return statistics.median(timer.times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--accelerator", default="cpu", help="cpu or gpu")
    parser.add_argument("--precision", default="32-true", help="32-true or bf16-mixed")
    args = parser.parse_args()
    names = ["CE", *[m for m in args.methods if m != "CE"]]
    times = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            times[name].append(time_method(name, args.steps, args.warmup, args.accelerator, args.precision))
    setting = f"{args.accelerator} {args.precision} threads={torch.get_num_threads()}"
    print(f"{setting} steps={args.steps} repeats={args.repeats} (median of per-step times)")
    print("| method | s/step | ratio to CE | per-repeat ratios |")
    print("|---|---|---|---|")
    base = statistics.median(times["CE"])
    for name in names:
        per = ", ".join(f"{t / c:.3f}" for t, c in zip(times[name], times["CE"], strict=True))
        print(
            f"| {name} | {statistics.median(times[name]):.4f} | {statistics.median(times[name]) / base:.3f} | {per} |"
        )


if __name__ == "__main__":
    main()
