"""Training throughput: ``LongTailClassifier`` under a Lightning Trainer vs a plain PyTorch loop.

Same model (ResNet-32, cosine head), same loss (LDAM, CIFAR-10-LT rho = 100 counts), same optimizer (SGD 0.1,
momentum 0.9, wd 2e-4), same in-memory data (random 32x32 images, batch 128). Both are timed over the same number
of steady-state optimizer steps after warm-up steps, alternating plain / Lightning runs. A step's time is the
interval from one iteration's start to the next's (data fetch, forward, backward, optimizer step and, for Lightning,
all its hooks and logging). Reported: the ratio of the median step times over all repeats, and the median of the
per-repeat ratios (medians shrug off bursts of load on a shared machine). Target: Lightning / plain <= 1.10.

    .venv/bin/python benchmarks/throughput.py [--steps 20] [--warmup 3] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.benchmarking import QUIET_TRAINER
from lt_lightning.losses import LDAMLoss
from lt_lightning.methods import LongTailClassifier
from lt_lightning.models import resnet32

COUNTS = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)
BATCH = 128


def make_loader(steps: int, device: str) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH * steps, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (BATCH * steps,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, pin_memory=device == "cuda")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def plain_loop(steps: int, warmup: int, device: str, precision: str) -> list[float]:
    """Per-step seconds of a hand-written loop (the baseline)."""
    torch.manual_seed(0)
    model = resnet32(num_classes=10, head="cosine").to(device)
    criterion = LDAMLoss(COUNTS).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    autocast = precision == "bf16-mixed"
    model.train()
    starts = []
    for x, y in make_loader(steps + warmup, device):
        sync(device)
        starts.append(time.perf_counter())
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
            loss = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync(device)
    starts.append(time.perf_counter())
    return intervals(starts, warmup)


def intervals(starts: list[float], warmup: int) -> list[float]:
    """Durations between consecutive iteration starts, after the warm-up steps."""
    return [b - a for a, b in zip(starts[warmup:], starts[warmup + 1 :], strict=False)]


class StepTimer(L.Callback):
    """Start time of every training iteration (and the end of the last one)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        sync(pl_module.device.type)
        self.starts.append(time.perf_counter())

    def on_train_epoch_end(self, trainer, pl_module):
        sync(pl_module.device.type)
        self.starts.append(time.perf_counter())


def lightning_loop(steps: int, warmup: int, device: str, precision: str) -> list[float]:
    """Per-step seconds of LongTailClassifier.fit on the same model, loss, optimizer and data."""
    torch.manual_seed(0)
    model = LongTailClassifier(
        COUNTS,
        backbone="resnet32",
        loss="ldam",
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=2e-4),
        lr_scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0),
    )
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator=device,
        devices=1,
        precision=precision,
        max_epochs=1,
        **QUIET_TRAINER,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(model, train_dataloaders=make_loader(steps + warmup, device))
    return intervals(timer.starts, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"])
    args = parser.parse_args()
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
    plain, light, ratios = [], [], []
    for _ in range(args.repeats):  # alternate, so drifts in machine load hit both sides alike
        p_steps = plain_loop(args.steps, args.warmup, args.device, args.precision)
        l_steps = lightning_loop(args.steps, args.warmup, args.device, args.precision)
        plain += p_steps
        light += l_steps
        ratios.append(statistics.median(l_steps) / statistics.median(p_steps))
    p, li = statistics.median(plain), statistics.median(light)
    print(
        f"device={args.device} precision={args.precision} threads={torch.get_num_threads()} "
        f"steps={args.steps} warmup={args.warmup} repeats={args.repeats}"
    )
    print("| loop | s/step (median) | images/s |")
    print("|---|---|---|")
    print(f"| plain PyTorch | {p:.4f} | {BATCH / p:.0f} |")
    print(f"| LongTailClassifier + Trainer | {li:.4f} | {BATCH / li:.0f} |")
    print(
        f"ratio Lightning / plain of the median step times: {li / p:.3f}; median of the {args.repeats} per-repeat "
        f"ratios: {statistics.median(ratios):.3f} (runs: {', '.join(f'{r:.3f}' for r in ratios)}; target <= 1.10)"
    )


if __name__ == "__main__":
    main()
