import math

import pytest
import timm
import torch
from torch import nn

from lt_lightning.models import NormedLinear, TimmBackbone
from lt_lightning.models.timm_backbone import resolve_timm_name

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


def test_no_trunk_branch_split():
    model = TimmBackbone(TINY, num_classes=2)
    assert model.supports_split is False
    with pytest.raises(NotImplementedError, match="TimmBackbone has no trunk/branch split"):
        model.make_branch()


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
