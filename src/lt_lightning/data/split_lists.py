"""Split-list datasets: ``<relative path> <int label>`` list files (ImageNet-LT, Places-LT, iNaturalist 2018).

A list file has one image a line, the path relative to an image root and an integer label 0..C-1 after the LAST
space (so a path may hold spaces); ``\\r\\n`` endings and blank lines are accepted. Lists are parsed from their bytes
in a few numpy passes (437,513 lines in a fraction of a second) into a :class:`PathTable` + int64 labels: no Python
object per image. Image files are not stat-ed one by one: a seeded sample of ``check_files`` paths per list (plus
the first and the last) is checked, and a missing one raises an error naming it, the root and the layout expected.

Loaders (registered in ``DATASETS``): ``split_lists`` (any lists), ``imagenet_lt``, ``places_lt``, ``inat2018``.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "train.txt").write_text("a/0.jpg 0\\na/1.jpg 0\\nb/2.jpg 1\\n")
    >>> lst = read_split_list(folder / "train.txt", image_root=folder)
    >>> lst.targets.tolist(), lst.paths[2] == f"{folder}/b/2.jpg"
    ([0, 0, 1], True)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lt_lightning.data.base import BaseSplits, ImageFileDataset
from lt_lightning.data.paths import PathTable

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INAT_MEAN, INAT_STD = (0.466, 0.471, 0.380), (0.195, 0.194, 0.192)  # classifier-balancing get_data_transform
CHECK_SEED = 0  # seed of the sample of paths checked on disk

LISTS_SOURCE = (
    "the list files are in https://github.com/facebookresearch/classifier-balancing (data/ImageNet_LT, "
    "data/Places_LT, data/iNaturalist18) and behind the Google Drive link of the OLTR README "
    "(https://github.com/zhmiao/OpenLongTailRecognition-OLTR)"
)
IMAGES_SOURCE = {
    "imagenet_lt": "ImageNet ILSVRC-2012 (train and val images) from https://image-net.org",
    "places_lt": "Places365-Standard, 'easy directory structure' (train and val), from http://places2.csail.mit.edu",
    "inat2018": "the iNaturalist 2018 images (train_val2018) and train2018.json / val2018.json from "
    "https://github.com/visipedia/inat_comp (2018)",
}
LAYOUTS = {
    "split_lists": "the paths of the list files are relative to image_root (default: root)",
    "imagenet_lt": "ImageNet-LT expects <root>/train/<synset>/<synset>_<n>.JPEG (ILSVRC-2012 train, also for the val "
    "list) and <root>/val/<synset>/ILSVRC2012_val_<8 digits>.JPEG or flat <root>/val/ILSVRC2012_val_<8 digits>.JPEG; "
    "see README",
    "places_lt": "Places-LT expects <root>/train/<class>/<8 digits>.jpg and <root>/val/<class>/Places365_val_<8 "
    "digits>.jpg (Places365-Standard 'easy directory structure', folders like apartment_building-outdoor); see README",
    "inat2018": "iNaturalist 2018 expects <root>/train_val2018/<supercategory>/<category id>/<file>.jpg (the "
    "train_val2018 image archive); see README",
}
# Published sizes: (train, val, test, classes); iNaturalist 2018's "test" is its val list.
PUBLISHED_COUNTS = {
    "imagenet_lt": (115_846, 20_000, 50_000, 1000),
    "places_lt": (62_500, 7_300, 36_500, 365),
    "inat2018": (437_513, None, 24_426, 8142),
}
INAT_NOTE = "iNaturalist 2018 has no test list: its val list is the test set (as in the papers), so validation = test"

_NL, _CR, _SPACE, _ZERO, _TAB = 10, 13, 32, 48, 9
_MAX_LABEL_DIGITS = 18


@dataclass(frozen=True)
class SplitList:
    """One parsed list: full paths (``image_root/rel``), int64 labels, and the file they came from."""

    file: Path
    paths: PathTable
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


def _line_text(buf: np.ndarray, start: int, end: int) -> str:
    return os.fsdecode(buf[start:end].tobytes())[:200]


def parse_split_list(data: bytes, name: str = "<list>") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parse the bytes of a list file: ``(buffer, path_starts, path_ends, labels)``, one entry per non-blank line.

    The path of line k is ``buffer[path_starts[k]:path_ends[k]]``; the label is the decimal integer after the last
    space or tab (``line.split()`` of the official reader: trailing blanks and a tab separator are accepted). Raises
    a ValueError naming ``name``, the line number and the line when a line does not parse.

    Example:
        >>> buf, starts, ends, labels = parse_split_list(b"my dir/a.jpg 3\\r\\n\\nb.jpg\\t10 \\n")
        >>> [buf[a:b].tobytes() for a, b in zip(starts, ends)], labels.tolist()
        ([b'my dir/a.jpg', b'b.jpg'], [3, 10])
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    if (buf == _TAB).any():  # a tab separates like a space (a copy only then: the common file has none)
        buf = np.where(buf == _TAB, np.uint8(_SPACE), buf)
    newlines = np.flatnonzero(buf == _NL)
    starts = np.concatenate([[0], newlines + 1]).astype(np.int64)
    ends = np.concatenate([newlines, [len(buf)]]).astype(np.int64)
    # Trailing blanks and CR: each pass drops one per line (a line rarely has more than one or two).
    while len(buf):
        last = buf[np.maximum(ends - 1, 0)]
        trailing = (ends > starts) & ((last == _CR) | (last == _SPACE))
        if not trailing.any():
            break
        ends -= trailing.astype(np.int64)
    line_numbers = np.flatnonzero(ends > starts) + 1  # blank lines are skipped
    starts, ends = starts[line_numbers - 1], ends[line_numbers - 1]
    spaces = np.flatnonzero(buf == _SPACE)
    k = np.searchsorted(spaces, ends) - 1  # the last space before each line's end
    sep = spaces[np.maximum(k, 0)] if len(spaces) else starts - 1
    sep = np.where(k >= 0, sep, starts - 1)
    lengths = ends - sep - 1
    ok = (sep > starts) & (lengths >= 1) & (lengths <= _MAX_LABEL_DIGITS)
    width = int(lengths[ok].max(initial=1))
    columns = np.arange(width)
    index = np.clip(ends[:, None] - width + columns, 0, max(len(buf) - 1, 0))
    used = columns >= width - np.clip(lengths, 0, width)[:, None]
    digits = buf[index].astype(np.int64) - _ZERO if len(buf) else np.zeros((0, width), np.int64)
    ok &= np.all(~used | ((digits >= 0) & (digits <= 9)), axis=1)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        raise ValueError(
            f"{name}:{line_numbers[bad]}: cannot parse line {_line_text(buf, starts[bad], ends[bad])!r}; expected "
            "'<relative path> <integer label>' (label 0..C-1 after the last space)"
        )
    labels = (np.where(used, digits, 0) * 10 ** (width - 1 - columns)).sum(axis=1).astype(np.int64)
    while True:  # several blanks between path and label: the path ends at the first of them
        blank = (sep > starts) & (buf[np.maximum(sep - 1, 0)] == _SPACE)
        if not blank.any():
            break
        sep = sep - blank.astype(np.int64)
    return buf, starts, sep, labels


def _check_range(labels: np.ndarray, num_classes: int, name: str, lines: _Lines | None, why: str) -> None:
    """A ValueError naming the first label >= ``num_classes``: ``name:line`` and the line (``name, item k`` when the
    items have no line, as in a JSON file)."""
    bad = np.flatnonzero(labels >= num_classes)
    if len(bad):
        k = int(bad[0])
        if lines is not None:
            start, end, number = lines[k]
            place = f"{name}:{number}: label {int(labels[k])} of line {_line_text(lines.buf, start, end)!r}"
        else:
            place = f"{name}, item {k}: label {int(labels[k])}"
        raise ValueError(f"{place} is out of range ({len(bad)} such); accepted labels 0..{num_classes - 1} ({why})")


def read_split_list(
    file: str | Path, image_root: str | Path, num_classes: int | None = None, why: str = "the training classes"
) -> SplitList:
    """Read list ``file``: paths joined to ``image_root`` and labels, checked to lie in ``[0, num_classes)``.

    Raises:
        FileNotFoundError: ``file`` does not exist.
        ValueError: a line does not parse, or a label is out of range (``file:line``, the label and the range).
    """
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"list file {str(file)!r} does not exist")
    buf, starts, ends, labels = parse_split_list(file.read_bytes(), str(file))
    if num_classes is not None:
        newlines = np.flatnonzero(buf == _NL)
        line_numbers = np.searchsorted(newlines, starts) + 1
        _check_range(labels, num_classes, str(file), _Lines(starts, ends, line_numbers, buf), why)
    return SplitList(file, PathTable.from_segments(buf, starts, ends, image_root), labels)


class _Lines:
    """``where[k]`` = (line start, line end, line number) of item k, computed on demand for error messages."""

    def __init__(self, starts: np.ndarray, seps: np.ndarray, numbers: np.ndarray, buf: np.ndarray) -> None:
        self.starts, self.seps, self.numbers, self.buf = starts, seps, numbers, buf

    def __getitem__(self, k: int) -> tuple[int, int, int]:
        end = int(self.seps[k]) + 1
        while end < len(self.buf) and self.buf[end] not in (_NL, _CR):
            end += 1
        return int(self.starts[k]), end, int(self.numbers[k])


def sample_indices(n: int, k: int, seed: int = CHECK_SEED) -> np.ndarray:
    """Sorted distinct indices: ``k`` drawn with ``seed`` from ``range(n)``, plus the first and the last (none if
    ``k`` is 0).

    Example:
        >>> sample_indices(10, 3).tolist()[0], sample_indices(10, 3).tolist()[-1], len(sample_indices(10, 0))
        (0, 9, 0)
    """
    if k <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    drawn = np.random.default_rng(seed).choice(n, size=min(k, n), replace=False)
    return np.unique(np.concatenate([[0, n - 1], drawn])).astype(np.int64)


def missing_files(paths: PathTable, indices: np.ndarray) -> list[str]:
    """The paths among ``indices`` that do not exist on disk (``os.path.exists``)."""
    return [p for p in (paths[int(i)] for i in indices) if not os.path.exists(p)]


def check_sample(dataset: str, lst: SplitList, check_files: int, image_root: str | Path) -> None:
    """Check a seeded sample of ``check_files`` paths of ``lst`` (plus first and last) exists; else one error naming
    up to 3 missing paths, the root searched and the layout expected for ``dataset``."""
    indices = sample_indices(len(lst), check_files)
    missing = missing_files(lst.paths, indices)
    if missing:
        raise FileNotFoundError(
            f"{dataset}: {len(missing)} of {len(indices)} sampled images of {lst.file.name} are missing, e.g. "
            f"{missing[:3]}; searched under image root {str(image_root)!r}; {LAYOUTS[dataset]}"
        )


# ----------------------------------------------------------------------------------------------------- helpers


def _check_options(dataset: str, download: bool, check_files: Any) -> None:
    if download:
        raise ValueError(
            f"{dataset} cannot be downloaded automatically (download=True): get "
            f"{IMAGES_SOURCE.get(dataset, 'the images')}; {LISTS_SOURCE}"
        )
    if isinstance(check_files, bool) or not isinstance(check_files, int | np.integer) or check_files < 0:
        raise ValueError(f"check_files must be an integer >= 0 (0: no file checked), got {check_files!r}")


def _dir(path: str | Path, name: str, dataset: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise ValueError(f"{name} {str(path)!r} for dataset {dataset!r} {what}")
    return path


def _find_lists(dataset: str, dirs: Sequence[Path], names: Sequence[str], hint: str = "") -> dict[str, Path]:
    """``{name: path}`` from the first of ``dirs`` holding all ``names``; else an error naming what is missing."""
    for d in dirs:
        if all((d / n).is_file() for n in names):
            return {n: d / n for n in names}
    best = max(dirs, key=lambda d: sum((d / n).is_file() for n in names))
    absent = [n for n in names if not (best / n).is_file()]
    raise FileNotFoundError(
        f"{dataset}: list file(s) {absent} not found in {str(best)!r} (searched {[str(d) for d in dirs]}); expected "
        f"{list(names)}{hint}; set list_dir to their folder; {LISTS_SOURCE}"
    )


def _list_dirs(root: Path, list_dir: str | Path | None, subfolder: str, dataset: str) -> list[Path]:
    if list_dir is not None:
        return [_dir(list_dir, "list_dir", dataset)]
    return [root, root / subfolder]


def _check_classes(dataset: str, train: SplitList, num_classes: int) -> np.ndarray:
    """Training images per class; every class 0..num_classes-1 must have one."""
    counts = np.bincount(train.targets, minlength=num_classes)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        shown = empty[:10].tolist() + (["..."] if len(empty) > 10 else [])
        raise ValueError(
            f"{dataset}: classes {shown} ({len(empty)} of {num_classes}) have no image in the training list "
            f"{train.file}; every label 0..{num_classes - 1} needs at least one training image"
        )
    return counts


def _first_parent_dirs(train: SplitList, num_classes: int) -> list[str]:
    """The folder name of each class's first training path (label order)."""
    _, first = np.unique(train.targets, return_index=True)
    return [Path(train.paths.relative(int(i))).parent.name for i in first[:num_classes]]


