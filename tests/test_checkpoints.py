"""lt_lightning.checkpoints: rebuilding a module from a checkpoint's hyper-parameters."""

from __future__ import annotations

import timm

from lt_lightning.checkpoints import build_module
from lt_lightning.methods import LongTailClassifier


def test_rebuilding_never_fetches_pretrained_weights(monkeypatch):
    """A checkpoint of a run with ``backbone_kwargs.pretrained: true`` (Places-LT's ImageNet-pretrained ResNet) is
    rebuilt without asking timm for pretrained weights, which the checkpoint's replace (and which need network)."""
    asked = []
    create = timm.create_model

    def recording_create(*args, **kwargs):
        asked.append(kwargs.get("pretrained"))
        return create(*args, **{**kwargs, "pretrained": False})  # never fetch, whatever is asked

    monkeypatch.setattr(timm, "create_model", recording_create)
    backbone_kwargs = {"pretrained": True, "drop_rate": 0.1}
    hparams = {"class_counts": [3, 2], "backbone": "resnet18", "backbone_kwargs": backbone_kwargs}
    module = build_module("lt_lightning.methods.LongTailClassifier", hparams)
    assert asked == [False] and module.hparams.backbone_kwargs == {"pretrained": False, "drop_rate": 0.1}
    assert hparams["backbone_kwargs"]["pretrained"] is True  # the record itself is left as it was
    LongTailClassifier([3, 2], backbone="resnet18", backbone_kwargs=backbone_kwargs)  # the control: built directly
    assert asked == [False, True]
