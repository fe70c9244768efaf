"""Writers of tiny datasets in the real on-disk formats, for tests (no network, a few KB each).

Each writer takes the same ``root`` that ``lt_lightning.data.datasets.load_dataset(name, root)`` takes, writes
seeded random images with labels ``0, 1, ..., K-1, 0, 1, ...`` (every class ``n_per_class`` times) and returns
what it wrote, so tests can compare pixels exactly. Reused by the dataset, datamodule and CLI tests.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image


class Arrays(NamedTuple):
    """What an array-format writer wrote: images uint8 (N, H, W[, C]) and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _arrays(num_classes: int, n_per_class: int, n_test_per_class: int, shape: tuple[int, ...], seed: int) -> Arrays:
    rng = np.random.default_rng(seed)
    y_train = np.tile(np.arange(num_classes), n_per_class).astype(np.int64)
    y_test = np.tile(np.arange(num_classes), n_test_per_class).astype(np.int64)
    x_train = rng.integers(0, 256, (len(y_train), *shape), dtype=np.uint8)
    x_test = rng.integers(0, 256, (len(y_test), *shape), dtype=np.uint8)
    return Arrays(x_train, y_train, x_test, y_test)


def write_cifar_pickle(path: Path, entry: dict) -> None:
    """Pickle one CIFAR batch / meta dict (protocol 2, as the released Python-2 era files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def to_cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) HWC images -> (N, 3072) rows of R, G, B planes, each row-major (the CIFAR layout)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), 3072)


def write_cifar10(root: str | Path, n_per_class: int = 2, n_test_per_class: int = 1, seed: int = 0) -> Arrays:
    """``root/cifar-10-batches-py/`` with data_batch_1..5 (the training images dealt round-robin), test_batch
    and batches.meta (``label_names``: the real CIFAR-10 names)."""
    data = _arrays(10, n_per_class, n_test_per_class, (32, 32, 3), seed)
    folder = Path(root) / "cifar-10-batches-py"
    rows = to_cifar_rows(data.x_train)
    parts = np.array_split(np.arange(len(rows)), 5)
    for i, part in enumerate(parts, start=1):
        entry = {"batch_label": f"training batch {i} of 5", "labels": data.y_train[part].tolist(), "data": rows[part]}
        write_cifar_pickle(folder / f"data_batch_{i}", entry)
    test = {"batch_label": "testing batch 1 of 1", "labels": data.y_test.tolist(), "data": to_cifar_rows(data.x_test)}
    write_cifar_pickle(folder / "test_batch", test)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    write_cifar_pickle(folder / "batches.meta", {"label_names": names, "num_vis": 3072, "num_cases_per_batch": 10000})
    order = np.concatenate(parts)  # the loader concatenates batches 1..5 in order
    return Arrays(data.x_train[order], data.y_train[order], data.x_test, data.y_test)


def write_cifar100(root: str | Path, n_per_class: int = 1, n_test_per_class: int = 1, seed: int = 0) -> Arrays:
    """``root/cifar-100-python/`` with train, test (``fine_labels`` and ``coarse_labels``) and meta
    (``fine_label_names`` "class_00".."class_99", ``coarse_label_names``)."""
    data = _arrays(100, n_per_class, n_test_per_class, (32, 32, 3), seed)
    folder = Path(root) / "cifar-100-python"
    for name, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        entry = {"fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist(), "data": to_cifar_rows(x)}
        write_cifar_pickle(folder / name, entry)
    meta = {
        "fine_label_names": [f"class_{i:02d}" for i in range(100)],
        "coarse_label_names": [str(i) for i in range(20)],
    }
    write_cifar_pickle(folder / "meta", meta)
    return data


def idx_bytes(array: np.ndarray) -> bytes:
    """An uint8 array in the idx format: 0, 0, 0x08, ndim, big-endian int32 sizes, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_mnist(
    root: str | Path, folder: str | None = "MNIST", gz: bool = False, n_per_class: int = 2, seed: int = 0
) -> Arrays:
    """The four MNIST idx files (28x28, 10 classes) in ``root/<folder>/raw/`` (torchvision's layout; use
    folder "FashionMNIST" or "KMNIST" for those) or directly in ``root`` when ``folder`` is None; ``.gz`` if gz."""
    data = _arrays(10, n_per_class, 1, (28, 28), seed)
    directory = Path(root) if folder is None else Path(root) / folder / "raw"
    directory.mkdir(parents=True, exist_ok=True)
    for stem, array in (
        ("train-images-idx3-ubyte", data.x_train),
        ("train-labels-idx1-ubyte", data.y_train),
        ("t10k-images-idx3-ubyte", data.x_test),
        ("t10k-labels-idx1-ubyte", data.y_test),
    ):
        raw = idx_bytes(array)
        if gz:
            (directory / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)
    return data


