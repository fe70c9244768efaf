"""DDP scaling of the file-backed 224-px path: images/s of ``lt-lightning`` training on 1 device vs on N devices.

A fake ImageNet-LT tree of full-size JPEGs (``data_path.write_tree``) is trained on with the ImageNet-LT recipe
(RandomResizedCrop 224 + flip + ColorJitter, ``--backbone``, batch ``--batch`` PER DEVICE, SGD) for ``--steps``
steps after ``--warmup`` steps, once with ``devices=1`` and once with ``devices=N`` (strategy ``ddp``; this script
is the launched process, so Lightning starts the other ranks). Reported: images/s of each and the scaling
efficiency ``images/s(N) / (N * images/s(1))`` (target >= 0.9 on GPUs).

    python benchmarks/ddp_scaling.py --accelerator gpu --devices 2 [--backbone resnet50] [--batch 64]
    python benchmarks/ddp_scaling.py --accelerator cpu --devices 2 --backbone resnet18 --batch 8 --steps 4  # smoke

Each measurement runs in its own subprocess (a DDP run cannot follow a single-device one in one process).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_path import write_tree  # noqa: E402


class Throughput(L.Callback):
    """Wall time of the training steps after ``warmup`` (all ranks step together under DDP)."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.images, self.seconds = warmup, 0.0, 0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self.warmup:
            self.images += len(batch[1]) * trainer.world_size

    def on_train_end(self, trainer, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


def run_one(args) -> None:
    """One measurement (the subprocess): prints a JSON line with images/s on rank 0."""
    from lt_lightning.benchmarking import QUIET_TRAINER
    from lt_lightning.data import LongTailDataModule
    from lt_lightning.methods import LongTailClassifier

    L.seed_everything(0, verbose=False)
    dm = LongTailDataModule("imagenet_lt", root=args.tree, batch_size=args.batch, num_workers=args.workers)
    model = LongTailClassifier(
        dm.class_counts, backbone=args.backbone, class_names=dm.class_names, divergence_factor=None,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    )  # fmt: skip
    meter = Throughput(args.warmup)
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=args.run_devices,
        strategy="ddp" if args.run_devices > 1 else "auto",
        precision=args.precision,
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[meter],
        default_root_dir=tempfile.mkdtemp(),
        use_distributed_sampler=True,
        **QUIET_TRAINER,
    )
    trainer.fit(model, datamodule=dm)
    if trainer.is_global_zero:
        print(json.dumps({"devices": args.run_devices, "images_per_s": meter.images / meter.seconds}), flush=True)


def measure(args, devices: int) -> float:
    cmd = [sys.executable, __file__, "--run-devices", str(devices), *sys.argv[1:]]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ}).stdout
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return float(lines[-1]["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", default="gpu")
    parser.add_argument("--devices", type=int, default=torch.cuda.device_count() or 2)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--batch", type=int, default=64, help="per device")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers per device")
    parser.add_argument("--precision", default="bf16-mixed" if torch.cuda.is_available() else "32-true")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--head", type=int, default=200)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "lt_lightning_data_path")
    parser.add_argument("--run-devices", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_devices:
        run_one(args)
        return
    tree = args.cache / f"imagenet_lt_{args.classes}c_{args.head}h_500x375"
    n_train = write_tree(tree, args.classes, args.head, 10.0, (500, 375))
    sys.argv += ["--tree", str(tree)]
    one = measure(args, 1)
    many = measure(args, args.devices)
    print("| devices | images/s | per device | efficiency |\n|---|---|---|---|")
    print(f"| 1 | {one:.1f} | {one:.1f} | 1.00 |")
    print(f"| {args.devices} | {many:.1f} | {many / args.devices:.1f} | {many / (args.devices * one):.2f} |")
    setting = f"{args.backbone}, batch {args.batch}/device, {args.precision}, {args.accelerator}"
    print(f"({n_train} training JPEGs, {setting})")


if __name__ == "__main__":
    main()
