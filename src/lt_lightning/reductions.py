"""Loss reductions over per-sample losses: ABSGD's attentional weighting as a drop-in ``nn.Module``.

Use it with any loss that returns per-sample values (``reduction="none"``)::

    criterion = LDAMLoss(class_counts, reduction="none")
    reduce = AttentionalReduction(lam=5.0, gamma=0.1, alpha=0.5)
    loss = reduce(criterion(logits, target))      # one backward, no gradient through the weights

Under DDP (``torch.distributed`` initialised, more than one process) the batch statistic ``mean exp(l / lambda)`` is
all-gathered, so ``u`` is the same on every rank and equals what one process would compute on the global batch; the
weights of each rank's samples are then those of the global batch, ``exp(l_i / lambda) / (u B_local)``, and DDP's
gradient average over ranks turns that into the single-process ``1 / (u B_global)`` normalisation.

Example:
    >>> import torch
    >>> reduce = AttentionalReduction(lam=1.0, gamma=1.0, alpha=1.0)
    >>> round(reduce(torch.tensor([1.0, 1.0, 1.0])).item(), 4)   # equal losses: weights 1/B
    1.0
    >>> reduce.lam = 500.0   # above plain_threshold: a plain mean, u untouched
    >>> round(reduce(torch.tensor([1.0, 3.0])).item(), 4)
    2.0
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lt_lightning.functional.attention import attentional_weights, batch_log_mean_exp, check_attention_args


class AttentionalReduction(nn.Module):
    """``sum_i p_i l_i`` with ABSGD's attentional weights; ``log u`` is a buffer (checkpointed).

    Args:
        lam: temperature lambda (> 0 up-weights hard samples, < 0 down-weights them); settable between steps.
        gamma: moving-average rate of ``u`` in (0, 1].
        alpha: scale inside ``u``.
        plain_threshold: ``lam >= plain_threshold`` gives a plain mean (the reference's ``lambda >= 200``).
        sync_dist: all-gather the batch statistic across processes when distributed.
    """

    log_u: Tensor

    def __init__(
        self,
        lam: float = 5.0,
        gamma: float = 0.1,
        alpha: float = 0.5,
        plain_threshold: float = 200.0,
        sync_dist: bool = True,
    ) -> None:
        super().__init__()
        check_attention_args(lam, gamma, alpha)
        self._lam = float(lam)
        self.gamma, self.alpha = float(gamma), float(alpha)
        self.plain_threshold = float(plain_threshold)
        self.sync_dist = sync_dist
        self.register_buffer("log_u", torch.tensor(-math.inf, dtype=torch.float64))  # u = 0 before the first step
        self.last_weights: Tensor | None = None

    @property
    def lam(self) -> float:
        return self._lam

    @lam.setter
    def lam(self, value: float) -> None:
        check_attention_args(value, self.gamma, self.alpha)
        self._lam = float(value)

    @property
    def is_plain(self) -> bool:
        return self._lam >= self.plain_threshold

    @property
    def u(self) -> float:
        """The moving average ``u`` (may be ``inf`` as a float where ``log u`` is huge; ``log_u`` stays exact)."""
        log_u = float(self.log_u)
        return math.exp(log_u) if log_u < 709.0 else math.inf  # exp overflows a float64 past ~709.78

    def _global_log_mean_exp(self, losses: Tensor) -> Tensor | None:
        if not (self.sync_dist and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return None
        local = torch.stack(
            [
                torch.logsumexp(losses.detach().double() / self._lam, 0),
                torch.tensor(float(losses.numel()), dtype=torch.float64, device=losses.device),
            ]
        )
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, local)
        stacked = torch.stack(gathered)
        return torch.logsumexp(stacked[:, 0], 0) - torch.log(stacked[:, 1].sum())

    def forward(self, losses: Tensor) -> Tensor:
        if losses.ndim != 1:
            raise ValueError(
                f"AttentionalReduction needs per-sample losses of shape (B,), got {tuple(losses.shape)}; "
                "build the loss with reduction='none'"
            )
        if self.is_plain:
            weights = torch.full_like(losses.detach(), 1.0 / losses.numel())
        else:
            log_mean_exp = self._global_log_mean_exp(losses)
            if log_mean_exp is None:
                log_mean_exp = batch_log_mean_exp(losses.detach().double(), self._lam)
            weights, new_log_u = attentional_weights(
                losses, self._lam, self.log_u, self.gamma, self.alpha, log_mean_exp=log_mean_exp
            )
            self.log_u.copy_(new_log_u)
        self.last_weights = weights.detach()
        return (weights.to(losses.dtype) * losses).sum()
