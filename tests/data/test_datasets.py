"""Base dataset loaders, run on tiny files written in each real on-disk format (see fake_data.py)."""

from __future__ import annotations

import gzip
import hashlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torchvision.transforms import v2

from lt_lightning.data import datasets, readers
from lt_lightning.data.datasets import (
    DATASETS,
    DIGITS_MEAN,
    DIGITS_STD,
    K49_MD5,
    ArrayDataset,
    BaseSplits,
    ImageFileDataset,
    LabeledImages,
    load_dataset,
)
from tests.data.fake_data import (
    idx_bytes,
    to_cifar_rows,
    write_cifar10,
    write_cifar100,
    write_cifar_pickle,
    write_gtsrb,
    write_imagefolder,
    write_k49,
    write_mnist,
    write_npz,
)


def as_hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


# ----------------------------------------------------------------------------------------------- dataset classes


def test_array_dataset_items_grey_and_rgb():
    grey = ArrayDataset(np.arange(12, dtype=np.uint8).reshape(3, 2, 2), np.array([2, 0, 1]))
    image, label = grey[2]
    assert image.dtype == torch.uint8 and image.shape == (1, 2, 2) and label == 1 and isinstance(label, int)
    assert image.flatten().tolist() == [8, 9, 10, 11]
    rgb_images = np.arange(2 * 2 * 3 * 3, dtype=np.uint8).reshape(2, 2, 3, 3)  # (N, H, W, C)
    rgb = ArrayDataset(rgb_images, [0, 1])
    image, _ = rgb[1]
    assert image.shape == (3, 2, 3) and image.is_contiguous()
    assert image[2, 1, 0].item() == rgb_images[1, 1, 0, 2]
    image[:] = 0  # a transform writing in place must not corrupt the pool
    assert rgb.images[1].max() == rgb_images[1].max() > 0


def test_subset_repeats_and_transforms():
    ds = ArrayDataset(np.arange(4, dtype=np.uint8).reshape(4, 1, 1), [0, 1, 2, 3], transform=lambda x: x * 2)
    sub = ds.subset(np.array([3, 3, 0]))
    assert sub.targets.tolist() == [3, 3, 0] and sub.targets.dtype == np.int64
    assert [sub[i][0].item() for i in range(3)] == [6, 6, 0]  # parent's transform kept
    assert sub.subset([1], transform=None)[0][0].item() == 3
    floats = ds.subset([1], transform=v2.ToDtype(torch.float32, scale=True))[0][0]
    assert floats.dtype == torch.float32 and floats.item() == pytest.approx(1 / 255)
    assert len(ds.subset(np.array([], dtype=np.int64))) == 0
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 4\), got min 0 and max 4"):
        ds.subset([0, 4])
    with pytest.raises(ValueError, match="1-D integer array"):
        ds.subset([0.5])


def test_array_dataset_validation():
    with pytest.raises(TypeError, match="numpy array"):
        ArrayDataset([[0]], [0])
    with pytest.raises(ValueError, match="dtype uint8.*float32"):
        ArrayDataset(np.zeros((2, 3, 3), np.float32), [0, 1])
    with pytest.raises(ValueError, match=r"shape \(N, H, W\) or \(N, H, W, C\), got \(2, 3\)"):
        ArrayDataset(np.zeros((2, 3), np.uint8), [0, 1])
    with pytest.raises(ValueError, match="3 labels for 2 images"):
        ArrayDataset(np.zeros((2, 3, 3), np.uint8), [0, 1, 1])
    with pytest.raises(ValueError, match=r"labels \[-1\], accepted: labels >= 0"):
        ArrayDataset(np.zeros((2, 3, 3), np.uint8), [0, -1])
    with pytest.raises(ValueError, match="integer labels, got dtype float64"):
        ArrayDataset(np.zeros((2, 3, 3), np.uint8), [0.0, 1.0])


