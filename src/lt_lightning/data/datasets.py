"""Base datasets read from disk into memory: images, integer labels and class names, by name.

Every loader ``DATASETS[name](root, download=False)`` returns a :class:`BaseSplits` whose ``train`` is the whole
(balanced or natural) training pool and ``test`` the test set, without transform; ``LongTailDataModule`` takes
the long-tailed subsets. Only ``digits`` (scikit-learn's bundled 8x8 digits) needs no file; the others read their
released on-disk format under ``root``, and ``download=True`` fetches missing files (torchvision's downloaders,
``download_url`` for K49) where a source exists. Downloads are checked: torchvision verifies the MD5 of what it
fetches, and K49's four release files are fetched over https and checked against :data:`K49_MD5`. Files already on
disk are not checksummed when reading, so tiny files in the real formats work in tests. The split-list benchmarks
(``split_lists``, ``imagenet_lt``, ``places_lt``, ``inat2018``) live in ``split_lists.py`` and cannot be downloaded.

Example:
    >>> base = load_dataset("digits")
    >>> len(base.train), len(base.test), base.num_classes, base.image_size
    (1397, 400, 10, 8)
    >>> image, label = base.test[0]
    >>> image.shape, image.dtype, type(label)
    (torch.Size([1, 8, 8]), torch.uint8, <class 'int'>)
"""

from __future__ import annotations

import hashlib
import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lt_lightning.data import readers
from lt_lightning.data.base import KEEP, ArrayDataset, BaseSplits, ImageFileDataset, LabeledImages, check_labels
from lt_lightning.data.split_lists import SPLIT_LIST_DATASETS

__all__ = [
    "DATASETS",
    "KEEP",
    "ArrayDataset",
    "BaseSplits",
    "ImageFileDataset",
    "LabeledImages",
    "check_class_list",
    "dataset_options",
    "load_dataset",
    "select_classes",
]

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_PER_CLASS = 40
# Computed once on the digits training pool (uint8 scale / 255); tests/data/test_datasets.py checks them.
DIGITS_MEAN, DIGITS_STD = (0.305143,), (0.375894,)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # LDAM cifar_train.py
GTSRB_MEAN, GTSRB_STD = (0.3337, 0.3064, 0.3171), (0.2672, 0.2564, 0.2629)  # the values GTSRB code commonly uses
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_DOWNLOAD_HINT = ", or pass download=True to fetch them"


def _root(root: str | Path, download: bool, dataset: str) -> Path:
    """``root`` as a Path; it must exist unless ``download`` will create it."""
    path = Path(root).expanduser()
    if not path.exists():
        if not download:
            raise ValueError(f"root {str(path)!r} for dataset {dataset!r} does not exist")
        path.mkdir(parents=True)
    return path


def _missing(dataset: str, dirs: Sequence[Path], names: Sequence[str], source: str, hint: str, gz: bool = False):
    """FileNotFoundError naming the files missing from the most complete of ``dirs`` and where to get them."""

    def absent(d: Path) -> list[str]:
        return [n for n in names if not (d / n).is_file() and not (gz and (d / f"{n}.gz").is_file())]

    best = min(dirs, key=lambda d: len(absent(d)))
    searched = f" (also searched {', '.join(str(d) for d in dirs if d != best)})" if len(dirs) > 1 else ""
    suffix = " (plain or .gz)" if gz else ""
    return FileNotFoundError(
        f"{dataset}: missing {absent(best)}{suffix} in {best}{searched}; get them from {source}{hint}"
    )


