"""Functional losses against numpy references on a tiny hand-made batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lt_lightning.functional import (
    cross_entropy,
    focal_loss,
    ldam_loss,
    logit_adjusted_loss,
    sigmoid_bias_init,
    sigmoid_focal_loss,
    vs_loss,
)

# Four samples, three classes; chosen so weighted-mean and divide-by-N differ clearly.
Z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 0.0, 0.0], [0.5, 0.5, 1.5]])
Y = np.array([0, 2, 1, 1])
W = np.array([0.5, 1.0, 2.0])
COUNTS = np.array([100.0, 20.0, 5.0])


def _logits(dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(Z, dtype=dtype)


def _target() -> torch.Tensor:
    return torch.tensor(Y)


def _weight(dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(W, dtype=dtype)


def np_ce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample -log softmax(z)_y in plain numpy (max-shifted log-sum-exp)."""
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return lse - z[np.arange(len(y)), y]


def np_onehot(y: np.ndarray, c: int) -> np.ndarray:
    return np.eye(c)[y]


# --- cross-entropy ----------------------------------------------------------------------------------------


def test_cross_entropy_unweighted_matches_numpy():
    ce = np_ce(Z, Y)
    assert cross_entropy(_logits(), _target()).item() == pytest.approx(ce.mean(), rel=1e-6)
    assert cross_entropy(_logits(), _target(), reduction="sum").item() == pytest.approx(ce.sum(), rel=1e-6)
    np.testing.assert_allclose(cross_entropy(_logits(), _target(), reduction="none").numpy(), ce, rtol=1e-6)


def test_cross_entropy_first_sample_by_hand():
    # sample 0: z = (1, 2, 0.5), y = 0 -> log(e + e^2 + e^0.5) - 1
    expected = math.log(math.e + math.e**2 + math.exp(0.5)) - 1.0
    assert cross_entropy(_logits()[:1], _target()[:1]).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_weighted_mean_is_normalised_by_weight_sum():
    ce = np_ce(Z, Y)
    wy = W[Y]
    weighted_mean = (wy * ce).sum() / wy.sum()
    divide_by_n = (wy * ce).sum() / len(Y)
    got = cross_entropy(_logits(), _target(), weight=_weight()).item()
    assert got == pytest.approx(weighted_mean, rel=1e-6)
    assert abs(weighted_mean - divide_by_n) > 0.1  # the case where the choice matters
    assert abs(got - divide_by_n) > 0.1
    np.testing.assert_allclose(
        cross_entropy(_logits(), _target(), weight=_weight(), reduction="none").numpy(), wy * ce, rtol=1e-6
    )
    assert cross_entropy(_logits(), _target(), weight=_weight(), reduction="sum").item() == pytest.approx(
        (wy * ce).sum(), rel=1e-6
    )


def test_all_ones_weight_equals_unweighted_for_every_loss():
    z, y, ones = _logits(), _target(), torch.ones(3)
    margins, scaling, offsets = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1.0, 0.7, 0.5]), torch.zeros(3)
    log_prior = torch.tensor(np.log(COUNTS / COUNTS.sum()), dtype=torch.float32)
    cases = [
        (cross_entropy, ()),
        (ldam_loss, (margins,)),
        (focal_loss, ()),
        (sigmoid_focal_loss, ()),
        (vs_loss, (scaling, offsets)),
        (logit_adjusted_loss, (log_prior,)),
    ]
    for fn, extra in cases:
        for reduction in ("mean", "sum", "none"):
            a = fn(z, y, *extra, weight=ones, reduction=reduction)
            b = fn(z, y, *extra, reduction=reduction)
            torch.testing.assert_close(a, b, msg=f"{fn.__name__} {reduction}")


# --- LDAM -------------------------------------------------------------------------------------------------


