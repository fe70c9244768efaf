"""The ``cdt`` and ``mm`` losses (issue 15, item 1): analytic values, registry, validation, a training step.

CDT (Ye et al.; BagofTricks-LT) is ``VSLoss(gamma, tau=0)``; MM is the maximum-margin ("HMM") loss of
ihaeyong/Maximum-Margin-LDAM ``losses.py:48-126``. Expected margins below are computed by hand from the reference
formulas (see :func:`lt_lightning.functional.mm_margins`), the derivation in the comments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lt_lightning.data import LongTailDataModule
from lt_lightning.functional import mm_loss, mm_margins
from lt_lightning.losses import LOSSES, CDTLoss, MMLoss, VSLoss, create_loss
from lt_lightning.methods import LongTailClassifier
from lt_lightning.models import NormedLinear
from tests.helpers import cpu_trainer

COUNTS = (100, 20, 5)
CIFAR10_RHO100 = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)


def _random_batch(seed: int, n: int = 64, c: int = 10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * 3, torch.randint(0, c, (n,), generator=g)


# --- CDT --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.2, 0.4, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_cdt_equals_vs_with_tau_zero_bit_for_bit(gamma, seed):
    z, y = _random_batch(seed)
    weight = torch.rand(10, generator=torch.Generator().manual_seed(seed + 10)) + 0.1
    for reduction in ("mean", "sum", "none"):
        cdt = CDTLoss(CIFAR10_RHO100, gamma=gamma, weight=weight, reduction=reduction)
        vs = VSLoss(CIFAR10_RHO100, gamma=gamma, tau=0.0, weight=weight, reduction=reduction)
        assert torch.equal(cdt(z, y), vs(z, y))
    assert torch.equal(CDTLoss(CIFAR10_RHO100, gamma=gamma).scaling, VSLoss(CIFAR10_RHO100, gamma, 0.0).scaling)


def test_cdt_gamma_zero_is_plain_cross_entropy():
    z, y = _random_batch(3)
    assert torch.equal(CDTLoss(CIFAR10_RHO100, gamma=0.0)(z, y), F.cross_entropy(z, y))


def test_cdt_temperatures_by_hand():
    # counts (16, 1), gamma 0.5: a = (16/16, 16/1)^0.5 = (1, 4), i.e. the logits are scaled by (1, 0.25).
    loss = CDTLoss([16, 1], gamma=0.5)
    assert loss.scaling.tolist() == [1.0, 0.25] and loss.tau == 0.0
    z = torch.tensor([[2.0, 4.0]])
    # CE((2, 1), y = 1) = log(1 + e^{2 - 1})
    assert loss(z, torch.tensor([1])).item() == pytest.approx(math.log1p(math.e), rel=1e-6)


def test_cdt_default_gamma_and_registry():
    loss = create_loss("cdt", COUNTS)
    assert type(loss) is CDTLoss and loss.gamma == 0.2 and not loss.requires_normed_head
    assert LOSSES["cdt"] is CDTLoss and LOSSES["mm"] is MMLoss
    assert "gamma=0.2" in repr(loss) and "tau" not in repr(loss)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"gamma": -0.1}, ValueError, r"gamma must be >= 0, got -0.1"),
        ({"gamma": float("nan")}, ValueError, r"gamma must be a finite real number, got nan"),
        ({"gamma": float("inf")}, ValueError, r"gamma must be a finite real number, got inf"),
        ({"gamma": "0.2"}, ValueError, r"gamma must be a finite real number, got '0.2'"),
        ({"tau": 1.0}, TypeError, r"tau"),  # tau is pinned to 0: CDT with tau is the VS loss, use "vs"
    ],
)
def test_cdt_rejects(kwargs, error, message):
    with pytest.raises(error, match=message):
        create_loss("cdt", COUNTS, **kwargs)


def test_cdt_unusual_gamma_warns_with_its_own_name():
    with pytest.warns(UserWarning, match=r"CDTLoss: gamma=3.0 is outside the usual range \[0, 1\] \(0.2 in the Bag"):
        CDTLoss(COUNTS, gamma=3.0)


# --- MM: margins by hand ----------------------------------------------------------------------------------

# Two classes, mbar = max_margin = 0.5 for both (variant "hmm"), gamma = 2, so a correct sample with gap d gets
# e^{-d - 2 * 0.5} = e^{-d - 1} and a wrong one e^{-|d| - 0.5}. q_i is the row maximum with the row's OWN target
# entry set to 0 (so q_i >= 0), p_i the positive logit.
Z2 = torch.tensor([[0.6, 0.1], [0.1, 0.6], [0.2, 0.7], [-0.4, 0.2], [0.3, 0.3]], dtype=torch.float64)
Y2 = torch.tensor([0, 0, 1, 1, 0])
BASE2 = torch.full((2,), 0.5, dtype=torch.float64)
# positive="own" (p_i = z[i, y_i]):
#   row 0: y 0, p 0.6, q = max(0, 0.1) = 0.1, d = +0.5 -> e^{-0.5 - 1} = e^{-1.5}
#   row 1: y 0, p 0.1, q = max(0, 0.6) = 0.6, d = -0.5 -> e^{-0.5 - 0.5} = e^{-1}
#   row 2: y 1, p 0.7, q = max(0.2, 0) = 0.2, d = +0.5 -> e^{-1.5}
#   row 3: y 1, p 0.2, q = max(-0.4, 0) = 0 (zeroed target, not excluded), d = +0.2 -> e^{-0.2 - 1} = e^{-1.2}
#   row 4: y 0, p 0.3, q = max(0, 0.3) = 0.3, d = 0 -> 0
OWN2 = [math.exp(-1.5), math.exp(-1.0), math.exp(-1.5), math.exp(-1.2), 0.0]
# positive="code" (p_i = z[i, y_0] = z[i, 0] for every row, y_0 = 0; q unchanged):
#   rows 0, 1, 4 have y = 0 = y_0: as above (e^{-1.5}, e^{-1}, 0)
#   row 2: p = z[2, 0] = 0.2, q = 0.2, d = 0 -> 0
#   row 3: p = z[3, 0] = -0.4, q = 0, d = -0.4 -> e^{-0.4 - 0.5} = e^{-0.9}
CODE2 = [math.exp(-1.5), math.exp(-1.0), 0.0, math.exp(-0.9), 0.0]


@pytest.mark.parametrize(("positive", "expected"), [("own", OWN2), ("code", CODE2)])
def test_mm_margins_two_class_by_hand(positive, expected):
    got = mm_margins(Z2.double(), Y2, BASE2.double(), gamma=2.0, positive=positive)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_mm_code_mode_follows_the_first_label():
    # The same rows with the batch reordered so that a y = 1 row comes first: "code" now reads column 1 for all.
    order = torch.tensor([2, 0, 1, 3, 4])
    got = mm_margins(Z2[order].double(), Y2[order], BASE2.double(), gamma=2.0, positive="code")
    # p = z[:, 1]: row (0.2, 0.7) y 1: p 0.7, q 0.2 -> e^{-1.5}; row (0.6, 0.1) y 0: p 0.1, q 0.1 -> 0;
    # row (0.1, 0.6) y 0: p 0.6, q 0.6 -> 0; row (-0.4, 0.2) y 1: p 0.2, q 0 -> e^{-1.2};
    # row (0.3, 0.3) y 0: p 0.3, q 0.3 -> 0.
    np.testing.assert_allclose(got.numpy(), [math.exp(-1.5), 0, 0, math.exp(-1.2), 0], rtol=1e-12, atol=1e-15)
    own = mm_margins(Z2[order].double(), Y2[order], BASE2.double(), gamma=2.0, positive="own")
    np.testing.assert_allclose(own.numpy(), np.array(OWN2)[order.numpy()], rtol=1e-12)  # "own" is order-free


def test_mm_hmm_ldam_base_margins_by_hand():
    # m_LDAM for counts (16, 1) is (16^-1/4, 1) * 0.5 = (0.25, 0.5) whatever max_margin (the reference scales to
    # 0.5): mbar = max_margin - m_LDAM,y.
    loss = MMLoss([16, 1], max_margin=0.75, gamma=2.0, variant="hmm_ldam", positive="own", scale=1.0)
    np.testing.assert_allclose(loss.base_margins.numpy(), [0.5, 0.25])
    assert MMLoss([16, 1], max_margin=1.5, variant="hmm_ldam").base_margins.tolist() == [1.25, 1.0]
    # row (0.2, 0.7), y 1: d = 0.5 > 0 -> e^{-0.5 - 2 * 0.25} = e^{-1}
    got = mm_margins(torch.tensor([[0.2, 0.7]]), torch.tensor([1]), loss.base_margins, gamma=2.0, positive="own")
    assert got.item() == pytest.approx(math.exp(-1.0), rel=1e-6)


@pytest.mark.parametrize("positive", ["own", "code"])
def test_mm_loss_value_is_ce_of_the_shifted_scaled_logits(positive):
    margins = torch.tensor(OWN2 if positive == "own" else CODE2, dtype=torch.float64)
    z = Z2.double()
    shifted = z - margins[:, None] * F.one_hot(Y2, 2)
    expected = F.cross_entropy(20.0 * shifted, Y2, reduction="none")
    loss = MMLoss([5, 1], scale=20.0, max_margin=0.5, gamma=2.0, positive=positive, reduction="none")
    torch.testing.assert_close(loss.to(torch.float64)(z, Y2), expected)
    # a row with p = q gets no margin: its loss is CE(s z) (row 4)
    assert expected[4].item() == pytest.approx(F.cross_entropy(20.0 * z[4:5], Y2[4:5]).item())


def test_mm_wrong_sample_by_hand_scalar():
    # z = (0.1, 0.6), y = 0, s = 1, mbar = 0.5, any gamma: d = -0.5 -> Delta = e^{-1};
    # loss = log(1 + e^{0.6 - (0.1 - e^{-1})}) = log(1 + e^{0.5 + e^{-1}})
    got = mm_loss(torch.tensor([[0.1, 0.6]]), torch.tensor([0]), BASE2.float(), scale=1.0, gamma=7.0, positive="own")
    assert got.item() == pytest.approx(math.log1p(math.exp(0.5 + math.exp(-1))), rel=1e-6)


def test_mm_gradient_is_that_of_the_detached_margin():
    z, y = _random_batch(5, n=16, c=4)
    z = (z / 10).requires_grad_(True)
    base = torch.full((4,), 0.5)
    mm_loss(z, y, base, scale=30.0, gamma=1.5).backward()
    grad = z.grad.clone()
    z2 = z.detach().clone().requires_grad_(True)
    delta = mm_margins(z2, y, base, gamma=1.5)
    assert not delta.requires_grad
    F.cross_entropy(30.0 * (z2 - delta[:, None] * F.one_hot(y, 4)), y).backward()
    torch.testing.assert_close(grad, z2.grad)


def test_mm_module_defaults_flags_and_drw_weights():
    loss = create_loss("mm", CIFAR10_RHO100)
    assert type(loss) is MMLoss and loss.requires_normed_head
    assert (loss.scale, loss.max_margin, loss.gamma, loss.variant, loss.positive) == (30.0, 0.5, 10.0, "hmm", "code")
    assert loss.base_margins.tolist() == [0.5] * 10 and "base_margins" in loss.state_dict()
    z, y = _random_batch(7, n=32)
    z = z / 10
    unweighted = loss(z, y)
    weights = torch.linspace(0.5, 2.0, 10)
    loss.set_class_weight(weights)
    torch.testing.assert_close(
        loss(z, y), mm_loss(z, y, loss.base_margins, scale=30.0, gamma=10.0, positive="code", weight=weights)
    )
    assert not torch.equal(loss(z, y), unweighted)
    text = repr(loss)
    assert "variant='hmm'" in text and "positive='code'" in text and "gamma=10.0" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 0}, r"scale must be > 0, got 0"),
        ({"scale": -30.0}, r"scale must be > 0, got -30.0"),
        ({"max_margin": -0.1}, r"max_margin must be >= 0, got -0.1"),
        ({"max_margin": float("inf")}, r"max_margin must be a finite real number, got inf"),
        ({"gamma": -1.0}, r"gamma must be >= 0, got -1.0"),
        ({"gamma": float("nan")}, r"gamma must be a finite real number, got nan"),
        ({"variant": "ldam"}, r"variant must be one of \['hmm', 'hmm_ldam'\], got 'ldam'"),
        ({"positive": "first"}, r"positive must be one of \['code', 'own'\], got 'first'"),
        ({"weight": [1.0, 2.0]}, r"weight must have 3 entries"),
        ({"reduction": "avg"}, r"reduction must be one of"),
    ],
)
def test_mm_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        create_loss("mm", COUNTS, **kwargs)


def test_mm_functional_rejects():
    z, y = torch.zeros(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"positive must be one of \['code', 'own'\], got 'paper'"):
        mm_margins(z, y, torch.zeros(3), positive="paper")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"gamma must be >= 0, got -2.0"):
        mm_loss(z, y, torch.zeros(3), gamma=-2.0)
    with pytest.raises(ValueError, match=r"base_margins must have shape \(C,\) = \(3,\)"):
        mm_loss(z, y, torch.zeros(2))
    assert mm_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(3), reduction="sum").item() == 0


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [({"scale": 500.0}, "scale=500.0"), ({"max_margin": 5.0}, "max_margin=5.0"), ({"gamma": 100.0}, "gamma=100.0")],
)
def test_mm_unusual_settings_warn(kwargs, argument):
    with pytest.warns(UserWarning, match=rf"MMLoss: {argument} is outside the usual range"):
        MMLoss(COUNTS, **kwargs)


def test_mm_reference_recipes_do_not_warn(recwarn):
    MMLoss(CIFAR10_RHO100, scale=19.0, max_margin=1.29, gamma=1.528)  # CIFAR-100 HMM script
    MMLoss(CIFAR10_RHO100, scale=26.0, max_margin=1.29, gamma=1.528, variant="hmm_ldam")
    CDTLoss(CIFAR10_RHO100, gamma=0.0)
    assert not [w for w in recwarn if "usual range" in str(w.message)]


# --- through the model and a training step ----------------------------------------------------------------


@pytest.mark.parametrize(("loss", "head"), [("cdt", torch.nn.Linear), ("mm", NormedLinear)])
def test_registered_names_train_a_step_on_digits(tmp_path, loss, head):
    data = LongTailDataModule(dataset="digits", batch_size=32)
    data.prepare_data()
    data.setup("fit")
    model = LongTailClassifier(data.class_counts, backbone="small_cnn", in_chans=1, loss=loss)
    assert type(model.criterion) is LOSSES[loss]
    assert type(model.backbone.head) is head  # head="auto": cosine for mm, linear for cdt
    cpu_trainer(tmp_path, fast_dev_run=True).fit(model, datamodule=data)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_mm_loss_kwargs_reach_the_loss():
    model = LongTailClassifier(COUNTS, in_chans=1, loss="mm", loss_kwargs={"variant": "hmm_ldam", "positive": "own"})
    assert model.criterion.variant == "hmm_ldam" and model.criterion.positive == "own"
    assert isinstance(model.backbone.head, NormedLinear)
