"""Heads that train a few numbers on top of a frozen classifier head: LWS and MARC.

Both wrap the trained head ``base`` (frozen: no gradient, never updated) and start as the identity, so before the
first step their logits equal the frozen model's exactly:

- :class:`LearnableWeightScaling` (LWS, Kang et al. 2020): ``z_c = s_c · base(f)_c``, the scale multiplying the whole
  logit, bias included (the official ``x = self.fc(x); x *= self.scales``); ``s = 1`` at start, C parameters.
- :class:`MarginCalibration` (MARC, Wang et al. 2022): ``z_c = ω_c · base(f)_c + β_c · ||w_c||``, with ``||w_c||`` the
  norm of class c's row of the frozen head (a constant: it grows with the class size under imbalance, so β is a margin
  in units of that norm); ``ω = 1``, ``β = 0`` at start, 2C parameters.

Example:
    >>> import torch
    >>> from torch import nn
    >>> base = nn.Linear(4, 3)
    >>> f = torch.randn(2, 4)
    >>> torch.equal(LearnableWeightScaling(base)(f), base(f)), torch.equal(MarginCalibration(base)(f), base(f))
    (True, True)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lt_lightning.classifier_parts import head_weight
from lt_lightning.functional.posthoc import marc_logits


def _num_classes(base: nn.Module) -> int:
    out_features = getattr(base, "out_features", None)
    if not isinstance(out_features, int):
        raise TypeError(f"the frozen head {type(base).__name__} has no integer out_features (the number of classes)")
    return out_features


class _FrozenBaseHead(nn.Module):
    """Holds the frozen head; subclasses add the trainable numbers and ``calibrate(logits)``."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.out_features = _num_classes(base)
        self.in_features = getattr(base, "in_features", None)

    def forward(self, features: Tensor) -> Tensor:
        with torch.no_grad():  # the frozen head's logits are constants of the few trained numbers
            logits = self.base(features)
        return self.calibrate(logits)

    def calibrate(self, logits: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class LearnableWeightScaling(_FrozenBaseHead):
    """LWS: ``z_c = s_c · base(f)_c``, ``s`` (C,) initialised to ones; only ``s`` trains.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> head = LearnableWeightScaling(nn.Linear(4, 3))
        >>> [n for n, p in head.named_parameters() if p.requires_grad]
        ['scales']
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__(base)
        self.scales = nn.Parameter(torch.ones(self.out_features))

    def calibrate(self, logits: Tensor) -> Tensor:
        return logits * self.scales


class MarginCalibration(_FrozenBaseHead):
    """MARC: ``z_c = ω_c · base(f)_c + β_c · ||w_c||``, ``ω`` = 1 and ``β`` = 0 at start; only ω and β train.

    ``||w_c||`` (buffer ``weight_norms``) are the row norms of the frozen head's weight (``nn.Linear``; for LDAM's
    cosine head the rows are unit vectors, so β is then a plain per-class bias).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> base = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = base.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
        >>> head = MarginCalibration(base)
        >>> head.weight_norms
        tensor([5., 2.])
        >>> with torch.no_grad():
        ...     _ = head.omega.zero_(), head.beta.fill_(1.0)
        >>> head(torch.randn(3, 2))[0]
        tensor([5., 2.], grad_fn=<SelectBackward0>)
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__(base)
        weight, _ = head_weight(base)
        self.register_buffer("weight_norms", weight.detach().norm(dim=1).clone())
        self.omega = nn.Parameter(torch.ones(self.out_features))
        self.beta = nn.Parameter(torch.zeros(self.out_features))

    def calibrate(self, logits: Tensor) -> Tensor:
        return marc_logits(logits, self.omega, self.beta, self.weight_norms)
