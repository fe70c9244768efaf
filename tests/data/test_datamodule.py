"""LongTailDataModule: the built split, transforms, seeds, validation, samplers and input errors.

Real datasets are replaced by tiny files in their released formats (``tests/data/fake_data.py``); digits is the
embedded scikit-learn set. Expected counts are computed by hand from the profile formulas.
"""

import inspect
import logging

import lightning as L
import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.datasets import CIFAR_MEAN, CIFAR_STD, DIGITS_MEAN, DIGITS_STD
from lt_lightning.data.samplers import SAMPLERS, ProgressiveSampler
from lt_lightning.profiles import exponential_profile
from tests.data.fake_data import write_cifar10, write_gtsrb, write_imagefolder, write_k49, write_npz

# Digits training pool per class (1797 images minus 40 test images per class): its smallest class is 8.
DIGITS_POOL = (138, 142, 137, 143, 141, 142, 141, 139, 134, 140)
# n_i = int(134 * 0.1 ** (i / 9)), the exponential profile at rho 10 with head = min(DIGITS_POOL).
DIGITS_RHO10 = (134, 103, 80, 62, 48, 37, 28, 22, 17, 13)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """Fake CIFAR-10 with 100 training images per class; returns (root, what was written)."""
    root = tmp_path_factory.mktemp("cifar")
    return root, write_cifar10(root, n_per_class=100, n_test_per_class=2)


def image_keys(images: np.ndarray) -> list[bytes]:
    """One hashable key per image (its raw bytes), to compare selections without indices."""
    return [img.tobytes() for img in images]


# --- the default: digits -------------------------------------------------------------------------------------


def test_digits_default_split(caplog):
    with caplog.at_level(logging.INFO, logger="lt_lightning.data.datamodule"):
        dm = LongTailDataModule("digits", imbalance_ratio=10)
    assert dm.class_counts == DIGITS_RHO10
    assert dm.num_classes == 10 and dm.in_chans == 1
    assert dm.class_names == tuple("0123456789")
    assert np.bincount(dm.train_set.targets, minlength=10).tolist() == list(DIGITS_RHO10)
    assert np.bincount(dm.test_set.targets, minlength=10).tolist() == [40] * 10
    assert dm.val_set is dm.test_set and dm.val_dataloader().dataset is dm.test_set
    expected = (
        "digits-LT (exponential): 10 classes, 544 training images, head 134, tail 13, ratio 10.3, "
        "val 400 (= test), test 400"
    )
    assert dm.summary() == expected
    records = [r for r in caplog.records if r.name == "lt_lightning.data.datamodule"]
    assert [(r.levelno, r.getMessage()) for r in records] == [(logging.INFO, expected)]


def test_digits_transforms_normalise_only():
    dm = LongTailDataModule("digits")
    # Grey 8x8: no crop or flip, only scale + normalise, in training as in evaluation.
    assert [type(t) for t in dm.train_transform.transforms] == [v2.ToDtype, v2.Normalize]
    assert [type(t) for t in dm.eval_transform.transforms] == [v2.ToDtype, v2.Normalize]
    image, label = dm.test_set[0]
    raw = torch.from_numpy(dm.test_set.images[0]).float()[None]
    assert image.dtype == torch.float32 and image.shape == (1, 8, 8)
    torch.testing.assert_close(image, (raw / 255 - DIGITS_MEAN[0]) / DIGITS_STD[0])
    assert label == int(dm.test_set.targets[0])


# --- CIFAR-10 on fake files ----------------------------------------------------------------------------------


def test_cifar10_rho100_counts(cifar):
    root, written = cifar
    dm = LongTailDataModule("cifar10", root=root, imbalance_ratio=100)
    expected = exponential_profile(100, 10, 100)
    assert expected[0] == 100 and expected[-1] == 1  # head 100 ... tail 1
    assert dm.class_counts == expected
    assert np.bincount(dm.train_set.targets, minlength=10).tolist() == list(expected)
    assert dm.in_chans == 3 and dm.class_names[:2] == ("airplane", "automobile")
    # Every kept image comes from the pool with its own label.
    pool = dict(zip(image_keys(written.x_train), written.y_train.tolist(), strict=True))
    assert [pool[k] for k in image_keys(dm.train_set.images)] == dm.train_set.targets.tolist()
    assert len(set(image_keys(dm.train_set.images))) == sum(expected)  # no image reused
    assert np.array_equal(dm.test_set.images, written.x_test)


