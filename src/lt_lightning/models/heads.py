"""The features/head interface shared by every backbone (``Backbone``) and the classifier heads.

``Backbone`` follows timm's ``forward_features`` / head split: methods that need more than ``model(x)`` (BBN's two
branches, classifier re-training, post-hoc logit adjustment) only talk to this interface, so they work on the CIFAR
ResNets, the small CNN and any timm model alike. Heads: the plain linear head and LDAM's cosine head
(``NormedLinear``).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Backbone", "HeadKind", "NormedLinear", "make_head", "normed_linear"]


def _check_positive_int(name: str, value: object) -> int:
    # bool is an int subclass; `num_classes=True` is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= 1, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


class Backbone(nn.Module):
    """Base class: a feature extractor ``x -> (B, D)`` followed by a replaceable head ``D -> num_classes``.

    Subclasses set ``num_features`` (D), ``num_classes`` and ``head`` and implement :meth:`forward_features`.
    CNNs that can be cut before their last block for BBN also implement :meth:`forward_trunk` and
    :meth:`make_branch`; then ``forward_pool(last_block(forward_trunk(x))) == forward_features(x)``.

    Attributes:
        num_features: dimension D of :meth:`forward_features`' output (the head's input).
        num_classes: number of outputs of the head.
        head: the classifier, ``D -> num_classes``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class Flat(Backbone):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.num_features, self.num_classes = 4, 2
        ...         self.head = nn.Linear(4, 2)
        ...     def forward_features(self, x):
        ...         return x.flatten(1)
        >>> model = Flat()
        >>> model(torch.zeros(3, 1, 2, 2)).shape
        torch.Size([3, 2])
        >>> model.reset_head(nn.Linear(4, 5)); model.num_classes
        5
        >>> model.supports_split
        False
    """

    num_features: int
    num_classes: int
    head: nn.Module

    def forward_features(self, x: Tensor) -> Tensor:
        """Return pooled features of shape ``(B, num_features)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward_features(x) -> (B, D) features")

    def forward_head(self, features: Tensor) -> Tensor:
        """Map features ``(B, D)`` to logits ``(B, num_classes)`` with :attr:`head`."""
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        """Logits: ``forward_head(forward_features(x))``."""
        return self.forward_head(self.forward_features(x))

    def reset_head(self, head: nn.Module) -> None:
        """Replace the classifier (e.g. with a cosine head, or for classifier re-training).

        ``num_classes`` follows the new head's ``out_features`` when it has one.

        Args:
            head: module mapping ``(B, num_features)`` to logits.

        Raises:
            TypeError: if ``head`` is not an ``nn.Module``.
            ValueError: if ``head.in_features`` exists and differs from ``num_features``.
        """
        if not isinstance(head, nn.Module):
            raise TypeError(f"head must be a torch.nn.Module, got {type(head).__name__}")
        in_features = getattr(head, "in_features", None)
        if isinstance(in_features, int) and in_features != self.num_features:
            raise ValueError(
                f"head.in_features must equal the backbone's num_features={self.num_features}, got {in_features}"
            )
        self.head = head
        out_features = getattr(head, "out_features", None)
        if isinstance(out_features, int):
            self.num_classes = out_features

    # --- optional trunk/branch split (BBN) ---

    @property
    def supports_split(self) -> bool:
        """Whether this backbone implements :meth:`forward_trunk`, :meth:`make_branch` and :attr:`last_block`."""
        cls = type(self)
        return (
            cls.forward_trunk is not Backbone.forward_trunk
            and cls.make_branch is not Backbone.make_branch
            and cls.last_block is not Backbone.last_block
        )

    @property
    def last_block(self) -> nn.Module:
        """The model's own last block (``forward_trunk`` output -> feature map); BBN uses it as one branch."""
        raise NotImplementedError(
            f"{type(self).__name__} has no trunk/branch split (forward_trunk/make_branch/last_block); "
            "use a backbone that implements them, e.g. resnet32 or small_cnn"
        )

    def forward_trunk(self, x: Tensor) -> Tensor:
        """Shared trunk: every layer but the last block, returning a feature map ``(B, C, H, W)``."""
        raise NotImplementedError(
            f"{type(self).__name__} has no trunk/branch split (forward_trunk/make_branch); "
            "use a backbone that implements them, e.g. resnet32 or small_cnn"
        )

    def make_branch(self) -> nn.Module:
        """A freshly initialised copy of the last block: ``forward_trunk`` output -> feature map."""
        raise NotImplementedError(
            f"{type(self).__name__} has no trunk/branch split (forward_trunk/make_branch); "
            "use a backbone that implements them, e.g. resnet32 or small_cnn"
        )

    @staticmethod
    def forward_pool(feature_map: Tensor) -> Tensor:
        """Global average pooling ``(B, C, H, W) -> (B, C)``, as used at the end of :meth:`forward_features`.

        Example:
            >>> import torch
            >>> Backbone.forward_pool(torch.arange(8.0).reshape(1, 2, 2, 2))
            tensor([[1.5000, 5.5000]])
        """
        return F.adaptive_avg_pool2d(feature_map, 1).flatten(1)