def test_image_file_dataset(tmp_path):
    written = write_imagefolder(tmp_path, classes=("a",), n_per_class=2)
    paths = sorted(p for p in written if p.parent.parent.name == "train")
    ds = ImageFileDataset(paths, [1, 0], transform=v2.Resize((2, 2), antialias=True))
    assert isinstance(ds, LabeledImages) and ds[0][0].shape == (3, 2, 2) and ds[0][1] == 1
    raw = ds.subset([1, 1], transform=None)
    assert np.array_equal(as_hwc(raw[1][0]), written[paths[1]]) and raw.targets.tolist() == [0, 0]
    grey = ImageFileDataset(paths, [0, 0], mode="L")[0][0]
    assert grey.shape == (1, 5, 4)
    expected_l = np.asarray(Image.fromarray(written[paths[0]]).convert("L"))
    assert np.array_equal(grey[0].numpy(), expected_l)
    with pytest.raises(ValueError, match="mode must be 'RGB' or 'L', got 'CMYK'"):
        ImageFileDataset(paths, [0, 0], mode="CMYK")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(OSError, match="cannot decode image file .*bad.png"):
        ImageFileDataset([tmp_path / "bad.png"], [0])[0]
    with pytest.raises(FileNotFoundError, match="gone.png does not exist"):
        ImageFileDataset([tmp_path / "gone.png"], [0])[0]


def test_base_splits_checks():
    ds = ArrayDataset(np.zeros((2, 2, 2), np.uint8), [0, 1])
    splits = BaseSplits(ds, ds, ["a", "b"], 1, (0.5,), (0.2,), 2)
    assert splits.num_classes == 2 and splits.class_names == ("a", "b")
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
        BaseSplits(ds, ds, ("a", "b"), 2, (0.5, 0.5), (0.2, 0.2), 2)
    with pytest.raises(ValueError, match="mean and std need 1 values"):
        BaseSplits(ds, ds, ("a", "b"), 1, (0.5, 0.5), (0.2,), 2)
    with pytest.raises(ValueError, match=r"labels \[1\], accepted: labels in \[0, 1\)"):
        BaseSplits(ds, ds, ("a",), 1, (0.5,), (0.2,), 2)


def test_load_dataset_names_and_root():
    with pytest.raises(ValueError, match=r"dataset must be one of \['cifar10', 'cifar100', 'digits', .*got 'svhn'"):
        load_dataset("svhn")
    assert sorted(DATASETS) == sorted(
        ["digits", "mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100", "gtsrb", "k49", "imagefolder", "npz"]
        + ["split_lists", "imagenet_lt", "places_lt", "inat2018"]
    )
    for name in ("mnist", "cifar10", "gtsrb", "k49", "imagefolder", "npz", "imagenet_lt", "places_lt", "inat2018"):
        with pytest.raises(ValueError, match=r"root '/no/such/dir' .*(does not exist|existing \.npz)"):
            load_dataset(name, "/no/such/dir")


def test_pixel_mean_std_matches_numpy():
    x = np.random.default_rng(1).integers(0, 256, (5, 4, 3, 3), dtype=np.uint8)
    mean, std = readers.pixel_mean_std(x)
    np.testing.assert_allclose(mean, (x / 255).mean(axis=(0, 1, 2)), atol=1e-6)
    np.testing.assert_allclose(std, (x / 255).std(axis=(0, 1, 2)), atol=1e-6)


# ------------------------------------------------------------------------------------------------------- digits