def _check_published(dataset: str, check: bool, sizes: tuple[int | None, ...], where: Path) -> None:
    if not check:
        return
    expected = PUBLISHED_COUNTS[dataset]
    if tuple(sizes) != expected:
        fmt = " / ".join("-" if s is None else f"{s:,}" for s in expected[:3])
        got = " / ".join("-" if s is None else f"{s:,}" for s in sizes[:3])
        raise ValueError(
            f"{dataset}: check_counts=True: the lists in {str(where)!r} have {got} train / val / test images and "
            f"{sizes[3]} classes, the published ones {fmt} and {expected[3]}; the lists are incomplete or not the "
            "official ones (pass check_counts=False for a subset)"
        )


def _counts_text(train: SplitList, val: SplitList | None, test: SplitList, num_classes: int) -> str:
    val_text = f"{len(val):,} val / " if val is not None else ""
    return f"{len(train):,} train / {val_text}{len(test):,} test images, {num_classes} classes"


def _splits(
    train: SplitList,
    val: SplitList | None,
    test: SplitList,
    class_names: Sequence[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    note: str,
    mode: str = "RGB",
) -> BaseSplits:
    def ds(lst: SplitList) -> ImageFileDataset:
        return ImageFileDataset(lst.paths, lst.targets, mode=mode)

    channels = 1 if mode == "L" else 3
    mean, std = (mean[:1], std[:1]) if channels == 1 else (mean, std)
    val_ds = None if val is None else ds(val)
    return BaseSplits(ds(train), ds(test), tuple(class_names), channels, mean, std, None, val_ds, note)


def _read_names_file(file: Path) -> list[str]:
    return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------------ loaders


def load_split_lists(
    root: str | Path = "data",
    download: bool = False,
    *,
    train_list: str | Path | None = None,
    test_list: str | Path | None = None,
    val_list: str | Path | None = None,
    image_root: str | Path | None = None,
    class_names: Sequence[str] | str | Path | None = None,
    num_classes: int | None = None,
    mode: str = "RGB",
    check_files: int = 64,
) -> BaseSplits:
    """Any ``<relative path> <int label>`` lists: ``train_list`` and ``test_list`` (required), ``val_list`` optional.

    List paths are relative to ``root`` unless absolute; image paths relative to ``image_root`` (default ``root``).
    ``class_names``: a list of names or a text file (one name a line, relative to ``root``); default ``str(label)``.
    ``num_classes`` defaults to ``len(class_names)``, else 1 + the largest training label. ``mode``: ``"RGB"`` or
    ``"L"``. ``check_files`` paths a list (plus first and last) are checked on disk; 0 checks none.
    ImageNet mean / std; images vary in size.
    """
    _check_options("split_lists", download, check_files)
    missing = [n for n, v in (("train_list", train_list), ("test_list", test_list)) if v is None]
    if missing:
        raise ValueError(
            f"split_lists needs {' and '.join(missing)} (list files '<relative path> <label>' per line), e.g. "
            "dataset_kwargs={'train_list': 'train.txt', 'test_list': 'test.txt'}"
        )
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    root = _dir(root, "root", "split_lists")
    images = root if image_root is None else _dir(image_root, "image_root", "split_lists")
    names: list[str] | None = None
    if isinstance(class_names, str | Path):
        file = root / Path(class_names).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"class_names file {str(file)!r} does not exist (one class name a line)")
        names = _read_names_file(file)
    elif class_names is not None:
        names = [str(n) for n in class_names]
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 2
    ):
        raise ValueError(f"num_classes must be an integer >= 2 or None, got {num_classes!r}")
    if names is not None and num_classes is not None and len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names but num_classes is {num_classes}")
    k = num_classes if num_classes is not None else (len(names) if names is not None else None)
    why = f"num_classes={num_classes}" if num_classes is not None else f"class_names has {k} names"
    train = read_split_list(root / Path(train_list).expanduser(), images, k, why)
    k = int(train.targets.max(initial=-1)) + 1 if k is None else int(k)
    _check_classes("split_lists", train, k)
    others = "the training classes"
    val = None if val_list is None else read_split_list(root / Path(val_list).expanduser(), images, k, others)
    test = read_split_list(root / Path(test_list).expanduser(), images, k, others)
    for lst in (train, val, test):
        if lst is not None:
            check_sample("split_lists", lst, check_files, images)
    names = [str(c) for c in range(k)] if names is None else names
    note = f"split lists: {_counts_text(train, val, test, k)}"
    return _splits(train, val, test, names, IMAGENET_MEAN, IMAGENET_STD, note, mode)


