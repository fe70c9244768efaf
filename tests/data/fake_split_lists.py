"""Writers of tiny split-list datasets in the real layouts (ImageNet-LT, Places-LT, iNaturalist 2018, generic).

Each writes small solid-colour JPEGs (a few hundred bytes) with PIL and the list files, and returns a
:class:`ListInfo` with the relative paths and labels written to each list and the expected class names, so tests
compare exactly. Reused by the dataset, datamodule and CLI tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IMAGENET_SYNSETS = ("n01440764", "n01443537", "n01484850", "n01491361", "n01494475")
IMAGENET_HUMAN = ("tench", "goldfish", "great white shark", "tiger shark", "hammerhead")


@dataclass
class ListInfo:
    """What a writer wrote: per list ``(relative paths, labels)`` in list order, the class names, the list folder."""

    lists: dict[str, tuple[list[str], list[int]]]
    class_names: tuple[str, ...]
    list_dir: Path
    extra: dict = field(default_factory=dict)

    def paths(self, split: str) -> list[str]:
        return self.lists[split][0]

    def labels(self, split: str) -> list[int]:
        return self.lists[split][1]


def write_jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int] = (40, 30)) -> None:
    """A solid-colour ``size`` (width, height) RGB JPEG at ``path`` (a few hundred bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    Image.new("RGB", size, colour).save(path, quality=50)


def write_list(file: Path, paths: list[str], labels: list[int], crlf: bool = False) -> None:
    """``<path> <label>`` lines (``\\r\\n`` when ``crlf``), with a blank trailing line as some copies have."""
    end = "\r\n" if crlf else "\n"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("".join(f"{p} {y}{end}" for p, y in zip(paths, labels, strict=True)) + end, encoding="utf-8")


def _per_class(value: int | tuple[int, ...], num_classes: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (int(value),) * num_classes


def write_imagenet_lt(
    root: str | Path,
    num_classes: int = 3,
    per_class: tuple[int, ...] = (5, 3, 2),
    val_per_class: int = 2,
    test_per_class: int = 2,
    flat_test_list: bool = False,
    flat_disk: bool = False,
    image_size: tuple[int, int] = (40, 30),
    list_dir: str | None = None,
    synset_mapping: bool = False,
    seed: int = 0,
) -> ListInfo:
    """ImageNet-LT: ILSVRC-2012-style ``root/train/<synset>/<synset>_<n>.JPEG`` (train and val lists) and
    ``root/val/<synset>/ILSVRC2012_val_<8d>.JPEG`` (flat ``root/val/ILSVRC2012_val_<8d>.JPEG`` when ``flat_disk``);
    ``ImageNet_LT_{train,val,test}.txt`` in ``root/<list_dir>`` (the test list flat when ``flat_test_list``), and
    ``LOC_synset_mapping.txt`` when ``synset_mapping``. Labels = sorted-synset order."""
    root, rng = Path(root), np.random.default_rng(seed)
    synsets = IMAGENET_SYNSETS[:num_classes]
    counts = _per_class(per_class, num_classes)
    lists: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "val": ([], []), "test": ([], [])}
    for label, synset in enumerate(synsets):
        for i in range(counts[label] + val_per_class):
            rel = f"train/{synset}/{synset}_{i}.JPEG"
            write_jpeg(root / rel, rng, image_size)
            split = "train" if i < counts[label] else "val"
            lists[split][0].append(rel)
            lists[split][1].append(label)
    number = 1
    for label, synset in enumerate(synsets):
        for _ in range(test_per_class):
            name = f"ILSVRC2012_val_{number:08d}.JPEG"
            number += 1
            write_jpeg(root / ("val" if flat_disk else f"val/{synset}") / name, rng, image_size)
            lists["test"][0].append(f"val/{name}" if flat_test_list else f"val/{synset}/{name}")
            lists["test"][1].append(label)
    folder = root if list_dir is None else root / list_dir
    for split, (paths, labels) in lists.items():
        write_list(folder / f"ImageNet_LT_{split}.txt", paths, labels)
    names = synsets
    if synset_mapping:
        lines = [f"{s} {h}, other name" for s, h in zip(IMAGENET_SYNSETS, IMAGENET_HUMAN, strict=True)]
        (folder / "LOC_synset_mapping.txt").write_text("\n".join(lines) + "\n")
        names = IMAGENET_HUMAN[:num_classes]
    return ListInfo(lists, tuple(names), folder, {"synsets": synsets})


# Label order (the official category list) differs from the sorted folder names: airfield, desert-sand, zoo.
PLACES_CLASSES = (("/z/zoo", "zoo"), ("/a/airfield", "airfield"), ("/d/desert/sand", "desert-sand"))


def write_places_lt(
    root: str | Path,
    per_class: tuple[int, ...] = (4, 3, 2),
    val_per_class: int = 1,
    test_per_class: int = 2,
    categories: bool = True,
    list_dir: str | None = None,
    seed: int = 0,
) -> ListInfo:
    """Places-LT: ``root/train/<folder>/<8d>.jpg`` (train and val lists) and
    ``root/val/<folder>/Places365_val_<8d>.jpg``, ``Places_LT_{train,val,test}.txt``, and (``categories``)
    ``categories_places365.txt``. The label order (:data:`PLACES_CLASSES`) is not the sorted folder order.
    ``class_names`` are the category names (``desert/sand``) when ``categories``, else the folder names."""
    root, rng = Path(root), np.random.default_rng(seed)
    lists: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "val": ([], []), "test": ([], [])}
    number = 1
    for label, (_, folder) in enumerate(PLACES_CLASSES):
        for i in range(per_class[label] + val_per_class):
            rel = f"train/{folder}/{number:08d}.jpg"
            number += 1
            write_jpeg(root / rel, rng)
            split = "train" if i < per_class[label] else "val"
            lists[split][0].append(rel)
            lists[split][1].append(label)
        for _ in range(test_per_class):
            rel = f"val/{folder}/Places365_val_{number:08d}.jpg"
            number += 1
            write_jpeg(root / rel, rng)
            lists["test"][0].append(rel)
            lists["test"][1].append(label)
    directory = root if list_dir is None else root / list_dir
    for split, (paths, labels) in lists.items():
        write_list(directory / f"Places_LT_{split}.txt", paths, labels, crlf=split == "val")
    if categories:
        lines = [f"{category} {label}" for label, (category, _) in enumerate(PLACES_CLASSES)]
        (directory / "categories_places365.txt").write_text("\n".join(lines) + "\n")
        names = tuple(c.split("/", 2)[2] for c, _ in PLACES_CLASSES)
    else:
        names = tuple(f for _, f in PLACES_CLASSES)
    return ListInfo(lists, names, directory)


