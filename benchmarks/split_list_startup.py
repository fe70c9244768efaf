"""Start-up cost of a split-list dataset at iNaturalist 2018 scale (437,513 train / 24,426 val lines, 8142 classes).

Writes iNat-style lists (``train_val2018/<supercategory>/<category>/<32 hex>.jpg <category>``) without images, then
times: parsing the train list alone, ``load_dataset("split_lists", ...)`` with ``check_files=0``, the
``LongTailDataModule`` construction on top (profile none, the given val list), and the sampled existence check
(64 paths a list plus first and last; only those files are created, empty). Memory: the PathTable bytes and targets.

    .venv/bin/python benchmarks/split_list_startup.py [--dir /tmp/inat_lists]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

SUPERCATEGORIES = ("Plantae", "Insecta", "Aves", "Reptilia", "Mammalia", "Fungi", "Amphibia", "Mollusca")


def _write_list(file: Path, labels: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**63, size=(len(labels), 2), dtype=np.int64)
    lines = [
        f"train_val2018/{SUPERCATEGORIES[y % 8]}/{y}/{a:016x}{b:016x}.jpg {y}\n"
        for y, (a, b) in zip(labels.tolist(), hashes.tolist(), strict=True)
    ]
    file.write_text("".join(lines))


def measure_startup(tmp_dir: str | Path, n_train: int = 437_513, n_val: int = 24_426, num_classes: int = 8142) -> dict:
    """Write the lists in ``tmp_dir`` and return the timings (seconds) and memory (bytes) as a dict."""
    from lt_lightning.data import LongTailDataModule
    from lt_lightning.data.datasets import load_dataset
    from lt_lightning.data.split_lists import check_sample, read_split_list

    root = Path(tmp_dir)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    train_labels = np.concatenate([np.arange(num_classes), rng.integers(0, num_classes, n_train - num_classes)])
    val_labels = np.arange(n_val) % num_classes
    _write_list(root / "train.txt", train_labels, 1)
    _write_list(root / "val.txt", val_labels, 2)
    kwargs = {"train_list": "train.txt", "test_list": "val.txt", "check_files": 0}

    t0 = time.perf_counter()
    parsed = read_split_list(root / "train.txt", root)
    parse_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = load_dataset("split_lists", root, **kwargs)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    LongTailDataModule("split_lists", root=root, batch_size=256, dataset_kwargs=kwargs)
    datamodule_s = time.perf_counter() - t0

    # The sampled check: create just the files it looks at (empty), then time it on both lists.
    from lt_lightning.data.split_lists import sample_indices

    for lst in (base.train, base.test):
        for i in sample_indices(len(lst), 64):
            path = Path(lst.paths[int(i)])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    test = read_split_list(root / "val.txt", root)
    t0 = time.perf_counter()
    check_sample("split_lists", parsed, 64, root)
    check_sample("split_lists", test, 64, root)
    check_s = time.perf_counter() - t0
    return {
        "n_train": n_train,
        "n_val": n_val,
        "num_classes": num_classes,
        "list_bytes": (root / "train.txt").stat().st_size + (root / "val.txt").stat().st_size,
        "parse_train_s": parse_s,
        "load_s": load_s,
        "datamodule_s": datamodule_s,
        "check_64_s": check_s,
        "pathtable_nbytes": base.train.paths.nbytes + base.test.paths.nbytes,
        "targets_nbytes": base.train.targets.nbytes + base.test.targets.nbytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=None, help="folder for the lists (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure_startup(args.dir or tmp)
    for key, value in result.items():
        print(f"{key:>18}: {value:.3f}" if isinstance(value, float) else f"{key:>18}: {value:,}")


if __name__ == "__main__":
    main()