def resolve_imagenet_test(
    lst: SplitList, synsets: Sequence[str], check_files: int, image_root: str | Path
) -> tuple[SplitList, str]:
    """The ImageNet-LT test list resolved against the disk: ``(list, layout found)``.

    Paths are tried as written, then in the other form: flat ``val/<file>`` when the list has ``val/<synset>/<file>``,
    synset folders (label -> synset from the training list) when it is flat. The whole list is rewritten
    (vectorised) when the other form is found. Raises when neither form is found for the sample.
    """
    if check_files == 0 or not len(lst):
        return lst, "paths as written (not checked: check_files=0)"
    indices = sample_indices(len(lst), check_files)
    missing = missing_files(lst.paths, indices)
    if not missing:
        return lst, "paths as written"
    known = set(synsets)
    sample = lst.paths.take(indices)
    synset_form = all(Path(sample.relative(i)).parent.name in known for i in range(len(sample)))
    layout = (
        "flat val/<file> layout found, list rewritten"
        if synset_form
        else "val/<synset>/<file> folders found, list rewritten"
    )
    alt = sample.without_last_dir() if synset_form else sample.with_last_dir(synsets, lst.targets[indices])
    alt_missing = missing_files(alt, np.arange(len(alt)))
    if alt_missing:
        raise FileNotFoundError(
            f"imagenet_lt: {len(missing)} of {len(indices)} sampled images of {lst.file.name} are missing, e.g. "
            f"{missing[:3]}, and in the {'flat' if synset_form else 'synset-folder'} form too, e.g. "
            f"{alt_missing[:3]}; searched under image root {str(image_root)!r}; {LAYOUTS['imagenet_lt']}"
        )
    paths = lst.paths.without_last_dir() if synset_form else lst.paths.with_last_dir(synsets, lst.targets)
    return SplitList(lst.file, paths, lst.targets), layout


