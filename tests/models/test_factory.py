import pytest
import torch

from lt_lightning.models import (
    BACKBONES,
    CifarResNet,
    NormedLinear,
    SmallCNN,
    TimmBackbone,
    create_backbone,
    resnet32,
)


def test_registry_names():
    assert set(BACKBONES) == {"small_cnn", "resnet20", "resnet32", "resnet44", "resnet56"}
    assert BACKBONES["small_cnn"] is SmallCNN and BACKBONES["resnet32"] is resnet32


@pytest.mark.parametrize(
    ("name", "blocks"), [("resnet20", 3), ("resnet32", 5), ("resnet44", 7), ("resnet56", 9), ("small_cnn", None)]
)
def test_our_backbones(name, blocks):
    model = create_backbone(name, num_classes=7, in_chans=1)
    assert model.num_classes == 7 and model.in_chans == 1
    if blocks is None:
        assert isinstance(model, SmallCNN)
    else:
        assert isinstance(model, CifarResNet) and model.num_blocks == (blocks, blocks, blocks)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 7)


def test_head_and_kwargs_are_passed_on():
    model = create_backbone("small_cnn", num_classes=3, in_chans=1, head="cosine", width=8)
    assert isinstance(model.head, NormedLinear) and model.num_features == 16
    model = create_backbone("resnet32", num_classes=10, head_bias_init=-2.0)
    assert torch.all(model.head.bias == -2.0)


@pytest.mark.parametrize("name", ["test_resnet", "timm/test_resnet"])
def test_timm_names(name):
    model = create_backbone(name, num_classes=4, in_chans=1, drop_rate=0.1)
    assert isinstance(model, TimmBackbone) and model.model_name == "test_resnet"
    assert model.model.drop_rate == 0.1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)


def test_errors():
    with pytest.raises(ValueError, match=r"backbone name must be one of \['resnet20', .*'small_cnn'\] or any timm"):
        create_backbone("resnet33", num_classes=10)
    with pytest.raises(ValueError, match=r"timm\.list_models\(\)"):
        create_backbone("zzzz_not_a_model", num_classes=10)
    with pytest.raises(ValueError, match="model_name 'timm/not_a_model' is not a timm model"):
        create_backbone("timm/not_a_model", num_classes=10)
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        create_backbone("resnet32", num_classes=0)
    with pytest.raises(ValueError, match="in_chans must be >= 1, got 0"):
        create_backbone("resnet32", num_classes=10, in_chans=0)
    with pytest.raises(TypeError, match="num_classes must be an int >= 1, got True"):
        create_backbone("resnet32", num_classes=True)
    with pytest.raises(TypeError, match="name must be a str, got NoneType"):
        create_backbone(None, num_classes=10)
