"""Data-path throughput at 224 px: lt_lightning's split-list loader vs a plain torchvision ImageFolder + DataLoader.

A fake ImageNet-LT tree of full-size JPEGs (default 500x375, smooth colour fields with noise, quality 90) is written
once into ``--cache`` in the real layout (``train/<synset>/<synset>_<n>.JPEG``, ``val/<synset>/...`` and the three
``ImageNet_LT_*.txt`` lists; an exponential profile over the classes). Both loaders read the SAME training files with
the SAME recipe (RandomResizedCrop 224 + flip + ColorJitter(0.4, 0.4, 0.4) + normalise, batch ``--batch``):

- plain: ``torchvision.datasets.ImageFolder(train/)`` with the classic PIL transforms, ``DataLoader(shuffle=True)``;
- ours: ``LongTailDataModule("imagenet_lt", root=tree, sampler=...).train_dataloader()`` (PIL decode, uint8 tensor,
  torchvision v2 transforms), for each sampler.

Images/s are measured over ``--batches`` batches after one warm-up batch (worker start-up excluded), alternating plain
and ours, ``--repeats`` times; reported: the median images/s of each and the ratio ours / plain (target >= 1.0).
Then the split-list start-up time at iNaturalist scale (437,513 + 24,426 lines, see split_list_startup.py).

    .venv/bin/python benchmarks/data_path.py [--workers 0 1 2] [--batches 8] [--repeats 3] [--batch 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from lt_lightning.data import LongTailDataModule
from lt_lightning.data.datasets import IMAGENET_MEAN, IMAGENET_STD

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run from anywhere: the sibling script below
from split_list_startup import measure_startup  # noqa: E402

SAMPLERS = ("instance", "class_balanced", "square_root", "class_aware_cycle", "progressive")


def fake_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A photo-like JPEG source: a smooth random colour field plus mild noise (decodes like a real photo)."""
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), dtype=np.int16)
    noise = rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(field + noise, 0, 255).astype(np.uint8))


def write_tree(root: Path, classes: int, head: int, ratio: float, size: tuple[int, int], seed: int = 0) -> int:
    """The fake ImageNet-LT tree (skipped when its lists exist); returns the number of training images."""
    train_list = root / "ImageNet_LT_train.txt"
    if train_list.is_file():
        return sum(1 for _ in train_list.open())
    rng = np.random.default_rng(seed)
    counts = [max(1, int(head * ratio ** (-c / max(classes - 1, 1)))) for c in range(classes)]
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for label, count in enumerate(counts):
        synset = f"n{label:08d}"
        for split, folder, n in (("train", "train", count), ("val", "train", 2), ("test", "val", 2)):
            (root / folder / synset).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rel = f"{folder}/{synset}/{synset}_{split}_{i}.JPEG"
                fake_image(rng, *size).save(root / rel, quality=90)
                lines[split].append(f"{rel} {label}")
    for split, entries in lines.items():
        (root / f"ImageNet_LT_{split}.txt").write_text("\n".join(entries) + "\n")
    return len(lines["train"])


def plain_loader(root: Path, batch: int, workers: int) -> DataLoader:
    """torchvision ImageFolder + the classifier-balancing PIL recipe (the baseline)."""
    recipe = transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    folder = datasets.ImageFolder(str(root / "train"), transform=recipe)
    return DataLoader(folder, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=False)


def our_loader(root: Path, batch: int, workers: int, sampler: str) -> DataLoader:
    dm = LongTailDataModule("imagenet_lt", root=root, batch_size=batch, num_workers=workers, sampler=sampler)
    return dm.train_dataloader()


def images_per_second(loader: DataLoader, batches: int) -> float:
    """Images/s over ``batches`` batches after one warm-up batch (worker start-up is not counted)."""
    iterator = iter(loader)
    next(iterator)
    seen, start = 0, time.perf_counter()
    for _ in range(batches):
        x, _y = next(iterator)[:2]
        seen += len(x)
    elapsed = time.perf_counter() - start
    del iterator
    return seen / elapsed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--head", type=int, default=60, help="training images of the largest class")
    parser.add_argument("--ratio", type=float, default=10.0, help="imbalance ratio of the fake tree")
    parser.add_argument("--size", type=int, nargs=2, default=[500, 375], metavar=("W", "H"))
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "lt_lightning_data_path")
    parser.add_argument("--startup-lines", type=int, default=437_513, help="0 skips the start-up measurement")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the loaders' own threads; workers are separate processes
    root = args.cache / f"imagenet_lt_{args.classes}c_{args.head}h_{args.size[0]}x{args.size[1]}"
    start = time.perf_counter()
    n_train = write_tree(root, args.classes, args.head, args.ratio, tuple(args.size))
    print(
        f"fake ImageNet-LT tree: {n_train} training JPEGs {args.size[0]}x{args.size[1]} at {root} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    if n_train < args.batch * (args.batches + 1):
        sys.exit(
            f"--batches {args.batches} x --batch {args.batch} needs {args.batch * (args.batches + 1)} images; "
            f"the tree has {n_train}: raise --head or --classes"
        )
    results = {}
    print(f"{'workers':>7} {'sampler':>18} {'plain img/s':>12} {'ours img/s':>11} {'ours/plain':>10}")
    for workers in args.workers:
        for sampler in args.samplers:
            plain, ours = [], []
            for _ in range(args.repeats):
                plain.append(images_per_second(plain_loader(root, args.batch, workers), args.batches))
                ours.append(images_per_second(our_loader(root, args.batch, workers, sampler), args.batches))
            p, o = statistics.median(plain), statistics.median(ours)
            results[(workers, sampler)] = (p, o)
            print(f"{workers:>7} {sampler:>18} {p:>12.1f} {o:>11.1f} {o / p:>10.2f}", flush=True)
    if args.startup_lines:
        lines = args.startup_lines  # iNat's 437,513 / 24,426 lines and 8142 classes by default; scaled down below
        classes = min(8142, max(lines // 50, 2))
        with tempfile.TemporaryDirectory() as tmp:
            startup = measure_startup(Path(tmp), n_train=lines, n_val=min(24_426, 3 * classes), num_classes=classes)
        print(f"split-list start-up at {args.startup_lines} lines: {startup}")
        results["startup"] = startup
    return results


if __name__ == "__main__":
    main()
