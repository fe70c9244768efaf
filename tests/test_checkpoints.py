"""lt_lightning.checkpoints: rebuilding a module from a checkpoint's hyper-parameters."""

from __future__ import annotations

import pytest

from lt_lightning.checkpoints import build_module


def test_rebuilding_never_fetches_pretrained_weights(monkeypatch):
    """A checkpoint of a run with ``backbone_kwargs.pretrained: true`` (Places-LT's ImageNet-pretrained ResNet)
    rebuilds without fetching weights the checkpoint's replace: offline, the fetch would fail."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backbone_kwargs = {"pretrained": True, "drop_rate": 0.1}
    hparams = {"class_counts": [3, 2], "backbone": "resnet18", "backbone_kwargs": backbone_kwargs}
    module = build_module("lt_lightning.methods.LongTailClassifier", hparams)
    assert module.hparams.backbone_kwargs == {"pretrained": False, "drop_rate": 0.1}
    assert hparams["backbone_kwargs"]["pretrained"] is True  # the record itself is left as it was


def test_pretrained_fetch_is_what_was_avoided(monkeypatch):
    """The control: built directly with pretrained weights and no network, the same module cannot be made."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lt_lightning.methods import LongTailClassifier

    with pytest.raises(Exception):  # noqa: B017 - timm / huggingface_hub raise their own offline errors
        LongTailClassifier([3, 2], backbone="resnet18", backbone_kwargs={"pretrained": True})