def _imagenet_names(synsets: list[str], dirs: Sequence[Path]) -> list[str]:
    """Human names from ``LOC_synset_mapping.txt`` (first name of each synset; ``name (synset)`` when two classes
    share it, e.g. the two cranes), else the synsets."""
    mapping = next((d / "LOC_synset_mapping.txt" for d in dirs if (d / "LOC_synset_mapping.txt").is_file()), None)
    if mapping is None:
        return list(synsets)
    human = {}
    for line in mapping.read_text(encoding="utf-8").splitlines():
        synset, _, names = line.strip().partition(" ")
        if synset:
            human[synset] = names.split(",")[0].strip() or synset
    first = [human.get(s, s) for s in synsets]
    counts = {n: first.count(n) for n in set(first)}
    return [n if counts[n] == 1 else f"{n} ({s})" for n, s in zip(first, synsets, strict=True)]


def _three_lists(
    dataset: str, prefix: str, root, list_dir, image_root, check_counts: bool
) -> tuple[Path, Path, Path, tuple[SplitList, SplitList, SplitList], int]:
    """``<prefix>_{train,val,test}.txt`` of ``dataset`` read and checked: ``(root, image_root, the lists' folder,
    (train, val, test), number of classes)``; classes are 1 + the largest training label, each present in training,
    and val / test labels lie among them."""
    root = _dir(root, "root", dataset)
    images = root if image_root is None else _dir(image_root, "image_root", dataset)
    names = tuple(f"{prefix}_{split}.txt" for split in ("train", "val", "test"))
    files = _find_lists(dataset, _list_dirs(root, list_dir, prefix, dataset), names)
    train = read_split_list(files[names[0]], images)
    k = int(train.targets.max(initial=-1)) + 1
    _check_classes(dataset, train, k)
    val = read_split_list(files[names[1]], images, k)
    test = read_split_list(files[names[2]], images, k)
    _check_published(dataset, check_counts, (len(train), len(val), len(test), k), files[names[0]].parent)
    return root, images, files[names[0]].parent, (train, val, test), k


