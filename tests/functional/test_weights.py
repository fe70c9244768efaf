"""Per-class weights, margins and probabilities against published and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lt_lightning.functional import (
    check_class_counts,
    effective_number_weights,
    inverse_frequency_weights,
    ldam_margins,
    log_priors,
    reversed_probabilities,
    vs_scaling,
)

CIFAR10_RHO100 = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)
ALL_FUNCTIONS = [
    effective_number_weights,
    inverse_frequency_weights,
    ldam_margins,
    reversed_probabilities,
    log_priors,
    vs_scaling,
]


def _close(actual: torch.Tensor, expected, atol: float) -> None:
    np.testing.assert_allclose(actual.numpy(), np.asarray(expected, dtype=np.float64), rtol=0, atol=atol)


# --- effective-number (class-balanced) weights -------------------------------------------------------------


def test_cb_weights_match_published_cifar10_values():
    expected = [0.0506, 0.0769, 0.1211, 0.1950, 0.3188, 0.5246, 0.8683, 1.4426, 2.4092, 3.9927]
    weights = effective_number_weights(CIFAR10_RHO100, beta=0.9999)
    assert weights.dtype == torch.float32 and weights.shape == (10,)
    _close(weights, expected, atol=1e-4)


def test_cb_weights_sum_to_num_classes():
    for beta in (0.9, 0.999, 0.9999, 0.999999):
        assert effective_number_weights(CIFAR10_RHO100, beta=beta).sum().item() == pytest.approx(10.0, abs=1e-5)


def test_cb_weights_beta_zero_gives_ones():
    assert effective_number_weights(CIFAR10_RHO100, beta=0.0).tolist() == [1.0] * 10
    assert effective_number_weights([7, 3], beta=0).tolist() == [1.0, 1.0]


def test_cb_weights_hand_computed_small_case():
    # w = 0.1 / (1 - 0.9**n): n=100 -> 0.1000026564, n=10 -> 0.1535336; normalised to sum 2.
    w100 = 0.1 / (1 - 0.9**100)
    w10 = 0.1 / (1 - 0.9**10)
    expected = [2 * w100 / (w100 + w10), 2 * w10 / (w100 + w10)]
    _close(effective_number_weights([100, 10], beta=0.9), expected, atol=1e-6)


def test_cb_weights_float64_precision_near_one():
    # BBN's beta = 0.999999: in float32 beta**n is badly rounded; the result must agree with a float64 reference.
    beta = 0.999999
    n = np.array(CIFAR10_RHO100, dtype=np.float64)
    raw = (1 - beta) / (1 - beta**n)
    expected = raw * 10 / raw.sum()
    np.testing.assert_allclose(effective_number_weights(CIFAR10_RHO100, beta=beta).numpy(), expected, rtol=1e-6)
    # ... and is close to (but not equal to) inverse frequency.
    inv = inverse_frequency_weights(CIFAR10_RHO100)
    assert torch.allclose(effective_number_weights(CIFAR10_RHO100, beta=beta), inv, rtol=5e-3)
    assert not torch.allclose(effective_number_weights(CIFAR10_RHO100, beta=beta), inv, rtol=1e-6)


@pytest.mark.parametrize("beta", [1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_cb_weights_bad_beta(beta):
    with pytest.raises(ValueError, match="beta must be"):
        effective_number_weights(CIFAR10_RHO100, beta=beta)


def test_cb_weights_beta_not_a_number():
    with pytest.raises(ValueError, match=r"beta must be a finite real number, got '0.9'"):
        effective_number_weights(CIFAR10_RHO100, beta="0.9")  # type: ignore[arg-type]


# --- inverse frequency ------------------------------------------------------------------------------------


def test_inverse_frequency_published_endpoints_and_formula():
    weights = inverse_frequency_weights(CIFAR10_RHO100)
    assert weights[0].item() == pytest.approx(0.0402, abs=1e-4)
    assert weights[-1].item() == pytest.approx(4.0236, abs=1e-4)
    inv = 1.0 / np.array(CIFAR10_RHO100, dtype=np.float64)
    _close(weights, inv * 10 / inv.sum(), atol=1e-6)


def test_inverse_frequency_power():
    assert inverse_frequency_weights([30, 10]).tolist() == [0.5, 1.5]
    # power 0.5: 1/sqrt(16) = 0.25, 1/sqrt(4) = 0.5 -> normalised to sum 2: 2/3, 4/3.
    _close(inverse_frequency_weights([16, 4], power=0.5), [2 / 3, 4 / 3], atol=1e-6)
    assert inverse_frequency_weights([16, 4], power=0).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"power must be >= 0, got -1"):
        inverse_frequency_weights([16, 4], power=-1)


# --- LDAM margins -----------------------------------------------------------------------------------------


def test_ldam_margins_match_published_cifar10_values():
    expected = [0.158, 0.180, 0.204, 0.232, 0.264, 0.300, 0.341, 0.387, 0.440, 0.500]
    margins = ldam_margins(CIFAR10_RHO100)
    _close(margins, expected, atol=6e-4)
    assert margins[-1].item() == pytest.approx(0.5)
    assert bool((margins[1:] > margins[:-1]).all())


def test_ldam_margins_hand_computed():
    # n^(-1/4): 16 -> 0.5, 1 -> 1; scaled so the rarest class gets max_margin.
    assert ldam_margins([16, 1], max_margin=0.3).tolist() == pytest.approx([0.15, 0.3])
    assert ldam_margins([81, 16, 1], max_margin=1.0).tolist() == pytest.approx([1 / 3, 1 / 2, 1.0])


@pytest.mark.parametrize("max_margin", [0.0, -1.0, float("nan")])
def test_ldam_margins_bad_max_margin(max_margin):
    with pytest.raises(ValueError, match="max_margin must be"):
        ldam_margins(CIFAR10_RHO100, max_margin=max_margin)


def test_ldam_margins_error_names_value():
    with pytest.raises(ValueError, match=r"max_margin must be > 0, got -1.0"):
        ldam_margins(CIFAR10_RHO100, max_margin=-1.0)


# --- reversed probabilities, log priors, VS scaling -------------------------------------------------------


def test_reversed_probabilities_match_published_cifar10_values():
    expected = [0.0040, 0.0067, 0.0112, 0.0187, 0.0312, 0.0520, 0.0867, 0.1447, 0.2424, 0.4024]
    probs = reversed_probabilities(CIFAR10_RHO100)
    _close(probs, expected, atol=1e-4)
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)


def test_reversed_probabilities_hand_computed():
    # n_max / n = 1, 3, 6 -> / 10.
    _close(reversed_probabilities([60, 20, 10]), [0.1, 0.3, 0.6], atol=1e-7)


def test_log_priors_hand_computed():
    _close(log_priors([60, 30, 10]), [math.log(0.6), math.log(0.3), math.log(0.1)], atol=1e-6)
    assert math.exp(log_priors(CIFAR10_RHO100)[0].item()) == pytest.approx(5000 / 12406, rel=1e-6)


def test_vs_scaling_hand_computed():
    _close(vs_scaling([100, 10, 1], gamma=0.5), [1.0, math.sqrt(0.1), 0.1], atol=1e-7)
    assert vs_scaling([100, 10, 1], gamma=0.0).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"gamma must be >= 0, got -0.3"):
        vs_scaling([100, 10], gamma=-0.3)


# --- input forms and class_counts validation --------------------------------------------------------------


@pytest.mark.parametrize("fn", ALL_FUNCTIONS)
def test_accepts_tuple_list_numpy_and_tensor(fn):
    expected = fn(CIFAR10_RHO100)
    assert expected.dtype == torch.float32 and expected.shape == (10,)
    for counts in (list(CIFAR10_RHO100), np.array(CIFAR10_RHO100), torch.tensor(CIFAR10_RHO100)):
        assert torch.equal(fn(counts), expected)


@pytest.mark.parametrize("fn", ALL_FUNCTIONS)
def test_every_function_validates_class_counts(fn):
    with pytest.raises(ValueError, match=r"class_counts must be positive integers, got 0 at class 1"):
        fn([10, 0, 5])


def test_check_class_counts_returns_tuple_of_ints():
    result = check_class_counts(np.array([5, 3], dtype=np.int32))
    assert result == (5, 3) and all(type(v) is int for v in result)
    assert check_class_counts(torch.tensor([7]), num_classes=1) == (7,)


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ([5000, 50, 20, 0], r"class_counts must be positive integers, got 0 at class 3"),
        ([5000, 50, 20, -4], r"got -4 at class 3"),
        ([5000, 2.5], r"class_counts must be positive integers, got 2.5 at class 1"),
        ([5000.0, 50], r"got 5000.0 at class 0"),
        ([True, 5], r"got True at class 0"),
        (["5", 5], r"got '5' at class 0"),
        (torch.tensor([5.0, 3.0]), r"got 5.0 at class 0"),
        ([], r"class_counts must be non-empty"),
        (np.ones((2, 2), dtype=int), r"class_counts must be 1-D .* got shape \(2, 2\)"),
    ],
)
def test_check_class_counts_rejects(counts, message):
    with pytest.raises(ValueError, match=message):
        check_class_counts(counts)


@pytest.mark.parametrize("counts", [None, 5, "5000", {5: 1}])
def test_check_class_counts_rejects_non_sequences(counts):
    with pytest.raises(TypeError, match="class_counts must be a sequence of ints"):
        check_class_counts(counts)


def test_check_class_counts_num_classes_mismatch():
    with pytest.raises(ValueError, match=r"^class_counts has 9 entries but num_classes is 10$"):
        check_class_counts(CIFAR10_RHO100[:9], num_classes=10)