INAT_CLASSES = (("Plantae", "Quercus robur"), ("Aves", "Turdus merula"), ("Plantae", "Bellis perennis"))


def write_inat2018(
    root: str | Path,
    json_files: bool = True,
    lists: bool = False,
    categories_json: bool = False,
    per_class: tuple[int, ...] = (4, 2, 3),
    val_per_class: int = 2,
    seed: int = 0,
) -> ListInfo:
    """iNaturalist 2018: ``root/train_val2018/<supercategory>/<category id>/<hash>.jpg``; the official
    ``train2018.json`` / ``val2018.json`` (``json_files``; images listed in another order than the annotations,
    matched by id), ``iNaturalist18_{train,val}.txt`` (``lists``) and ``categories.json`` (``categories_json``)."""
    root, rng = Path(root), np.random.default_rng(seed)
    written: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "val": ([], [])}
    for split, counts in (("train", per_class), ("val", (val_per_class,) * len(INAT_CLASSES))):
        for label, (supercategory, _) in enumerate(INAT_CLASSES):
            for _ in range(counts[label]):
                rel = f"train_val2018/{supercategory}/{label}/{rng.bytes(8).hex()}.jpg"
                write_jpeg(root / rel, rng)
                written[split][0].append(rel)
                written[split][1].append(label)
    categories = [{"id": label, "name": name, "supercategory": sup} for label, (sup, name) in enumerate(INAT_CLASSES)]
    if json_files:
        first_id = 1000
        for split, (paths, labels) in written.items():
            ids = list(range(first_id, first_id + len(paths)))
            first_id += len(paths)
            images = [{"id": i, "file_name": p, "width": 40, "height": 30} for i, p in zip(ids, paths, strict=True)]
            annotations = [{"id": i, "image_id": i, "category_id": y} for i, y in zip(ids, labels, strict=True)]
            content = {"images": images[::-1], "annotations": annotations, "categories": categories}
            (root / f"{split}2018.json").write_text(json.dumps(content))
    if lists:
        for split, (paths, labels) in written.items():
            write_list(root / f"iNaturalist18_{split}.txt", paths, labels)
    if categories_json:
        (root / "categories.json").write_text(json.dumps(categories))
    names = tuple(n for _, n in INAT_CLASSES) if json_files or categories_json else ("0", "1", "2")
    return ListInfo(written, names, root)


def write_split_lists(
    root: str | Path,
    per_class: tuple[int, ...] = (3, 2),
    test_per_class: int = 1,
    val_per_class: int = 1,
    folder: str = "my images",
    seed: int = 0,
) -> ListInfo:
    """Generic lists ``train.txt``, ``val.txt`` (when ``val_per_class``) and ``test.txt`` in ``root`` over
    ``root/<folder>/<label>/<n>.jpg`` (the default folder name holds a space)."""
    root, rng = Path(root), np.random.default_rng(seed)
    splits = {"train": per_class, "val": (val_per_class,) * len(per_class), "test": (test_per_class,) * len(per_class)}
    lists: dict[str, tuple[list[str], list[int]]] = {}
    number = 0
    for split, counts in splits.items():
        if not any(counts):
            continue
        lists[split] = ([], [])
        for label, n in enumerate(counts):
            for _ in range(n):
                rel = f"{folder}/{label}/{number}.jpg"
                number += 1
                write_jpeg(root / rel, rng)
                lists[split][0].append(rel)
                lists[split][1].append(label)
        write_list(root / f"{split}.txt", *lists[split])
    return ListInfo(lists, tuple(str(c) for c in range(len(per_class))), root)
