"""Split-list datasets (ImageNet-LT, Places-LT, iNaturalist 2018, generic lists) on tiny trees in the real layouts
(tests/data/fake_split_lists.py), and the compact PathTable behind ImageFileDataset."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lt_lightning.data import LongTailDataModule
from lt_lightning.data.base import ImageFileDataset
from lt_lightning.data.datasets import dataset_options, load_dataset
from lt_lightning.data.paths import PathTable
from lt_lightning.data.split_lists import INAT_MEAN, INAT_NOTE, parse_split_list, read_split_list, sample_indices
from tests.data.fake_split_lists import (
    write_imagenet_lt,
    write_inat2018,
    write_jpeg,
    write_list,
    write_places_lt,
    write_split_lists,
)

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "split_list_startup.py"


def rel(table: PathTable, root) -> list[str]:
    return [p[len(str(root)) + 1 :] for p in table]


# ------------------------------------------------------------------------------------------------------ PathTable


def test_path_table_round_trip_take_and_pickle():
    names = ["train/a b/ü.jpg", "x.png", "", "val/n01/ILSVRC2012_val_00000001.JPEG"]
    table = PathTable.from_paths(names, root="/data/")
    assert len(table) == 4 and table[0] == "/data/train/a b/ü.jpg" and table[-1].endswith("00000001.JPEG")
    assert list(table) == ["/data/" + n for n in names] and table.relative(1) == "x.png"
    assert table.take([3, 0, 0, -3]).tolist() == ["/data/" + names[i] for i in (3, 0, 0, 1)]
    assert table[1:3].tolist() == ["/data/x.png", "/data/"] and len(table.take([])) == 0
    assert pickle.loads(pickle.dumps(table)) == table
    assert table.without_last_dir()[3] == "/data/val/ILSVRC2012_val_00000001.JPEG"
    assert table.with_last_dir(["s0", "s1"], [1, 0, 0, 0])[1] == "/data/s0/x.png"
    with pytest.raises(IndexError, match="path index 4 out of range for a table of 4 paths"):
        table[4]
    with pytest.raises(IndexError, match=r"indices must lie in \[-4, 4\)"):
        table.take([5])
    # Random paths against Python slicing: take, and the two ImageNet-LT rewrites.
    rng = np.random.default_rng(0)
    paths = [f"val/n{rng.integers(10**7):08d}/{'x' * int(rng.integers(1, 9))}.JPEG" for _ in range(300)]
    big = PathTable.from_paths(paths)
    order = rng.integers(0, 300, 500)
    assert big.take(order).tolist() == [paths[i] for i in order]
    assert big.without_last_dir().tolist() == [f"val/{p.rsplit('/', 1)[1]}" for p in paths]
    flat = big.without_last_dir()
    assert flat.with_last_dir([p.split("/")[1] for p in paths], np.arange(300)).tolist() == paths


def test_path_table_is_compact_and_pickles_small():
    paths = [f"train_val2018/Plantae/{i % 8142}/{i:032x}.jpg" for i in range(20_000)]
    table = PathTable.from_paths(paths, root="/datasets/inat")
    raw = sum(len(p) for p in paths)
    assert table.nbytes == raw + 8 * 20_001 + len("/datasets/inat")
    assert len(pickle.dumps(table)) < table.nbytes + 1000  # two arrays, no per-item object
    assert len(pickle.dumps(table)) < len(pickle.dumps(np.array(paths))) / 3  # vs the former unicode array
    ds = ImageFileDataset(table, np.zeros(20_000, np.int64))
    assert ds.paths is table and ds.paths[5] == "/datasets/inat/" + paths[5]
    sub = pickle.loads(pickle.dumps(ds.subset([7, 3])))
    assert sub.paths.tolist() == ["/datasets/inat/" + paths[i] for i in (7, 3)] and sub.paths.nbytes < 200


def test_corrupt_jpeg_names_the_file(tmp_path):
    info = write_split_lists(tmp_path)
    bad = tmp_path / info.paths("train")[1]
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    base = load_dataset("split_lists", tmp_path, train_list="train.txt", test_list="test.txt")
    assert base.train[0][0].shape == (3, 30, 40)
    with pytest.raises(OSError, match=f"cannot decode image file {bad}"):
        base.train[1]
    bad.unlink()
    with pytest.raises(FileNotFoundError, match=f"image file {bad} does not exist"):
        base.train[1]


# ------------------------------------------------------------------------------------------------- list parsing


def test_parse_split_list_spaces_crlf_blank_lines():
    buf, starts, ends, labels = parse_split_list(b"my dir/a b.jpg 3\r\n\nc.jpg 1024\n\n\n")
    assert [buf[a:b].tobytes().decode() for a, b in zip(starts, ends, strict=True)] == ["my dir/a b.jpg", "c.jpg"]
    assert labels.tolist() == [3, 1024] and labels.dtype == np.int64
    assert len(parse_split_list(b"")[3]) == 0
    # What the official reader's line.split() accepts: trailing blanks, a tab, several blanks before the label.
    buf, starts, ends, labels = parse_split_list(b"a.jpg 3 \t\nb c.jpg\t4\r\nd.jpg   5\n   \n")
    assert [buf[a:b].tobytes() for a, b in zip(starts, ends, strict=True)] == [b"a.jpg", b"b c.jpg", b"d.jpg"]
    assert labels.tolist() == [3, 4, 5]
    assert sample_indices(437_513, 64).size == 66 and sample_indices(5, 64).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "text, line, shown",
    [(b"a.jpg 0\nb.jpg\n", 2, "b.jpg"), (b"a.jpg 0\nb.jpg x1\n", 2, "b.jpg x1"), (b" 1\n", 1, " 1"),
     (b"a.jpg 0\n\nb.jpg -1\n", 3, "b.jpg -1"), (b"a.jpg 0\nb.jpg 1 x\n", 2, "b.jpg 1 x")],
)  # fmt: skip
def test_parse_errors_name_file_line_and_text(tmp_path, text, line, shown):
    (tmp_path / "l.txt").write_bytes(text)
    with pytest.raises(ValueError, match=rf"l\.txt:{line}: cannot parse line '{shown}'; expected '<relative path>"):
        read_split_list(tmp_path / "l.txt", tmp_path)


def test_label_out_of_range_names_line_and_range(tmp_path):
    (tmp_path / "l.txt").write_text("a.jpg 0\nb.jpg 1\n\nc d.jpg 7\n")
    with pytest.raises(ValueError, match=r"l\.txt:4: label 7 of line 'c d.jpg 7' is out of range .*0\.\.1 \(why\)"):
        read_split_list(tmp_path / "l.txt", tmp_path, num_classes=2, why="why")


# ------------------------------------------------------------------------------------------------- ImageNet-LT


@pytest.mark.parametrize(
    "flat_list, flat_disk, layout",
    [
        (False, False, "paths as written"),
        (True, True, "paths as written"),
        (False, True, "flat val/<file> layout found, list rewritten"),
        (True, False, "val/<synset>/<file> folders found, list rewritten"),
    ],
)
def test_imagenet_lt_counts_labels_names_and_test_layouts(tmp_path, flat_list, flat_disk, layout):
    info = write_imagenet_lt(tmp_path, flat_test_list=flat_list, flat_disk=flat_disk)
    base = load_dataset("imagenet_lt", tmp_path)
    assert base.class_names == ("n01440764", "n01443537", "n01484850") and base.num_classes == 3
    assert (len(base.train), len(base.val), len(base.test)) == (10, 6, 6)
    for split, ds in (("train", base.train), ("val", base.val), ("test", base.test)):
        assert ds.targets.tolist() == info.labels(split)
    assert rel(base.train.paths, tmp_path) == info.paths("train")
    assert base.note == f"ImageNet-LT lists: 10 train / 6 val / 6 test images, 3 classes; test list: {layout}"
    for i in range(len(base.test)):  # every rewritten path exists, and reads
        assert base.test[i][0].shape == (3, 30, 40)
    on_disk = "val/" if flat_disk else "val/n0"
    assert all(p.startswith(on_disk) for p in rel(base.test.paths, tmp_path))
    assert base.channels == 3 and base.image_size is None and base.mean == (0.485, 0.456, 0.406)


def test_imagenet_lt_list_dir_human_names_and_check_counts(tmp_path):
    write_imagenet_lt(tmp_path, list_dir="ImageNet_LT", synset_mapping=True)
    base = load_dataset("imagenet_lt", tmp_path)  # found in root/ImageNet_LT
    assert base.class_names == ("tench", "goldfish", "great white shark")
    assert load_dataset("imagenet_lt", tmp_path, list_dir=tmp_path / "ImageNet_LT", check_files=0).note.endswith(
        "paths as written (not checked: check_files=0)"
    )
    with pytest.raises(ValueError, match=r"check_counts=True: .* have 10 / 6 / 6 train / val / test images and 3 "
                       r"classes, the published ones 115,846 / 20,000 / 50,000 and 1000"):  # fmt: skip
        load_dataset("imagenet_lt", tmp_path, check_counts=True)
    assert set(dataset_options("imagenet_lt")) == {"list_dir", "image_root", "check_counts", "check_files"}


def test_imagenet_lt_missing_lists_images_and_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"imagenet_lt: list file\(s\) \['ImageNet_LT_train.txt', .*not found "
                       rf"in '{tmp_path}' \(searched .*ImageNet_LT'\]\); expected \['ImageNet_LT_train.txt', "
                       r"'ImageNet_LT_val.txt', 'ImageNet_LT_test.txt'\]"):  # fmt: skip
        load_dataset("imagenet_lt", tmp_path)
    info = write_imagenet_lt(tmp_path)
    with pytest.raises(ValueError, match=r"imagenet_lt cannot be downloaded automatically .*image-net\.org.*"
                       r"classifier-balancing"):  # fmt: skip
        load_dataset("imagenet_lt", tmp_path, download=True)
    (tmp_path / info.paths("train")[0]).unlink()  # the first path is always in the sample
    with pytest.raises(FileNotFoundError, match=r"imagenet_lt: 1 of 10 sampled images of ImageNet_LT_train.txt are "
                       rf"missing, e\.g\. \['{tmp_path}/train/n01440764/n01440764_0.JPEG'\]; searched under image "
                       rf"root '{tmp_path}'; ImageNet-LT expects <root>/train/<synset>"):  # fmt: skip
        load_dataset("imagenet_lt", tmp_path)
    load_dataset("imagenet_lt", tmp_path, check_files=0)  # not checked


def test_imagenet_lt_test_list_found_in_neither_form(tmp_path):
    info = write_imagenet_lt(tmp_path)
    for p in info.paths("test")[:1]:
        (tmp_path / p).unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 6 sampled images of ImageNet_LT_test.txt are missing, .*and "
                       r"in the flat form too, e\.g\. \['.*/val/ILSVRC2012_val_00000001.JPEG'"):  # fmt: skip
        load_dataset("imagenet_lt", tmp_path)


def test_class_absent_from_training_and_eval_labels_outside(tmp_path):
    info = write_imagenet_lt(tmp_path)
    train = info.lists["train"]
    keep = [i for i, y in enumerate(train[1]) if y != 1]
    write_list(tmp_path / "ImageNet_LT_train.txt", [train[0][i] for i in keep], [train[1][i] for i in keep])
    with pytest.raises(ValueError, match=r"imagenet_lt: classes \[1\] \(1 of 3\) have no image in the training list"):
        load_dataset("imagenet_lt", tmp_path)
    keep = [i for i, y in enumerate(train[1]) if y != 2]
    write_list(tmp_path / "ImageNet_LT_train.txt", [train[0][i] for i in keep], [train[1][i] for i in keep])
    with pytest.raises(ValueError, match=r"ImageNet_LT_val.txt:5: label 2 of line 'train/n01484850/n01484850_2.JPEG "
                       r"2' is out of range \(2 such\); accepted labels 0..1 \(the training classes\)"):  # fmt: skip
        load_dataset("imagenet_lt", tmp_path)


# -------------------------------------------------------------------------------------------------- Places-LT


@pytest.mark.parametrize("categories", [True, False])
def test_places_lt_labels_from_the_list_not_folder_order(tmp_path, categories):
    info = write_places_lt(tmp_path, categories=categories, list_dir="Places_LT")
    base = load_dataset("places_lt", tmp_path)
    assert base.class_names == (
        ("zoo", "airfield", "desert/sand") if categories else ("zoo", "airfield", "desert-sand")
    )
    assert base.train.targets.tolist() == info.labels("train") == [0] * 4 + [1] * 3 + [2] * 2
    assert base.val.targets.tolist() == [0, 1, 2] and base.test.targets.tolist() == info.labels("test")
    assert rel(base.val.paths, tmp_path) == info.paths("val")  # the val list has \r\n endings
    assert "/zoo/" in base.train.paths[0] and base.note.startswith("Places-LT lists: 9 train / 3 val / 6 test images")
    with pytest.raises(ValueError, match=r"places_lt cannot be downloaded .*Places365-Standard"):
        load_dataset("places_lt", tmp_path, download=True)


def test_places_lt_missing_image_names_layout(tmp_path):
    info = write_places_lt(tmp_path)
    (tmp_path / info.paths("test")[-1]).unlink()
    with pytest.raises(FileNotFoundError, match=r"of Places_LT_test.txt are missing, .*Places365_val_00000018.jpg'\]"
                       r".*Places-LT expects <root>/train/<class>/<8 digits>.jpg"):  # fmt: skip
        load_dataset("places_lt", tmp_path)


# ------------------------------------------------------------------------------------------------- iNaturalist


def test_inat2018_lists_and_json_give_the_same_items(tmp_path):
    info = write_inat2018(tmp_path, json_files=True, lists=True, categories_json=True)
    from_lists = load_dataset("inat2018", tmp_path)  # auto: the lists first
    from_json = load_dataset("inat2018", tmp_path, source="json")
    for base in (from_lists, from_json):
        assert base.val is None and base.note.startswith(INAT_NOTE) and base.mean == INAT_MEAN
        assert base.class_names == ("Quercus robur", "Turdus merula", "Bellis perennis")
        assert base.train.targets.tolist() == info.labels("train") and base.test.targets.tolist() == info.labels("val")
        assert rel(base.test.paths, tmp_path) == info.paths("val")
    assert from_lists.train.paths == from_json.train.paths
    (tmp_path / "categories.json").unlink()
    assert load_dataset("inat2018", tmp_path, source="lists").class_names == ("0", "1", "2")


def test_inat2018_json_only_and_errors(tmp_path):
    info = write_inat2018(tmp_path)  # JSON only: auto falls back to it
    base = load_dataset("inat2018", tmp_path)
    assert rel(base.train.paths, tmp_path) == info.paths("train") and base.num_classes == 3
    with pytest.raises(FileNotFoundError, match=r"list file\(s\) \['iNaturalist18_train.txt', "
                       r"'iNaturalist18_val.txt'\] not found .*\(or \['train2018.json', 'val2018.json'\]"):  # fmt: skip
        load_dataset("inat2018", tmp_path, source="lists")
    with pytest.raises(ValueError, match="source must be 'auto', 'lists' or 'json', got 'csv'"):
        load_dataset("inat2018", tmp_path, source="csv")
    (tmp_path / "val2018.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match=r"val2018.json is not an iNaturalist JSON: expected 'images'"):
        load_dataset("inat2018", tmp_path)


# ------------------------------------------------------------------------------------------- generic split_lists


def test_split_lists_options_and_errors(tmp_path):
    info = write_split_lists(tmp_path)
    with pytest.raises(ValueError, match=r"split_lists needs train_list and test_list \(list files"):
        load_dataset("split_lists", tmp_path)
    base = load_dataset("split_lists", tmp_path, train_list="train.txt", test_list=tmp_path / "test.txt")
    assert base.val is None and base.class_names == ("0", "1") and base.train.targets.tolist() == [0, 0, 0, 1, 1]
    assert base.train.paths[0] == f"{tmp_path}/my images/0/0.jpg"  # a space in the path
    (tmp_path / "names.txt").write_text("cat\ndog\n\n")
    named = load_dataset(
        "split_lists", tmp_path, train_list="train.txt", test_list="test.txt", val_list="val.txt",
        class_names="names.txt", mode="L",
    )  # fmt: skip
    assert named.class_names == ("cat", "dog") and named.val.targets.tolist() == info.labels("val")
    assert named.channels == 1 and named.train[0][0].shape == (1, 30, 40)
    with pytest.raises(ValueError, match=r"split_lists: classes \[2\] \(1 of 3\) have no image in the training list"):
        load_dataset("split_lists", tmp_path, train_list="train.txt", test_list="test.txt", num_classes=3)
    with pytest.raises(
        ValueError,
        match=r"train.txt:4: label 1 of line 'my images/1/3.jpg 1' is out of range \(2 such\); accepted labels 0..0 "
        r"\(class_names has 1 names\)",
    ):
        load_dataset("split_lists", tmp_path, train_list="train.txt", test_list="test.txt", class_names=["a"])
    write_list(tmp_path / "odd.txt", ["my images/0/0.jpg"], [5])
    with pytest.raises(ValueError, match=r"odd.txt:1: label 5 .*accepted labels 0..1 \(the training classes\)"):
        load_dataset("split_lists", tmp_path, train_list="train.txt", test_list="odd.txt")
    with pytest.raises(FileNotFoundError, match=r"list file '.*/nope.txt' does not exist"):
        load_dataset("split_lists", tmp_path, train_list="nope.txt", test_list="test.txt")
    with pytest.raises(ValueError, match="check_files must be an integer >= 0"):
        load_dataset("split_lists", tmp_path, train_list="train.txt", test_list="test.txt", check_files=-1)


# ------------------------------------------------------------------------------------------------- datamodule


def test_datamodule_on_imagenet_lt_uses_the_given_val_list(tmp_path):
    write_imagenet_lt(tmp_path, flat_disk=True)
    dm = LongTailDataModule("imagenet_lt", root=tmp_path, batch_size=2)
    assert dm.profile == "none" and dm.profile_auto and dm.val_source == "given"
    assert dm.class_counts == (5, 3, 2) and len(dm.val_set) == 6 and len(dm.test_set) == 6
    assert "note: ImageNet-LT lists" in dm.split_report() and "flat val/<file> layout found" in dm.split_report()
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 224, 224) and images.dtype == torch.float32 and labels.shape == (2,)
    assert next(iter(dm.test_dataloader()))[0].shape[1:] == (3, 224, 224)
    cut = LongTailDataModule("imagenet_lt", root=tmp_path, batch_size=2, profile="exponential", imbalance_ratio=2)
    assert cut.class_counts[0] == 2 * cut.class_counts[-1] and cut.val_source == "given"


def test_dataset_kwargs_reach_split_lists(tmp_path):
    write_split_lists(tmp_path, per_class=(3, 2))
    kwargs = {"train_list": "train.txt", "test_list": "test.txt", "val_list": "val.txt", "class_names": ["a", "b"]}
    dm = LongTailDataModule("split_lists", root=tmp_path, batch_size=2, dataset_kwargs=kwargs)
    assert dm.class_names == ("a", "b") and dm.val_source == "given" and dm.class_counts == (3, 2)
    with pytest.raises(ValueError, match=r"dataset_kwargs \['train'\] are not options of dataset 'split_lists'"):
        LongTailDataModule("split_lists", root=tmp_path, dataset_kwargs={"train": "train.txt"})


def test_measure_startup_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("split_list_startup", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.measure_startup(tmp_path, n_train=2000, n_val=300, num_classes=50)
    assert result["n_train"] == 2000 and result["load_s"] > 0 and result["pathtable_nbytes"] > 2000


def test_write_jpeg_is_tiny(tmp_path):
    write_jpeg(tmp_path / "a.jpg", np.random.default_rng(0))
    assert (tmp_path / "a.jpg").stat().st_size < 1500


def test_absolute_paths_in_a_list_are_kept_as_they_are(tmp_path):
    """A user's list may name images by absolute path: the root is not prefixed to them (relative ones get it)."""
    table = PathTable.from_paths(["/abs/x.jpg", "rel/y.jpg"], root="/data")
    assert table[0] == "/abs/x.jpg" and table[1] == "/data/rel/y.jpg" and list(table) == [table[0], table[1]]
