"""Loss modules: buffers, re-settable class weights, registry, validation, values against numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lt_lightning.losses import (
    LOSSES,
    BalancedSoftmaxLoss,
    CDTLoss,
    ClassBalancedFocalLoss,
    ClassCountLoss,
    CrossEntropyLoss,
    FocalLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    MMLoss,
    SigmoidFocalLoss,
    VSLoss,
    create_loss,
)

CIFAR10_RHO100 = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)
COUNTS = (100, 20, 5)
Z = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 0.0, 0.0], [0.5, 0.5, 1.5]])
Y = np.array([0, 2, 1, 1])
W = np.array([0.5, 1.0, 2.0])


def np_ce(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return m[:, 0] + np.log(np.exp(z - m).sum(axis=1)) - z[np.arange(len(y)), y]


def _batch(dtype=torch.float32):
    return torch.tensor(Z, dtype=dtype), torch.tensor(Y)


ALL_CLASSES = [
    CrossEntropyLoss,
    FocalLoss,
    SigmoidFocalLoss,
    ClassBalancedFocalLoss,
    LDAMLoss,
    VSLoss,
    LogitAdjustedLoss,
    BalancedSoftmaxLoss,
    CDTLoss,
    MMLoss,
]


# --- values -----------------------------------------------------------------------------------------------


def test_cross_entropy_module_weighted_mean():
    z, y = _batch(torch.float64)
    ce = np_ce(Z, Y)
    wy = W[Y]
    loss = CrossEntropyLoss(COUNTS, weight=W.tolist())
    assert loss(z, y).item() == pytest.approx((wy * ce).sum() / wy.sum(), rel=1e-6)


def test_ldam_module_margins_and_value():
    loss = LDAMLoss(CIFAR10_RHO100)
    expected = [0.158, 0.180, 0.204, 0.232, 0.264, 0.300, 0.341, 0.387, 0.440, 0.500]
    np.testing.assert_allclose(loss.margins.numpy(), expected, atol=6e-4)
    assert loss.requires_normed_head and not loss.sigmoid_bias_init

    loss = LDAMLoss(COUNTS, max_margin=0.5, scale=30.0, weight=W.tolist())
    margins = 0.5 * np.array(COUNTS, dtype=float) ** -0.25 / 5**-0.25
    per_sample = np_ce(30 * (Z - margins[Y][:, None] * np.eye(3)[Y]), Y)
    wy = W[Y]
    z, y = _batch(torch.float64)
    assert loss.to(torch.float64)(z, y).item() == pytest.approx((wy * per_sample).sum() / wy.sum(), rel=1e-6)


def test_focal_module_plain_mean():
    z, y = _batch()
    ce = W[Y] * np_ce(Z, Y)
    expected = ((1 - np.exp(-ce)) * ce).mean()
    assert FocalLoss(COUNTS, gamma=1.0, weight=W.tolist())(z, y).item() == pytest.approx(expected, rel=1e-5)


def test_cb_focal_uses_published_cb_weights_and_sigmoid_focal():
    loss = ClassBalancedFocalLoss(CIFAR10_RHO100)
    expected = [0.0506, 0.0769, 0.1211, 0.1950, 0.3188, 0.5246, 0.8683, 1.4426, 2.4092, 3.9927]
    np.testing.assert_allclose(loss.class_weight.numpy(), expected, atol=1e-4)
    assert loss.sigmoid_bias_init and not loss.requires_normed_head and loss.beta == 0.9999

    # tiny case by hand: beta = 0.9 on counts (100, 20, 5)
    n = np.array(COUNTS, dtype=float)
    raw = 0.1 / (1 - 0.9**n)
    w = raw * 3 / raw.sum()
    p = 1 / (1 + np.exp(-Z))
    t = np.eye(3)[Y]
    p_t = np.where(t == 1, p, 1 - p)
    expected_loss = (w[Y][:, None] * (1 - p_t) * -np.log(p_t)).sum() / len(Y)
    z, y = _batch(torch.float64)
    got = ClassBalancedFocalLoss(COUNTS, beta=0.9, gamma=1.0).to(torch.float64)(z, y)
    assert got.item() == pytest.approx(expected_loss, rel=1e-6)
    # beta = 0 is the unweighted sigmoid focal loss
    torch.testing.assert_close(ClassBalancedFocalLoss(COUNTS, beta=0.0)(*_batch()), SigmoidFocalLoss(COUNTS)(*_batch()))


def test_vs_module_identity_and_buffers():
    z, y = _batch()
    torch.testing.assert_close(VSLoss(COUNTS, gamma=0.0, tau=0.0)(z, y), F.cross_entropy(z, y))
    loss = VSLoss(COUNTS, gamma=0.5, tau=2.0)
    np.testing.assert_allclose(loss.scaling.numpy(), [1.0, math.sqrt(0.2), math.sqrt(0.05)], rtol=1e-6)
    np.testing.assert_allclose(loss.offsets.numpy(), 2 * np.log(np.array(COUNTS) / 125), rtol=1e-6)
    expected = np_ce(Z * loss.scaling.numpy() + loss.offsets.numpy(), Y).mean()
    assert loss(z, y).item() == pytest.approx(expected, rel=1e-5)


def test_balanced_softmax_equals_ce_on_log_prior_shift():
    z, y = _batch()
    log_prior = torch.log(torch.tensor(COUNTS, dtype=torch.float32) / sum(COUNTS))
    torch.testing.assert_close(BalancedSoftmaxLoss(COUNTS)(z, y), F.cross_entropy(z + log_prior, y))
    torch.testing.assert_close(LogitAdjustedLoss(COUNTS, tau=1.0)(z, y), BalancedSoftmaxLoss(COUNTS)(z, y))
    torch.testing.assert_close(LogitAdjustedLoss(COUNTS, tau=0.0)(z, y), F.cross_entropy(z, y))


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_gradient_sign(cls):
    loss = cls(COUNTS).to(torch.float64)
    z = (torch.tensor(Z) / 4).requires_grad_(True)  # cosine-like range, so LDAM's s = 30 does not saturate
    y = torch.tensor(Y)
    loss(z, y).backward()
    true_mask = F.one_hot(y, 3).bool()
    assert bool((z.grad[true_mask] < 0).all()) and bool((z.grad[~true_mask] > 0).all()), z.grad


# --- flags, buffers, state_dict ---------------------------------------------------------------------------


def test_head_flags():
    assert [c for c in ALL_CLASSES if c.requires_normed_head] == [LDAMLoss, MMLoss]
    assert {c for c in ALL_CLASSES if c.sigmoid_bias_init} == {SigmoidFocalLoss, ClassBalancedFocalLoss}


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_buffers_follow_dtype_and_are_in_state_dict(cls):
    loss = cls(COUNTS)
    assert isinstance(loss, ClassCountLoss)
    assert loss.class_counts.dtype == torch.long and loss.class_counts.tolist() == list(COUNTS)
    assert loss.num_classes == 3
    state = loss.state_dict()
    assert {"class_counts", "class_weight"} <= set(state)
    buffers = dict(loss.named_buffers())
    float_buffers = [name for name, b in buffers.items() if b.is_floating_point()]
    assert set(buffers) == set(state)
    loss = loss.to(torch.float64)
    for name in float_buffers:
        assert getattr(loss, name).dtype == torch.float64, name
    assert loss.class_counts.dtype == torch.long
    z, y = _batch(torch.float64)
    assert loss(z, y).dtype == torch.float64
    assert torch.isfinite(loss(*_batch())).all()  # float32 logits against float64 buffers still work


def test_derived_buffers_registered():
    assert "margins" in LDAMLoss(COUNTS).state_dict()
    assert {"scaling", "offsets"} <= set(VSLoss(COUNTS).state_dict())
    assert "log_prior" in LogitAdjustedLoss(COUNTS).state_dict()


def test_state_dict_round_trip_keeps_class_weight():
    source = LDAMLoss(COUNTS)
    source.set_class_weight([0.2, 0.8, 2.0])
    target = LDAMLoss(COUNTS)
    target.load_state_dict(source.state_dict())
    np.testing.assert_allclose(target.class_weight.numpy(), [0.2, 0.8, 2.0], rtol=1e-6)
    torch.testing.assert_close(target(*_batch()), source(*_batch()))


# --- set_class_weight -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_set_class_weight_changes_value_and_none_restores_ones(cls):
    loss = cls(COUNTS)
    loss.set_class_weight(None)
    assert loss.class_weight.tolist() == [1.0, 1.0, 1.0]
    unweighted = loss(*_batch())
    loss.set_class_weight(W.tolist())
    weighted = loss(*_batch())
    assert abs(weighted.item() - unweighted.item()) > 1e-3
    loss.set_class_weight(None)
    torch.testing.assert_close(loss(*_batch()), unweighted)


def test_set_class_weight_accepts_tensor_numpy_list_and_copies_in_place():
    loss = CrossEntropyLoss(COUNTS).to(torch.float64)
    buffer = loss.class_weight
    source = torch.tensor([1.0, 2.0, 3.0])
    loss.set_class_weight(source)
    source.mul_(10)  # the loss holds a copy, not the caller's tensor
    assert loss.class_weight is buffer and loss.class_weight.dtype == torch.float64
    assert loss.class_weight.tolist() == [1.0, 2.0, 3.0]
    loss.set_class_weight(np.array([0.5, 0.5, 2.0]))
    assert loss.class_weight.tolist() == [0.5, 0.5, 2.0]
    loss.set_class_weight((1, 1, 1))
    assert loss.class_weight.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("weight", "message"),
    [
        ([1.0, 2.0], r"weight must have 3 entries \(one per class\), got shape \(2,\)"),
        (torch.ones(3, 1), r"weight must have 3 entries .* got shape \(3, 1\)"),
        ([1.0, 0.0, 1.0], r"weight must be finite and > 0 for every class, got \[1.0, 0.0, 1.0\]"),
        ([1.0, -1.0, 1.0], r"finite and > 0"),
        ([1.0, float("nan"), 1.0], r"finite and > 0"),
        ([1.0, float("inf"), 1.0], r"finite and > 0"),
        (["a", "b", "c"], r"weight must be None or 3 finite positive numbers"),
    ],
)
def test_set_class_weight_rejects(weight, message):
    loss = CrossEntropyLoss(COUNTS)
    with pytest.raises(ValueError, match=message):
        loss.set_class_weight(weight)
    assert loss.class_weight.tolist() == [1.0, 1.0, 1.0]  # unchanged after a rejected call
    with pytest.raises(ValueError, match=message):
        CrossEntropyLoss(COUNTS, weight=weight)


# --- reduction --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_reduction_none_gives_per_sample_losses(cls):
    loss = cls(COUNTS)
    assert loss.reduction == "mean"
    mean = loss(*_batch())
    loss.reduction = "none"
    per_sample = loss(*_batch())
    assert per_sample.shape == (4,)
    loss.reduction = "sum"
    torch.testing.assert_close(loss(*_batch()), per_sample.sum())
    if cls in (FocalLoss, SigmoidFocalLoss, ClassBalancedFocalLoss):
        torch.testing.assert_close(mean, per_sample.mean())  # focal losses: plain mean over N
    torch.testing.assert_close(cls(COUNTS, reduction="none")(*_batch()), per_sample)


def test_bad_reduction():
    with pytest.raises(ValueError, match=r"reduction must be one of \['mean', 'sum', 'none'\], got 'avg'"):
        CrossEntropyLoss(COUNTS, reduction="avg")  # type: ignore[arg-type]
    loss = CrossEntropyLoss(COUNTS)
    with pytest.raises(ValueError, match="reduction must be one of"):
        loss.reduction = "batchmean"  # type: ignore[assignment]
    assert loss.reduction == "mean"


# --- registry ---------------------------------------------------------------------------------------------


def test_registry_names_and_create_loss():
    assert set(LOSSES) == {
        "ce",
        "focal",
        "sigmoid_focal",
        "cb_focal",
        "ldam",
        "vs",
        "logit_adjusted",
        "balanced_softmax",
        "cdt",
        "mm",
        "class_temperature_mix",
    }
    loss = create_loss("ldam", COUNTS, max_margin=0.3, scale=10.0)
    assert type(loss) is LDAMLoss and loss.max_margin == 0.3 and loss.scale == 10.0
    assert loss.margins[-1].item() == pytest.approx(0.3)
    assert type(create_loss("balanced_softmax", COUNTS)) is BalancedSoftmaxLoss
    for name, cls in LOSSES.items():
        assert type(create_loss(name, COUNTS)) is cls


def test_create_loss_unknown_name_lists_known():
    with pytest.raises(ValueError, match=r"unknown loss 'ldma'; known losses: \['balanced_softmax', 'cb_focal',"):
        create_loss("ldma", COUNTS)


# --- constructor validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: LDAMLoss(COUNTS, max_margin=0.0), r"max_margin must be > 0, got 0.0"),
        (lambda: LDAMLoss(COUNTS, max_margin=-1), r"max_margin must be > 0, got -1"),
        (lambda: LDAMLoss(COUNTS, scale=0), r"scale must be > 0, got 0"),
        (lambda: LDAMLoss(COUNTS, scale=-30.0), r"scale must be > 0, got -30.0"),
        (lambda: ClassBalancedFocalLoss(COUNTS, beta=1.0), r"beta must be in \[0, 1\), got 1.0"),
        (lambda: ClassBalancedFocalLoss(COUNTS, beta=-0.5), r"beta must be in \[0, 1\), got -0.5"),
        (lambda: ClassBalancedFocalLoss(COUNTS, gamma=-1.0), r"gamma must be >= 0, got -1.0"),
        (lambda: FocalLoss(COUNTS, gamma=-2.0), r"gamma must be >= 0, got -2.0"),
        (lambda: SigmoidFocalLoss(COUNTS, gamma=-0.1), r"gamma must be >= 0, got -0.1"),
        (lambda: VSLoss(COUNTS, gamma=-0.3), r"gamma must be >= 0, got -0.3"),
        (lambda: VSLoss(COUNTS, tau=float("nan")), r"tau must be a finite real number, got nan"),
        (lambda: LogitAdjustedLoss(COUNTS, tau=float("inf")), r"tau must be a finite real number, got inf"),
        (lambda: CrossEntropyLoss([100, 0, 5]), r"class_counts must be positive integers, got 0 at class 1"),
        (lambda: LDAMLoss([100, 2.5]), r"class_counts must be positive integers, got 2.5 at class 1"),
        (lambda: VSLoss([]), r"class_counts must be non-empty"),
    ],
)
def test_constructor_validation(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_forward_checks_num_classes():
    loss = LDAMLoss(COUNTS)
    with pytest.raises(ValueError, match=r"margins must have shape \(C,\) = \(4,\)"):
        loss(torch.zeros(2, 4), torch.tensor([0, 1]))


def test_repr_mentions_hyper_parameters():
    text = repr(LDAMLoss(COUNTS, max_margin=0.3))
    assert "num_classes=3" in text and "max_margin=0.3" in text and "scale=30.0" in text


# ----------------------------------------------------------------- absurd settings warn (issue 12, item 9)
@pytest.mark.parametrize(
    ("build", "argument"),
    [
        (lambda: LDAMLoss(COUNTS, scale=1e6), "scale=1000000.0"),
        (lambda: LDAMLoss(COUNTS, scale=0.1), "scale=0.1"),
        (lambda: LDAMLoss(COUNTS, max_margin=5.0), "max_margin=5.0"),
        (lambda: FocalLoss(COUNTS, gamma=50.0), "gamma=50.0"),
        (lambda: SigmoidFocalLoss(COUNTS, gamma=50.0), "gamma=50.0"),
        (lambda: ClassBalancedFocalLoss(COUNTS, beta=0.5), "beta=0.5"),
        (lambda: ClassBalancedFocalLoss(COUNTS, gamma=20.0), "gamma=20.0"),
        (lambda: VSLoss(COUNTS, gamma=3.0), "gamma=3.0"),
        (lambda: VSLoss(COUNTS, tau=50.0), "tau=50.0"),
        (lambda: LogitAdjustedLoss(COUNTS, tau=50.0), "tau=50.0"),
        (lambda: LogitAdjustedLoss(COUNTS, tau=-2.0), "tau=-2.0"),
        (lambda: create_loss("ldam", COUNTS, scale=1e6), "scale=1000000.0"),
    ],
)
def test_absurd_loss_settings_warn_naming_the_argument(build, argument):
    with pytest.warns(UserWarning, match=r"outside the usual range") as caught:
        build()
    assert any(argument in str(w.message) for w in caught), [str(w.message) for w in caught]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_default_loss_settings_do_not_warn(name, recwarn):
    create_loss(name, CIFAR10_RHO100)
    assert not [w for w in recwarn if "usual range" in str(w.message)]


def test_edge_settings_that_are_sane_do_not_warn(recwarn):
    ClassBalancedFocalLoss(COUNTS, beta=0.0)  # documented: no weighting
    LogitAdjustedLoss(COUNTS, tau=0.0)  # plain CE
    LDAMLoss(COUNTS, max_margin=1.0, scale=100.0)
    FocalLoss(COUNTS, gamma=0.0)
    assert not [w for w in recwarn if "usual range" in str(w.message)]
