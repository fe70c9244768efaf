"""ABSGD's attentional weights against a naive transcription of the reference code (``mylosses.py:21-56``).

The reference computes, per step, ``u = (1 - g) u + g a mean(exp(l / lam))`` (``u`` starting at 0) and
``p = exp(l / lam) / (u B)``. Two independent transcriptions of exactly that serve as ground truth: one in plain
Python floats (what the reference does, overflow included) and one in ``decimal.Decimal`` at 60 digits, whose
exponent range never overflows, for the huge-loss cases where the float version breaks.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, getcontext

import numpy as np
import pytest
import torch

from lt_lightning.functional.attention import (
    attentional_weights,
    batch_log_mean_exp,
    check_attention_args,
    effective_sample_size,
    update_log_u,
)
from tests.attention_reference import BATCHES, naive_steps

START = torch.tensor(-math.inf, dtype=torch.float64)  # log u before the first step (u = 0)


def naive_float(batches, lam, gamma, alpha):
    """The reference, line for line, in Python floats: ``[(p, u)]`` per step."""
    return [(p, u) for p, u, _ in naive_steps(batches, lam, gamma, alpha)]


def naive_decimal(batches, lam, gamma, alpha):
    """The same formula in 60-digit decimals (no overflow); ``[(p, log u)]`` per step, converted to float."""
    getcontext().prec = 60
    lam_d, g, a = Decimal(repr(lam)), Decimal(repr(gamma)), Decimal(repr(alpha))
    u, out = Decimal(0), []
    for losses in batches:
        e = [(Decimal(repr(loss)) / lam_d).exp() for loss in losses]
        u = (1 - g) * u + g * a * sum(e) / len(e)
        out.append(([float(ei / (u * len(e))) for ei in e], float(u.ln())))
    return out


def run_ours(batches, lam, gamma, alpha):
    log_u, out = START, []
    for losses in batches:
        weights, log_u = attentional_weights(torch.tensor(losses, dtype=torch.float64), lam, log_u, gamma, alpha)
        out.append((weights, log_u))
    return out


@pytest.mark.parametrize(
    ("lam", "gamma", "alpha"),
    [(5.0, 0.1, 0.5), (1.0, 0.7, 0.5), (0.7, 0.45, 0.3), (-2.0, 0.9, 1.0), (-0.5, 0.1, 0.5), (3, 1, 2)],
)
def test_matches_naive_reference_over_several_steps(lam, gamma, alpha):
    ours = run_ours(BATCHES, lam, gamma, alpha)
    for step, ((weights, log_u), (p_ref, u_ref)) in enumerate(
        zip(ours, naive_float(BATCHES, lam, gamma, alpha), strict=True)
    ):
        assert weights.dtype == torch.float64
        np.testing.assert_allclose(weights.numpy(), p_ref, rtol=1e-10, atol=0, err_msg=f"step {step}")
        assert math.exp(log_u.item()) == pytest.approx(u_ref, rel=1e-10, abs=0)


def test_first_step_weights_sum_to_one_over_gamma_alpha():
    losses = torch.tensor(BATCHES[1], dtype=torch.float64)
    for lam, gamma, alpha in [(5.0, 0.1, 0.5), (-1.0, 0.45, 0.3), (0.5, 1.0, 2.0)]:
        weights, log_u = attentional_weights(losses, lam, START, gamma, alpha)
        assert weights.sum().item() == pytest.approx(1 / (gamma * alpha), rel=1e-12)
        # u = g a mean exp(l / lam) on the first step
        assert log_u.item() == pytest.approx(math.log(gamma * alpha * (losses / lam).exp().mean().item()), rel=1e-12)


def test_moving_average_by_hand():
    """Two steps with gamma = 0.5, alpha = 1, lambda = 1 and constant batches, computed by hand."""
    w1, log_u1 = attentional_weights(torch.tensor([0.0, 0.0], dtype=torch.float64), 1.0, START, 0.5, 1.0)
    assert math.exp(log_u1.item()) == pytest.approx(0.5)  # 0.5 * 1
    assert w1.tolist() == pytest.approx([1.0, 1.0])  # 1 / (0.5 * 2)
    w2, log_u2 = attentional_weights(torch.tensor([1.0, 1.0], dtype=torch.float64), 1.0, log_u1, 0.5, 1.0)
    u2 = 0.5 * 0.5 + 0.5 * math.e
    assert math.exp(log_u2.item()) == pytest.approx(u2, rel=1e-12)
    assert w2.tolist() == pytest.approx([math.e / (u2 * 2)] * 2, rel=1e-12)


def test_sign_of_lambda_flips_which_samples_gain_weight():
    losses = torch.tensor([0.5, 3.0, 1.0, 2.0], dtype=torch.float64)
    up, _ = attentional_weights(losses, 2.0, START, 0.1, 0.5)
    down, _ = attentional_weights(losses, -2.0, START, 0.1, 0.5)
    order = losses.argsort()
    assert torch.all(up[order].diff() > 0)  # lambda > 0: the larger the loss, the larger the weight
    assert torch.all(down[order].diff() < 0)  # lambda < 0: the reverse
    assert up.argmax() == 1 and down.argmax() == 0
    # Up to normalisation the two are reciprocal: p_i(lambda) * p_i(-lambda) is the same for every sample.
    product = up * down
    torch.testing.assert_close(product, product.mean().expand(4), rtol=1e-12, atol=0)


def test_large_lambda_is_almost_uniform():
    losses = torch.tensor([0.5, 3.0, 1.0, 2.0], dtype=torch.float64)
    weights, _ = attentional_weights(losses, 1e6, START, 0.1, 0.5)
    torch.testing.assert_close(weights, torch.full((4,), 1 / (4 * 0.05), dtype=torch.float64), rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------------------------ overflow
HUGE = [[1000.0, 999.0, 998.5, 1.0, 1.5], [400.0, 1001.0, 3.0], [0.5, 999.5, 1000.5, 2.0, 0.0]]


def test_naive_float_reference_really_overflows():
    with pytest.raises(OverflowError):
        naive_float(HUGE, 0.5, 0.1, 0.5)
    with np.errstate(all="ignore"):  # numpy's version of the reference: inf / inf = nan
        e = np.exp(np.array(HUGE[0]) / 0.5)
        u = 0.1 * 0.5 * e.mean()
        p = e / (u * len(e))
        assert np.isnan(p[:3]).all() and (p[3:] == 0).all()  # the huge samples: nan; the others: 0


@pytest.mark.parametrize("lam", [0.5, -0.5, 2.0])
def test_huge_losses_give_finite_weights_equal_to_exact_arithmetic(lam):
    gamma, alpha = 0.1, 0.5
    ours = run_ours(HUGE, lam, gamma, alpha)
    exact = naive_decimal(HUGE, lam, gamma, alpha)
    for step, ((weights, log_u), (p_ref, log_u_ref)) in enumerate(zip(ours, exact, strict=True)):
        assert torch.isfinite(weights).all() and torch.isfinite(log_u)
        assert log_u.item() == pytest.approx(log_u_ref, rel=1e-12)
        p_ref = np.array(p_ref)
        representable = p_ref > 1e-300  # the exact value is a normal float64
        np.testing.assert_allclose(weights.numpy()[representable], p_ref[representable], rtol=1e-10, err_msg=f"{step}")
        assert (weights.numpy()[~representable] < 1e-290).all()
    # First step: the weights still sum to 1 / (gamma alpha) and the ratios are exp((l_i - l_j) / lambda).
    first, _ = ours[0]
    assert first.sum().item() == pytest.approx(1 / (gamma * alpha), rel=1e-12)
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j and min(first[i], first[j]) > 1e-300]
    assert len(pairs) >= (2 if lam < 0 else 6)
    for i, j in pairs:
        expected = math.exp((HUGE[0][i] - HUGE[0][j]) / lam)
        assert (first[i] / first[j]).item() == pytest.approx(expected, rel=1e-12)


def test_huge_loss_takes_all_the_weight():
    weights, _ = attentional_weights(torch.tensor([1000.0, 1.0, 2.0], dtype=torch.float64), 0.5, START, 0.1, 0.5)
    assert weights[0].item() == pytest.approx(1 / 0.05, rel=1e-12)  # all of sum p = 1 / (gamma alpha)
    assert weights[1:].max().item() < 1e-300
    down, _ = attentional_weights(torch.tensor([1000.0, 1.0, 2.0], dtype=torch.float64), -0.5, START, 0.1, 0.5)
    assert down[0].item() < 1e-300 and down.sum().item() == pytest.approx(1 / 0.05, rel=1e-12)


def test_float32_losses_give_float32_weights_and_float64_log_u():
    weights, log_u = attentional_weights(torch.tensor([80.0, 1.0], dtype=torch.float32), 0.1, START, 0.1, 0.5)
    assert weights.dtype == torch.float32 and log_u.dtype == torch.float64
    assert torch.isfinite(weights).all()  # exp(800) overflows float32 and float64; the log domain does not


def test_helpers():
    losses = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    expected = math.log((math.exp(0.5) + math.exp(1.0) + math.exp(2.0)) / 3)
    assert batch_log_mean_exp(losses, 2.0).item() == pytest.approx(expected, rel=1e-14)
    # log((1 - g) u + g a m) with u = 2, m = 3, g = 0.25, a = 0.5
    new = update_log_u(
        torch.tensor(math.log(2.0), dtype=torch.float64), torch.tensor(math.log(3.0), dtype=torch.float64), 0.25, 0.5
    )
    assert math.exp(new.item()) == pytest.approx(0.75 * 2 + 0.25 * 0.5 * 3, rel=1e-12)
    # gamma = 1 forgets the past entirely
    assert update_log_u(torch.tensor(50.0), torch.tensor(0.0), 1.0, 2.0).item() == pytest.approx(math.log(2.0))
    assert effective_sample_size(torch.ones(5)).item() == pytest.approx(5.0)
    assert effective_sample_size(torch.tensor([1.0, 0.0, 0.0])).item() == pytest.approx(1.0)
    assert effective_sample_size(torch.tensor([3.0, 1.0])).item() == pytest.approx(16 / 10)


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lam": 0.0}, r"lam \(lambda\) must be a finite non-zero number.*got 0.0"),
        ({"lam": 0}, r"lam \(lambda\) must be a finite non-zero.*got 0"),
        ({"lam": float("nan")}, r"lam \(lambda\) must be a finite non-zero.*got nan"),
        ({"lam": float("inf")}, r"lam \(lambda\) must be a finite non-zero.*got inf"),
        ({"lam": True}, r"lam \(lambda\) must be a finite non-zero.*got True"),
        ({"lam": "5"}, r"lam \(lambda\) must be a finite non-zero.*got '5'"),
        ({"gamma": 0.0}, r"gamma must be in \(0, 1\], got 0.0"),
        ({"gamma": 1.5}, r"gamma must be in \(0, 1\], got 1.5"),
        ({"gamma": -0.1}, r"gamma must be in \(0, 1\], got -0.1"),
        ({"alpha": 0.0}, r"alpha must be a finite number > 0, got 0.0"),
        ({"alpha": -1.0}, r"alpha must be a finite number > 0, got -1.0"),
        ({"alpha": float("inf")}, r"alpha must be a finite number > 0, got inf"),
        ({"gamma": True}, r"gamma must be in \(0, 1\], got True"),
        ({"alpha": True}, r"alpha must be a finite number > 0, got True"),
    ],
)
def test_bad_hyper_parameters(kwargs, match):
    args = {"lam": 5.0, "gamma": 0.1, "alpha": 0.5, **kwargs}
    with pytest.raises(ValueError, match=match):
        check_attention_args(**args)
    with pytest.raises(ValueError, match=match):
        attentional_weights(torch.ones(3), log_u=START, **args)


def test_non_finite_losses_name_the_samples():
    losses = torch.tensor([1.0, float("nan"), 2.0, float("inf"), 0.5])
    with pytest.raises(ValueError, match=r"per-sample losses must be finite; samples \[1, 3\] are not"):
        attentional_weights(losses, 5.0, START, 0.1, 0.5)


@pytest.mark.parametrize("shape", [(2, 3), (), (0,)])
def test_losses_must_be_a_non_empty_vector(shape):
    with pytest.raises(ValueError, match=re.escape(f"non-empty 1-D tensor of per-sample losses, got shape {shape}")):
        attentional_weights(torch.ones(shape), 5.0, START, 0.1, 0.5)
