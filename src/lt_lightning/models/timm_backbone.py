"""Any timm model as a :class:`~lt_lightning.models.heads.Backbone` (pooled timm features + our head).

BBN split for timm CNNs ("duplicate the last stage"): the trunk is the stem and every stage but the last, the
conventional branch is the model's own last stage followed by whatever timm runs between the stages and the
pooling (RegNet/ByobNet ``final_conv``, NFNet ``final_conv`` + ``final_act``, EfficientNet ``conv_head`` + ``bn2``,
ConvNeXt ``norm_pre``), and the re-balancing branch is a freshly initialised copy of that. The supported families
are those of :data:`SPLIT_FAMILIES`, and only when the head holds no parameters (pooling, flatten, dropout), so
both branches share nothing past the trunk.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from torch import Tensor, nn

from lt_lightning.models.heads import Backbone, HeadKind, _check_positive_int, make_head

__all__ = ["SPLIT_FAMILIES", "TimmBackbone", "resolve_timm_name"]

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


class _Recipe(NamedTuple):
    # Submodule paths, in the order timm's forward_features runs them (checked against its source, timm 1.0).
    stem: tuple[str, ...]
    stages: Callable[[nn.Module], list[str]]
    post: tuple[str, ...]


def _children_of(container: str) -> Callable[[nn.Module], list[str]]:
    def paths(model: nn.Module) -> list[str]:
        return [f"{container}.{name}" for name, _ in model.get_submodule(container).named_children()]

    return paths


def _attrs_matching(pattern: str) -> Callable[[nn.Module], list[str]]:
    def paths(model: nn.Module) -> list[str]:
        return [name for name, _ in model.named_children() if re.fullmatch(pattern, name)]

    return paths


# Keyed by the exact class (module + name): a subclass may change forward_features, so it is not trusted.
_RECIPES: dict[str, _Recipe] = {
    "timm.models.resnet.ResNet": _Recipe(("conv1", "bn1", "act1", "maxpool"), _attrs_matching(r"layer\d+"), ()),
    "timm.models.regnet.RegNet": _Recipe(("stem",), _attrs_matching(r"s\d+"), ("final_conv",)),
    "timm.models.byobnet.ByobNet": _Recipe(("stem",), _children_of("stages"), ("final_conv",)),
    "timm.models.cspnet.CspNet": _Recipe(("stem",), _children_of("stages"), ()),
    "timm.models.nfnet.NormFreeNet": _Recipe(("stem",), _children_of("stages"), ("final_conv", "final_act")),
    "timm.models.efficientnet.EfficientNet": _Recipe(
        ("conv_stem", "bn1"), _children_of("blocks"), ("conv_head", "bn2")
    ),
    "timm.models.convnext.ConvNeXt": _Recipe(("stem",), _children_of("stages"), ("norm_pre",)),
}

#: timm model classes whose trunk/branch split :class:`TimmBackbone` knows, with example model names.
SPLIT_FAMILIES: dict[str, str] = {
    "ResNet": "resnet10t, resnet18, resnet50, seresnet50, resnext50_32x4d, wide_resnet50_2",
    "RegNet": "regnetx_002, regnety_008",
    "ByobNet": "resnet33ts, resnext26ts, gernet_s, repvgg_a0",
    "CspNet": "cspresnet50, cspdarknet53",
    "NormFreeNet": "nf_resnet50, dm_nfnet_f0",
    "EfficientNet": "efficientnet_b0, tf_efficientnet_b0",
    "ConvNeXt": "convnext_atto with head_norm_first=True (the default head normalises after pooling)",
}


class _Split(NamedTuple):
    stem: tuple[str, ...]
    stages: tuple[str, ...]
    post: tuple[str, ...]


def _find_split(model: nn.Module) -> _Split | str:
    """The submodule paths of ``model``'s trunk/branch split, or why it has none."""
    cls = type(model)
    recipe = _RECIPES.get(f"{cls.__module__}.{cls.__qualname__}")
    if recipe is None:
        return f"its class {cls.__name__} is not one of the supported families"
    stages = tuple(recipe.stages(model))
    if not stages:
        return f"its class {cls.__name__} has no stages"
    # Identity placeholders (e.g. RegNet's final_conv, ConvNeXt's norm_pre by default) are left out of the branch.
    post = tuple(p for p in recipe.post if not isinstance(model.get_submodule(p), nn.Identity))
    covered = {id(p) for path in recipe.stem + stages + post for p in model.get_submodule(path).parameters()}
    outside = [name for name, p in model.named_parameters() if id(p) not in covered]
    if outside:
        # e.g. ConvNeXt's head LayerNorm after pooling, MobileNetV3's conv_head: the branches would share them.
        shown = ", ".join(outside[:3]) + (", ..." if len(outside) > 3 else "")
        return f"its head has parameters after the pooling ({shown}) that the two branches would share"
    return _Split(recipe.stem, stages, post)