def test_ldam_matches_numpy_reference_margin_before_scale():
    margins = np.array([0.1, 0.2, 0.4])
    s = 30.0
    zm = Z - margins[Y][:, None] * np_onehot(Y, 3)
    per_sample = np_ce(s * zm, Y)
    got = ldam_loss(_logits(torch.float64), _target(), torch.tensor(margins), scale=s, reduction="none")
    np.testing.assert_allclose(got.numpy(), per_sample, rtol=1e-10)
    # "s * z - m" (margin after scaling) is a different loss
    wrong = np_ce(s * Z - margins[Y][:, None] * np_onehot(Y, 3), Y)
    assert not np.allclose(got.numpy(), wrong, rtol=1e-3)


def test_ldam_hand_computed_two_classes():
    # z = (0, 0), y = 0, margin 0.1, s = 10 -> CE((-1, 0), 0) = log(1 + e)
    got = ldam_loss(torch.zeros(1, 2), torch.tensor([0]), torch.tensor([0.1, 0.2]), scale=10.0)
    assert got.item() == pytest.approx(math.log(1 + math.e), rel=1e-6)


def test_ldam_equals_torch_cross_entropy_of_shifted_scaled_logits():
    z, y = _logits(), _target()
    m = torch.tensor([0.15, 0.25, 0.5])
    onehot = F.one_hot(y, 3).float()
    for weight in (None, _weight()):
        expected = F.cross_entropy(30 * (z - m[y].unsqueeze(1) * onehot), y, weight=weight)
        torch.testing.assert_close(ldam_loss(z, y, m, scale=30.0, weight=weight), expected)


def test_ldam_margin_makes_loss_larger_than_scaled_ce():
    z, y = _logits() / 4, _target()
    m = torch.tensor([0.1, 0.2, 0.5])
    with_margin = ldam_loss(z, y, m, scale=30.0, reduction="none")
    plain = F.cross_entropy(30 * z, y, reduction="none")
    assert bool((with_margin > plain).all())
    torch.testing.assert_close(ldam_loss(z, y, torch.zeros(3), scale=30.0), F.cross_entropy(30 * z, y))


def test_ldam_weighted_mean_is_normalised_by_weight_sum():
    m = np.array([0.1, 0.2, 0.4])
    per_sample = np_ce(30 * (Z - m[Y][:, None] * np_onehot(Y, 3)), Y)
    wy = W[Y]
    got = ldam_loss(_logits(torch.float64), _target(), torch.tensor(m), weight=_weight(torch.float64)).item()
    assert got == pytest.approx((wy * per_sample).sum() / wy.sum(), rel=1e-10)
    assert abs(got - (wy * per_sample).sum() / len(Y)) > 0.1


# --- softmax focal (LDAM repo) ----------------------------------------------------------------------------


def test_focal_gamma_zero_is_weighted_ce_with_plain_mean():
    wy_ce = W[Y] * np_ce(Z, Y)
    got = focal_loss(_logits(), _target(), gamma=0.0, weight=_weight()).item()
    assert got == pytest.approx(wy_ce.mean(), rel=1e-6)  # plain mean over N ...
    assert got != pytest.approx(
        cross_entropy(_logits(), _target(), weight=_weight()).item(), rel=1e-3
    )  # ... not /sum w
    assert focal_loss(_logits(), _target(), gamma=0.0).item() == pytest.approx(np_ce(Z, Y).mean(), rel=1e-6)


def test_focal_matches_numpy_reference_with_weights():
    gamma = 2.0
    ce = W[Y] * np_ce(Z, Y)  # weight inside, as the reference
    p = np.exp(-ce)
    per_sample = (1 - p) ** gamma * ce
    got_none = focal_loss(_logits(), _target(), gamma=gamma, weight=_weight(), reduction="none")
    np.testing.assert_allclose(got_none.numpy(), per_sample, rtol=1e-5)
    got_mean = focal_loss(_logits(), _target(), gamma=gamma, weight=_weight()).item()
    assert got_mean == pytest.approx(per_sample.sum() / len(Y), rel=1e-5)
    got_sum = focal_loss(_logits(), _target(), gamma=gamma, weight=_weight(), reduction="sum").item()
    assert got_sum == pytest.approx(per_sample.sum(), rel=1e-5)


