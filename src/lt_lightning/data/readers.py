"""Readers for the on-disk formats of the base datasets: plain numpy in, plain numpy out.

Nothing here builds a Dataset or downloads anything; ``datasets.py`` composes these readers into loaders.
Every reader names the file it was reading in its errors, because a half-extracted archive is the usual cause.

Example:
    >>> import numpy as np
    >>> pixel_mean_std(np.array([[[0, 255]]], dtype=np.uint8))
    ((0.5,), (0.5,))
"""

from __future__ import annotations

import csv
import gzip
import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# idx type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp", ".tif", ".tiff"})


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in ``.gz``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (gzip.BadGzipFile, EOFError) as err:
        raise ValueError(f"corrupt gzip file {path}: {err}") from err


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (the MNIST format), plain or ``.gz``.

    Header: two zero bytes, a type byte (0x08 = uint8, ...), the number of dimensions ``d``, then ``d``
    big-endian int32 sizes; the data follows in C order. The array is returned in native byte order.

    Raises:
        ValueError: the magic number, type byte or data length does not match, naming the file.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 9]))
        >>> read_idx(p).tolist()
        [7, 2, 9]
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"corrupt idx file {path}: magic number {raw[:4].hex() or '<empty>'} is not 0000<type><ndim> "
            f"with type in {[hex(k) for k in _IDX_DTYPES]}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"corrupt idx file {path}: header announces {ndim} dimensions but the file is too short")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"corrupt idx file {path}: shape {shape} needs {expected} data bytes, found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_files(dirs: Sequence[Path], names: Sequence[str], allow_gz: bool = False) -> list[Path] | None:
    """Paths of all ``names`` in the first of ``dirs`` that holds every one of them (plain preferred to .gz).

    Returns None when no directory holds them all.
    """
    for directory in dirs:
        found = []
        for name in names:
            options = [directory / name] + ([directory / f"{name}.gz"] if allow_gz else [])
            hit = next((p for p in options if p.is_file()), None)
            if hit is None:
                break
            found.append(hit)
        else:
            return found
    return None


