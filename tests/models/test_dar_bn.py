"""DAR-BN: natural samples = plain BN on that subset, noise by its own statistics under no_grad, eval = plain BN."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lt_lightning.models import SmallCNN, convert_dar_bn, create_backbone, dar_bn_masks, revert_dar_bn
from lt_lightning.models.dar_bn import DARBatchNorm1d, DARBatchNorm2d, has_dar_bn

MASK = torch.tensor([False, True, False, False, True, False, True, False])


def pair(cls=nn.BatchNorm2d, channels=3, momentum=0.1):
    torch.manual_seed(0)
    plain = cls(channels, momentum=momentum)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 2.0)
        plain.bias.uniform_(-1.0, 1.0)
        plain.running_mean.uniform_(-0.5, 0.5)
    dar = convert_dar_bn(copy.deepcopy(plain))
    return plain, dar


def data(shape=(8, 3, 5, 5)):
    torch.manual_seed(1)
    x = torch.randn(shape) * 2 + 0.5
    x[MASK] = x[MASK] * 5 - 3  # noise samples with other statistics
    return x


def assert_same_buffers(a: nn.Module, b: nn.Module) -> None:
    for (name, x), (_, y) in zip(a.named_buffers(), b.named_buffers(), strict=True):
        assert torch.equal(x, y), name


def test_without_a_mask_or_in_eval_it_is_plain_batchnorm_bit_for_bit():
    plain, dar = pair()
    x = data()
    assert torch.equal(dar(x), plain(x))
    assert_same_buffers(dar, plain)
    with dar_bn_masks(torch.zeros(8, dtype=torch.bool)):  # a mask marking nothing: plain BN
        assert torch.equal(dar(x), plain(x))
    assert_same_buffers(dar, plain)
    plain.eval(), dar.eval()
    with dar_bn_masks(MASK):  # eval mode ignores the mask: running statistics for everyone
        assert torch.equal(dar(x), plain(x))


@pytest.mark.parametrize(
    ("cls", "shape"),
    [(nn.BatchNorm2d, (8, 3, 5, 5)), (nn.BatchNorm1d, (8, 3)), (nn.BatchNorm1d, (8, 3, 7))],
    ids=["2d", "1d", "1d_seq"],
)
def test_natural_samples_get_plain_batchnorm_of_their_subset_and_noise_its_own_statistics(cls, shape):
    plain, dar = pair(cls)
    x = data(shape)
    with dar_bn_masks(MASK):
        out = dar(x)
    expected = plain(x[~MASK])  # the natural subset through plain BN: outputs and running statistics
    assert torch.equal(out[~MASK], expected)
    assert_same_buffers(dar, plain)
    noise = x[MASK]
    dims = [0, *range(2, noise.ndim)]
    view = [1, -1] + [1] * (noise.ndim - 2)
    var = noise.var(dims, unbiased=False, keepdim=True)
    by_hand = (noise - noise.mean(dims, keepdim=True)) / torch.sqrt(var + 1e-5)
    by_hand = by_hand * plain.weight.view(view) + plain.bias.view(view)
    torch.testing.assert_close(out[MASK], by_hand, rtol=1e-5, atol=1e-5)


def test_noise_samples_leave_the_running_statistics_alone():
    _, dar = pair()
    before = [b.clone() for b in dar.buffers()]
    with dar_bn_masks(torch.ones(8, dtype=torch.bool)):  # every sample noise
        dar(data())
    for b, a in zip(dar.buffers(), before, strict=True):
        assert torch.equal(b, a)


def test_noise_only_batch_gives_no_gradient_to_gamma_beta_or_the_input():
    # What the reproduction computes: the whole noise branch under torch.no_grad().
    _, dar = pair()
    x = data().requires_grad_(True)
    with dar_bn_masks(torch.ones(8, dtype=torch.bool)):
        out = dar(x)
    assert not out.requires_grad  # nothing to differentiate: no path to gamma, beta or x
    # A mixed batch: gamma, beta and x get gradient from the natural samples only.
    with dar_bn_masks(MASK):
        out = dar(x)
    (out * torch.randn_like(out)).sum().backward()
    assert dar.weight.grad is not None and dar.weight.grad.abs().sum() > 0
    assert torch.equal(x.grad[MASK], torch.zeros_like(x.grad[MASK]))
    assert (x.grad[~MASK].abs().sum((1, 2, 3)) > 0).all()


def test_gamma_beta_gradient_equals_that_of_plain_bn_on_the_natural_subset():
    plain, dar = pair()
    x = data()
    weights = torch.randn(8, 3, 5, 5)
    with dar_bn_masks(MASK):
        (dar(x) * weights).sum().backward()
    (plain(x[~MASK]) * weights[~MASK]).sum().backward()
    torch.testing.assert_close(dar.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dar.bias.grad, plain.bias.grad, rtol=1e-5, atol=1e-6)


def test_converted_state_dict_loads_into_a_plain_model_and_back():
    model = SmallCNN(num_classes=4, in_chans=1, width=4)
    converted = convert_dar_bn(copy.deepcopy(model))
    assert sum(isinstance(m, DARBatchNorm2d) for m in converted.modules()) == 4
    assert list(converted.state_dict()) == list(model.state_dict())
    plain = SmallCNN(num_classes=4, in_chans=1, width=4)
    plain.load_state_dict(converted.state_dict(), strict=True)
    converted.load_state_dict(plain.state_dict(), strict=True)
    assert not has_dar_bn(revert_dar_bn(converted)) and type(converted.blocks[0][1]) is nn.BatchNorm2d


def test_every_provided_backbone_converts_and_timm_batchnormact_routes_drop_and_act():
    for name, kwargs in (("small_cnn", {"in_chans": 1}), ("resnet32", {})):
        assert has_dar_bn(convert_dar_bn(create_backbone(name, num_classes=3, **kwargs)))
    timm = pytest.importorskip("timm")
    from timm.layers import BatchNormAct2d

    from lt_lightning.models.dar_bn import DARBatchNormAct2d

    layer = BatchNormAct2d(3, act_layer=nn.ReLU)
    dar = convert_dar_bn(copy.deepcopy(layer))
    assert type(dar) is DARBatchNormAct2d
    x = data()
    with dar_bn_masks(MASK):
        out = dar(x)
    assert torch.equal(out[~MASK], layer(x[~MASK]))
    assert (out[MASK] >= 0).all()  # the noise branch is activated too
    net = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    assert has_dar_bn(convert_dar_bn(net))
    with dar_bn_masks(MASK):
        assert net(torch.randn(8, 3, 32, 32)).shape == (8, 3)


def test_streams_follow_the_entry_layer():
    # Two forwards in one context (BBN's x_c then x_r): the second call of the first layer switches to mask 2.
    plain, dar = pair()
    x1, x2 = data(), data() + 1
    second = torch.zeros(8, dtype=torch.bool)
    with dar_bn_masks(MASK, second):
        a, b = dar(x1), dar(x2)
    assert torch.equal(a[~MASK], plain(x1[~MASK]))
    assert torch.equal(b, plain(x2))  # no noise in the second stream: plain BN
    with dar_bn_masks(MASK), pytest.raises(RuntimeError, match="mask of 8 samples is in force but"):
        dar(torch.randn(4, 3, 5, 5))


def test_bad_models_are_named():
    with pytest.raises(ValueError, match="Linear has no BatchNorm layer"):
        convert_dar_bn(nn.Linear(3, 2))
    with pytest.raises(TypeError, match="SyncBatchNorm"):
        convert_dar_bn(nn.Sequential(nn.SyncBatchNorm(3)))
    with pytest.raises(TypeError, match="1-D bool tensor"), dar_bn_masks(torch.zeros(3)):
        pass
    assert isinstance(convert_dar_bn(nn.Sequential(nn.BatchNorm1d(3)))[0], DARBatchNorm1d)