def test_focal_hand_computed_two_classes():
    # z = (0, 0): CE = log 2, p = 1/2 -> (1/2) log 2
    assert focal_loss(torch.zeros(1, 2), torch.tensor([0]), gamma=1.0).item() == pytest.approx(0.5 * math.log(2))


def test_focal_down_weights_easy_samples():
    z, y = _logits(), _target()
    assert bool((focal_loss(z, y, gamma=2.0, reduction="none") < cross_entropy(z, y, reduction="none")).all())


# --- sigmoid focal (CB paper) -----------------------------------------------------------------------------


def np_sigmoid_focal(z: np.ndarray, y: np.ndarray, gamma: float, w: np.ndarray | None) -> np.ndarray:
    """Per-sample sum over classes of w_y (1 - p_t)^gamma * -log p_t, straight from the definition."""
    t = np_onehot(y, z.shape[1])
    p = 1 / (1 + np.exp(-z))
    p_t = np.where(t == 1, p, 1 - p)
    terms = (1 - p_t) ** gamma * -np.log(p_t)
    per_sample = terms.sum(axis=1)
    return per_sample if w is None else w[y] * per_sample


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_sigmoid_focal_matches_numpy_reference(gamma):
    ref = np_sigmoid_focal(Z, Y, gamma, W)
    z, y, w = _logits(torch.float64), _target(), _weight(torch.float64)
    np.testing.assert_allclose(sigmoid_focal_loss(z, y, gamma, w, reduction="none").numpy(), ref, rtol=1e-10)
    assert sigmoid_focal_loss(z, y, gamma, w).item() == pytest.approx(ref.sum() / len(Y), rel=1e-10)
    assert sigmoid_focal_loss(z, y, gamma, w, reduction="sum").item() == pytest.approx(ref.sum(), rel=1e-10)


def test_sigmoid_focal_reference_modulator_form():
    # The CB code's modulator exp(-g t z - g log1p(exp(-z))) equals (1 - p_t)^g on moderate logits.
    gamma, z, t = 1.5, Z, np_onehot(Y, 3)
    modulator = np.exp(-gamma * t * z - gamma * np.log1p(np.exp(-z)))
    bce = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    ref = (W[Y][:, None] * modulator * bce).sum() / len(Y)
    got = sigmoid_focal_loss(_logits(torch.float64), _target(), gamma, _weight(torch.float64)).item()
    assert got == pytest.approx(ref, rel=1e-10)


def test_sigmoid_focal_gamma_zero_is_one_vs_all_bce_over_n():
    z, y = _logits(), _target()
    onehot = F.one_hot(y, 3).float()
    expected = F.binary_cross_entropy_with_logits(z, onehot, reduction="sum") / len(y)
    torch.testing.assert_close(sigmoid_focal_loss(z, y, gamma=0.0), expected)


def test_sigmoid_focal_stable_for_huge_logits():
    z = torch.tensor([[-1e4, 0.0], [1e4, -1e4], [1e4, 1e4]], requires_grad=True)
    y = torch.tensor([0, 0, 1])
    per_sample = sigmoid_focal_loss(z, y, gamma=1.0, reduction="none")
    assert bool(torch.isfinite(per_sample).all())
    # sample 0: true logit -1e4 -> BCE 1e4, modulator 1; other logit 0 -> 0.5 * log 2
    assert per_sample[0].item() == pytest.approx(1e4 + 0.5 * math.log(2), rel=1e-6)
    assert per_sample[1].item() == pytest.approx(0.0, abs=1e-6)  # perfectly classified
    assert per_sample[2].item() == pytest.approx(1e4, rel=1e-6)  # negative class at +1e4
    per_sample.sum().backward()
    assert bool(torch.isfinite(z.grad).all())


def test_sigmoid_bias_init():
    assert sigmoid_bias_init(10) == pytest.approx(-math.log(9))
    assert 1 / (1 + math.exp(-sigmoid_bias_init(100))) == pytest.approx(1 / 100)
    assert sigmoid_bias_init(2) == 0.0
    for bad in (1, 0, 2.0, True):
        with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
            sigmoid_bias_init(bad)  # type: ignore[arg-type]


