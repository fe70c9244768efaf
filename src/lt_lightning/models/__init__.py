"""Backbones with one features/head interface: CIFAR ResNets, a small CNN, any timm model; classifier heads."""

from lt_lightning.models.cifar_resnet import CifarResNet, resnet20, resnet32, resnet44, resnet56
from lt_lightning.models.dar_bn import convert_dar_bn, dar_bn_masks, revert_dar_bn
from lt_lightning.models.factory import BACKBONES, create_backbone
from lt_lightning.models.heads import Backbone, NormedLinear, make_head
from lt_lightning.models.small_cnn import SmallCNN
from lt_lightning.models.timm_backbone import TimmBackbone

__all__ = [
    "BACKBONES",
    "Backbone",
    "CifarResNet",
    "NormedLinear",
    "SmallCNN",
    "TimmBackbone",
    "convert_dar_bn",
    "create_backbone",
    "dar_bn_masks",
    "make_head",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "revert_dar_bn",
]