def _kaiming_init(module: nn.Module) -> None:
    # The LDAM repo's `_weights_init`: Kaiming-normal (fan_in, gain sqrt(2)) on conv and linear weights only;
    # biases and BatchNorm keep PyTorch's defaults, so a constant head bias (CB focal) survives.
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.kaiming_normal_(module.weight)


HeadKind = Literal["linear", "cosine"]
HEAD_KINDS: tuple[str, ...] = get_args(HeadKind)


def normed_linear(x: Tensor, weight: Tensor) -> Tensor:
    """Cosine similarity between each input row and each weight column (LDAM ``models/resnet_cifar.py:37-46``).

        z_j = < x / ||x||, W[:, j] / ||W[:, j]|| >

    Args:
        x: features ``(..., in_features)``.
        weight: ``(in_features, out_features)``; column ``j`` is class ``j``'s direction.

    Returns:
        Cosines in ``[-1, 1]``, shape ``(..., out_features)``. A zero row of ``x`` gives zeros.

    Example:
        >>> import torch
        >>> normed_linear(torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        tensor([[0.6000, 0.8000]])
    """
    return F.normalize(x, dim=-1) @ F.normalize(weight, dim=0)


class NormedLinear(nn.Module):
    """Bias-free cosine classifier of LDAM: ``z_j = <x/||x||, W_j/||W_j||>`` (see :func:`normed_linear`).

    The weight has shape ``(in_features, out_features)`` (transposed w.r.t. ``nn.Linear``, as in the LDAM repo) and
    is initialised ``uniform(-1, 1)`` then renormalised so that every column has unit L2 norm. The LDAM loss then
    multiplies these cosines by its scale ``s`` (30).

    Args:
        in_features: feature dimension D.
        out_features: number of classes.

    Example:
        >>> import torch
        >>> head = NormedLinear(4, 3)
        >>> z = head(torch.randn(2, 4))
        >>> z.shape, bool(z.abs().max() <= 1.0 + 1e-6), head.bias is None
        (torch.Size([2, 3]), True, True)
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = _check_positive_int("in_features", in_features)
        self.out_features = _check_positive_int("out_features", out_features)
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        # Exposed so code that inspects `head.bias` (e.g. for bias_init or logit adjustment) sees there is none.
        self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """LDAM's init: ``weight.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)`` (unit-norm columns)."""
        with torch.no_grad():
            self.weight.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def forward(self, x: Tensor) -> Tensor:
        """Cosines ``(..., out_features)`` for features ``(..., in_features)``."""
        return normed_linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias=False"


def make_head(kind: HeadKind, in_features: int, num_classes: int, bias_init: float | None = None) -> nn.Module:
    """Build a classifier head by name.

    Args:
        kind: ``"linear"`` (``nn.Linear`` with bias; CE, focal, VS, ...) or ``"cosine"`` (:class:`NormedLinear`,
            no bias; LDAM).
        in_features: feature dimension D.
        num_classes: number of classes C.
        bias_init: if given, the linear head's bias is set to this constant, e.g. ``-log(C - 1)`` for the
            class-balanced sigmoid focal loss (prior probability 1/C per class at the start of training).

    Raises:
        ValueError: unknown ``kind``, ``bias_init`` with the bias-free cosine head, or sizes < 1.

    Example:
        >>> import math
        >>> head = make_head("linear", 8, 10, bias_init=-math.log(9))
        >>> round(float(head.bias.detach()[0]), 4)
        -2.1972
        >>> type(make_head("cosine", 8, 10)).__name__
        'NormedLinear'
    """
    _check_positive_int("in_features", in_features)
    _check_positive_int("num_classes", num_classes)
    if kind == "linear":
        head = nn.Linear(in_features, num_classes, bias=True)
        if bias_init is not None:
            nn.init.constant_(head.bias, float(bias_init))
        return head
    if kind == "cosine":
        if bias_init is not None:
            raise ValueError(f"bias_init must be None for the bias-free 'cosine' head, got {bias_init!r}")
        return NormedLinear(in_features, num_classes)
    raise ValueError(f"head kind must be one of {list(HEAD_KINDS)}, got {kind!r}")