def test_digits_split_without_files():
    base = load_dataset("digits", "/no/such/dir")  # needs no file
    assert len(base.train) + len(base.test) == 1797 and len(base.test) == 400
    assert np.bincount(base.test.targets).tolist() == [40] * 10
    reference = np.bincount(load_digits().target)
    assert np.bincount(base.train.targets).tolist() == (reference - 40).tolist()
    assert base.class_names == tuple("0123456789") and (base.channels, base.image_size) == (1, 8)
    assert base.train.images.dtype == np.uint8 and base.train.images.shape == (1397, 8, 8)
    assert (
        set(np.unique(base.train.images)) <= {round(k * 255 / 16) for k in range(17)} and base.test.images.max() == 255
    )
    np.testing.assert_allclose(readers.pixel_mean_std(base.train.images), (DIGITS_MEAN, DIGITS_STD), atol=5e-4)
    again = load_dataset("digits")
    assert np.array_equal(again.test.images, base.test.images) and np.array_equal(again.test.targets, base.test.targets)
    # every digits image lands in exactly one split, with its label
    scaled = np.rint(load_digits().images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    both = np.concatenate([base.train.images, base.test.images]).reshape(1797, -1)
    labels = np.concatenate([base.train.targets, base.test.targets])
    order_a, order_b = np.lexsort(scaled.T[::-1]), np.lexsort(both.T[::-1])
    assert np.array_equal(scaled[order_a], both[order_b])
    assert np.array_equal(np.bincount(labels), reference)


# ------------------------------------------------------------------------------------------------- MNIST family


@pytest.mark.parametrize(("gz", "folder"), [(False, "MNIST"), (True, None)])
def test_mnist_plain_and_gz_layouts(tmp_path, gz, folder):
    data = write_mnist(tmp_path, folder=folder, gz=gz)
    base = load_dataset("mnist", tmp_path)
    assert np.array_equal(base.train.images, data.x_train) and np.array_equal(base.test.targets, data.y_test)
    assert base.train.images.shape == (20, 28, 28) and base.train.targets.dtype == np.int64
    assert (base.mean, base.std, base.image_size, base.channels) == ((0.1307,), (0.3081,), 28, 1)
    image, label = base.train[3]
    assert label == 3 and image.shape == (1, 28, 28) and image[0, 5, 7].item() == data.x_train[3, 5, 7]


def test_download_fetches_with_torchvision_then_reads(tmp_path, monkeypatch):
    """download=True hands missing files to torchvision's downloader (faked here: no network), then reads them."""
    import torchvision.datasets
    import torchvision.datasets.utils

    calls = []

    class FakeKMNIST:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_mnist(root, folder="KMNIST", gz=True)

    monkeypatch.setattr(torchvision.datasets, "KMNIST", FakeKMNIST)
    root = tmp_path / "new"
    assert load_dataset("kmnist", root, download=True).train.images.shape == (20, 28, 28)
    assert calls == [(str(root), True, True)]
    load_dataset("kmnist", root, download=True)  # files present: no second fetch
    assert len(calls) == 1

    urls = []
    source = tmp_path / "k49_source"
    write_k49(source)
    fake_md5 = {n: hashlib.md5((source / n).read_bytes()).hexdigest() for n in K49_MD5}
    monkeypatch.setattr(datasets, "K49_MD5", fake_md5)
    monkeypatch.setattr(
        torchvision.datasets.utils,
        "download_url",
        lambda url, root, filename: (
            urls.append(url) or (tmp_path / root / filename).write_bytes((source / filename).read_bytes())
        ),
    )
    assert load_dataset("k49", tmp_path / "k49", download=True).class_names[1] == "ぃ"
    assert urls == [
        f"https://codh.rois.ac.jp/kmnist/dataset/k49/{n}"
        for n in (
            "k49-train-imgs.npz",
            "k49-train-labels.npz",
            "k49-test-imgs.npz",
            "k49-test-labels.npz",
            "k49_classmap.csv",
        )
    ]


def test_k49_download_with_a_wrong_checksum_raises_and_deletes_the_file(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    def fake_download(url, root, filename):  # no network: a tiny file that is not the release
        (tmp_path / root / filename).write_bytes(b"not the K49 release")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", fake_download)
    actual = hashlib.md5(b"not the K49 release").hexdigest()
    pattern = rf"downloaded .*k49-train-imgs.npz has MD5 {actual}, expected 7ac088b20481cf51dcd01ceaab89d821"
    with pytest.raises(ValueError, match=pattern):
        load_dataset("k49", tmp_path / "k49", download=True)
    assert not (tmp_path / "k49" / "k49-train-imgs.npz").exists()  # the next download=True fetches it again


def test_k49_checksums_are_the_published_ones():
    # The MD5s of the released files (the same four values in torchvision-style K49 loaders).
    assert K49_MD5 == {
        "k49-train-imgs.npz": "7ac088b20481cf51dcd01ceaab89d821",
        "k49-train-labels.npz": "44a8e1b893f81e63ff38d73cad420f7a",
        "k49-test-imgs.npz": "d352e201d846ce6b94f42c990966f374",
        "k49-test-labels.npz": "4da6f7a62e67a832d5eb1bd85c5ee448",
    }
    assert datasets.K49_SOURCE.startswith("https://")


def test_fashion_and_kmnist_names(tmp_path):
    write_mnist(tmp_path, folder="FashionMNIST")
    write_mnist(tmp_path, folder="KMNIST", gz=True)
    fashion, kmnist = load_dataset("fashion_mnist", tmp_path), load_dataset("kmnist", tmp_path)
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    assert kmnist.class_names == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    assert (fashion.mean, kmnist.std) == ((0.2860,), (0.3483,))


def test_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing \[.*train-images-idx3-ubyte.*ossci.*download=True"):
        load_dataset("mnist", tmp_path)
    write_mnist(tmp_path, folder=None)
    raw = tmp_path / "t10k-labels-idx1-ubyte"
    raw.write_bytes(idx_bytes(np.array([0] * 9 + [10], dtype=np.uint8)))  # label 10 of 10 classes
    with pytest.raises(ValueError, match=r"labels in .*t10k-labels-idx1-ubyte has labels \[10\]"):
        load_dataset("mnist", tmp_path)
    raw.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01")  # announces 5 labels, holds 1
    with pytest.raises(ValueError, match=r"corrupt idx file .*needs 5 data bytes, found 1"):
        load_dataset("mnist", tmp_path)
    raw.write_bytes(b"\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="corrupt idx file .*magic number 08030000"):
        readers.read_idx(raw)
    bad_gz = tmp_path / "x-idx1-ubyte.gz"
    bad_gz.write_bytes(b"plain bytes")
    with pytest.raises(ValueError, match="corrupt gzip file .*x-idx1-ubyte.gz"):
        readers.read_idx(bad_gz)
    good_gz = tmp_path / "y-idx1-ubyte.gz"
    good_gz.write_bytes(gzip.compress(idx_bytes(np.array([4, 2], dtype=np.uint8))))
    assert readers.read_idx(good_gz).tolist() == [4, 2]


# -------------------------------------------------------------------------------------------------------- CIFAR


def test_cifar10_round_trip(tmp_path):
    data = write_cifar10(tmp_path)
    base = load_dataset("cifar10", tmp_path)
    assert base.train.images.shape == (20, 32, 32, 3) and len(base.test) == 10
    assert np.array_equal(base.train.images, data.x_train) and np.array_equal(base.train.targets, data.y_train)
    assert base.class_names[:2] == ("airplane", "automobile") and base.mean == (0.4914, 0.4822, 0.4465)
    assert (base.channels, base.image_size, base.std) == (3, 32, (0.2023, 0.1994, 0.2010))


def test_cifar_plane_layout(tmp_path):
    """Row value at c*1024 + h*32 + w is pixel (h, w) of channel c, written by hand (not via the writer)."""
    write_cifar10(tmp_path)
    rows = np.zeros((2, 3072), np.uint8)
    rows[1, 1 * 1024 + 2 * 32 + 3] = 200  # green, row 2, column 3
    rows[1, 2 * 1024 + 31 * 32 + 0] = 77  # blue, last row, first column
    write_cifar_pickle(tmp_path / "cifar-10-batches-py" / "test_batch", {"data": rows, "labels": [4, 9]})
    test = load_dataset("cifar10", tmp_path).test
    assert test.images[1, 2, 3, 1] == 200 and test.images[1, 31, 0, 2] == 77 and test.images.sum() == 277
    image, label = test[1]
    assert (image[1, 2, 3].item(), image[2, 31, 0].item(), label) == (200, 77, 9)
    assert np.array_equal(to_cifar_rows(test.images), rows)


def test_cifar100_fine_labels(tmp_path):
    data = write_cifar100(tmp_path)
    base = load_dataset("cifar100", tmp_path)
    assert base.num_classes == 100 and base.class_names[99] == "class_99"
    assert np.array_equal(base.test.targets, data.y_test) and np.array_equal(base.train.images, data.x_train)
    assert base.train.targets.max() == 99  # fine, not coarse (max 19)


def test_cifar_errors(tmp_path):
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \['data_batch_3'\].*cifar-10-python.tar.gz.*download=True"):
        load_dataset("cifar10", tmp_path)
    write_cifar_pickle(folder / "data_batch_3", {"data": np.zeros((1, 3072), np.uint8), "labels": [10]})
    with pytest.raises(ValueError, match=r"labels in .*data_batch_3 has labels \[10\], accepted: labels in \[0, 10\)"):
        load_dataset("cifar10", tmp_path)
    write_cifar_pickle(folder / "data_batch_3", {"data": np.zeros((1, 3000), np.uint8), "labels": [1]})
    with pytest.raises(ValueError, match=r"corrupt CIFAR pickle .*data_batch_3.*\(1, 3000\)"):
        load_dataset("cifar10", tmp_path)
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt CIFAR pickle .*data_batch_3"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cifar100: missing \['train', 'test', 'meta'\]"):
        load_dataset("cifar100", tmp_path)


# -------------------------------------------------------------------------------------------------------- GTSRB


def test_gtsrb_tree_and_csv(tmp_path):
    test_images, test_labels = write_gtsrb(tmp_path, n_per_class=2)
    base = load_dataset("gtsrb", tmp_path)
    assert len(base.train) == 86 and np.array_equal(np.bincount(base.train.targets), [2] * 43)
    assert base.train.paths[-1].endswith("00042/00000_00001.ppm") and base.train.targets[-1] == 42
    assert base.test.targets.tolist() == test_labels.tolist() and base.image_size is None and base.num_classes == 43
    for k, expected in enumerate(test_images):  # PPM is lossless; sizes vary
        assert np.array_equal(as_hwc(base.test[k][0]), expected)
    assert base.train[0][0].shape == (3, 6, 7)


def test_gtsrb_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"gtsrb: missing .*GT-final_test.csv.*sid.erda.dk.*download=True"):
        load_dataset("gtsrb", tmp_path)
    write_gtsrb(tmp_path)
    csv = tmp_path / "gtsrb" / "GT-final_test.csv"
    csv.write_text(csv.read_text().replace(";7\n", ";43\n"))
    with pytest.raises(ValueError, match=r"labels in .*GT-final_test.csv has labels \[43\]"):
        load_dataset("gtsrb", tmp_path)
    (tmp_path / "gtsrb" / "GTSRB" / "Final_Test" / "Images" / "00001.ppm").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 images listed in .*GT-final_test.csv are missing.*00001.ppm"):
        load_dataset("gtsrb", tmp_path)
    training = tmp_path / "gtsrb" / "GTSRB" / "Training"
    for ppm in (training / "00005").glob("*.ppm"):
        ppm.unlink()
    with pytest.raises(ValueError, match=r"class directory .*00005 holds no image"):
        load_dataset("gtsrb", tmp_path)
    Image.new("RGB", (3, 3)).save(training / "00005" / "x.ppm")
    (training / "00005").rename(training / "00043")
    with pytest.raises(ValueError, match=r"class folders \['00043'\] .* are not labels 00000..00042"):
        load_dataset("gtsrb", tmp_path)
    shutil.rmtree(training / "00043")
    with pytest.raises(FileNotFoundError, match=r"class folders \['00005'\] are missing from .*Training"):
        load_dataset("gtsrb", tmp_path)


# ---------------------------------------------------------------------------------------------------------- K49


def test_k49_with_and_without_classmap(tmp_path):
    data = write_k49(tmp_path, n_per_class=2)
    base = load_dataset("k49", tmp_path)
    assert base.num_classes == 49 and base.class_names[0] == "あ" and base.class_names[48] == chr(0x3042 + 48)
    assert np.array_equal(base.train.images, data.x_train) and np.array_equal(base.test.targets, data.y_test)
    np.testing.assert_allclose(base.mean, [(data.x_train / 255).mean()], atol=1e-6)
    np.testing.assert_allclose(base.std, [(data.x_train / 255).std()], atol=1e-6)
    (tmp_path / "k49_classmap.csv").unlink()
    assert load_dataset("k49", tmp_path).class_names == tuple(str(c) for c in range(49))


def test_k49_errors(tmp_path):
    write_k49(tmp_path)
    (tmp_path / "k49_classmap.csv").write_text("index,codepoint,char\n0,U+3042,a\n")
    with pytest.raises(ValueError, match="k49_classmap.csv lists 1 classes, K49 has 49"):
        load_dataset("k49", tmp_path)
    (tmp_path / "k49_classmap.csv").unlink()
    np.savez(tmp_path / "k49-test-labels.npz", np.array([0] * 48 + [49]))
    with pytest.raises(ValueError, match=r"labels in .*k49-test-labels.npz has labels \[49\]"):
        load_dataset("k49", tmp_path)
    (tmp_path / "k49-train-imgs.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \['k49-train-imgs.npz'\].*codh.rois.ac.jp.*download=True"):
        load_dataset("k49", tmp_path)


# -------------------------------------------------------------------------------------------------- imagefolder


def test_imagefolder_round_trip(tmp_path):
    written = write_imagefolder(tmp_path, eval_classes=("emu", "cat"))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    base = load_dataset("imagefolder", tmp_path)
    assert base.class_names == ("cat", "dog", "emu") and base.train.targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert base.test.targets.tolist() == [0, 2] and base.mean == (0.485, 0.456, 0.406) and base.image_size is None
    path = tmp_path / "train" / "dog" / "img1.png"
    assert np.array_equal(as_hwc(base.train[3][0]), written[path])


def test_imagefolder_val_fallback_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train is missing"):
        load_dataset("imagefolder", tmp_path)
    write_imagefolder(tmp_path, eval_dir="val", eval_classes=("dog",))
    assert load_dataset("imagefolder", tmp_path).test.targets.tolist() == [1]
    (tmp_path / "val" / "wolf").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "val" / "wolf" / "w.jpg")
    with pytest.raises(ValueError, match=r"classes \['wolf'\] of .*val are not in .*train"):
        load_dataset("imagefolder", tmp_path)
    (tmp_path / "val" / "wolf" / "w.jpg").unlink()
    with pytest.raises(ValueError, match=r"class directory .*val/wolf holds no image"):
        load_dataset("imagefolder", tmp_path)
    (tmp_path / "val" / "wolf").rmdir()
    (tmp_path / "train" / "emu" / "img0.png").write_bytes(b"\x89PNG broken")
    base = load_dataset("imagefolder", tmp_path)  # decoding is lazy: the error names the file on access
    with pytest.raises(OSError, match=r"cannot decode image file .*emu/img0.png"):
        base.train[4]
    (tmp_path / "val").rename(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="neither .*test nor .*val exists"):
        load_dataset("imagefolder", tmp_path)


# ---------------------------------------------------------------------------------------------------------- npz


def test_npz_rgb_and_grey(tmp_path):
    data = write_npz(tmp_path / "rgb.npz", class_names=("x", "y", "z"))
    base = load_dataset("npz", tmp_path / "rgb.npz")
    assert base.class_names == ("x", "y", "z") and (base.channels, base.image_size) == (3, 6)
    assert np.array_equal(base.train.images, data.x_train) and np.array_equal(base.test.targets, data.y_test)
    np.testing.assert_allclose(base.mean, (data.x_train / 255).mean(axis=(0, 1, 2)), atol=1e-6)
    grey = write_npz(tmp_path / "grey.npz", shape=(4, 5), num_classes=4)
    base = load_dataset("npz", tmp_path / "grey.npz")
    assert base.class_names == ("0", "1", "2", "3") and (base.channels, base.image_size) == (1, None)
    assert base.train[1][0].shape == (1, 4, 5) and np.array_equal(base.train[1][0][0].numpy(), grey.x_train[1])


def test_npz_errors(tmp_path):
    path = tmp_path / "d.npz"
    with pytest.raises(ValueError, match="d.npz' for dataset 'npz' must be an existing .npz file"):
        load_dataset("npz", path)
    np.savez(path, x_train=np.zeros((2, 3, 3), np.uint8), y_train=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"lacks arrays \['x_test', 'y_test'\]"):
        load_dataset("npz", path)
    path.write_bytes(b"PK\x03\x04 a damaged zip")
    with pytest.raises(ValueError, match="cannot read npz file .*d.npz"):
        load_dataset("npz", path)
    arrays = write_npz(path, class_names=("a", "b", "c"))._asdict()
    np.savez(path, **{**arrays, "x_train": arrays["x_train"].astype(np.float32)}, class_names=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="x_train must be non-empty uint8.*float32"):
        load_dataset("npz", path)
    np.savez(path, **arrays, class_names=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"y_train in .*d.npz has labels \[2\], accepted: labels in \[0, 2\)"):
        load_dataset("npz", path)


def test_npy_given_as_npz_is_named(tmp_path):
    np.save(tmp_path / "arrays.npy", np.zeros((2, 3, 3), np.uint8))
    path = (tmp_path / "arrays.npy").rename(tmp_path / "arrays.npz")
    with pytest.raises(ValueError, match=r"arrays.npz is a single .npy array, not an .npz archive: save .*np.savez"):
        load_dataset("npz", path)


def test_garbage_npz_is_not_called_a_pickle(tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(b"x_train,y_train\n1,2\n")  # e.g. a CSV renamed
    with pytest.raises(
        ValueError, match=r"d.npz is not an .npz archive \(a zip of .npy arrays.*starts with bytes b'x_trai"
    ):
        load_dataset("npz", path)


def test_imagefolder_warns_that_val_is_ignored_when_test_exists(tmp_path):
    write_imagefolder(tmp_path, eval_dir="test")
    write_imagefolder(tmp_path / "v", eval_dir="val")
    (tmp_path / "v" / "val").rename(tmp_path / "val")
    with pytest.warns(UserWarning, match=r"imagefolder: .*val is ignored: .*test is the evaluation set.*val_per_class"):
        base = load_dataset("imagefolder", tmp_path)
    assert len(base.test) == 3


def test_unreadable_class_directory_is_named(tmp_path, monkeypatch):
    # Permissions cannot be tested as root, so the OS error is simulated where the folder is listed.
    write_imagefolder(tmp_path, n_per_class=1)
    real = readers.list_images

    def deny(directory, *args, **kwargs):
        if directory.name == "dog":
            raise PermissionError(13, "Permission denied")
        return real(directory, *args, **kwargs)

    monkeypatch.setattr(readers, "list_images", deny)
    with pytest.raises(ValueError, match=r"class directory .*train/dog cannot be read: Permission denied"):
        load_dataset("imagefolder", tmp_path)