def load_digits(root: str | Path | None = None, download: bool = False) -> BaseSplits:
    """scikit-learn's bundled 8x8 digits (1797 images, no file needed; ``root`` and ``download`` are ignored).

    Values 0..16 become uint8 ``round(x * 255 / 16)``. A fixed seed (``DIGITS_SPLIT_SEED``) puts 40 images per
    class in a balanced test set; the other 1397 form the training pool.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)
    targets = bunch.target.astype(np.int64)
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(targets))
    test = np.sort(np.concatenate([perm[targets[perm] == c][:DIGITS_TEST_PER_CLASS] for c in range(10)]))
    train = np.setdiff1d(np.arange(len(targets)), test)
    return BaseSplits(
        ArrayDataset(images[train], targets[train]),
        ArrayDataset(images[test], targets[test]),
        tuple(str(d) for d in range(10)),
        1,
        DIGITS_MEAN,
        DIGITS_STD,
        8,
    )


@dataclass(frozen=True)
class _IdxSpec:
    folder: str  # torchvision's class name and sub-folder of root
    source: str
    class_names: tuple[str, ...]
    mean: float
    std: float


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_SPECS = {
    "mnist": _IdxSpec("MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/", tuple("0123456789"), 0.1307, 0.3081),
    "fashion_mnist": _IdxSpec(
        "FashionMNIST",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        0.2860,
        0.3530,
    ),
    "kmnist": _IdxSpec(
        "KMNIST",
        "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        0.1918,
        0.3483,
    ),
}


def _grey_split(images: np.ndarray, labels: np.ndarray, files: Sequence[Path], num_classes: int) -> ArrayDataset:
    """An ArrayDataset of ``(N, H, W)`` uint8 images, errors naming the image and label files."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{files[0]} must hold uint8 images (N, H, W), got {images.dtype} {images.shape}")
    name = f"labels in {files[1]}"
    return ArrayDataset(images, check_labels(labels, len(images), name, num_classes))


def _load_idx(dataset: str, root: str | Path, download: bool) -> BaseSplits:
    spec = _IDX_SPECS[dataset]
    root = _root(root, download, dataset)
    dirs = [root / spec.folder / "raw", root]
    files = readers.find_files(dirs, _IDX_FILES, allow_gz=True)
    if files is None and download:
        import torchvision.datasets

        getattr(torchvision.datasets, spec.folder)(str(root), train=True, download=True)  # fetches both splits
        files = readers.find_files(dirs, _IDX_FILES, allow_gz=True)
    if files is None:
        raise _missing(dataset, dirs, _IDX_FILES, spec.source, _DOWNLOAD_HINT, gz=True)
    arrays = [readers.read_idx(p) for p in files]
    train = _grey_split(arrays[0], arrays[1], files[:2], len(spec.class_names))
    test = _grey_split(arrays[2], arrays[3], files[2:], len(spec.class_names))
    side = train.images.shape[1] if train.images.shape[1] == train.images.shape[2] else None
    return BaseSplits(train, test, spec.class_names, 1, (spec.mean,), (spec.std,), side)


def load_mnist(root: str | Path = "data", download: bool = False) -> BaseSplits:
    """MNIST from idx files in ``root/MNIST/raw/`` (torchvision's layout) or ``root/``, plain or ``.gz``."""
    return _load_idx("mnist", root, download)


def load_fashion_mnist(root: str | Path = "data", download: bool = False) -> BaseSplits:
    """Fashion-MNIST from idx files in ``root/FashionMNIST/raw/`` or ``root/``, plain or ``.gz``."""
    return _load_idx("fashion_mnist", root, download)


def load_kmnist(root: str | Path = "data", download: bool = False) -> BaseSplits:
    """Kuzushiji-MNIST from idx files in ``root/KMNIST/raw/`` or ``root/``, plain or ``.gz``."""
    return _load_idx("kmnist", root, download)


@dataclass(frozen=True)
class _CifarSpec:
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    meta: str
    names_key: str
    label_key: str
    source: str


_CIFAR_SPECS = {
    "cifar10": _CifarSpec(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        "label_names",
        "labels",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    ),
    "cifar100": _CifarSpec(
        "cifar-100-python",
        ("train",),
        "test",
        "meta",
        "fine_label_names",
        "fine_labels",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ),
}


