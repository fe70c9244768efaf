"""Seeded long-tailed subsets: counts, reproducibility, disjoint validation, reuse, errors."""

import numpy as np
import pytest

from lt_lightning.data.subsets import check_targets, long_tail_indices


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