def load_pickle(path: Path) -> dict:
    """Unpickle a CIFAR python batch (``encoding="latin1"`` reads the Python 2 pickles as released).

    Warning:
        CIFAR batches are Python pickles, and unpickling runs whatever code the file asks for: read only files
        from a source you trust (the official archive, whose checksum torchvision verifies on download). Never
        point ``root`` at CIFAR-format files from an unknown source.
    """
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ValueError(f"corrupt CIFAR pickle {path}: {err}") from err
    if not isinstance(entry, dict):
        raise ValueError(f"corrupt CIFAR pickle {path}: expected a dict, got {type(entry).__name__}")
    return entry


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 32, 32, 3)`` uint8 and labels of one CIFAR batch file.

    Each row of ``data`` holds 3072 bytes: the 1024 red values of the image in row-major order, then green,
    then blue, so pixel ``(h, w)`` of channel ``c`` is ``row[c * 1024 + h * 32 + w]``.
    """
    entry = load_pickle(path)
    if "data" not in entry or label_key not in entry:
        raise ValueError(f"corrupt CIFAR pickle {path}: keys {sorted(entry)} lack 'data' or {label_key!r}")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(
            f"corrupt CIFAR pickle {path}: expected uint8 data of shape (N, 3072) and N labels, "
            f"got {data.dtype} {data.shape} and {len(labels)} labels"
        )
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def read_cifar_names(path: Path, key: str) -> tuple[str, ...]:
    """Class names stored under ``key`` in a CIFAR meta pickle."""
    entry = load_pickle(path)
    if key not in entry:
        raise ValueError(f"corrupt CIFAR meta file {path}: keys {sorted(entry)} lack {key!r}")
    return tuple(str(n) for n in entry[key])


# First bytes of the formats np.load accepts: a zip archive (.npz; "PK\x05\x06" is an empty one) and a .npy array.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


def read_npz(path: Path, required: Sequence[str]) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (pickled objects refused), checking that ``required`` keys are present.

    The first bytes are checked before ``np.load``: given a ``.npy`` array it would return a bare array, and given
    any other file it would try (and refuse) to unpickle it, so neither reaches the user as "not an npz".

    Raises:
        ValueError: the file is a single ``.npy`` array, is not a zip archive at all, is a damaged archive, holds
            pickled objects, or lacks a required array (named).
    """
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(_NPY_MAGIC):
        raise ValueError(
            f"{path} is a single .npy array, not an .npz archive: save the arrays with np.savez(path, name=array, ...)"
        )
    if not head.startswith(_ZIP_MAGICS):
        raise ValueError(
            f"{path} is not an .npz archive (a zip of .npy arrays, written by np.savez): it starts with bytes "
            f"{head!r}, expected {_ZIP_MAGICS[0]!r}"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read npz file {path}: {err}") from err
    missing = [k for k in required if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks arrays {missing} (has {sorted(arrays)})")
    return arrays


def read_k49_classmap(path: Path) -> tuple[str, ...]:
    """Characters of ``k49_classmap.csv`` (columns ``index,codepoint,char``) in index order."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"index", "char"} <= set(rows[0]):
        raise ValueError(f"{path} must have columns index,codepoint,char")
    rows.sort(key=lambda r: int(r["index"]))
    if [int(r["index"]) for r in rows] != list(range(len(rows))):
        raise ValueError(f"{path} must list indices 0..{len(rows) - 1} once each")
    return tuple(r["char"] for r in rows)


def list_images(directory: Path, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files under ``directory`` (recursive, sorted, extension case-insensitive, hidden files skipped)."""
    return sorted(
        p for p in directory.rglob("*") if p.suffix.lower() in extensions and p.is_file() and not p.name.startswith(".")
    )


def read_class_tree(directory: Path, extensions: frozenset[str] = IMAGE_EXTENSIONS) -> dict[str, list[Path]]:
    """``{class folder name: its image paths}`` for every sub-folder of ``directory``, sorted by name.

    Raises:
        ValueError: a class folder holds no image file or cannot be read (named), or ``directory`` has no class
            folder.
    """
    classes = {}
    for d in sorted(directory.iterdir()):
        if d.is_dir():
            try:
                classes[d.name] = list_images(d, extensions)
            except OSError as err:  # permissions, a broken mount: say which class folder
                raise ValueError(f"class directory {d} cannot be read: {err.strerror or err}") from err
    if not classes:
        raise ValueError(f"{directory} has no class sub-folders")
    for name, paths in classes.items():
        if not paths:
            raise ValueError(f"class directory {directory / name} holds no image ({', '.join(sorted(extensions))})")
    return classes


def read_gtsrb_test_csv(csv_path: Path, image_dir: Path) -> tuple[list[Path], np.ndarray]:
    """Image paths and labels listed by GTSRB's ``GT-final_test.csv`` (``;``-separated, ``Filename``/``ClassId``).

    Raises:
        ValueError: a column is missing or a ClassId is not an integer.
        FileNotFoundError: a listed image is not in ``image_dir``.
    """
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f, delimiter=";", skipinitialspace=True)
        if reader.fieldnames is None or not {"Filename", "ClassId"} <= set(reader.fieldnames):
            raise ValueError(
                f"{csv_path} must have ';'-separated columns Filename and ClassId, got {reader.fieldnames}"
            )
        rows = list(reader)
    try:
        labels = np.array([int(r["ClassId"]) for r in rows], dtype=np.int64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{csv_path} has a ClassId that is not an integer: {err}") from err
    paths = [image_dir / r["Filename"] for r in rows]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} images listed in {csv_path} are missing from {image_dir}: {missing[:5]}"
        )
    return paths, labels


def pixel_mean_std(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images ``(N, H, W)`` or ``(N, H, W, C)``, on [0, 1].

    Computed exactly from a 256-bin histogram per channel, so memory stays at one channel's bytes even for
    K49's 182 M pixels.
    """
    planes = [images] if images.ndim == 3 else [images[..., c] for c in range(images.shape[-1])]
    means, stds = [], []
    values = np.arange(256, dtype=np.float64) / 255.0
    for plane in planes:
        hist = np.bincount(np.ravel(plane), minlength=256).astype(np.float64)
        n = hist.sum()
        mean = float(hist @ values / n)
        var = float(hist @ (values - mean) ** 2 / n)
        means.append(round(mean, 6))
        stds.append(round(var**0.5, 6))
    return tuple(means), tuple(stds)