def _load_cifar(dataset: str, root: str | Path, download: bool) -> BaseSplits:
    spec = _CIFAR_SPECS[dataset]
    root = _root(root, download, dataset)
    folder = root / spec.folder
    names = [*spec.train_files, spec.test_file, spec.meta]
    if readers.find_files([folder], names) is None and download:
        import torchvision.datasets

        cls = torchvision.datasets.CIFAR10 if dataset == "cifar10" else torchvision.datasets.CIFAR100
        cls(str(root), train=True, download=True)  # one archive holds both splits
    if readers.find_files([folder], names) is None:
        raise _missing(dataset, [folder], names, spec.source, _DOWNLOAD_HINT)
    class_names = readers.read_cifar_names(folder / spec.meta, spec.names_key)

    def split(files: Sequence[str]) -> ArrayDataset:
        images, labels = [], []
        for name in files:
            x, y = readers.read_cifar_batch(folder / name, spec.label_key)
            images.append(x)
            labels.append(check_labels(y, len(x), f"labels in {folder / name}", len(class_names)))
        return ArrayDataset(np.concatenate(images), np.concatenate(labels))

    return BaseSplits(split(spec.train_files), split([spec.test_file]), class_names, 3, CIFAR_MEAN, CIFAR_STD, 32)


def load_cifar10(root: str | Path = "data", download: bool = False) -> BaseSplits:
    """CIFAR-10 python batches in ``root/cifar-10-batches-py/`` (data_batch_1..5, test_batch, batches.meta).

    Warning:
        The CIFAR "python version" files are Python pickles, and reading a pickle can run arbitrary code: use only
        the official archive (``download=True`` verifies its MD5) or files you made yourself; never load
        CIFAR-format files from an untrusted source.
    """
    return _load_cifar("cifar10", root, download)


def load_cifar100(root: str | Path = "data", download: bool = False) -> BaseSplits:
    """CIFAR-100 python pickles in ``root/cifar-100-python/`` (train, test, meta); fine labels.

    Warning:
        These files are Python pickles, which can run arbitrary code when read: never load untrusted ones (see
        :func:`load_cifar10`).
    """
    return _load_cifar("cifar100", root, download)


def load_gtsrb(root: str | Path = "data", download: bool = False) -> BaseSplits:
    """GTSRB in torchvision's layout: ``root/gtsrb/GTSRB/Training/<00000..00042>/*.ppm`` (class = folder number),
    ``root/gtsrb/GTSRB/Final_Test/Images/*.ppm`` labelled by ``root/gtsrb/GT-final_test.csv``. Images vary in size.
    """
    root = _root(root, download, "gtsrb")
    base = root / "gtsrb"
    train_dir, test_dir, csv = (
        base / "GTSRB" / "Training",
        base / "GTSRB" / "Final_Test" / "Images",
        base / "GT-final_test.csv",
    )
    needed = [train_dir, test_dir, csv]
    if download and not all(p.exists() for p in needed):
        import torchvision.datasets

        torchvision.datasets.GTSRB(str(root), split="train", download=True)
        torchvision.datasets.GTSRB(str(root), split="test", download=True)
    if not all(p.exists() for p in needed):
        source = (
            "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/ "
            "(GTSRB-Training_fixed.zip, GTSRB_Final_Test_Images.zip, GTSRB_Final_Test_GT.zip)"
        )
        missing = [str(p) for p in needed if not p.exists()]
        raise FileNotFoundError(f"gtsrb: missing {missing}; get them from {source}{_DOWNLOAD_HINT}")
    tree = readers.read_class_tree(train_dir, frozenset({".ppm"}))
    expected = {f"{c:05d}": c for c in range(43)}
    unknown = sorted(set(tree) - set(expected))
    if unknown:
        raise ValueError(f"gtsrb: class folders {unknown} in {train_dir} are not labels 00000..00042")
    absent = sorted(set(expected) - set(tree))
    if absent:
        raise FileNotFoundError(f"gtsrb: class folders {absent} are missing from {train_dir}")
    train_paths = [p for name in sorted(tree) for p in tree[name]]
    train_labels = np.repeat([expected[n] for n in sorted(tree)], [len(tree[n]) for n in sorted(tree)])
    test_paths, test_labels = readers.read_gtsrb_test_csv(csv, test_dir)
    test_labels = check_labels(test_labels, None, f"labels in {csv}", 43)
    return BaseSplits(
        ImageFileDataset(train_paths, train_labels),
        ImageFileDataset(test_paths, test_labels),
        tuple(str(c) for c in range(43)),
        3,
        GTSRB_MEAN,
        GTSRB_STD,
        None,
    )