def _crop_flip_of(x_chw: torch.Tensor, out_uint8: torch.Tensor) -> tuple[int, int, bool]:
    """The (top, left, flipped) RandomCrop(32, padding=4) + flip window of ``x_chw`` equal to ``out_uint8``."""
    padded = torch.nn.functional.pad(x_chw, (4, 4, 4, 4))
    matches = [
        (i, j, flip)
        for i in range(9)
        for j in range(9)
        for flip in (False, True)
        if torch.equal(
            padded[:, i : i + 32, j : j + 32].flip(-1) if flip else padded[:, i : i + 32, j : j + 32], out_uint8
        )
    ]
    assert len(matches) == 1, f"the output is not one crop/flip of the input: {matches}"
    return matches[0]


def test_cifar10_default_transforms(cifar):
    root, _ = cifar
    dm = LongTailDataModule("cifar10", root=root, imbalance_ratio=100)
    train_types = [type(t) for t in dm.train_transform.transforms]
    eval_types = [type(t) for t in dm.eval_transform.transforms]
    assert train_types == [v2.RandomCrop, v2.RandomHorizontalFlip, v2.ToDtype, v2.Normalize]
    assert eval_types == [v2.ToDtype, v2.Normalize]
    crop = dm.train_transform.transforms[0]
    assert crop.size == (32, 32) and crop.padding == [4, 4, 4, 4]

    mean = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(3, 1, 1)
    x = dm.train_set.image(0)
    # Eval: deterministic, exactly (x / 255 - mean) / std.
    a, b = dm.eval_transform(x), dm.eval_transform(x)
    assert a.dtype == torch.float32 and a.shape == (3, 32, 32)
    assert torch.equal(a, b)
    torch.testing.assert_close(a, (x.float() / 255 - mean) / std)
    # Train: float32, normalised with the same constants, and each draw is one padded crop (+ flip) of x.
    torch.manual_seed(0)
    windows = set()
    for _ in range(20):
        y = dm.train_transform(x)
        assert y.dtype == torch.float32 and y.shape == (3, 32, 32)
        back = (y * std + mean) * 255
        assert torch.allclose(back, back.round(), atol=1e-3)  # normalised values of integer pixels
        windows.add(_crop_flip_of(x, back.round().to(torch.uint8)))
    assert len(windows) > 1 and {flip for *_, flip in windows} == {False, True}
    assert dm.train_set.transform is dm.train_transform and dm.test_set.transform is dm.eval_transform


def test_user_transforms_override_defaults(cifar):
    root, _ = cifar

    def train_tf(x):
        return ("train", x.shape)

    def eval_tf(x):
        return ("eval", x.shape)

    dm = LongTailDataModule("cifar10", root=root, val_per_class=5, train_transform=train_tf, eval_transform=eval_tf)
    assert dm.train_transform is train_tf and dm.eval_transform is eval_tf
    assert dm.train_set[0][0] == ("train", torch.Size([3, 32, 32]))
    assert dm.val_set[0][0] == ("eval", torch.Size([3, 32, 32]))
    assert dm.test_set[0][0] == ("eval", torch.Size([3, 32, 32]))
    # A falsy transform (an empty Sequential has len 0) is still the user's choice.
    empty = torch.nn.Sequential()
    dm = LongTailDataModule("cifar10", root=root, train_transform=empty)
    assert dm.train_transform is empty and torch.equal(dm.train_set[0][0], dm.train_set.image(0))


