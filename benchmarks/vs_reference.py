"""Side by side: the reference LDAM-DRW training loop vs ``lt-lightning fit`` (loader path, device-resident path).

Same machine, same CIFAR-10-LT split (rho = 100, the datamodule's ``subset_seed`` 0: 12,406 training images), same
model (ResNet-32, cosine head), batch 128, LDAM-DRW recipe (SGD 0.1 / 0.9 / 2e-4, 5 warm-up epochs, x0.01 at 160
and 180, class-balanced weights from epoch 160), and the same epoch: train, then evaluate on the 10,000 test images.

- (a) reference: a faithful plain-PyTorch re-implementation of the LDAM-DRW ``cifar_train.py`` loop: torchvision's
  ``CIFAR10`` dataset restricted to the split, per-sample PIL ``RandomCrop(32, 4)`` + flip + ``ToTensor`` +
  ``Normalize``, ``DataLoader(batch 128, shuffle, num_workers=--workers, pin_memory)``, test loader batch 100;
  ``adjust_learning_rate`` per epoch; LDAM loss with the DRW weights of the epoch.
- (b) ``lt-lightning fit`` of ``examples/cifar10_lt_ldam_drw.yaml`` with the default data path (``num_workers`` =
  --workers).
- (c) the same with ``data.init_args.data_on_device=true`` (uint8 split on the device, batched augmentation).

Timing: ``--epochs`` epochs of each per repeat, alternating (a), (b), (c), ``--repeats`` times; the first epoch of
each run is a warm-up and is not counted. An epoch may be truncated to ``--limit-batches`` training batches and
``--limit-eval-batches`` test batches (CPU runs; say so when reporting). Reported: median seconds per epoch, training
images/s, and the ratios (b)/(a), (c)/(a) (< 1 = faster than the reference).

``--full``: one full run of (a) and (c) of ``--full-epochs`` (default 200), reporting wall time and the final
balanced test accuracy of both on the same split.

Data: the CIFAR-10 python batches under ``--root`` (``cifar-10-batches-py``); when absent, a fake set in that format
(random images, 5000 / 1000 per class) is written there first (accuracy figures are then meaningless).

    .venv/bin/python benchmarks/vs_reference.py [--device cpu|cuda] [--epochs 2] [--repeats 3] [--limit-batches 20]
    .venv/bin/python benchmarks/vs_reference.py --device cuda --full
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from lt_lightning.benchmarking import QUIET_TRAINER
from lt_lightning.data import LongTailDataModule
from lt_lightning.data.datasets import CIFAR_MEAN, CIFAR_STD
from lt_lightning.functional.metrics import balanced_accuracy, per_class_accuracy, per_class_counts
from lt_lightning.functional.weights import effective_number_weights
from lt_lightning.losses import LDAMLoss
from lt_lightning.methods import LDAMDRW
from lt_lightning.models import resnet32
from lt_lightning.optim import WarmupMultiStepLR
from lt_lightning.optim.schedulers import warmup_multistep_factor

LR = 0.1


def schedule(epochs: int) -> tuple[tuple[int, int], int]:
    """LR milestones and the DRW epoch for a run of ``epochs``: 160, 180 and 160 for the reference's 200 (80 % / 90 %),
    scaled for shorter ``--full-epochs`` runs (both loops always use the same)."""
    return (int(0.8 * epochs), int(0.9 * epochs)), int(0.8 * epochs)


def write_fake_cifar10(root: Path, n_train: int = 5000, n_test: int = 1000, seed: int = 0) -> None:
    """The CIFAR-10 python batches (5 training batches, test batch, meta) with random images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def dump(name: str, count: int) -> None:
        labels = np.tile(np.arange(10), count // 10).tolist()
        entry = {"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), "labels": labels}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)

    for i in range(1, 6):
        dump(f"data_batch_{i}", n_train * 10 // 5)
    dump("test_batch", n_test * 10)
    with open(folder / "batches.meta", "wb") as f:
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        pickle.dump({"label_names": names}, f, protocol=2)


BATCH = {"train": 128, "eval": 100}  # the reference's; --batch / --eval-batch change them (smoke tests)


def datamodule(root: Path, workers: int, on_device: bool) -> LongTailDataModule:
    kwargs = {"data_on_device": True} if on_device else {}
    return LongTailDataModule(
        "cifar10", root=root, imbalance_ratio=100, batch_size=BATCH["train"], eval_batch_size=BATCH["eval"],
        num_workers=0 if on_device else workers, **kwargs,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- (a) the reference loop
class CIFAR10Files(datasets.CIFAR10):
    """torchvision's CIFAR10, reading the files without their MD5 check (a fake set has other checksums)."""

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class ReferenceRun:
    """The LDAM-DRW cifar_train.py loop in plain PyTorch, on the datamodule's split (same images, same order)."""

    def __init__(self, root: Path, workers: int, device: str, seed: int = 0, epochs: int = 200) -> None:
        torch.manual_seed(seed)
        self.milestones, self.drw_epoch = schedule(epochs)
        dm = datamodule(root, workers, on_device=False)
        self.counts = dm.class_counts
        normalize = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
        train_tf = transforms.Compose(
            [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
        )
        test_tf = transforms.Compose([transforms.ToTensor(), normalize])
        train_full = CIFAR10Files(str(root), train=True, transform=train_tf, download=False)
        test = CIFAR10Files(str(root), train=False, transform=test_tf, download=False)
        pool_index = dm.train_indices  # the pool images the split kept, in the split's order
        pin = device == "cuda"
        self.train_loader = DataLoader(
            Subset(train_full, pool_index.tolist()), batch_size=BATCH["train"], shuffle=True, num_workers=workers,
            pin_memory=pin, persistent_workers=False,
        )  # fmt: skip
        self.test_loader = DataLoader(
            test, batch_size=BATCH["eval"], shuffle=False, num_workers=workers, pin_memory=pin
        )
        self.device = device
        self.model = resnet32(num_classes=10, head="cosine").to(device)
        self.criterion = LDAMLoss(self.counts).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=0.9, weight_decay=2e-4)
        self.epoch = 0

    def run_epoch(self, limit: int | None = None, limit_eval: int | None = None) -> tuple[float, int]:
        """One epoch (train, then test); returns (seconds, training images)."""
        start = time.perf_counter()
        for group in self.optimizer.param_groups:  # adjust_learning_rate
            group["lr"] = LR * warmup_multistep_factor(self.epoch, 5, self.milestones, 0.01)
        beta = 0.9999 if self.epoch >= self.drw_epoch else 0.0  # DRW: idx = epoch // 160
        self.criterion.set_class_weight(effective_number_weights(self.counts, beta) if beta else None)
        self.model.train()
        seen = 0
        for i, (x, y) in enumerate(self.train_loader):
            if limit is not None and i >= limit:
                break
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            loss = self.criterion(self.model(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            seen += len(y)
        self.evaluate(limit_eval)
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.epoch += 1
        return time.perf_counter() - start, seen

    @torch.no_grad()
    def evaluate(self, limit: int | None = None) -> float:
        self.model.eval()
        preds, labels = [], []
        for i, (x, y) in enumerate(self.test_loader):
            if limit is not None and i >= limit:
                break
            preds.append(self.model(x.to(self.device, non_blocking=True)).argmax(1).cpu())
            labels.append(y)
        correct, support = per_class_counts(torch.cat(preds), torch.cat(labels), 10)
        return float(balanced_accuracy(per_class_accuracy(correct, support)))


# ------------------------------------------------------------------------------------------- (b), (c) lt-lightning
class EpochTimer(L.Callback):
    """Wall time of each epoch (training + validation), and the training images seen."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.images: list[int] = []
        self._start = 0.0
        self._seen = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start, self._seen = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._seen += len(batch[1])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)
        self.images.append(self._seen)


def lightning_run(
    root: Path, workers: int, device: str, epochs: int, on_device: bool, limit, limit_eval, seed=0, horizon=200
):
    """``epochs`` epochs of the LDAM-DRW preset's module and recipe; returns the EpochTimer and the final metrics."""
    L.seed_everything(seed, verbose=False)
    dm = datamodule(root, workers, on_device)
    model = LDAMDRW(
        dm.class_counts,
        backbone="resnet32",
        drw_start_epoch=schedule(horizon)[1],
        optimizer=lambda p: torch.optim.SGD(p, lr=LR, momentum=0.9, weight_decay=2e-4),
        lr_scheduler=lambda o: WarmupMultiStepLR(o, warmup_epochs=5, milestones=list(schedule(horizon)[0]), gamma=0.01),
    )
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        callbacks=[timer],
        num_sanity_val_steps=0,
        limit_train_batches=limit or 1.0,
        limit_val_batches=limit_eval or 1.0,
        default_root_dir=tempfile.mkdtemp(),
        **QUIET_TRAINER,
    )
    trainer.fit(model, datamodule=dm)
    return timer, {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("data"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of (a) and (b) (LDAM: 4)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the first is a warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit-batches", type=int, default=None, help="training batches per epoch (default all)")
    parser.add_argument("--limit-eval-batches", type=int, default=None, help="test batches per epoch (default all)")
    parser.add_argument("--variants", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    parser.add_argument("--full", action="store_true", help="full runs of (a) and (c): wall time and accuracy")
    parser.add_argument("--full-epochs", type=int, default=200, help="LR drops and DRW at 80 %% / 90 %% of it")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of the --full runs")
    parser.add_argument("--batch", type=int, default=128, help="training batch (the reference's 128)")
    parser.add_argument("--eval-batch", type=int, default=100, help="test batch (the reference's 100)")
    parser.add_argument("--fake-per-class", type=int, default=5000, help="training images per class of a fake set")
    args = parser.parse_args(argv)
    BATCH.update(train=args.batch, eval=args.eval_batch)
    if not (args.root / "cifar-10-batches-py" / "batches.meta").is_file():
        print(f"no CIFAR-10 under {args.root}: writing a fake set in its format (timings only)")
        write_fake_cifar10(args.root, n_train=args.fake_per_class, n_test=max(args.fake_per_class // 5, 1))
    if args.full:
        return full_runs(args)
    per_epoch: dict[str, list[float]] = {v: [] for v in args.variants}
    images: dict[str, list[float]] = {v: [] for v in args.variants}
    for _ in range(args.repeats):
        for variant in args.variants:
            if variant == "a":
                ref = ReferenceRun(args.root, args.workers, args.device)
                runs = [ref.run_epoch(args.limit_batches, args.limit_eval_batches) for _ in range(args.epochs)]
                times, seen = [t for t, _ in runs], [n for _, n in runs]
            else:
                timer, _ = lightning_run(
                    args.root, args.workers, args.device, args.epochs, variant == "c",
                    args.limit_batches, args.limit_eval_batches,
                )  # fmt: skip
                times, seen = timer.times, timer.images
            per_epoch[variant] += times[1:]
            images[variant] += [n / t for n, t in zip(seen[1:], times[1:], strict=True)]
    names = {"a": "(a) reference loop", "b": "(b) lt-lightning, loader", "c": "(c) lt-lightning, on device"}
    limits = f"{args.limit_batches}/{args.limit_eval_batches}"
    print(f"\n{args.device}, batch {args.batch}, workers {args.workers}, batch limits (train/test) {limits}")
    print(f"{'variant':<30} {'s / epoch':>10} {'train img/s':>12} {'vs (a)':>8}")
    result = {}
    for v in args.variants:
        seconds = statistics.median(per_epoch[v])
        ratio = seconds / statistics.median(per_epoch["a"]) if "a" in per_epoch else float("nan")
        result[v] = {"s_per_epoch": seconds, "images_per_s": statistics.median(images[v]), "ratio_vs_a": ratio}
        print(f"{names[v]:<30} {seconds:>10.2f} {result[v]['images_per_s']:>12.0f} {ratio:>8.2f}")
    return result


def full_runs(args) -> dict:
    """Full (a) and (c) runs per seed: wall time and final balanced test accuracy on the same split."""
    rows = []
    epochs = args.full_epochs
    for seed in args.seeds:
        start = time.perf_counter()
        ref = ReferenceRun(args.root, args.workers, args.device, seed=seed, epochs=epochs)
        for _ in range(epochs):
            ref.run_epoch()
        a_time, a_acc = time.perf_counter() - start, ref.evaluate()
        start = time.perf_counter()
        _, metrics = lightning_run(
            args.root, args.workers, args.device, epochs, True, None, None, seed=seed, horizon=epochs
        )
        c_time, c_acc = time.perf_counter() - start, metrics.get("val/balanced_acc", float("nan"))
        rows.append((seed, a_time, a_acc, c_time, c_acc))
        print(
            f"seed {seed}: (a) {a_time / 60:.2f} min, balanced acc {100 * a_acc:.2f} | (c) {c_time / 60:.2f} min, "
            f"balanced acc {100 * c_acc:.2f} | speed-up {a_time / c_time:.2f}x",
            flush=True,
        )
    a_accs, c_accs = [100 * r[2] for r in rows], [100 * r[4] for r in rows]

    def spread(values: list[float]) -> float:
        return statistics.stdev(values) if len(values) > 1 else 0.0

    print(
        f"{epochs} epochs, {len(rows)} seeds: (a) {statistics.mean(a_accs):.2f} +- {spread(a_accs):.2f}, "
        f"(c) {statistics.mean(c_accs):.2f} +- {spread(c_accs):.2f}; wall time (a) "
        f"{statistics.mean(r[1] for r in rows) / 60:.2f} min, (c) {statistics.mean(r[3] for r in rows) / 60:.2f} min"
    )
    return {"rows": rows}


if __name__ == "__main__":
    main()
