"""Backbones by name: ours first, then any timm model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lt_lightning.models.cifar_resnet import resnet20, resnet32, resnet44, resnet56
from lt_lightning.models.heads import Backbone, HeadKind, _check_positive_int
from lt_lightning.models.small_cnn import SmallCNN
from lt_lightning.models.timm_backbone import TimmBackbone, resolve_timm_name

__all__ = ["BACKBONES", "create_backbone"]

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "small_cnn": SmallCNN,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
}


def create_backbone(
    name: str, num_classes: int, in_chans: int = 3, head: HeadKind = "linear", **kwargs: Any
) -> Backbone:
    """Build a backbone by name.

    Resolution order: a key of :data:`BACKBONES`; then a timm model name (with or without a ``"timm/"`` prefix),
    wrapped in :class:`~lt_lightning.models.timm_backbone.TimmBackbone`.

    Args:
        name: ``"small_cnn"``, ``"resnet20"``, ``"resnet32"``, ``"resnet44"``, ``"resnet56"`` or a timm name.
        num_classes: number of classes C (>= 1).
        in_chans: input channels (>= 1).
        head: ``"linear"`` or ``"cosine"``.
        **kwargs: passed to the constructor (e.g. ``width`` for ``small_cnn``, ``head_bias_init``,
            ``pretrained`` or timm's ``drop_rate`` for timm models).

    Raises:
        ValueError: unknown name, or ``num_classes`` / ``in_chans`` < 1.

    Example:
        >>> model = create_backbone("resnet32", num_classes=100, head="cosine")
        >>> type(model).__name__, type(model.head).__name__, model.num_classes
        ('CifarResNet', 'NormedLinear', 100)
        >>> type(create_backbone("timm/test_resnet", num_classes=2, in_chans=1)).__name__
        'TimmBackbone'
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_chans", in_chans)
    if name in BACKBONES:
        return BACKBONES[name](num_classes=num_classes, in_chans=in_chans, head=head, **kwargs)
    if name.startswith("timm/") or resolve_timm_name(name) is not None:
        return TimmBackbone(name, num_classes=num_classes, in_chans=in_chans, head=head, **kwargs)
    raise ValueError(
        f"backbone name must be one of {sorted(BACKBONES)} or any timm model name (timm.list_models()), got {name!r}"
    )
