"""LongTailDataModule with a nuisance: frozen (static) and on-the-fly (oracle) splits, instances, invariance_set.

Expected Zipf counts by hand: digits' smallest training class has 134 images, so n_r = max(int(134 / r^2), 5):
134, 33, 14, 8, then the floor 5 for ranks 5..10.
"""

import numpy as np
import pytest
import torch

from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.datasets import load_dataset
from lt_lightning.data.nuisance import DilationErosionNuisance, RotationNuisance
from lt_lightning.data.nuisance_lt import materialise
from lt_lightning.data.subsets import long_tail_indices
from tests.data.fake_data import write_k49

DIGITS_ZIPF = (134, 33, 14, 8, 5, 5, 5, 5, 5, 5)


def digits(**kwargs) -> LongTailDataModule:
    return LongTailDataModule("digits", profile="zipf", **kwargs)


@pytest.fixture(scope="module")
def clean():
    return digits()


@pytest.fixture(scope="module")
def rotated():
    return digits(nuisance="rotation")


def test_static_rotation_keeps_the_profile_and_freezes_each_image(clean, rotated):
    assert clean.class_counts == rotated.class_counts == DIGITS_ZIPF
    assert np.bincount(rotated.train_set.targets, minlength=10).tolist() == list(DIGITS_ZIPF)
    np.testing.assert_array_equal(rotated.train_set.targets, clean.train_set.targets)
    assert isinstance(rotated.nuisance, RotationNuisance) and clean.nuisance is None
    # Each training image is its clean counterpart rotated by its own drawn angle, once.
    params = rotated.train_set.nuisance_params
    assert params.shape == (sum(DIGITS_ZIPF),) and len(set(params.tolist())) == len(params)
    expected = RotationNuisance().apply(materialise(clean.train_set), params)[:, 0].numpy()
    np.testing.assert_array_equal(rotated.train_set.images, expected)
    changed = (rotated.train_set.images != clean.train_set.images).any(axis=(1, 2))
    assert changed.mean() > 0.9
    first, again = rotated.train_set[0][0], rotated.train_set[0][0]
    assert first.dtype == torch.float32 and torch.equal(first, again)
    assert rotated.train_transform is rotated.train_set.transform  # the plain training transform
    assert rotated.summary().endswith(", nuisance rotation (static)")
    assert "nuisance" not in clean.summary()


def test_same_seed_same_instance(rotated):
    again = digits(nuisance="rotation")
    np.testing.assert_array_equal(again.train_set.images, rotated.train_set.images)
    np.testing.assert_array_equal(again.test_set.images, rotated.test_set.images)


def test_instances_differ_in_order_and_draws_not_sizes():
    a = digits(nuisance="rotation", class_order="random", subset_seed=0)
    b = digits(nuisance="rotation", class_order="random", subset_seed=1)
    assert sorted(a.class_counts) == sorted(b.class_counts) == sorted(DIGITS_ZIPF)
    assert a.class_counts != b.class_counts
    assert not torch.equal(a.train_set.nuisance_params, b.train_set.nuisance_params)
    head_a, head_b = np.argmax(a.class_counts), np.argmax(b.class_counts)
    assert head_a != head_b
    # One transformed test set for every instance (seed 0, stream "test"); it does carry the nuisance.
    np.testing.assert_array_equal(a.test_set.images, b.test_set.images)
    assert torch.equal(a.test_set.nuisance_params, b.test_set.nuisance_params)
    base_test = load_dataset("digits").test.images
    assert not np.array_equal(a.test_set.images, base_test)
    np.testing.assert_array_equal(a.test_set.targets, load_dataset("digits").test.targets)
    assert a.val_set is a.test_set


def test_validation_split_frozen_with_its_own_stream():
    dm = digits(nuisance="background", val_per_class=4)
    plain = digits(val_per_class=4)
    assert dm.val_set is not dm.test_set and len(dm.val_set) == 40
    np.testing.assert_array_equal(dm.val_set.targets, plain.val_set.targets)
    levels = dm.val_set.nuisance_params
    for i in range(len(levels)):
        zero = plain.val_set.images[i] == 0
        assert (dm.val_set.images[i][zero] == int(levels[i])).all()
        np.testing.assert_array_equal(dm.val_set.images[i][~zero], plain.val_set.images[i][~zero])
    # val draws come from their own stream, not the test stream's first 40 draws
    assert not torch.equal(levels, dm.test_set.nuisance_params[:40])


def test_oracle_draws_at_every_read_and_evaluates_on_the_static_sets():
    static = digits(nuisance="rotation", val_per_class=4)
    oracle = digits(nuisance="rotation", val_per_class=4, nuisance_mode="oracle")
    plain = digits(val_per_class=4)
    # Training images stay clean; the nuisance sits in front of the training transform.
    np.testing.assert_array_equal(oracle.train_set.images, plain.train_set.images)
    assert oracle.train_set.transform.transforms[0] is oracle.nuisance
    torch.manual_seed(0)
    first, second = oracle.train_set[0][0], oracle.train_set[0][0]
    assert first.shape == (1, 8, 8) and not torch.equal(first, second)
    np.testing.assert_array_equal(oracle.val_set.images, static.val_set.images)
    np.testing.assert_array_equal(oracle.test_set.images, static.test_set.images)
    assert oracle.class_counts == static.class_counts
    assert oracle.summary().endswith(", nuisance rotation (oracle)")


