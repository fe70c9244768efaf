"""Samplers: target class distributions over many draws, seeding by epoch, determinism, errors."""

import numpy as np
import pytest
import torch

from lt_lightning.data.samplers import (
    SAMPLERS,
    ClassBalancedSampler,
    InstanceSampler,
    ProgressiveSampler,
    ReversedSampler,
    SquareRootSampler,
    create_sampler,
)

COUNTS = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])  # CIFAR-10-LT rho = 100
TARGETS = np.repeat(np.arange(10), COUNTS)


def empirical(sampler, epochs=4):
    drawn = []
    for e in range(epochs):
        sampler.set_epoch(e)
        drawn.extend(sampler)
    return np.bincount(TARGETS[np.asarray(drawn)], minlength=10) / len(drawn)


# Multinomial standard error with 4 * 12,406 draws is below 0.0025 for every class; 0.01 is a 4-sigma bound.
TOLERANCE = 0.01


def test_instance_sampler_is_a_permutation():
    sampler = InstanceSampler(TARGETS, seed=0)
    assert sorted(sampler) == list(range(len(TARGETS)))


def test_class_balanced_frequencies():
    freq = empirical(ClassBalancedSampler(TARGETS, seed=0))
    assert np.abs(freq - 0.1).max() < TOLERANCE


def test_square_root_frequencies():
    target = np.sqrt(COUNTS) / np.sqrt(COUNTS).sum()
    sampler = SquareRootSampler(TARGETS, seed=0)
    np.testing.assert_allclose(sampler.class_probabilities(), target)
    assert np.abs(empirical(sampler) - target).max() < TOLERANCE


def test_reversed_probabilities_match_bbn_figures():
    probs = ReversedSampler(TARGETS).class_probabilities()
    expected = [0.0040, 0.0067, 0.0112, 0.0187, 0.0312, 0.0520, 0.0867, 0.1447, 0.2424, 0.4024]
    np.testing.assert_allclose(probs, expected, atol=5e-5)
    assert np.abs(empirical(ReversedSampler(TARGETS, seed=1)) - probs).max() < TOLERANCE


def test_progressive_moves_from_instance_to_balanced():
    sampler = ProgressiveSampler(TARGETS, seed=0, total_epochs=10)
    np.testing.assert_allclose(sampler.class_probabilities(), COUNTS / COUNTS.sum())
    sampler.set_epoch(5)
    np.testing.assert_allclose(sampler.class_probabilities(), 0.5 * COUNTS / COUNTS.sum() + 0.05)
    sampler.set_epoch(30)  # clamped at total_epochs
    np.testing.assert_allclose(sampler.class_probabilities(), np.full(10, 0.1))


def test_within_class_draws_are_uniform():
    targets = np.array([0] * 4 + [1])
    sampler = ClassBalancedSampler(targets, seed=0, num_samples=40000)
    hits = np.bincount(np.asarray(list(sampler)), minlength=5)
    np.testing.assert_allclose(hits[:4] / 40000, 0.125, atol=0.01)
    np.testing.assert_allclose(hits[4] / 40000, 0.5, atol=0.01)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_draw_depends_on_seed_and_epoch_only(name):
    a, b = create_sampler(name, TARGETS, seed=3), create_sampler(name, TARGETS, seed=3)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(1)  # the global RNG has no say
    assert first == list(b)
    a.set_epoch(1)
    assert list(a) != first
    assert len(first) == len(a) == len(TARGETS)


def test_num_samples_and_absent_classes():
    targets = np.array([0, 0, 2, 2, 2])  # class 1 absent: must get no draws
    sampler = ClassBalancedSampler(targets, seed=0, num_samples=1000, num_classes=3)
    drawn = np.asarray(list(sampler))
    assert len(drawn) == 1000 and set(targets[drawn]) == {0, 2}
    assert sampler.class_probabilities().tolist() == [0.5, 0.0, 0.5]
    assert len(list(InstanceSampler(targets, num_samples=12))) == 12


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"targets": np.array([])}, r"targets must be a non-empty 1-D array"),
        ({"targets": np.array([0.5, 1.0])}, r"targets must be a non-empty 1-D array of integer labels"),
        ({"targets": np.array([0, -1])}, r"targets must be >= 0, got a label -1"),
        ({"targets": np.array([0, 3]), "num_classes": 2}, r"targets has label 3 outside \[0, 2\)"),
        ({"targets": np.array([0, 1]), "num_samples": 0}, r"num_samples must be an integer >= 1 or None, got 0"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassBalancedSampler(**kwargs)


def test_unknown_name_lists_accepted():
    with pytest.raises(
        ValueError,
        match=r"sampler must be one of \['class_aware_cycle', 'class_balanced', 'instance', 'inverse_power', "
        r"'progressive', 'reversed', 'square_root'\], got 'balanced'",
    ):
        create_sampler("balanced", TARGETS)
    with pytest.raises(ValueError, match=r"total_epochs must be an integer >= 1, got 0"):
        ProgressiveSampler(TARGETS, total_epochs=0)
