"""Any timm model as a :class:`~lt_lightning.models.heads.Backbone` (pooled timm features + our head)."""

from __future__ import annotations

import difflib
from typing import Any

from torch import Tensor

from lt_lightning.models.heads import Backbone, HeadKind, _check_positive_int, make_head

__all__ = ["TimmBackbone", "resolve_timm_name"]

# timm is imported inside the functions: it costs seconds at import time, and most runs (the embedded default,
# the CIFAR ResNets) never need it.
_TIMM_PREFIX = "timm/"
# timm resolves these sources itself (Hugging Face hub, a local folder); is_model() does not know them.
_TIMM_SOURCES = ("hf-hub:", "hf_hub:", "local-dir:")


def resolve_timm_name(model_name: str) -> str | None:
    """Return the name to pass to ``timm.create_model`` if timm knows ``model_name``, else ``None``.

    A leading ``"timm/"`` is stripped; a pretrained tag (``"resnet18.a1_in1k"``) is accepted.

    Example:
        >>> resolve_timm_name("timm/resnet18"), resolve_timm_name("resnet18.a1_in1k"), resolve_timm_name("nope")
        ('resnet18', 'resnet18.a1_in1k', None)
    """
    import timm

    name = model_name.removeprefix(_TIMM_PREFIX)
    if name.startswith(_TIMM_SOURCES) or timm.is_model(name):
        return name
    return None


class TimmBackbone(Backbone):
    """Wrap ``timm.create_model(model_name, num_classes=0, in_chans=in_chans, **kwargs)`` and add our head.

    With ``num_classes=0`` a timm model returns its pooled (pre-logits) features, so :meth:`forward_features`
    is the timm model's forward and ``num_features`` is its ``head_hidden_size`` (or ``num_features``).
    The head is built by :func:`~lt_lightning.models.heads.make_head` with PyTorch's default init. No trunk/branch
    split: BBN needs a backbone that implements ``forward_trunk`` / ``make_branch``.

    Args:
        model_name: a timm model name (``timm.list_models()``), optionally prefixed by ``"timm/"``.
        num_classes: number of classes C.
        in_chans: input channels (timm adapts the stem, also for pretrained weights).
        head: ``"linear"`` or ``"cosine"``.
        pretrained: load timm's pretrained weights (downloads them; needs the network or a local cache).
        head_bias_init: constant initial bias of a linear head.
        **kwargs: passed to ``timm.create_model`` (e.g. ``drop_rate``, ``img_size``).

    Raises:
        ValueError: if timm does not know ``model_name``.

    Example:
        >>> import torch
        >>> model = TimmBackbone("test_resnet", num_classes=5, in_chans=1)
        >>> model(torch.randn(2, 1, 32, 32)).shape, model.num_features
        (torch.Size([2, 5]), 96)
    """

    def __init__(
        self,
        model_name: str,
        num_classes: int,
        in_chans: int = 3,
        head: HeadKind = "linear",
        pretrained: bool = False,
        head_bias_init: float | None = None,
        **kwargs: Any,
    ) -> None:
        import timm

        super().__init__()
        if not isinstance(model_name, str):
            raise TypeError(f"model_name must be a str, got {type(model_name).__name__}")
        self.num_classes = _check_positive_int("num_classes", num_classes)
        self.in_chans = _check_positive_int("in_chans", in_chans)
        timm_name = resolve_timm_name(model_name)
        if timm_name is None:
            close = difflib.get_close_matches(model_name.removeprefix(_TIMM_PREFIX), timm.list_models(), n=3)
            hint = f" (did you mean {close}?)" if close else ""
            raise ValueError(
                f"model_name {model_name!r} is not a timm model{hint}; "
                "search the available names with timm.list_models('*pattern*')"
            )
        self.model_name = timm_name
        self.model = timm.create_model(timm_name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **kwargs)
        # Models with a pre-logits layer (e.g. MobileNetV3) output head_hidden_size, not num_features.
        self.num_features = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        self.head = make_head(head, self.num_features, num_classes, bias_init=head_bias_init)

    def forward_features(self, x: Tensor) -> Tensor:
        """timm's pooled features ``(B, num_features)``."""
        return self.model(x)