def load_imagenet_lt(
    root: str | Path = "data",
    download: bool = False,
    *,
    list_dir: str | Path | None = None,
    image_root: str | Path | None = None,
    check_counts: bool = False,
    check_files: int = 64,
) -> BaseSplits:
    """ImageNet-LT: ``ImageNet_LT_{train,val,test}.txt`` (in ``list_dir``; default ``root`` then
    ``root/ImageNet_LT``) over the ILSVRC-2012 images in ``image_root`` (default ``root``).

    Labels are the list's (sorted-synset order); class names are the synsets of the training paths, or, when a
    ``LOC_synset_mapping.txt`` sits in the list folder or ``root``, each synset's first human name (``name
    (synset)`` for the few shared names). The test list may be flat (``val/<file>``) or in synset folders, and so may
    the disk: the form found is used and reported in ``note``. ``check_counts=True`` asserts the published
    115,846 / 20,000 / 50,000 images and 1000 classes.
    """
    _check_options("imagenet_lt", download, check_files)
    root, images, list_folder, (train, val, test), k = _three_lists(
        "imagenet_lt", "ImageNet_LT", root, list_dir, image_root, check_counts
    )
    synsets = _first_parent_dirs(train, k)
    check_sample("imagenet_lt", train, check_files, images)
    check_sample("imagenet_lt", val, check_files, images)
    test, layout = resolve_imagenet_test(test, synsets, check_files, images)
    class_names = _imagenet_names(synsets, [list_folder, root])
    note = f"ImageNet-LT lists: {_counts_text(train, val, test, k)}; test list: {layout}"
    return _splits(train, val, test, class_names, IMAGENET_MEAN, IMAGENET_STD, note)