K49_SOURCE = "https://codh.rois.ac.jp/kmnist/dataset/k49/"
_K49_FILES = ("k49-train-imgs.npz", "k49-train-labels.npz", "k49-test-imgs.npz", "k49-test-labels.npz")
# MD5 of the released files, as listed by torchvision-style K49 loaders (the same four values in several independent
# public codebases). k49_classmap.csv has no published checksum: it is a small CSV of characters, read as text.
K49_MD5 = {
    "k49-train-imgs.npz": "7ac088b20481cf51dcd01ceaab89d821",
    "k49-train-labels.npz": "44a8e1b893f81e63ff38d73cad420f7a",
    "k49-test-imgs.npz": "d352e201d846ce6b94f42c990966f374",
    "k49-test-labels.npz": "4da6f7a62e67a832d5eb1bd85c5ee448",
}


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file, read in chunks (the K49 training images are 63 MB)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _check_md5(path: Path, expected: str) -> None:
    """Raise naming the file and both checksums when ``path`` is not the released file; the bad file is removed so
    that the next ``download=True`` fetches it again instead of reading it."""
    actual = file_md5(path)
    if actual != expected:
        path.unlink()
        raise ValueError(
            f"downloaded {path} has MD5 {actual}, expected {expected} (corrupt or tampered download; it was "
            f"deleted, retry download=True)"
        )


def load_k49(root: str | Path = "data", download: bool = False) -> BaseSplits:
    """Kuzushiji-49 release files in ``root`` (``k49-{train,test}-{imgs,labels}.npz``, key ``arr_0``).

    Class names are the characters of ``root/k49_classmap.csv`` when present, else "0".."48". mean/std are
    computed from the training images (K49 is naturally imbalanced; GIT normalises with its training set's).
    ``download=True`` fetches the missing files from :data:`K49_SOURCE` (https) and checks each ``.npz`` it fetched
    against :data:`K49_MD5`.
    """
    root = _root(root, download, "k49")
    if download and readers.find_files([root], _K49_FILES) is None:
        from torchvision.datasets.utils import download_url

        for name in (*_K49_FILES, "k49_classmap.csv"):
            if not (root / name).is_file():
                download_url(K49_SOURCE + name, str(root), name)
                if name in K49_MD5:
                    _check_md5(root / name, K49_MD5[name])
    if readers.find_files([root], _K49_FILES) is None:
        raise _missing("k49", [root], _K49_FILES, K49_SOURCE, _DOWNLOAD_HINT)
    classmap = root / "k49_classmap.csv"
    class_names = readers.read_k49_classmap(classmap) if classmap.is_file() else tuple(str(c) for c in range(49))
    if len(class_names) != 49:
        raise ValueError(f"{classmap} lists {len(class_names)} classes, K49 has 49")
    x_train, y_train, x_test, y_test = (readers.read_npz(root / name, ["arr_0"])["arr_0"] for name in _K49_FILES)
    train = _grey_split(x_train, y_train, [root / n for n in _K49_FILES[:2]], 49)
    test = _grey_split(x_test, y_test, [root / n for n in _K49_FILES[2:]], 49)
    mean, std = readers.pixel_mean_std(train.images)
    return BaseSplits(train, test, class_names, 1, mean, std, 28)


