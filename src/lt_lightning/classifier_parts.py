"""The features / last-layer split of a trained classifier, for the methods that change only its last layer.

Second-stage methods (cRT, LWS, MARC) and post-hoc ones (τ-normalisation, logit adjustment) need two things of a
trained model: its features ``f(x)`` (B, D) and the head mapping them to logits. :func:`classifier_parts` finds them:

1. the module's own hooks ``classifier_features(x)`` and ``classifier_head()`` (every lt_lightning method has them;
   BBN's are both branches' features and its shared classifier), else
2. for a foreign model, a head layer under one of the usual names (:data:`HEAD_NAMES`: ``fc``, ``head``,
   ``classifier``, also under ``backbone.`` / ``model.`` / ``net.``), whose input is captured by a forward pre-hook
   while the model runs; that is exact whenever the logits are the head's output, as in torchvision and timm models.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Foreign(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.body, self.fc = nn.Flatten(), nn.Linear(4, 3)
    ...     def forward(self, x):
    ...         return self.fc(self.body(x))
    >>> parts = classifier_parts(Foreign())
    >>> parts.features(torch.ones(2, 1, 2, 2)).shape, type(parts.head).__name__
    (torch.Size([2, 4]), 'Linear')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from lt_lightning.models.heads import NormedLinear

HEAD_NAMES: tuple[str, ...] = tuple(
    f"{prefix}{name}" for prefix in ("", "backbone.", "model.", "net.") for name in ("fc", "head", "classifier")
)


@dataclass(frozen=True)
class ClassifierParts:
    """``features(x) -> (B, D)`` and ``head`` with ``head(features(x))`` equal to the model's inference logits."""

    features: Callable[[Tensor], Tensor]
    head: nn.Module


def classifier_parts(module: nn.Module) -> ClassifierParts:
    """The features function and the head of ``module`` (see the module docstring for how they are found).

    Raises:
        TypeError: ``module`` has neither the two hooks nor a ``nn.Linear`` / ``NormedLinear`` head at a known name.
    """
    features = getattr(module, "classifier_features", None)
    head_of = getattr(module, "classifier_head", None)
    if callable(features) and callable(head_of):
        return ClassifierParts(features, head_of())
    for name in HEAD_NAMES:
        try:
            head = module.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(head, nn.Linear | NormedLinear):
            return ClassifierParts(_captured_input(module, head), head)
    raise TypeError(
        f"{type(module).__name__} exposes no classifier split: give it the methods classifier_features(x) -> (B, D) "
        f"and classifier_head() -> nn.Module (lt_lightning's LongTailClassifier has both), or name its last "
        f"nn.Linear one of {list(HEAD_NAMES)}"
    )


def _captured_input(module: nn.Module, head: nn.Module) -> Callable[[Tensor], Tensor]:
    """``x -> the input of head`` while ``module(x)`` runs (a forward pre-hook, removed after each call)."""

    def features(x: Tensor) -> Tensor:
        seen: list[Tensor] = []
        handle = head.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
        try:
            module(x)
        finally:
            handle.remove()
        if len(seen) != 1:
            raise RuntimeError(f"the head {type(head).__name__} ran {len(seen)} times in one forward; expected once")
        return seen[0]

    return features


def head_weight(head: nn.Module) -> tuple[Tensor, Tensor | None]:
    """The effective class weight rows ``W`` (C, D) and bias (C,) or None of a linear or cosine head.

    For LDAM's cosine head (:class:`NormedLinear`) the rows are the unit-norm class directions and there is no bias.

    Raises:
        TypeError: any other head (its logits are not ``W f + b``).

    Example:
        >>> from torch import nn
        >>> weight, bias = head_weight(nn.Linear(4, 3))
        >>> tuple(weight.shape), tuple(bias.shape)
        ((3, 4), (3,))
    """
    if isinstance(head, nn.Linear):
        return head.weight, head.bias
    if isinstance(head, NormedLinear):
        return F.normalize(head.weight, dim=0).t(), None
    raise TypeError(
        f"the model's head is a {type(head).__name__}; this method needs a linear head (nn.Linear) or LDAM's cosine "
        "head (NormedLinear), whose logits are W f + b"
    )
