"""Profiles against the official CIFAR-LT / K49-LT figures (METHODS.md §1)."""

import numpy as np
import pytest

from lt_lightning.profiles import (
    assign_class_order,
    exponential_profile,
    make_class_counts,
    natural_profile,
    step_profile,
    zipf_profile,
)


@pytest.mark.parametrize(
    ("head", "classes", "rho", "total", "tail"),
    [
        (5000, 10, 100, 12406, 50),
        (5000, 10, 50, 13996, 100),
        (5000, 10, 10, 20431, 500),
        (500, 100, 100, 10847, 5),
        (500, 100, 50, 12608, 10),
        (500, 100, 10, 19573, 50),
    ],
)
def test_exponential_matches_cifar_lt_totals(head, classes, rho, total, tail):
    counts = exponential_profile(head, classes, rho)
    assert len(counts) == classes
    assert sum(counts) == total
    assert counts[0] == head and counts[-1] == tail
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))


def test_exponential_cifar10_rho100_exact_counts():
    assert exponential_profile(5000, 10, 100) == (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)


def test_exponential_truncates_rather_than_rounds():
    # 5000 * 0.01 ** (1/9) = 2997.35... and 5000 * 0.01 ** (8/9) = 83.41...: int() keeps 2997 and 83.
    counts = exponential_profile(5000, 10, 100)
    assert counts[1] == 2997 and counts[8] == 83


def test_ratio_one_is_balanced():
    assert exponential_profile(100, 5, 1) == (100,) * 5


@pytest.mark.parametrize(
    ("head", "classes", "rho", "total"),
    [(5000, 10, 100, 25250), (5000, 10, 10, 27500), (500, 100, 100, 25250), (500, 100, 10, 27500)],
)
def test_step_totals(head, classes, rho, total):
    counts = step_profile(head, classes, rho)
    assert sum(counts) == total
    assert counts[: classes // 2] == (head,) * (classes // 2)
    assert counts[classes // 2 :] == (int(head / rho),) * (classes - classes // 2)


def test_zipf_k49_profile():
    counts = zipf_profile(4800, 49, exponent=2.0, minimum=5)
    assert sum(counts) == 7822
    assert counts[:12] == (4800, 1200, 533, 300, 192, 133, 97, 75, 59, 48, 39, 33)
    assert counts.count(5) == 21 and min(counts) == 5 and max(counts) == 4800


def test_zipf_floor_and_exponent():
    assert zipf_profile(100, 4, exponent=1.0, minimum=30) == (100, 50, 33, 30)


def test_natural_profile_keeps_counts():
    assert natural_profile([3, 1, 2]) == (3, 1, 2)


def test_class_order_random_is_seeded_permutation():
    ranked = tuple(range(20, 0, -1))
    a = assign_class_order(ranked, "random", seed=3)
    assert a == assign_class_order(ranked, "random", seed=3)
    assert a != assign_class_order(ranked, "random", seed=4)
    assert sorted(a) == sorted(ranked) and a != ranked


def test_global_rng_untouched():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    make_class_counts("zipf", [100] * 10, class_order="random", seed=7)
    assert np.random.rand() == expected


def test_make_class_counts_defaults_head_to_smallest_available():
    assert make_class_counts("exponential", [60, 50, 70], imbalance_ratio=10) == (50, 15, 5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: exponential_profile(5000, 10, 0.5), r"imbalance_ratio must be >= 1 .*got 0.5"),
        (lambda: exponential_profile(5000, 10, float("nan")), r"imbalance_ratio must be a finite number"),
        (lambda: step_profile(5000, 10, 0.1), r"imbalance_ratio must be >= 1"),
        (lambda: zipf_profile(4800, 49, exponent=0.0), r"zipf_exponent must be a finite number > 0, got 0.0"),
        (lambda: zipf_profile(4800, 49, exponent=-1), r"zipf_exponent"),
        (lambda: zipf_profile(4800, 49, minimum=0), r"zipf_min must be an integer >= 1, got 0"),
        (lambda: exponential_profile(10, 10, 100), r"leaves classes at ranks \[.*\] with 0 samples"),
        (
            lambda: make_class_counts("pareto", [10, 10]),
            r"profile must be one of \['exponential', 'none', 'step', 'zipf'\], got 'pareto'",
        ),
        (
            lambda: assign_class_order((2, 1), "shuffled"),
            r"class_order must be one of \['label', 'random'\], got 'shuffled'",
        ),
        (lambda: exponential_profile(5000, 0, 10), r"num_classes must be an integer >= 1, got 0"),
        (
            lambda: natural_profile([3, 0]),
            r"profile 'none' keeps every image, but classes \[1\] have 0 samples in the pool",
        ),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