def load_imagefolder(root: str | Path = "data", download: bool = False) -> BaseSplits:
    """Images in ``root/train/<class>/`` and ``root/test/<class>/`` (``root/val/`` when there is no ``test/``; when
    both exist ``val/`` is ignored, with a warning).

    Class names are the sorted sub-folders of ``train/``; ``test``/``val`` may lack a class but not add one.
    Images (png, jpg, jpeg, bmp, ppm, webp, tif) are decoded as RGB on access. ``download`` is ignored.
    """
    root = _root(root, False, "imagefolder")
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"imagefolder: {root / 'train'} is missing; expected root/train/<class>/<images>")
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if test_dir is None:
        raise FileNotFoundError(f"imagefolder: neither {root / 'test'} nor {root / 'val'} exists")
    if test_dir.name == "test" and (root / "val").is_dir():
        # Both exist: say which one is read, so a user's validation images are not silently unused.
        warnings.warn(
            f"imagefolder: {root / 'val'} is ignored: {root / 'test'} is the evaluation set (validation runs on it "
            "too); pass val_per_class to hold out a validation split from train/",
            stacklevel=2,
        )
    train_tree, test_tree = readers.read_class_tree(root / "train"), readers.read_class_tree(test_dir)
    class_names = tuple(train_tree)
    unknown = sorted(set(test_tree) - set(train_tree))
    if unknown:
        raise ValueError(f"imagefolder: classes {unknown} of {test_dir} are not in {root / 'train'}")

    def split(tree: dict[str, list[Path]]) -> ImageFileDataset:
        paths = [p for name in tree for p in tree[name]]
        labels = np.repeat([class_names.index(n) for n in tree], [len(v) for v in tree.values()])
        return ImageFileDataset(paths, labels.astype(np.int64), mode="RGB")

    return BaseSplits(split(train_tree), split(test_tree), class_names, 3, IMAGENET_MEAN, IMAGENET_STD, None)


def load_npz(root: str | Path = "data.npz", download: bool = False) -> BaseSplits:
    """One ``.npz`` (``root`` is its path) with ``x_train, y_train, x_test, y_test`` and optional ``class_names``.

    Images are uint8 ``(N, H, W)`` or ``(N, H, W, C)`` with C in {1, 3}; without ``class_names`` the classes are
    "0".."K-1" with K = 1 + the largest label. mean/std are computed from ``x_train``. ``download`` is ignored.
    """
    path = Path(root).expanduser()
    if not path.is_file():
        raise ValueError(f"root {str(path)!r} for dataset 'npz' must be an existing .npz file")
    arrays = readers.read_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    x_train, x_test = arrays["x_train"], arrays["x_test"]
    for key, x in (("x_train", x_train), ("x_test", x_test)):
        if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)) or not len(x):
            raise ValueError(
                f"{path}: {key} must be non-empty uint8 (N, H, W) or (N, H, W, C) with C in {{1, 3}}, "
                f"got {x.dtype} {x.shape}"
            )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{path}: x_train images {x_train.shape[1:]} and x_test images {x_test.shape[1:]} differ")
    y_train = check_labels(arrays["y_train"], len(x_train), f"y_train in {path}")
    y_test = check_labels(arrays["y_test"], len(x_test), f"y_test in {path}")
    if "class_names" in arrays:
        class_names = tuple(str(n) for n in np.ravel(arrays["class_names"]))
    else:
        class_names = tuple(str(c) for c in range(int(max(y_train.max(), y_test.max(initial=0))) + 1))
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        check_labels(y, None, f"{key} in {path}", len(class_names))
    mean, std = readers.pixel_mean_std(x_train)
    side = x_train.shape[1] if x_train.shape[1] == x_train.shape[2] else None
    channels = 1 if x_train.ndim == 3 else x_train.shape[-1]
    return BaseSplits(
        ArrayDataset(x_train, y_train), ArrayDataset(x_test, y_test), class_names, channels, mean, std, side
    )