# --- VS and logit adjustment ------------------------------------------------------------------------------


def test_vs_matches_numpy_reference():
    gamma, tau = 0.3, 1.0
    scaling = (COUNTS / COUNTS.max()) ** gamma
    offsets = tau * np.log(COUNTS / COUNTS.sum())
    per_sample = np_ce(Z * scaling + offsets, Y)
    wy = W[Y]
    t = torch.tensor
    got = vs_loss(_logits(torch.float64), _target(), t(scaling), t(offsets), weight=t(W)).item()
    assert got == pytest.approx((wy * per_sample).sum() / wy.sum(), rel=1e-10)
    got_none = vs_loss(_logits(torch.float64), _target(), t(scaling), t(offsets), reduction="none")
    np.testing.assert_allclose(got_none.numpy(), per_sample, rtol=1e-10)


def test_vs_identity_parameters_equal_ce():
    z, y = _logits(), _target()
    for weight in (None, _weight()):
        torch.testing.assert_close(
            vs_loss(z, y, torch.ones(3), torch.zeros(3), weight=weight), F.cross_entropy(z, y, weight=weight)
        )


def test_balanced_softmax_equals_ce_on_prior_shifted_logits():
    z, y = _logits(), _target()
    log_prior = torch.tensor(np.log(COUNTS / COUNTS.sum()), dtype=torch.float32)
    torch.testing.assert_close(logit_adjusted_loss(z, y, log_prior), F.cross_entropy(z + log_prior, y))
    # tau = 0 is plain CE; the constant log(sum n) cancels, so log counts give the same loss.
    torch.testing.assert_close(logit_adjusted_loss(z, y, log_prior, tau=0.0), F.cross_entropy(z, y))
    log_counts = torch.tensor(np.log(COUNTS), dtype=torch.float32)
    torch.testing.assert_close(logit_adjusted_loss(z, y, log_counts), logit_adjusted_loss(z, y, log_prior))


def test_logit_adjusted_numpy_reference_with_tau_and_weight():
    tau = 2.0
    per_sample = np_ce(Z + tau * np.log(COUNTS / COUNTS.sum()), Y)
    wy = W[Y]
    log_prior = torch.tensor(np.log(COUNTS / COUNTS.sum()))
    got = logit_adjusted_loss(_logits(torch.float64), _target(), log_prior, tau=tau, weight=torch.tensor(W))
    assert got.item() == pytest.approx((wy * per_sample).sum() / wy.sum(), rel=1e-10)


# --- gradient signs ---------------------------------------------------------------------------------------

_M = torch.tensor([0.1, 0.3, 0.5], dtype=torch.float64)
_LOG_PRIOR = torch.tensor(np.log(COUNTS / COUNTS.sum()))
_SCALING = torch.tensor((COUNTS / COUNTS.max()) ** 0.3)
GRADIENT_CASES = {
    "cross_entropy": lambda z, y, w: cross_entropy(z, y, weight=w),
    "ldam": lambda z, y, w: ldam_loss(z / 4, y, _M, scale=30.0, weight=w),
    "focal": lambda z, y, w: focal_loss(z, y, gamma=1.0, weight=w),
    "focal_gamma2": lambda z, y, w: focal_loss(z, y, gamma=2.0, weight=w),
    "sigmoid_focal": lambda z, y, w: sigmoid_focal_loss(z, y, gamma=1.0, weight=w),
    "vs": lambda z, y, w: vs_loss(z, y, _SCALING, 0.5 * _LOG_PRIOR, weight=w),
    "logit_adjusted": lambda z, y, w: logit_adjusted_loss(z, y, _LOG_PRIOR, weight=w),
}


@pytest.mark.parametrize("name", sorted(GRADIENT_CASES))
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_sign_true_class_negative_others_positive(name, weighted):
    z = _logits(torch.float64).requires_grad_(True)
    y = _target()
    w = _weight(torch.float64) if weighted else None
    GRADIENT_CASES[name](z, y, w).backward()
    grad = z.grad
    true_mask = F.one_hot(y, 3).bool()
    assert bool((grad[true_mask] < 0).all()), grad
    assert bool((grad[~true_mask] > 0).all()), grad


