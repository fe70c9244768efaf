"""Seeded long-tailed subsets: counts, reproducibility, disjoint validation, reuse, errors."""

import numpy as np
import pytest

from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.subsets import check_targets, flip_labels, long_tail_indices


@pytest.fixture
def targets():
    return np.random.default_rng(0).permutation(np.repeat(np.arange(5), 40))


def test_counts_follow_profile(targets):
    counts = (40, 20, 10, 5, 2)
    train, val = long_tail_indices(targets, counts, seed=0)
    assert np.bincount(targets[train], minlength=5).tolist() == list(counts)
    assert len(np.unique(train)) == len(train) and len(val) == 0


def test_same_seed_same_subset_different_seed_different(targets):
    counts = (30, 20, 10, 5, 2)
    a, _ = long_tail_indices(targets, counts, seed=1)
    b, _ = long_tail_indices(targets, counts, seed=1)
    c, _ = long_tail_indices(targets, counts, seed=2)
    assert np.array_equal(a, b)
    assert not np.array_equal(np.sort(a), np.sort(c))


def test_global_rng_untouched(targets):
    np.random.seed(5)
    expected = np.random.rand()
    np.random.seed(5)
    long_tail_indices(targets, (30, 20, 10, 5, 2), seed=9)
    assert np.random.rand() == expected


def test_validation_is_balanced_and_disjoint(targets):
    train, val = long_tail_indices(targets, (30, 20, 10, 5, 2), seed=0, val_per_class=10)
    assert np.bincount(targets[val], minlength=5).tolist() == [10] * 5
    assert not set(train) & set(val)


def test_short_class_raises_with_counts(targets):
    with pytest.raises(ValueError, match=r"class 0 has 40 images but the split needs 45 \(40 train \+ 5 val\)"):
        long_tail_indices(targets, (40, 1, 1, 1, 1), seed=0, val_per_class=5)
    with pytest.raises(ValueError, match=r"fill_short_classes=True"):
        long_tail_indices(targets, (50, 1, 1, 1, 1), seed=0)


def test_fill_short_classes_reuses_cyclically(targets):
    train, _ = long_tail_indices(targets, (100, 3, 3, 3, 3), seed=0, fill_short_classes=True)
    head = train[targets[train] == 0]
    assert len(head) == 100
    uniques, reps = np.unique(head, return_counts=True)
    assert len(uniques) == 40 and sorted(set(reps.tolist())) == [2, 3]  # 100 = 2 * 40 + 20: cyclic reuse


def test_labels_out_of_range_raise():
    with pytest.raises(ValueError, match=r"targets has labels \[3\] outside \[0, 3\)"):
        check_targets(np.array([0, 1, 3]), 3)
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        long_tail_indices(np.array([0, 1, -1]), (1, 1), seed=0)


def test_zero_count_raises(targets):
    with pytest.raises(ValueError, match=r"class_counts must all be >= 1"):
        long_tail_indices(targets, (10, 0, 1, 1, 1), seed=0)


# ---------------------------------------------------------------------------------------------- label noise
@pytest.fixture
def clean_labels():
    """10,000 labels, 2,500 of each of 4 classes."""
    return np.random.default_rng(1).permutation(np.repeat(np.arange(4), 2500))


def test_flip_labels_rate_zero_is_a_copy(clean_labels):
    noisy = flip_labels(clean_labels, 4, 0.0, seed=0)
    assert np.array_equal(noisy, clean_labels) and noisy is not clean_labels


def test_flip_labels_rate_and_targets(clean_labels):
    original = clean_labels.copy()
    noisy = flip_labels(clean_labels, 4, 0.3, seed=0)
    assert np.array_equal(clean_labels, original)  # the input is not modified
    assert noisy.dtype == np.int64 and set(np.unique(noisy).tolist()) == {0, 1, 2, 3}
    changed = noisy != clean_labels
    # Binomial(10,000, 0.3): sd 0.0046, so +-0.02 is over 4 sd. A flip that could land on its own class would
    # change only 0.3 * 3/4 = 0.225 of the labels, far outside the band.
    assert abs(changed.mean() - 0.3) < 0.02
    # Uniform over the other classes: for each true class, each of the 3 others gets 1/3 of its ~750 flips
    # (sd of the share 0.017; tolerance 0.06, 3.5 sd).
    for c in range(4):
        moved_to = noisy[changed & (clean_labels == c)]
        assert c not in moved_to
        shares = np.bincount(moved_to, minlength=4)[[k for k in range(4) if k != c]] / len(moved_to)
        assert np.all(np.abs(shares - 1 / 3) < 0.06), (c, shares)


def test_flip_labels_two_classes_always_flip_to_the_other():
    labels = np.zeros(10_000, dtype=np.int64)
    noisy = flip_labels(labels, 2, 0.3, seed=3)
    assert set(noisy.tolist()) == {0, 1} and abs(noisy.mean() - 0.3) < 0.02


def test_flip_labels_is_seeded_and_leaves_the_global_rng_alone(clean_labels):
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    a = flip_labels(clean_labels, 4, 0.3, seed=11)
    assert np.random.rand() == expected
    assert np.array_equal(a, flip_labels(clean_labels, 4, 0.3, seed=11))
    assert not np.array_equal(a, flip_labels(clean_labels, 4, 0.3, seed=12))


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_flip_labels_bad_rate(clean_labels, rate):
    with pytest.raises(ValueError, match=rf"label_noise must be in \[0, 1\), got {rate}"):
        flip_labels(clean_labels, 4, rate, seed=0)


def test_datamodule_label_noise_counts_the_noisy_labels():
    clean = LongTailDataModule("digits", profile="none")
    noisy = LongTailDataModule("digits", profile="none", label_noise=0.3)
    targets = noisy.train_targets
    assert noisy.class_counts == tuple(np.bincount(targets, minlength=10).tolist())
    assert noisy.class_counts != clean.class_counts and sum(noisy.class_counts) == sum(clean.class_counts)
    # Same images in the same order; ~30 % of their labels changed (1,397 labels: sd 0.012).
    assert len(targets) == len(clean.train_targets) == 1397
    assert abs((targets != clean.train_targets).mean() - 0.3) < 0.05
    assert np.array_equal(noisy.test_set.targets, clean.test_set.targets)  # test labels stay clean
    again = LongTailDataModule("digits", profile="none")  # the shared base dataset was not modified
    assert np.array_equal(again.train_targets, clean.train_targets)
    assert np.array_equal(LongTailDataModule("digits", profile="none", label_noise=0.3).train_targets, targets)


@pytest.mark.parametrize("rate", [1.0, -0.1, True])
def test_datamodule_bad_label_noise(rate):
    with pytest.raises(ValueError, match=rf"label_noise must be in \[0, 1\), got {rate}"):
        LongTailDataModule("digits", profile="none", label_noise=rate)