DATASETS: dict[str, Callable[..., BaseSplits]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "kmnist": load_kmnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "gtsrb": load_gtsrb,
    "k49": load_k49,
    "imagefolder": load_imagefolder,
    "npz": load_npz,
    **SPLIT_LIST_DATASETS,  # split_lists, imagenet_lt, places_lt, inat2018 (split_lists.py)
}


def select_classes(base: BaseSplits, classes: Sequence[int], name: str = "classes") -> BaseSplits:
    """``base`` restricted to the labels ``classes`` (both splits), relabelled 0..K-1 in ascending label order.

    Names, channels, mean / std (of the whole pool) and image size are kept. Open-set studies use it: the training
    classes on one side (``LongTailDataModule(classes=...)``), the held-out ones as an auxiliary pool.

    Example:
        >>> sub = select_classes(load_dataset("digits"), [7, 9])
        >>> sub.class_names, sorted(set(sub.train.targets.tolist())), len(sub.test)
        (('7', '9'), [0, 1], 80)
    """
    labels = check_class_list(classes, base.num_classes, name)
    remap = np.full(base.num_classes, -1, dtype=np.int64)
    remap[labels] = np.arange(len(labels))

    def take(split: LabeledImages) -> LabeledImages:
        keep = np.flatnonzero(np.isin(split.targets, labels))
        sub = split.subset(keep)
        sub.targets = remap[sub.targets]
        return sub

    names = tuple(base.class_names[c] for c in labels)
    val = None if base.val is None else take(base.val)
    return BaseSplits(
        take(base.train), take(base.test), names, base.channels, base.mean, base.std, base.image_size, val, base.note
    )


def check_class_list(classes: Sequence[int], num_classes: int, name: str = "classes") -> list[int]:
    """``classes`` as a sorted list of distinct labels in ``[0, num_classes)``; a ValueError naming ``name``."""
    if isinstance(classes, str) or not isinstance(classes, Sequence) or not len(classes):
        raise ValueError(f"{name} must be a non-empty list of integer labels, got {classes!r}")
    if any(isinstance(c, bool) or not isinstance(c, int | np.integer) for c in classes):
        raise ValueError(f"{name} must hold integer labels, got {list(classes)!r}")
    labels = sorted(int(c) for c in classes)
    if len(set(labels)) != len(labels) or labels[0] < 0 or labels[-1] >= num_classes:
        raise ValueError(f"{name} must be distinct labels in [0, {num_classes}), got {list(classes)!r}")
    return labels


def dataset_options(name: str) -> list[str]:
    """The keyword options the loader of ``name`` takes besides ``root`` and ``download`` (``dataset_kwargs``).

    Example:
        >>> dataset_options("digits")
        []
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    params = inspect.signature(DATASETS[name]).parameters
    return [p for p in params if p not in ("root", "download") and params[p].kind is inspect.Parameter.KEYWORD_ONLY]


def load_dataset(name: str, root: str | Path = "data", download: bool = False, **options: Any) -> BaseSplits:
    """Load the base dataset ``name`` (a key of ``DATASETS``) from ``root``; ``options`` are the loader's own
    keyword options (:func:`dataset_options`, e.g. ``train_list`` of ``split_lists``).

    Raises:
        ValueError: unknown name or option, or ``root`` missing (for datasets that read files) and ``download``
            False.
        FileNotFoundError: files missing under ``root``; the message names them and where to get them.

    Example:
        >>> load_dataset("digits").class_names[:3]
        ('0', '1', '2')
    """
    accepted = dataset_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"dataset_kwargs {unknown} are not options of dataset {name!r}; accepted: {accepted}")
    return DATASETS[name](root, download=download, **options)