def write_k49(root: str | Path, n_per_class: int = 1, classmap: bool = True, seed: int = 0) -> Arrays:
    """The four Kuzushiji-49 npz files (key ``arr_0``, 28x28, 49 classes) in ``root``, and ``k49_classmap.csv``
    (index,codepoint,char with hiragana U+3042 + index) when ``classmap``."""
    data = _arrays(49, n_per_class, 1, (28, 28), seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, array in zip(
        ("k49-train-imgs", "k49-train-labels", "k49-test-imgs", "k49-test-labels"), data, strict=True
    ):
        np.savez_compressed(root / f"{name}.npz", array)
    if classmap:
        lines = ["index,codepoint,char"] + [f"{i},U+{0x3042 + i:04X},{chr(0x3042 + i)}" for i in range(49)]
        (root / "k49_classmap.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data


def write_gtsrb(root: str | Path, n_per_class: int = 1, test_labels: tuple[int, ...] = (0, 42, 7), seed: int = 0):
    """torchvision's GTSRB tree: ``root/gtsrb/GTSRB/Training/<00000..00042>/*.ppm`` (with the per-class GT csv
    the release has), ``root/gtsrb/GTSRB/Final_Test/Images/*.ppm`` and ``root/gtsrb/GT-final_test.csv``.

    Image ``k`` of the test set is ``(5 + k) x (6 + k)`` pixels (sizes vary, as in GTSRB). Returns
    ``(test_images, test_labels)``: the HWC uint8 arrays written to the test files, and their labels.
    """
    rng = np.random.default_rng(seed)
    base = Path(root) / "gtsrb"
    for c in range(43):
        folder = base / "GTSRB" / "Training" / f"{c:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"GT-{c:05d}.csv").write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n")
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).save(folder / f"00000_{i:05d}.ppm")
    images_dir = base / "GTSRB" / "Final_Test" / "Images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rows, images = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"], []
    for k, label in enumerate(test_labels):
        image = rng.integers(0, 256, (5 + k, 6 + k, 3), dtype=np.uint8)
        Image.fromarray(image).save(images_dir / f"{k:05d}.ppm")
        rows.append(f"{k:05d}.ppm;{6 + k};{5 + k};1;1;{5 + k};{4 + k};{label}")
        images.append(image)
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return images, np.array(test_labels, dtype=np.int64)


def write_imagefolder(
    root: str | Path,
    classes: tuple[str, ...] = ("cat", "dog", "emu"),
    n_per_class: int = 2,
    eval_dir: str = "test",
    eval_classes: tuple[str, ...] | None = None,
    size: tuple[int, int] = (5, 4),
    seed: int = 0,
) -> dict[Path, np.ndarray]:
    """PNG images in ``root/train/<class>/`` and ``root/<eval_dir>/<class>/`` (one per class, or per
    ``eval_classes``). Returns ``{path: HWC uint8 RGB array written}``."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, names, n in (("train", classes, n_per_class), (eval_dir, eval_classes or classes, 1)):
        for name in names:
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(image).save(folder / f"img{i}.png")
                written[folder / f"img{i}.png"] = image
    return written


def write_npz(
    path: str | Path,
    shape: tuple[int, ...] = (6, 6, 3),
    num_classes: int = 3,
    n_per_class: int = 2,
    class_names: tuple[str, ...] | None = None,
    seed: int = 0,
) -> Arrays:
    """One ``.npz`` at ``path`` with ``x_train, y_train, x_test, y_test`` (and ``class_names`` when given)."""
    data = _arrays(num_classes, n_per_class, 1, shape, seed)
    extra = {} if class_names is None else {"class_names": np.array(class_names)}
    np.savez(path, **data._asdict(), **extra)
    return data