def test_invariance_set_is_the_clean_held_out_data(rotated):
    base_test = load_dataset("digits").test
    clean_test = rotated.invariance_set("test")
    assert clean_test.transform is None
    np.testing.assert_array_equal(clean_test.images, base_test.images)
    np.testing.assert_array_equal(clean_test.targets, rotated.test_set.targets)
    assert torch.equal(clean_test[3][0], base_test.image(3))
    # val_per_class = 0: fit / validate fall back to the test set
    np.testing.assert_array_equal(rotated.invariance_set("fit").images, base_test.images)

    dm = digits(nuisance="dilation", val_per_class=4)
    plain = digits(val_per_class=4)
    clean_val = dm.invariance_set("validate")
    assert clean_val.transform is None
    np.testing.assert_array_equal(clean_val.images, plain.val_set.images)
    # the frozen val set is exactly these images with their draws applied
    expected = DilationErosionNuisance().apply(materialise(clean_val), dm.val_set.nuisance_params)
    np.testing.assert_array_equal(dm.val_set.images, expected[:, 0].numpy())
    # also without a nuisance
    np.testing.assert_array_equal(plain.invariance_set().images, plain.val_set.images)
    assert plain.invariance_set().transform is None


def test_image_size_resizes_before_the_nuisance():
    dm = digits(nuisance="rotation", image_size=12, val_per_class=4)
    assert dm.train_set.images.shape == (sum(dm.class_counts), 12, 12)
    clean_test = dm.invariance_set("test")
    assert clean_test.images.shape == (400, 12, 12) and clean_test.transform is None
    np.testing.assert_array_equal(clean_test.images, materialise(load_dataset("digits").test, side=12)[:, 0])
    expected = RotationNuisance().apply(materialise(clean_test), dm.test_set.nuisance_params)
    np.testing.assert_array_equal(dm.test_set.images, expected[:, 0].numpy())
    assert dm.invariance_set("fit").images.shape == (40, 12, 12)
    assert dm.train_set[0][0].shape == (1, 12, 12)
    oracle = digits(nuisance="rotation", image_size=12, nuisance_mode="oracle")
    assert oracle.train_set.images.shape == (sum(oracle.class_counts), 12, 12)
    # without a nuisance too: the clean set comes at the model's side
    assert digits(image_size=12).invariance_set("test").images.shape == (400, 12, 12)


def test_k49_fill_short_classes_reused_copies_get_their_own_draws(tmp_path):
    written = write_k49(tmp_path, n_per_class=20)
    kwargs = dict(profile="zipf", head_size=30, zipf_exponent=2.0, zipf_min=2, fill_short_classes=True)
    dm = LongTailDataModule("k49", root=tmp_path, nuisance="dilation", subset_seed=2, **kwargs)
    # n_r = max(int(30 / r^2), 2): 30, 7, 3, then the floor 2 for ranks 4..49.
    assert dm.class_counts == (30, 7, 3) + (2,) * 46
    assert np.bincount(dm.train_set.targets, minlength=49).tolist() == list(dm.class_counts)
    train_idx, _ = long_tail_indices(written.y_train, dm.class_counts, 2, fill_short_classes=True)
    params = dm.train_set.nuisance_params
    raw = torch.from_numpy(written.x_train[train_idx])[:, None]
    np.testing.assert_array_equal(dm.train_set.images, DilationErosionNuisance().apply(raw, params)[:, 0].numpy())
    # Class 0: 30 items from 20 images, ten used twice; each copy was transformed with its own draw.
    pairs = [np.flatnonzero(train_idx == i) for i in np.unique(train_idx[written.y_train[train_idx] == 0])]
    twice = [p for p in pairs if len(p) == 2]
    assert len(twice) == 10
    differ = [not torch.equal(params[i], params[j]) for i, j in twice]
    assert any(differ)
    for (i, j), d in zip(twice, differ, strict=True):
        assert np.array_equal(dm.train_set.images[i], dm.train_set.images[j]) == (not d)
    assert len(dm.test_set) == 49 and dm.test_set.nuisance_params.shape == (49, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nuisance": "blur"}, r"nuisance must be one of \['background', 'dilation', 'rotation'\] or None, got 'blur'"),
        ({"nuisance": "rotation", "nuisance_mode": "online"}, r"nuisance_mode must be one of .*got 'online'"),
        ({"nuisance_kwargs": {"high": 10}}, r"nuisance_kwargs needs a nuisance .*got \{'high': 10\}"),
        ({"nuisance": "background", "nuisance_kwargs": {"high": 300}}, r"need 0 <= low < high <= 256"),
    ],
)
def test_bad_nuisance_arguments_fail_before_reading_files(tmp_path, kwargs, match):
    # The root does not exist: these errors must come first.
    with pytest.raises(ValueError, match=match):
        LongTailDataModule("k49", root=tmp_path / "absent", **kwargs)


def test_invariance_set_bad_stage(rotated):
    with pytest.raises(ValueError, match=r"stage must be one of \['fit', 'test', 'validate'\], got 'predict'"):
        rotated.invariance_set("predict")
