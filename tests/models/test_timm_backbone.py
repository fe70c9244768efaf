import math
import pickle

import pytest
import timm
import torch
from torch import nn

from lt_lightning.models import NormedLinear, TimmBackbone
from lt_lightning.models.timm_backbone import SPLIT_FAMILIES, resolve_timm_name

# timm's own test models: tiny, random init only; pretrained weights are never requested here (no network).
TINY = "test_resnet"


@pytest.mark.parametrize("in_chans", [1, 3])
def test_tiny_timm_model_shapes(in_chans):
    torch.manual_seed(0)
    model = TimmBackbone(TINY, num_classes=6, in_chans=in_chans).eval()
    assert model.num_features == model.model.num_features == 96
    assert isinstance(model.head, nn.Linear) and (model.head.in_features, model.head.out_features) == (96, 6)
    x = torch.randn(2, in_chans, 32, 32)
    features = model.forward_features(x)
    assert features.shape == (2, 96)
    assert model(x).shape == (2, 6)
    torch.testing.assert_close(model(x), model.head(features))
    # the stem follows in_chans
    first_conv = next(m for m in model.model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == in_chans


def test_features_are_timm_pooled_features():
    torch.manual_seed(0)
    model = TimmBackbone(TINY, num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    # timm: forward_head(pre_logits=True) pools the forward_features map
    expected = model.model.forward_head(model.model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(model.forward_features(x), expected)


def test_num_features_follows_head_hidden_size():
    # MobileNetV3 has a 1x1 conv "pre-logits" layer: pooled features are head_hidden_size (1024), not 288.
    model = TimmBackbone("mobilenetv3_small_050", num_classes=4, in_chans=1).eval()
    assert (model.model.num_features, model.num_features) == (288, 1024)
    assert model.forward_features(torch.randn(2, 1, 32, 32)).shape == (2, 1024)
    assert model.head.in_features == 1024


def test_head_options_and_reset_head():
    model = TimmBackbone(TINY, num_classes=10, head="cosine")
    assert isinstance(model.head, NormedLinear) and model.head.in_features == 96
    model = TimmBackbone(TINY, num_classes=10, head_bias_init=-math.log(9))
    torch.testing.assert_close(model.head.bias.detach(), torch.full((10,), -math.log(9)))
    model.reset_head(nn.Linear(96, 2))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2) and model.num_classes == 2


def test_kwargs_reach_timm_and_prefix_is_stripped():
    model = TimmBackbone(f"timm/{TINY}", num_classes=2, drop_rate=0.25)
    assert model.model_name == TINY
    assert model.model.drop_rate == 0.25


def test_resolve_timm_name():
    assert resolve_timm_name(TINY) == TINY
    assert resolve_timm_name(f"timm/{TINY}") == TINY
    assert resolve_timm_name("resnet18.a1_in1k") == "resnet18.a1_in1k"  # a pretrained tag (nothing is loaded)
    assert resolve_timm_name("resnet32") is None  # ours, not timm's
    assert not timm.is_model("resnet32")


def test_unknown_model_error():
    with pytest.raises(ValueError, match=r"'test_resnett' is not a timm model \(did you mean \['test_resnet'"):
        TimmBackbone("test_resnett", num_classes=2)
    with pytest.raises(ValueError, match=r"'zzzz_not_a_model'.*timm\.list_models\('\*pattern\*'\)"):
        TimmBackbone("zzzz_not_a_model", num_classes=2)
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        TimmBackbone(TINY, num_classes=0)
    with pytest.raises(TypeError, match="model_name must be a str, got int"):
        TimmBackbone(3, num_classes=2)


# ----------------------------------------------------------------- trunk/branch split (BBN)
# One tiny model per supported family (random init, no download), with the module(s) the last block must be, the
# trunk's output shape on a 32x32 input (output stride 16 before the last stage of these models, 32 after it) and
# the input channels tried (both for the ResNets; one each elsewhere, to keep the file fast).
SPLIT_CASES = {
    "test_resnet": ({}, lambda m: [m.layer4], (192, 2, 2), (1, 3)),
    "resnet10t": ({}, lambda m: [m.layer4], (256, 2, 2), (1, 3)),
    "regnetx_002": ({}, lambda m: [m.s4], (152, 2, 2), (1,)),
    "test_byobnet": ({}, lambda m: [m.stages[-1]], (128, 2, 2), (3,)),  # its final_conv is an Identity: left out
    "cs3darknet_s": ({}, lambda m: [m.stages[-1]], (256, 2, 2), (1,)),
    "test_nfnet": ({}, lambda m: [m.stages[-1], m.final_conv, m.final_act], (96, 2, 2), (3,)),
    "test_efficientnet": ({}, lambda m: [m.blocks[-1], m.conv_head, m.bn2], (48, 2, 2), (1,)),
    "test_convnext": ({"head_norm_first": True}, lambda m: [m.stages[-1], m.norm_pre], (48, 2, 2), (3,)),
}


@pytest.mark.parametrize(("name", "in_chans"), [(name, c) for name, case in SPLIT_CASES.items() for c in case[3]])
def test_split_path_equals_forward_features(name, in_chans):
    kwargs, own_modules, trunk_shape, _ = SPLIT_CASES[name]
    torch.manual_seed(0)
    model = TimmBackbone(name, num_classes=4, in_chans=in_chans, **kwargs).eval()
    assert model.supports_split is True
    x = torch.randn(2, in_chans, 32, 32)
    with torch.no_grad():
        trunk = model.forward_trunk(x)
        assert trunk.shape == (2, *trunk_shape)
        last_map = model.last_block(trunk)
        assert last_map.shape == (2, model.num_features, 1, 1)
        torch.testing.assert_close(model.forward_pool(last_map), model.forward_features(x))
    # last_block is the model's own modules (the last stage, then what timm runs before pooling), not copies.
    expected = own_modules(model.model)
    block = model.last_block
    actual = [block] if len(expected) == 1 else list(block)
    assert len(actual) == len(expected) and all(a is e for a, e in zip(actual, expected, strict=True))


def test_resnet_trunk_is_stem_and_first_three_stages():
    torch.manual_seed(0)
    model = TimmBackbone("resnet10t", num_classes=2).eval()
    net, x = model.model, torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = net.layer3(net.layer2(net.layer1(net.maxpool(net.act1(net.bn1(net.conv1(x)))))))
        torch.testing.assert_close(model.forward_trunk(x), expected)


def test_forward_pool_is_timms_pooling():
    fmap = torch.randn(2, 512, 3, 3)
    avg = TimmBackbone("resnet10t", num_classes=2).eval()
    torch.testing.assert_close(avg.forward_pool(fmap), fmap.mean(dim=(2, 3)))
    # a non-default timm global_pool is followed, so the split still equals forward_features
    torch.manual_seed(0)
    mx = TimmBackbone("resnet10t", num_classes=2, global_pool="max").eval()
    torch.testing.assert_close(mx.forward_pool(fmap), fmap.amax(dim=(2, 3)))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(mx.forward_pool(mx.last_block(mx.forward_trunk(x))), mx.forward_features(x))


def test_make_branch_is_a_fresh_timm_initialised_copy():
    torch.manual_seed(0)
    model = TimmBackbone("resnet10t", num_classes=2)
    last, branch = model.last_block, model.make_branch()
    assert type(branch) is type(last) and branch is not last
    # same architecture ...
    assert {k: v.shape for k, v in branch.state_dict().items()} == {k: v.shape for k, v in last.state_dict().items()}
    # ... but no shared storage with anything in the backbone, and new values
    own = {p.data_ptr() for p in model.parameters()}
    assert not any(p.data_ptr() in own for p in branch.parameters())
    assert not torch.equal(branch[0].conv1.weight, last[0].conv1.weight)
    # timm's ResNet init, not PyTorch's default: Kaiming-normal fan_out convs, std sqrt(2 / (512 * 3 * 3)) = 0.0208
    # (PyTorch's kaiming_uniform(a=sqrt(5)) would give 1 / sqrt(3 * 256 * 9) = 0.0120), and zero_init_last
    # zeroes the last BatchNorm scale of every block.
    assert branch[0].conv1.weight.std().item() == pytest.approx(math.sqrt(2 / (512 * 9)), rel=0.02)
    assert all(torch.count_nonzero(block.bn2.weight) == 0 for block in branch)
    # a second branch is yet another draw
    assert not torch.equal(model.make_branch()[0].conv1.weight, branch[0].conv1.weight)


def test_make_branch_follows_dtype_and_mode_and_is_independent():
    torch.manual_seed(0)
    model = TimmBackbone("test_efficientnet", num_classes=2).double().eval()
    branch = model.make_branch()
    assert isinstance(branch, nn.Sequential) and len(branch) == 3  # last stage, conv_head, bn2
    assert all(p.dtype == torch.float64 for p in branch.parameters())
    assert not branch.training
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    model.forward_pool(branch(model.forward_trunk(x))).sum().backward()
    # the gradient reaches the trunk and the branch, never the model's own last stage/conv_head/bn2
    assert model.model.conv_stem.weight.grad is not None
    assert all(p.grad is not None for p in branch.parameters())
    assert all(p.grad is None for p in model.last_block.parameters())


@pytest.mark.parametrize(
    ("name", "kwargs", "reason"),
    [
        ("mobilenetv3_small_050", {}, "its class MobileNetV3 is not one of the supported families"),
        ("test_vit", {}, "its class VisionTransformer is not one of the supported families"),
        # ConvNeXt's default head normalises after pooling: both branches would share that LayerNorm
        (
            "test_convnext",
            {},
            r"its head has parameters after the pooling \(head\.norm\.weight, head\.norm\.bias\) that the two branches "
            r"would share",
        ),
    ],
)
def test_unsupported_models_have_no_split(name, kwargs, reason):
    model = TimmBackbone(name, num_classes=2, **kwargs).eval()
    assert model.supports_split is False
    prefix = r"TimmBackbone has no trunk/branch split \(forward_trunk/last_block/make_branch, called "
    tail = rf"for '{name}': {reason}\. Use a timm model of a supported family: ResNet \(resnet10t"
    with pytest.raises(NotImplementedError, match=prefix + r"forward_trunk\) " + tail):
        model.forward_trunk(torch.zeros(1, 3, 32, 32))
    with pytest.raises(NotImplementedError, match=prefix + r"last_block\) " + tail):
        _ = model.last_block
    with pytest.raises(NotImplementedError, match=prefix + r"make_branch\) " + tail):
        model.make_branch()
    # the plain classifier still works
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)


def test_split_families_are_listed_and_survive_pickling():
    assert set(SPLIT_FAMILIES) == {"ResNet", "RegNet", "ByobNet", "CspNet", "NormFreeNet", "EfficientNet", "ConvNeXt"}
    model = TimmBackbone(TINY, num_classes=2).eval()
    clone = pickle.loads(pickle.dumps(model))  # ddp_spawn pickles the module
    assert clone.supports_split and clone.last_block is clone.model.layer4
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            clone.forward_pool(clone.last_block(clone.forward_trunk(x))), model.forward_features(x)
        )


def test_bbn_on_a_timm_resnet():
    from lt_lightning.methods import BBN

    torch.manual_seed(0)
    model = BBN(class_counts=(20, 10, 5), backbone="resnet10t", in_chans=3).eval()
    net = model.backbone
    assert isinstance(net, TimmBackbone) and isinstance(net.head, nn.Identity)
    assert (model.classifier.in_features, model.classifier.out_features) == (2 * 512, 3)
    own = {p.data_ptr() for p in net.parameters()}
    assert not any(p.data_ptr() in own for p in model.rb_branch.parameters())
    x_c, x_r = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x_c).shape == (2, 3)
        assert model.mixed_logits(x_c, x_r, alpha=0.3).shape == (2, 3)
        # the conventional branch is the timm model itself; inference is the training mix at alpha = 0.5
        torch.testing.assert_close(model.conventional_features(x_c), net.forward_features(x_c))
        torch.testing.assert_close(model.mixed_logits(x_c, x_c, alpha=0.5), model(x_c))
