import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lt_lightning.models import CifarResNet, NormedLinear, resnet20, resnet32, resnet44, resnet56
from lt_lightning.models.cifar_resnet import BasicBlock, ShortcutA


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _hand_count(n: int, num_classes: int, in_chans: int = 3, bias: bool = True) -> int:
    """Parameters of a CIFAR ResNet with option-A shortcuts, counted by hand (3x3 convs without bias, BN w+b)."""

    def block(cin: int, cout: int) -> int:
        return 9 * cin * cout + 9 * cout * cout + 2 * 2 * cout

    stem = 9 * in_chans * 16 + 2 * 16
    stages = 0
    for cin, cout in ((16, 16), (16, 32), (32, 64)):
        stages += block(cin, cout) + (n - 1) * block(cout, cout)
    return stem + stages + 64 * num_classes + (num_classes if bias else 0)


@pytest.mark.parametrize(
    ("factory", "n", "expected"),
    [(resnet20, 3, 269_722), (resnet32, 5, 464_154), (resnet44, 7, 658_586), (resnet56, 9, 853_018)],
)
def test_parameter_counts(factory, n, expected):
    model = factory(num_classes=10)
    assert _n_params(model) == expected == _hand_count(n, 10)
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == n


def test_resnet32_is_the_046m_network():
    count = _n_params(resnet32(num_classes=10))
    assert 0.46e6 <= count <= 0.47e6
    # the cosine head drops the 10 biases
    assert _n_params(resnet32(num_classes=10, head="cosine")) == count - 10
    assert _n_params(resnet32(num_classes=100, in_chans=1)) == _hand_count(5, 100, in_chans=1)


@pytest.mark.parametrize(("in_chans", "size"), [(1, 8), (1, 28), (3, 32)])
def test_output_shapes(in_chans, size):
    model = resnet20(num_classes=7, in_chans=in_chans)
    x = torch.randn(2, in_chans, size, size)
    assert model.forward_features(x).shape == (2, 64)
    assert model(x).shape == (2, 7)


def test_resnet32_shapes_and_stage_resolutions():
    model = resnet32(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    stem = model.stem(x)
    l1 = model.layer1(stem)
    l2 = model.layer2(l1)
    l3 = model.layer3(l2)
    assert (stem.shape, l1.shape, l2.shape, l3.shape) == (
        (2, 16, 32, 32),
        (2, 16, 32, 32),
        (2, 32, 16, 16),
        (2, 64, 8, 8),
    )
    assert model(x).shape == (2, 10)


def test_option_a_shortcuts_are_parameter_free():
    model = resnet32()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) for c in convs)  # no 1x1 projection shortcut anywhere
    assert len(convs) == 1 + 2 * 15  # stem + two per block: 31 conv layers + 1 linear = ResNet-32
    shortcuts = [b.shortcut for b in model.modules() if isinstance(b, BasicBlock)]
    assert sum(isinstance(s, ShortcutA) for s in shortcuts) == 2  # entries of layer2 and layer3
    assert all(len(list(s.parameters())) == 0 for s in shortcuts)


def test_shortcut_a_subsamples_and_zero_pads_like_the_ldam_lambda():
    torch.manual_seed(0)
    x = torch.rand(2, 16, 8, 8) + 0.1  # strictly positive, so zeros can only come from padding
    out = ShortcutA(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    # LDAM: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4)) -> 8 zero channels on each side
    torch.testing.assert_close(out, F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8)))
    assert torch.all(out[:, :8] == 0) and torch.all(out[:, 24:] == 0)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])


def test_block_shortcut_output_is_zero_in_the_padded_half():
    model = resnet32().eval()
    seen = {}
    model.layer3[0].shortcut.register_forward_hook(lambda mod, inp, out: seen.update(inp=inp[0], out=out))
    model(torch.randn(2, 3, 32, 32))
    inp, out = seen["inp"], seen["out"]
    assert inp.shape == (2, 32, 16, 16) and out.shape == (2, 64, 8, 8)
    padded = torch.cat([out[:, :16], out[:, 48:]], dim=1)  # 32 of the 64 channels
    assert torch.all(padded == 0)
    assert (out[:, 16:48] != 0).any()
    torch.testing.assert_close(out[:, 16:48], inp[:, :, ::2, ::2])