# --- precision and dtypes ---------------------------------------------------------------------------------


def test_float64_class_vectors_with_float32_logits():
    z, y = _logits(), _target()
    got = ldam_loss(z, y, _M, weight=_weight(torch.float64))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ldam_loss(z, y, _M.float(), weight=_weight()))


def test_bfloat16_logits_computed_in_float32():
    z = _logits().to(torch.bfloat16)
    got = cross_entropy(z, _target(), weight=_weight())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, cross_entropy(z.float(), _target(), weight=_weight()))


# --- input validation -------------------------------------------------------------------------------------


def _all_losses():
    m = torch.zeros(3)
    return {
        "cross_entropy": lambda z, y, **kw: cross_entropy(z, y, **kw),
        "ldam": lambda z, y, **kw: ldam_loss(z, y, m, **kw),
        "focal": lambda z, y, **kw: focal_loss(z, y, **kw),
        "sigmoid_focal": lambda z, y, **kw: sigmoid_focal_loss(z, y, **kw),
        "vs": lambda z, y, **kw: vs_loss(z, y, torch.ones(3), m, **kw),
        "logit_adjusted": lambda z, y, **kw: logit_adjusted_loss(z, y, m, **kw),
    }


@pytest.mark.parametrize("name", sorted(_all_losses()))
def test_bad_inputs_raise_with_clear_messages(name):
    fn = _all_losses()[name]
    z, y = _logits(), _target()
    with pytest.raises(ValueError, match=r"logits must have shape \(N, C\), got shape \(3,\)"):
        fn(z[0], y[:1])
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        fn(z.long(), y)
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        fn(Z, y)
    with pytest.raises(TypeError, match=r"target must be a torch.long tensor .* dtype torch.float32"):
        fn(z, y.float())
    with pytest.raises(ValueError, match=r"target must have shape \(N,\) = \(4,\) .* got shape \(3,\)"):
        fn(z, y[:3])
    with pytest.raises(ValueError, match=r"target must have shape .* got shape \(4, 1\)"):
        fn(z, y[:, None])
    with pytest.raises(ValueError, match=r"weight must have shape \(C,\) = \(3,\) .* got shape \(2,\)"):
        fn(z, y, weight=torch.ones(2))
    with pytest.raises(TypeError, match=r"weight must be a tensor of shape \(C,\)"):
        fn(z, y, weight=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"reduction must be one of \['mean', 'sum', 'none'\], got 'avg'"):
        fn(z, y, reduction="avg")


def test_bad_per_class_tensors_and_hyper_parameters():
    z, y = _logits(), _target()
    with pytest.raises(ValueError, match=r"margins must have shape \(C,\) = \(3,\)"):
        ldam_loss(z, y, torch.zeros(4))
    with pytest.raises(ValueError, match=r"scale must be > 0, got 0.0"):
        ldam_loss(z, y, torch.zeros(3), scale=0.0)
    with pytest.raises(ValueError, match=r"scale must be a finite real number, got inf"):
        ldam_loss(z, y, torch.zeros(3), scale=float("inf"))
    with pytest.raises(ValueError, match=r"gamma must be >= 0, got -1.0"):
        focal_loss(z, y, gamma=-1.0)
    with pytest.raises(ValueError, match=r"gamma must be >= 0, got -0.5"):
        sigmoid_focal_loss(z, y, gamma=-0.5)
    with pytest.raises(ValueError, match=r"scaling must have shape \(C,\) = \(3,\)"):
        vs_loss(z, y, torch.ones(2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"offsets must have shape \(C,\) = \(3,\)"):
        vs_loss(z, y, torch.ones(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"log_prior must have shape \(C,\) = \(3,\)"):
        logit_adjusted_loss(z, y, torch.zeros(5))
    with pytest.raises(ValueError, match=r"tau must be a finite real number, got nan"):
        logit_adjusted_loss(z, y, torch.zeros(3), tau=float("nan"))