def test_k49_grey_28_transforms_and_fill(tmp_path):
    written = write_k49(tmp_path, n_per_class=20)
    # Zipf head 30 > the 20 images class 0 has: an error without reuse.
    kwargs = dict(profile="zipf", head_size=30, zipf_exponent=2.0, zipf_min=2)
    with pytest.raises(ValueError, match=r"class 0 has 20 images but the split needs 30 .*fill_short_classes=True"):
        LongTailDataModule("k49", root=tmp_path, **kwargs)
    dm = LongTailDataModule("k49", root=tmp_path, fill_short_classes=True, **kwargs)
    # n_r = max(int(30 / r^2), 2): 30, 7, 3, then the floor 2 for ranks 4..49.
    assert dm.class_counts == (30, 7, 3) + (2,) * 46
    assert np.bincount(dm.train_set.targets, minlength=49).tolist() == list(dm.class_counts)
    head = dm.train_set.images[dm.train_set.targets == 0]
    uses = {}
    for key in image_keys(head):
        uses[key] = uses.get(key, 0) + 1
    pool_class0 = set(image_keys(written.x_train[written.y_train == 0]))
    # Cyclic reuse: all 20 real images of class 0, ten of them twice.
    assert set(uses) == pool_class0 and sorted(uses.values()) == [1] * 10 + [2] * 10
    assert dm.in_chans == 1 and dm.num_classes == 49 and dm.class_names[0] == "\u3042"
    assert [type(t) for t in dm.train_transform.transforms] == [v2.ToDtype, v2.Normalize]
    image, _ = dm.train_set[0]
    assert image.dtype == torch.float32 and image.shape == (1, 28, 28)


# --- seeds and class order -----------------------------------------------------------------------------------


def test_subset_seed_reproducible(cifar):
    root, _ = cifar
    a = LongTailDataModule("cifar10", root=root, imbalance_ratio=100, subset_seed=3)
    b = LongTailDataModule("cifar10", root=root, imbalance_ratio=100, subset_seed=3)
    c = LongTailDataModule("cifar10", root=root, imbalance_ratio=100, subset_seed=4)
    assert np.array_equal(a.train_set.images, b.train_set.images)
    assert np.array_equal(a.train_set.targets, b.train_set.targets)
    assert a.class_counts == c.class_counts
    # Same counts, other images: the tail classes keep a different selection of their 100.
    assert set(image_keys(a.train_set.images)) != set(image_keys(c.train_set.images))


def test_random_class_order_is_seeded():
    heads = set()
    for seed in range(4):
        dm = LongTailDataModule("digits", class_order="random", subset_seed=seed)
        again = LongTailDataModule("digits", class_order="random", subset_seed=seed)
        assert dm.class_counts == again.class_counts
        assert sorted(dm.class_counts, reverse=True) == list(DIGITS_RHO10)
        assert np.bincount(dm.train_set.targets, minlength=10).tolist() == list(dm.class_counts)
        heads.add(int(np.argmax(dm.class_counts)))
    assert heads != {0}  # some seed moves the head away from label 0


# --- validation split ----------------------------------------------------------------------------------------


def test_balanced_validation_disjoint_from_train(cifar):
    root, written = cifar
    dm = LongTailDataModule("cifar10", root=root, imbalance_ratio=50, val_per_class=5)
    assert dm.class_counts == exponential_profile(95, 10, 50)  # head shrinks from 100 to 100 - 5
    assert dm.class_counts[0] == 95 and dm.class_counts[-1] == 1
    assert np.bincount(dm.val_set.targets, minlength=10).tolist() == [5] * 10
    train_keys, val_keys = set(image_keys(dm.train_set.images)), set(image_keys(dm.val_set.images))
    assert len(val_keys) == 50 and not train_keys & val_keys
    assert val_keys <= set(image_keys(written.x_train))  # carved from the training pool, not the test set
    assert dm.val_dataloader().dataset is dm.val_set and dm.val_set is not dm.test_set
    assert dm.val_set.transform is dm.eval_transform
    assert dm.summary().endswith("val 50, test 20")


def test_validation_on_digits_shrinks_default_head():
    dm = LongTailDataModule("digits", val_per_class=5)
    assert dm.class_counts[0] == 129 and len(dm.val_set) == 50


