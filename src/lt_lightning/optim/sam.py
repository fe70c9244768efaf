"""Sharpness-aware minimisation (Foret et al. 2021) around any base optimizer, as used by SAM-LT (METHODS.md §5).

One SAM step on a batch::

    g     = grad L(w)                                   (first forward / backward)
    e     = rho * g / (||g||_2 + 1e-12)                  (global L2 norm over all parameters)
            rho * w^2 * g / (||w * g||_2 + 1e-12)        (adaptive, ASAM: element-wise scaled by |w|)
    g_SAM = grad L(w + e)                                (second forward / backward on the same batch)
    w    <- base_step(w, g_SAM)                          (w restored first; momentum etc. see g_SAM only)

Use it in plain PyTorch with a closure, or call :meth:`SAM.first_step` / :meth:`SAM.second_step` yourself (what
:class:`~lt_lightning.methods.SAMClassifier` does in Lightning's manual optimisation).

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    >>> opt = SAM(torch.optim.SGD([w], lr=0.1), rho=0.5)
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = (w ** 2).sum() / 2     # gradient = w
    ...     loss.backward()
    ...     return loss
    >>> _ = opt.step(closure)             # e = 0.5 * w / 5; g_SAM = w + e = 1.1 w; w <- w - 0.1 * 1.1 w
    >>> [round(v, 4) for v in w.tolist()]
    [2.67, 3.56]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer


class SAM(Optimizer):
    """Wrap ``base_optimizer`` (already built over the parameters) with SAM's ascent step.

    The wrapper shares the base optimizer's ``param_groups``, so LR schedulers attached to the wrapper reach the
    base optimizer, and its ``state_dict`` is the base optimizer's (plus ``rho``), so checkpoints keep momentum.

    Args:
        base_optimizer: any ``torch.optim.Optimizer``.
        rho: radius of the ascent step, > 0.
        adaptive: ASAM's element-wise scaling by ``|w|``.
    """

    def __init__(self, base_optimizer: Optimizer, rho: float = 0.05, adaptive: bool = False) -> None:
        if not isinstance(base_optimizer, Optimizer):
            raise TypeError(f"base_optimizer must be a torch.optim.Optimizer, got {type(base_optimizer).__name__}")
        if isinstance(base_optimizer, SAM):
            raise TypeError("base_optimizer is already a SAM optimizer")
        check_rho(rho)
        self.base_optimizer = base_optimizer
        self.rho = float(rho)
        self.adaptive = bool(adaptive)
        super().__init__(base_optimizer.param_groups, {})
        # Share the base optimizer's groups (the same dicts) and state, so that LR schedulers attached to SAM change
        # the learning rate the base optimizer uses, and its state (momentum) is what SAM checkpoints. rho and
        # adaptive live on SAM itself, not in the groups, so a rho schedule has one place to change.
        self.param_groups = base_optimizer.param_groups
        self.state = base_optimizer.state
        # Each perturbed parameter's value at w: restoring by copy is exact, where subtracting e again is not
        # ((w + e) - e != w in floating point for a few % of the entries).
        self._origin: dict[torch.Tensor, torch.Tensor] = {}

    def _params_with_grad(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.grad is not None]

    def grad_norm(self) -> torch.Tensor:
        """``||g||_2`` over all parameters (``||w * g||_2`` when adaptive), on the first parameter's device."""
        params = self._params_with_grad()
        if not params:
            raise RuntimeError("SAM.first_step found no gradients: call backward() on the loss first")
        device = params[0].device
        norms = [((p.abs() if self.adaptive else 1.0) * p.grad).norm(2).to(device) for p in params]
        return torch.stack(norms).norm(2)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = True) -> None:
        """Move to ``w + e`` (the ascent point) and remember ``w``."""
        scale = self.rho / (self.grad_norm() + 1e-12)
        self._origin = {}
        for p in self._params_with_grad():
            e = (p.pow(2) if self.adaptive else 1.0) * p.grad * scale.to(p)
            self._origin[p] = p.detach().clone()
            p.add_(e)
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def second_step(self, zero_grad: bool = True) -> None:
        """Go back to ``w`` and let the base optimizer step with the gradient taken at ``w + e``."""
        if not self._origin:
            raise RuntimeError("SAM.second_step called without first_step")
        for p, w in self._origin.items():
            p.copy_(w)
        self._origin = {}
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """A full SAM step. ``closure`` must zero the gradients, compute the loss, call ``backward`` and return
        the loss; it is called twice (at ``w`` and at ``w + e``). Returns the loss at ``w``."""
        if closure is None:
            raise RuntimeError(
                "SAM.step needs a closure (it evaluates the loss twice); or call first_step() / second_step()"
            )
        closure = torch.enable_grad()(closure)
        loss = closure()
        self.first_step(zero_grad=True)
        closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"base": self.base_optimizer.state_dict(), "rho": self.rho, "adaptive": self.adaptive}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict["base"])
        self.rho = float(state_dict["rho"])
        self.adaptive = bool(state_dict["adaptive"])
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state

    def __repr__(self) -> str:
        return f"SAM(rho={self.rho}, adaptive={self.adaptive}, base={self.base_optimizer!r})"


def check_rho(rho: float) -> float:
    """``rho`` must be a finite number > 0."""
    if isinstance(rho, bool) or not isinstance(rho, int | float) or not math.isfinite(rho) or rho <= 0:
        raise ValueError(f"rho must be a finite number > 0, got {rho!r}")
    return float(rho)
