"""Data-layer timings on one CPU core: building a long-tailed split, and drawing one epoch of each sampler.

Run: ``.venv/bin/python benchmarks/data.py`` (prints a markdown table; target: every median under 0.5 s).

* Split: a balanced pool of 1,000,000 labels over 1,000 classes (1,000 each, shuffled), then
  ``make_class_counts`` + ``long_tail_indices`` for exponential (rho 100) and zipf (a = 2, min 5) profiles.
* Samplers: the exponential rho-100 split of that pool keeps only ~215k labels, too few, so the samplers draw
  over a separately built long-tailed array of 1,000,068 labels (class c has ``int(4648 * 0.01 ** (c / 999))``
  images, rho 100), shuffled. One epoch = construct + ``set_epoch(1)`` + ``list(iter(sampler))``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from lt_lightning.data.samplers import SAMPLERS
from lt_lightning.data.subsets import long_tail_indices
from lt_lightning.profiles import make_class_counts

TARGET_S = 0.5
NUM_CLASSES = 1000
PER_CLASS = 1000
LT_HEAD = 4648  # exponential rho 100 over 1,000 classes with this head totals 1,000,068 labels


def pin_one_core() -> str:
    """One intra-op thread and, where the OS allows, one CPU; returns what was done."""
    torch.set_num_threads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
        return "torch.set_num_threads(1), sched_setaffinity {0}"
    return "torch.set_num_threads(1)"


def time_it(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median, min) wall-clock seconds of ``repeats`` calls, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def balanced_pool(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(NUM_CLASSES), PER_CLASS))


def long_tailed_labels(seed: int = 0) -> np.ndarray:
    """1,000,068 labels, class c has ``int(4648 * 0.01 ** (c / 999))`` of them (rho 100), shuffled."""
    counts = make_class_counts("exponential", [LT_HEAD] * NUM_CLASSES, imbalance_ratio=100)
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(NUM_CLASSES), counts))


def split_cases(pool: np.ndarray) -> dict[str, Callable[[], object]]:
    available = np.bincount(pool, minlength=NUM_CLASSES)

    def exponential():
        counts = make_class_counts("exponential", available, imbalance_ratio=100)
        return long_tail_indices(pool, counts, seed=0)

    def zipf():
        counts = make_class_counts("zipf", available, zipf_exponent=2.0, zipf_min=5)
        return long_tail_indices(pool, counts, seed=0)

    return {"split: exponential rho 100": exponential, "split: zipf a=2 min 5": zipf}


def sampler_cases(targets: np.ndarray) -> dict[str, Callable[[], object]]:
    def epoch(cls):
        def run():
            sampler = cls(targets, seed=0)
            sampler.set_epoch(1)
            return list(iter(sampler))

        return run

    return {f"sampler: {name}": epoch(cls) for name, cls in SAMPLERS.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    pinning = pin_one_core()
    pool = balanced_pool()
    targets = long_tailed_labels()
    kept = len(split_cases(pool)["split: exponential rho 100"]()[0])
    print(f"# Data layer on one core ({pinning}); {args.repeats} repeats after a warm-up")
    print(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"split pool: {len(pool):,} labels, {NUM_CLASSES} classes x {PER_CLASS} (exponential rho 100 keeps {kept:,})")
    print(f"sampler targets: {len(targets):,} labels, long-tailed (rho 100, head {LT_HEAD:,}), {NUM_CLASSES} classes\n")
    rows = []
    for name, fn in {**split_cases(pool), **sampler_cases(targets)}.items():
        median, best = time_it(fn, args.repeats)
        rows.append((name, median, best, "ok" if median < TARGET_S else "OVER"))
    print(f"| case | median (s) | min (s) | target < {TARGET_S} s |")
    print("|---|---:|---:|---|")
    for name, median, best, verdict in rows:
        print(f"| {name} | {median:.3f} | {best:.3f} | {verdict} |")


if __name__ == "__main__":
    main()