def _places_names(file: Path | None, k: int, fallback: list[str]) -> list[str]:
    """Names from ``categories_places365.txt`` (``/a/airfield 0``: ``airfield``, ``desert/sand``), else fallback."""
    if file is None:
        return fallback
    names: dict[int, str] = {}
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        path, _, label = line.strip().rpartition(" ")
        if not path or not label.isdigit():
            raise ValueError(f"{file}:{number}: cannot parse {line!r}; expected '/<letter>/<category> <label>'")
        parts = path.strip("/").split("/")
        names[int(label)] = "/".join(parts[1:] if len(parts) > 1 else parts)
    absent = [c for c in range(k) if c not in names]
    if absent:
        raise ValueError(f"{file} has no name for labels {absent[:10]} (of 0..{k - 1})")
    return [names[c] for c in range(k)]


def load_places_lt(
    root: str | Path = "data",
    download: bool = False,
    *,
    list_dir: str | Path | None = None,
    image_root: str | Path | None = None,
    check_counts: bool = False,
    check_files: int = 64,
) -> BaseSplits:
    """Places-LT: ``Places_LT_{train,val,test}.txt`` (in ``list_dir``; default ``root`` then ``root/Places_LT``)
    over Places365-Standard images in ``image_root`` (default ``root``).

    Labels always come from the lists (the official category order, which is NOT the sorted folder names for 4
    classes). Class names: ``categories_places365.txt`` in the list folder or ``root`` when present
    (``/d/desert/sand 116`` gives ``desert/sand``), else the folder of each class's first training image.
    ``check_counts=True`` asserts the published 62,500 / 7,300 / 36,500 images and 365 classes.
    """
    _check_options("places_lt", download, check_files)
    root, images, list_folder, (train, val, test), k = _three_lists(
        "places_lt", "Places_LT", root, list_dir, image_root, check_counts
    )
    categories = next(
        (d / "categories_places365.txt" for d in (list_folder, root) if (d / "categories_places365.txt").is_file()),
        None,
    )
    for lst in (train, val, test):
        check_sample("places_lt", lst, check_files, images)
    class_names = _places_names(categories, k, _first_parent_dirs(train, k))
    note = f"Places-LT lists: {_counts_text(train, val, test, k)}; labels from the lists"
    return _splits(train, val, test, class_names, IMAGENET_MEAN, IMAGENET_STD, note)


