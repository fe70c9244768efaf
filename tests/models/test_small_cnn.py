import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lt_lightning.models import NormedLinear, SmallCNN
from lt_lightning.models.small_cnn import ConvBNReLU


def _hand_count(in_chans: int, width: int, num_classes: int) -> int:
    def block(cin: int, cout: int) -> int:
        return 9 * cin * cout + 2 * cout  # 3x3 conv without bias + BN weight and bias

    w, w2 = width, 2 * width
    return block(in_chans, w) + block(w, w) + block(w, w2) + block(w2, w2) + w2 * num_classes + num_classes


@pytest.mark.parametrize(("in_chans", "size"), [(1, 8), (1, 28), (3, 32)])
def test_output_shapes(in_chans, size):
    model = SmallCNN(num_classes=10, in_chans=in_chans, width=8)
    x = torch.randn(4, in_chans, size, size)
    assert model.forward_features(x).shape == (4, 16)
    assert model(x).shape == (4, 10)


def test_parameter_count_and_defaults():
    model = SmallCNN()
    assert (model.num_classes, model.in_chans, model.width, model.num_features) == (10, 1, 32, 64)
    assert sum(p.numel() for p in model.parameters()) == _hand_count(1, 32, 10) == 65_834
    assert sum(p.numel() for p in SmallCNN(5, in_chans=3, width=4).parameters()) == _hand_count(3, 4, 5) == 1_209


def test_kaiming_init_and_heads():
    torch.manual_seed(0)
    model = SmallCNN(head_bias_init=-math.log(9))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.weight.std().item() == pytest.approx(math.sqrt(2.0 / m.weight[0].numel()), rel=0.2)
    torch.testing.assert_close(model.head.bias.detach(), torch.full((10,), -math.log(9)))
    assert isinstance(SmallCNN(head="cosine").head, NormedLinear)


def test_forward_is_head_of_features_and_reset_head():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=4, width=8).eval()
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))
    model.reset_head(NormedLinear(16, 3))
    assert model(x).shape == (3, 3) and model.num_classes == 3


def test_trunk_branch_split():
    torch.manual_seed(0)
    model = SmallCNN(num_classes=4, width=8).eval()
    assert model.supports_split
    x = torch.randn(2, 1, 28, 28)
    trunk = model.forward_trunk(x)
    assert trunk.shape == (2, 16, 14, 14)  # after the 2x2 max-pool and the first 2*width block
    torch.testing.assert_close(model.forward_pool(model.blocks[-1](trunk)), model.forward_features(x))

    branch = model.make_branch()
    assert isinstance(branch, ConvBNReLU) and (branch.in_channels, branch.out_channels) == (16, 16)
    assert sum(p.numel() for p in branch.parameters()) == sum(p.numel() for p in model.blocks[-1].parameters())
    model_ptrs = {p.data_ptr() for p in model.parameters()}
    assert not model_ptrs & {p.data_ptr() for p in branch.parameters()}
    assert not torch.equal(branch[0].weight, model.blocks[-1][0].weight)
    features = model.forward_pool(branch.eval()(trunk))
    assert features.shape == (2, 16)
    assert model.forward_head(features).shape == (2, 4)


def test_learns_a_tiny_problem():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    y = torch.arange(16) % 4
    model = SmallCNN(num_classes=4, width=4)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean().item() == 1.0


def test_pickles_for_ddp_spawn():
    torch.manual_seed(0)
    model = SmallCNN(width=4).eval()
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(pickle.loads(pickle.dumps(model))(x), model(x))


def test_constructor_errors():
    with pytest.raises(ValueError, match="width must be >= 1, got 0"):
        SmallCNN(width=0)
    with pytest.raises(TypeError, match="num_classes must be an int >= 1, got 2.5"):
        SmallCNN(num_classes=2.5)
    with pytest.raises(ValueError, match="head kind must be one of"):
        SmallCNN(head="mlp")