class TimmBackbone(Backbone):
    """Wrap ``timm.create_model(model_name, num_classes=0, in_chans=in_chans, **kwargs)`` and add our head.

    With ``num_classes=0`` a timm model returns its pooled (pre-logits) features, so :meth:`forward_features`
    is the timm model's forward and ``num_features`` is its ``head_hidden_size`` (or ``num_features``).
    The head is built by :func:`~lt_lightning.models.heads.make_head` with PyTorch's default init.

    Trunk/branch split (BBN), for the families of :data:`SPLIT_FAMILIES` whose head holds no parameters
    (:attr:`supports_split`): :meth:`forward_trunk` runs the stem and all stages but the last, :attr:`last_block` is
    the last stage (plus the layers timm runs after it, before pooling) and :meth:`forward_pool` is timm's own
    pooling, so ``forward_pool(last_block(forward_trunk(x))) == forward_features(x)``.

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
        >>> model = TimmBackbone("test_resnet", num_classes=5, in_chans=1).eval()
        >>> x = torch.randn(2, 1, 32, 32)
        >>> model(x).shape, model.num_features, model.supports_split
        (torch.Size([2, 5]), 96, True)
        >>> trunk = model.forward_trunk(x)
        >>> torch.allclose(model.forward_pool(model.last_block(trunk)), model.forward_features(x), atol=1e-6)
        True
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
        # Kept to build a fresh twin in make_branch (never with weights: no download, no checkpoint).
        self._timm_kwargs = {k: v for k, v in kwargs.items() if k != "checkpoint_path"}
        # Models with a pre-logits layer (e.g. MobileNetV3) output head_hidden_size, not num_features.
        self.num_features = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        self.head = make_head(head, self.num_features, num_classes, bias_init=head_bias_init)
        # Submodule paths, not modules: nothing is registered twice and model surgery stays visible.
        self._split = _find_split(self.model)

    def forward_features(self, x: Tensor) -> Tensor:
        """timm's pooled features ``(B, num_features)``."""
        return self.model(x)

    # --- trunk/branch split (BBN) ---

    @property
    def supports_split(self) -> bool:
        """True for the families of :data:`SPLIT_FAMILIES` whose head holds no parameters."""
        return isinstance(self._split, _Split)

    def _require_split(self, method: str) -> _Split:
        if isinstance(self._split, _Split):
            return self._split
        families = "; ".join(f"{k} ({v})" for k, v in SPLIT_FAMILIES.items())
        raise NotImplementedError(
            f"TimmBackbone has no trunk/branch split (forward_trunk/last_block/make_branch, called {method}) for "
            f"{self.model_name!r}: {self._split}. Use a timm model of a supported family: {families}"
        )

    def _branch_of(self, model: nn.Module, split: _Split) -> nn.Module:
        modules = [model.get_submodule(p) for p in (split.stages[-1], *split.post)]
        return modules[0] if len(modules) == 1 else nn.Sequential(*modules)

    def forward_trunk(self, x: Tensor) -> Tensor:
        """The stem and every stage but the last: images ``(B, C, H, W)`` -> feature map ``(B, C', H', W')``.

        timm's ``set_grad_checkpointing`` is not applied here (it only affects ``forward_features``).
        """
        split = self._require_split("forward_trunk")
        for path in split.stem + split.stages[:-1]:
            x = self.model.get_submodule(path)(x)
        return x

    @property
    def last_block(self) -> nn.Module:
        """The model's own last stage, followed (in an ``nn.Sequential``) by the layers timm runs before pooling.

        For a ResNet this is ``model.layer4``; for an EfficientNet ``Sequential(blocks[-1], conv_head, bn2)``.
        """
        return self._branch_of(self.model, self._require_split("last_block"))

    def make_branch(self) -> nn.Module:
        """A freshly initialised copy of :attr:`last_block`, sharing no parameter with the model.

        It is taken from a twin model built by ``timm.create_model`` with the same name and arguments but
        ``pretrained=False``, so its init is exactly timm's for that family (e.g. Kaiming fan-out convolutions and
        zero-initialised last BatchNorm of every ResNet block, ConvNeXt's layer scale), which a
        ``reset_parameters()`` sweep over a deep copy would not reproduce. The rest of the twin is dropped. The
        branch is moved to the device and dtype of :attr:`last_block` and set to the backbone's train/eval mode.
        """
        import timm

        split = self._require_split("make_branch")
        twin = timm.create_model(
            self.model_name, pretrained=False, num_classes=0, in_chans=self.in_chans, **self._timm_kwargs
        )
        branch = self._branch_of(twin, split)
        reference = next(self.last_block.parameters(), None)
        if reference is not None:
            branch = branch.to(device=reference.device, dtype=reference.dtype)
        return branch.train(self.training)

    def forward_pool(self, feature_map: Tensor) -> Tensor:  # type: ignore[override]
        """timm's own pooling of a final feature map: ``model.forward_head(feature_map, pre_logits=True)``.

        For the supported families this is global pooling (average unless ``global_pool`` says otherwise),
        flatten and the head dropout (``drop_rate``, active in training only), with no parameters.
        """
        return self.model.forward_head(feature_map, pre_logits=True)
