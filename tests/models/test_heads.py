import math

import pytest
import torch
from torch import nn

from lt_lightning.models import Backbone, NormedLinear, make_head
from lt_lightning.models.heads import normed_linear


class _Flat(Backbone):
    """Minimal backbone: flattens a (B, 1, 2, 2) input to 4 features."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.num_features, self.num_classes = 4, num_classes
        self.head = nn.Linear(4, num_classes)

    def forward_features(self, x):
        return x.flatten(1)


# --- normed_linear / NormedLinear ---


def test_normed_linear_hand_computed_cosines():
    x = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    w = torch.tensor([[1.0, 0.0, -2.0], [0.0, 2.0, 0.0]])  # columns: e1, 2*e2, -2*e1
    expected = torch.tensor([[0.6, 0.8, -0.6], [1 / math.sqrt(2), 1 / math.sqrt(2), -1 / math.sqrt(2)]])
    torch.testing.assert_close(normed_linear(x, w), expected)


def test_normed_linear_module_uses_weight_columns_and_has_no_bias():
    head = NormedLinear(2, 2)
    assert head.bias is None
    assert [name for name, _ in head.named_parameters()] == ["weight"]
    assert head.weight.shape == (2, 2)  # (in, out): transposed w.r.t. nn.Linear, as in the LDAM repo
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    z = head(torch.tensor([[0.0, 5.0]]))
    torch.testing.assert_close(z, torch.tensor([[0.0, 1 / math.sqrt(2)]]))


def test_normed_linear_outputs_are_scale_invariant_cosines():
    torch.manual_seed(0)
    head = NormedLinear(16, 7)
    x = torch.randn(64, 16)
    z = head(x)
    assert z.shape == (64, 7)
    assert z.abs().max() <= 1.0 + 1e-6
    torch.testing.assert_close(head(10.0 * x), z)
    # the row of x aligned with a class column gives cosine 1 for that class
    aligned = head.weight[:, 3].detach().unsqueeze(0) * 2.5
    assert head(aligned)[0, 3].item() == pytest.approx(1.0, abs=1e-6)


def test_normed_linear_init_gives_unit_norm_columns():
    torch.manual_seed(0)
    head = NormedLinear(64, 10)
    torch.testing.assert_close(head.weight.norm(dim=0), torch.ones(10))
    # uniform(-1, 1) directions: entries of both signs, not a constant init
    assert (head.weight > 0).any() and (head.weight < 0).any()


def test_normed_linear_zero_input_gives_zero_not_nan():
    z = NormedLinear(3, 2)(torch.zeros(1, 3))
    assert torch.equal(z, torch.zeros(1, 2))


def test_normed_linear_rejects_bad_sizes():
    with pytest.raises(ValueError, match="in_features must be >= 1, got 0"):
        NormedLinear(0, 3)
    with pytest.raises(TypeError, match="out_features"):
        NormedLinear(3, 2.0)


# --- make_head ---


def test_make_head_linear_has_bias_and_bias_init():
    head = make_head("linear", 8, 10)
    assert isinstance(head, nn.Linear) and head.bias is not None
    assert (head.in_features, head.out_features) == (8, 10)
    head = make_head("linear", 8, 10, bias_init=-math.log(9))
    torch.testing.assert_close(head.bias.detach(), torch.full((10,), -math.log(9)))
    # with zero features the logits are the bias: sigmoid(-log(C-1)) = 1/C, the CB focal prior
    probs = torch.sigmoid(head(torch.zeros(1, 8)))
    torch.testing.assert_close(probs, torch.full((1, 10), 0.1))


def test_make_head_cosine():
    head = make_head("cosine", 8, 10)
    assert isinstance(head, NormedLinear)
    assert (head.in_features, head.out_features) == (8, 10)


def test_make_head_errors():
    with pytest.raises(ValueError, match=r"head kind must be one of \['linear', 'cosine'\], got 'mlp'"):
        make_head("mlp", 8, 10)
    with pytest.raises(ValueError, match="bias_init must be None for the bias-free 'cosine' head"):
        make_head("cosine", 8, 10, bias_init=0.0)
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        make_head("linear", 8, 0)
    with pytest.raises(TypeError, match="in_features"):
        make_head("linear", True, 3)


# --- Backbone base class ---


def test_backbone_forward_is_head_of_features():
    torch.manual_seed(0)
    model = _Flat()
    x = torch.randn(5, 1, 2, 2)
    torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))
    torch.testing.assert_close(model(x), x.flatten(1) @ model.head.weight.T + model.head.bias)


def test_backbone_reset_head_swaps_head_and_num_classes():
    model = _Flat()
    new = NormedLinear(4, 6)
    model.reset_head(new)
    assert model.head is new and model.num_classes == 6
    assert model(torch.randn(2, 1, 2, 2)).shape == (2, 6)
    # a head without out_features leaves num_classes alone
    model.reset_head(nn.Sequential(nn.Linear(4, 6)))
    assert model.num_classes == 6


def test_backbone_reset_head_errors():
    model = _Flat()
    with pytest.raises(TypeError, match="head must be a torch.nn.Module, got function"):
        model.reset_head(lambda f: f)
    with pytest.raises(ValueError, match="head.in_features must equal the backbone's num_features=4, got 5"):
        model.reset_head(nn.Linear(5, 3))


def test_backbone_without_split_says_so():
    model = _Flat()
    assert model.supports_split is False
    with pytest.raises(NotImplementedError, match="_Flat has no trunk/branch split"):
        model.forward_trunk(torch.zeros(1, 1, 2, 2))
    with pytest.raises(NotImplementedError, match="_Flat has no trunk/branch split"):
        model.make_branch()


def test_backbone_forward_features_must_be_implemented():
    class NoFeatures(Backbone):
        pass

    with pytest.raises(NotImplementedError, match="NoFeatures must implement forward_features"):
        NoFeatures()(torch.zeros(1, 3))


def test_forward_pool_is_global_average():
    fmap = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    torch.testing.assert_close(Backbone.forward_pool(fmap), fmap.mean(dim=(2, 3)))