def read_inat_json(file: Path, image_root: str | Path) -> tuple[SplitList, dict[int, str] | None]:
    """An iNaturalist COCO-like JSON (``images`` [{id, file_name}], ``annotations`` [{image_id, category_id}],
    ``categories`` [{id, name}]): the list in annotation order (labels = ``category_id``), and ``{id: name}`` (None
    when the categories carry no names)."""
    try:
        with open(file, encoding="utf-8") as f:
            content = json.load(f)
        images, annotations = content["images"], content["annotations"]
        image_ids = np.array([int(im["id"]) for im in images], dtype=np.int64)
        ann_ids = np.array([int(a.get("image_id", a.get("id"))) for a in annotations], dtype=np.int64)
        labels = np.array([int(a["category_id"]) for a in annotations], dtype=np.int64)
        categories = content.get("categories") or []
        names = {int(c["id"]): str(c["name"]) for c in categories if "name" in c} or None
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{file} is not an iNaturalist JSON: expected 'images' [{{id, file_name}}], 'annotations' "
            f"[{{image_id, category_id}}] and 'categories' [{{id, name}}] ({type(err).__name__}: {err})"
        ) from None
    order = np.argsort(image_ids, kind="stable")
    pos = np.searchsorted(image_ids[order], ann_ids)
    found = (
        (pos < len(order)) & (image_ids[order][np.minimum(pos, len(order) - 1)] == ann_ids) if len(order) else pos < 0
    )
    if not found.all():
        raise ValueError(f"{file}: annotation of image id {int(ann_ids[~found][0])} has no entry in 'images'")
    if (labels < 0).any():
        raise ValueError(f"{file}: category_id {int(labels[labels < 0][0])} is negative; accepted 0..C-1")
    paths = PathTable.from_paths([images[int(i)]["file_name"] for i in order[pos]], image_root)
    return SplitList(Path(file), paths, labels), names