def test_kaiming_normal_init():
    torch.manual_seed(0)
    model = resnet32(num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            fan_in = m.weight[0].numel()
            expected = math.sqrt(2.0 / fan_in)
            assert m.weight.std().item() == pytest.approx(expected, rel=0.2), m
            assert abs(m.weight.mean().item()) < 0.2 * expected
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_head_options():
    model = resnet32(num_classes=10, head="cosine")
    assert isinstance(model.head, NormedLinear)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.abs().max() <= 1.0 + 1e-6
    model = resnet32(num_classes=10, head_bias_init=-math.log(9))
    # the Kaiming re-init touches weights only: the constant bias survives
    torch.testing.assert_close(model.head.bias.detach(), torch.full((10,), -math.log(9)))


def test_forward_is_head_of_features_and_reset_head():
    torch.manual_seed(0)
    model = resnet20(num_classes=5).eval()
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))
    model.reset_head(nn.Linear(64, 2))
    assert model(x).shape == (3, 2) and model.num_classes == 2


def test_trunk_and_last_block_reproduce_forward_features():
    torch.manual_seed(0)
    model = resnet32(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    trunk = model.forward_trunk(x)
    assert trunk.shape == (2, 64, 8, 8)
    torch.testing.assert_close(model.forward_pool(model.layer3[-1](trunk)), model.forward_features(x))
    # the trunk runs exactly 4 of layer3's 5 blocks (BBN's trunk)
    ref = model.layer2(model.layer1(model.stem(x)))
    for block in model.layer3[:4]:
        ref = block(ref)
    torch.testing.assert_close(trunk, ref)


def test_make_branch_is_a_fresh_bbn_block():
    torch.manual_seed(0)
    model = resnet32(num_classes=10)
    assert model.supports_split
    cb, rb = model.make_branch(), model.make_branch()
    for branch in (cb, rb):
        assert isinstance(branch, BasicBlock)
        assert (branch.in_planes, branch.planes, branch.stride) == (64, 64, 1)
        assert isinstance(branch.shortcut, nn.Identity)
        assert _n_params(branch) == _n_params(model.layer3[-1]) == 2 * 9 * 64 * 64 + 4 * 64
        model_ptrs = {p.data_ptr() for p in model.parameters()}
        assert not model_ptrs & {p.data_ptr() for p in branch.parameters()}
        assert not torch.equal(branch.conv1.weight, model.layer3[-1].conv1.weight)
    assert not torch.equal(cb.conv1.weight, rb.conv1.weight)
    assert cb.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.2)

    # BBN forward: shared trunk, two branches, pooled 64-d features, shared Linear(128, C)
    classifier = nn.Linear(2 * model.num_features, 10)
    x_c, x_r = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    f_c = model.forward_pool(cb(model.forward_trunk(x_c)))
    f_r = model.forward_pool(rb(model.forward_trunk(x_r)))
    assert f_c.shape == f_r.shape == (4, 64)
    logits = classifier(torch.cat([f_c, f_r], dim=1))
    assert logits.shape == (4, 10)
    logits.sum().backward()
    assert cb.conv1.weight.grad is not None and rb.conv1.weight.grad is not None
    assert model.layer3[-1].conv1.weight.grad is None  # the model's own last block is not on BBN's path
    assert model.layer3[0].conv1.weight.grad is not None


def test_pickles_for_ddp_spawn():
    torch.manual_seed(0)
    model = resnet20(num_classes=3).eval()
    clone = pickle.loads(pickle.dumps(model))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(clone(x), model(x))


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"num_blocks must hold 3 stage lengths, got \(5, 5\)"):
        CifarResNet((5, 5))
    with pytest.raises(ValueError, match=r"num_blocks\[1\] must be >= 1, got 0"):
        CifarResNet((5, 0, 5))
    with pytest.raises(ValueError, match="in_chans must be >= 1, got 0"):
        resnet32(in_chans=0)
    with pytest.raises(ValueError, match="head kind must be one of"):
        resnet32(head="mlp")
    with pytest.raises(ValueError, match="planes must be >= in_planes=32"):
        ShortcutA(32, 16, 2)