# --- samplers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_reaches_loader(name):
    dm = LongTailDataModule("digits", sampler=name, sampler_seed=7, batch_size=32)
    loader = dm.train_dataloader()
    assert type(loader.sampler) is SAMPLERS[name]
    assert loader.sampler.seed == 7 and loader.batch_size == 32
    assert np.array_equal(loader.sampler.targets, dm.train_set.targets)
    assert len(loader.sampler) == sum(DIGITS_RHO10)


def test_class_balanced_epoch_is_balanced():
    balanced = LongTailDataModule("digits", sampler="class_balanced", batch_size=64)
    drawn = torch.cat([y for _, y in balanced.train_dataloader()])
    hist = np.bincount(drawn.numpy(), minlength=10)
    # 544 draws, 54.4 expected per class (binomial sd ~7): each class within +-50% (~3.9 sd).
    assert hist.sum() == 544 and hist.min() >= 27 and hist.max() <= 82, hist
    plain = LongTailDataModule("digits", sampler="instance", batch_size=64)
    drawn = torch.cat([y for _, y in plain.train_dataloader()])
    assert np.bincount(drawn.numpy(), minlength=10).tolist() == list(DIGITS_RHO10)  # one pass, no balancing


def test_progressive_total_epochs_from_trainer(tmp_path):
    dm = LongTailDataModule("digits", sampler="progressive")
    default = inspect.signature(ProgressiveSampler).parameters["total_epochs"].default
    assert dm.train_dataloader().sampler.total_epochs == default == 100
    dm.trainer = L.Trainer(
        max_epochs=11, logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    assert dm.train_dataloader().sampler.total_epochs == 10  # balanced at the last epoch, index 10
    dm.trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
    assert dm.train_dataloader().sampler.total_epochs == default  # endless training keeps the default


# --- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"dataset": "cifar11"}, r"dataset must be one of \[.*'cifar10'.*'digits'.*\], got 'cifar11'"),
        (
            {"profile": "linear"},
            r"profile must be one of \['exponential', 'none', 'step', 'zipf'\] or None \(automatic\), got 'linear'",
        ),
        (
            {"sampler": "balanced"},
            r"sampler must be one of \['class_aware_cycle', 'class_balanced', 'instance', .*\], got 'balanced'",
        ),
        ({"imbalance_ratio": 0.5}, r"imbalance_ratio must be .*>= 1.*, got 0\.5"),
        ({"profile": "zipf", "zipf_exponent": 0}, r"zipf_exponent must be a number > 0, got 0"),
        ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        ({"val_per_class": -1}, r"val_per_class must be an integer >= 0, got -1"),
        ({"head_size": 0}, r"head_size must be an integer >= 1, got 0"),
        ({"val_per_class": 134}, r"val_per_class must be < 134 .*got 134"),
        ({"class_order": "sorted"}, r"class_order must be one of \['label', 'random'\], got 'sorted'"),
        # 134 * 0.001 ** (i / 9) < 1 for i = 7, 8, 9.
        (
            {"imbalance_ratio": 1000},
            r"profile 'exponential' with head_size=134, imbalance_ratio=1000 leaves classes at ranks \[7, 8, 9\] "
            r"with 0 samples",
        ),
    ],
)
def test_bad_arguments_raise(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        LongTailDataModule(**{"dataset": "digits", **kwargs})


def test_missing_root_raises(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(ValueError, match=rf"root '{missing}' for dataset 'cifar10' does not exist"):
        LongTailDataModule("cifar10", root=missing)


def test_empty_class_directory_raises(tmp_path):
    write_imagefolder(tmp_path, n_per_class=2)
    for f in (tmp_path / "train" / "dog").iterdir():
        f.unlink()
    with pytest.raises(ValueError, match=rf"class directory {tmp_path / 'train' / 'dog'} holds no image"):
        LongTailDataModule("imagefolder", root=tmp_path)


def test_labels_outside_classes_raise(tmp_path):
    path = tmp_path / "data.npz"
    write_npz(path, num_classes=3, class_names=("a", "b"))  # labels 0..2 but only 2 classes
    with pytest.raises(ValueError, match=r"y_train in .* has labels \[2\], accepted: labels in \[0, 2\)"):
        LongTailDataModule("npz", root=path)


# --- issue 12: a user's data arrives whole; the split is printed; refused pools say why ------------------------------


def write_labels_npz(path, y_train, y_test, class_names=None) -> None:
    """An npz in the loader's format with the given labels (random 4x4 grey images)."""
    rng = np.random.default_rng(0)
    y_train, y_test = np.asarray(y_train, np.int64), np.asarray(y_test, np.int64)
    extra = {} if class_names is None else {"class_names": np.array(class_names)}
    np.savez(
        path,
        x_train=rng.integers(0, 256, (len(y_train), 4, 4), dtype=np.uint8),
        y_train=y_train,
        x_test=rng.integers(0, 256, (len(y_test), 4, 4), dtype=np.uint8),
        y_test=y_test,
        **extra,
    )


# A user's own 30/20/10 pool.
USER_POOL = np.repeat([0, 1, 2], [30, 20, 10])


def test_user_npz_arrives_whole_by_default(tmp_path):
    write_labels_npz(tmp_path / "d.npz", USER_POOL, [0, 1, 2])
    dm = LongTailDataModule("npz", root=tmp_path / "d.npz")
    assert dm.class_counts == (30, 20, 10) and len(dm.train_set) == 60
    assert (dm.profile, dm.profile_auto, dm.hparams.profile) == ("none", True, "none")
    assert dm.summary().startswith("npz-LT (none): 3 classes, 60 training images")


def test_user_imagefolder_arrives_whole_by_default(tmp_path):
    write_imagefolder(tmp_path, n_per_class=3)
    for name in ("img1.png", "img2.png"):
        (tmp_path / "train" / "emu" / name).unlink()
    (tmp_path / "train" / "dog" / "img2.png").unlink()
    dm = LongTailDataModule("imagefolder", root=tmp_path)
    assert dm.class_counts == (3, 2, 1) and dm.profile == "none"


def test_k49_and_gtsrb_pools_arrive_whole_by_default(tmp_path):
    write_k49(tmp_path / "k49", n_per_class=2)
    assert LongTailDataModule("k49", root=tmp_path / "k49").class_counts == (2,) * 49
    write_gtsrb(tmp_path / "gtsrb", n_per_class=1)
    assert LongTailDataModule("gtsrb", root=tmp_path / "gtsrb").class_counts == (1,) * 43


def test_explicit_profile_wins_on_a_user_pool(tmp_path):
    write_labels_npz(tmp_path / "d.npz", USER_POOL, [0, 1, 2])
    dm = LongTailDataModule("npz", root=tmp_path / "d.npz", profile="exponential", imbalance_ratio=5)
    assert dm.class_counts == exponential_profile(10, 3, 5)  # head = smallest class, as on a benchmark pool
    assert (dm.profile, dm.profile_auto, dm.hparams.profile) == ("exponential", False, "exponential")


def test_benchmark_pools_keep_the_exponential_default(cifar):
    assert LongTailDataModule().class_counts == DIGITS_RHO10  # `lt-lightning fit` with no arguments: unchanged
    dm = LongTailDataModule("cifar10", root=cifar[0])
    assert dm.class_counts == exponential_profile(100, 10, 10) and dm.hparams.profile == "exponential"


def test_split_is_printed_at_setup_on_stdout(tmp_path, capsys):
    write_labels_npz(tmp_path / "d.npz", USER_POOL, [0, 1, 2], class_names=("cat", "dog", "emu"))
    dm = LongTailDataModule("npz", root=tmp_path / "d.npz", val_per_class=2)
    assert capsys.readouterr().out == ""  # nothing at construction: printed when a trainer sets it up
    dm.setup("fit")
    assert capsys.readouterr().out.splitlines() == [
        "LongTailDataModule: npz, profile none (automatic: user-supplied or imbalanced pool, every image kept; "
        "set profile to re-cut it)",
        "  kept 54 of 60 training-pool images (ratio 3.5)",
        "  train per class: cat:28 dog:18 emu:8",
        "  val 6 (2 per class, from the pool), test 3",
    ]
    dm.setup("predict")
    assert capsys.readouterr().out == ""


def test_split_report_of_many_classes_shows_head_and_tail(tmp_path):
    write_k49(tmp_path, n_per_class=30)
    dm = LongTailDataModule("k49", root=tmp_path, profile="zipf", head_size=30, zipf_min=2)
    lines = dm.split_report().splitlines()
    assert lines[0] == "LongTailDataModule: k49, profile zipf (given)"
    # classes by count, ties in label order; fake K49 names are U+3042 + label
    tail = " ".join(f"{chr(0x3042 + c)}:2" for c in range(44, 49))
    assert lines[2] == (
        f"  train per class (49 classes, largest first): あ:30 ぃ:7 い:3 ぅ:2 う:2 ... {tail}; "
        "full table: datamodule.class_counts (train_count in per_class_*.csv)"
    )


@pytest.mark.parametrize("kind", ["imagefolder", "npz"])
def test_single_class_dataset_is_refused(tmp_path, kind):
    if kind == "imagefolder":
        write_imagefolder(tmp_path, classes=("cat",), n_per_class=3)
        root, names = tmp_path, "['cat']"
    else:
        root, names = tmp_path / "d.npz", "['0']"
        write_labels_npz(root, [0, 0, 0], [0])
    with pytest.raises(ValueError, match=rf"dataset '{kind}' at .* has 1 class \{names}: .*needs at least 2 classes"):
        LongTailDataModule(kind, root=root)


def test_non_contiguous_npz_labels_name_the_empty_class(tmp_path):
    write_labels_npz(tmp_path / "d.npz", [0, 0, 2, 2], [0, 2])
    pattern = (
        r"dataset 'npz' at .*d.npz.*: classes \[1\] \(names \['1'\]\) have no training image; labels must be "
        r"contiguous 0..2, each present in the training set: relabel y_train / y_test to 0..K-1"
    )
    for profile in (None, "none", "exponential"):
        with pytest.raises(ValueError, match=pattern):
            LongTailDataModule("npz", root=tmp_path / "d.npz", profile=profile)


def test_label_only_in_the_test_set_is_named(tmp_path):
    write_labels_npz(tmp_path / "d.npz", [0, 1, 0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match=r"classes \[2\] .* no training image; \[2\] appear only in the test set"):
        LongTailDataModule("npz", root=tmp_path / "d.npz")


def test_profile_none_with_too_large_val_per_class(tmp_path):
    write_labels_npz(tmp_path / "d.npz", USER_POOL, [0, 1, 2], class_names=("cat", "dog", "emu"))
    pattern = r"val_per_class must be < 10 \(the smallest class of the npz training pool, class 'emu'\).*got 10"
    with pytest.raises(ValueError, match=pattern):
        LongTailDataModule("npz", root=tmp_path / "d.npz", profile="none", val_per_class=10)
    dm = LongTailDataModule("npz", root=tmp_path / "d.npz", profile="none", val_per_class=9)
    assert dm.class_counts == (21, 11, 1) and len(dm.val_set) == 27


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_settings_pin_memory_on_cuda_only_and_persistent_eval_workers(num_workers):
    from types import SimpleNamespace

    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator

    dm = LongTailDataModule("digits", batch_size=32, num_workers=num_workers)
    loaders = lambda: [dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader(), dm.predict_dataloader()]  # noqa: E731
    assert [loader.pin_memory for loader in loaders()] == [False] * 4  # no trainer
    assert [loader.persistent_workers for loader in loaders()] == [num_workers > 0] * 4
    dm.trainer = SimpleNamespace(accelerator=CPUAccelerator(), world_size=1)
    assert [loader.pin_memory for loader in loaders()] == [False] * 4  # never on the CPU
    dm.trainer = SimpleNamespace(accelerator=CUDAAccelerator(), world_size=1)  # a stub: no CUDA needed
    assert [loader.pin_memory for loader in loaders()] == [True] * 4
    device = LongTailDataModule("digits", batch_size=32, num_workers=num_workers, data_on_device=True)
    device.trainer = dm.trainer
    index_loaders = [device.train_dataloader(), device.val_dataloader(), device.test_dataloader()]
    assert [(ld.pin_memory, ld.num_workers, ld.persistent_workers) for ld in index_loaders] == [(False, 0, False)] * 3