def load_inat2018(
    root: str | Path = "data",
    download: bool = False,
    *,
    source: str = "auto",
    list_dir: str | Path | None = None,
    image_root: str | Path | None = None,
    check_counts: bool = False,
    check_files: int = 64,
) -> BaseSplits:
    """iNaturalist 2018: ``iNaturalist18_{train,val}.txt`` or the official ``train2018.json`` / ``val2018.json``
    (``source``: ``"lists"``, ``"json"`` or ``"auto"``, which prefers the lists), in ``list_dir`` (default ``root``
    then ``root/iNaturalist18``), over the images in ``image_root`` (default ``root``).

    Labels are the category ids (0..8141). Class names: the JSON categories' names (source json), else
    ``categories.json`` (a list of ``{id, name}``) when present, else ``str(label)``. There is no test list: the
    val list is the test set and ``val`` is None (validation = test; ``note`` says so). ``check_counts=True``
    asserts the published 437,513 / 24,426 images and 8142 classes. iNat mean / std.
    """
    _check_options("inat2018", download, check_files)
    if source not in ("auto", "lists", "json"):
        raise ValueError(f"source must be 'auto', 'lists' or 'json', got {source!r}")
    root = _dir(root, "root", "inat2018")
    images = root if image_root is None else _dir(image_root, "image_root", "inat2018")
    dirs = _list_dirs(root, list_dir, "iNaturalist18", "inat2018")
    lists, jsons = ("iNaturalist18_train.txt", "iNaturalist18_val.txt"), ("train2018.json", "val2018.json")
    if source == "auto":
        has = lambda names: any(all((d / n).is_file() for n in names) for d in dirs)  # noqa: E731
        source = "lists" if has(lists) or not has(jsons) else "json"
    other = f" (or {list(jsons if source == 'lists' else lists)} with source='auto')"
    files = _find_lists("inat2018", dirs, lists if source == "lists" else jsons, other)
    names: dict[int, str] | None = None
    if source == "lists":
        train = read_split_list(files[lists[0]], images)
        test_file = files[lists[1]]
    else:
        train, names = read_inat_json(files[jsons[0]], images)
        test_file = files[jsons[1]]
    k = int(train.targets.max(initial=-1)) + 1
    if names is not None:
        k = max(k, len(names))
        if set(names) != set(range(len(names))):
            raise ValueError(f"{files[jsons[0]]}: category ids must be 0..{len(names) - 1}, got {sorted(names)[:10]}")
    _check_classes("inat2018", train, k)
    if source == "lists":
        test = read_split_list(test_file, images, k)
    else:
        test = read_inat_json(test_file, images)[0]
        _check_range(test.targets, k, str(test_file), None, "the training classes")
    _check_published("inat2018", check_counts, (len(train), None, len(test), k), train.file.parent)
    for lst in (train, test):
        check_sample("inat2018", lst, check_files, images)
    if names is None:
        cat_file = next(
            (d / "categories.json" for d in (train.file.parent, root) if (d / "categories.json").is_file()), None
        )
        if cat_file is not None:
            with open(cat_file, encoding="utf-8") as f:
                names = {int(c["id"]): str(c["name"]) for c in json.load(f)}
    class_names = [names.get(c, str(c)) if names else str(c) for c in range(k)]
    note = f"{INAT_NOTE}; {_counts_text(train, None, test, k)}"
    return _splits(train, None, test, class_names, INAT_MEAN, INAT_STD, note)


SPLIT_LIST_DATASETS = {
    "split_lists": load_split_lists,
    "imagenet_lt": load_imagenet_lt,
    "places_lt": load_places_lt,
    "inat2018": load_inat2018,
}
