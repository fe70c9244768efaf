"""Open-Sampling (Wei et al., "Open-Sampling: Exploring Out-of-Distribution Data for Re-balancing Long-tailed
Datasets", ICML 2022), as the official code computes it (hongxin001/open-sampling ``alg/ood_noise.py``).

Each step takes an ID batch ``(x, y)`` and an auxiliary out-of-distribution batch ``x_aux`` (512 per 128 in the
reference; ``LongTailDataModule(aux_dataset=...)`` serves batches ``(x, y, x_aux)``), runs ONE forward over
``cat(x, x_aux)`` (BatchNorm sees both), draws OOD labels ``y_ood ~ Categorical(Gamma)`` anew and computes::

    loss = L(z_id, y) + lambda_o * CE(z_ood, y_ood; weight = Gamma / sum(Gamma) * C)

with ``L`` the module's configured loss (CE in the paper; any loss of ``lt_lightning.losses`` works) and ``Gamma``
the complementary distribution of :func:`~lt_lightning.functional.open_sampling.complementary_distribution`
(``max pi + min pi - pi``: the OOD labels push the effective prior towards uniform). Inference is plain.

The labels come from a ``torch.Generator`` seeded by ``(seed, global_step, rank)``: reproducible, resumable (the step
is restored), and independent across DDP ranks (each rank has its own aux images). ``lambda_o = 0`` skips the aux
forward entirely: the step is then plain ``LongTailClassifier`` bit for bit (also in BatchNorm's running stats).

Cost: the forward and backward run on ``B + A`` images, about ``(B + A) / B`` times CE (5x at 512 per 128).

Example:
    >>> import torch
    >>> model = OpenSampling(class_counts=(60, 30, 10), backbone="small_cnn", in_chans=1)
    >>> [round(g, 6) for g in model.gamma.tolist()]
    [0.1, 0.4, 0.6]
    >>> loss, logits, y = model.training_loss((torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]),
    ...                                        torch.zeros(16, 1, 8, 8)))
    >>> logits.shape, bool(torch.isfinite(loss))
    (torch.Size([4, 3]), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lt_lightning.functional.open_sampling import (
    complementary_distribution,
    open_sampling_ood_loss,
    sample_complementary_labels,
)
from lt_lightning.methods.base import LongTailClassifier

NO_AUX_HINT = (
    "OpenSampling needs training batches (x, y, x_aux): set aux_dataset on the datamodule "
    "(LongTailDataModule(aux_dataset=...), CLI --data.init_args.aux_dataset=...)"
)


def label_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """A CPU generator seeded by ``(seed, step, rank)`` through numpy's ``SeedSequence`` (no collisions between
    nearby tuples, unlike ``seed + step``).

    Example:
        >>> a, b = label_generator(0, 5, 0), label_generator(0, 5, 1)
        >>> torch.rand(1, generator=a).item() != torch.rand(1, generator=b).item()
        True
    """
    state = np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class OpenSampling(LongTailClassifier):
    """``LongTailClassifier`` trained with complementary-labelled out-of-distribution images.

    Args:
        class_counts: training images per class (linked from the datamodule by the CLI).
        lambda_o: weight of the OOD term (the reference's ``--lambda_o``, 1); 0 = plain training.
        alpha: None (default) or <= 0 for ``Gamma = max pi + min pi - pi``; > 0 for ``alpha - pi`` (must be
            ``>= max pi``), the reference's ``--alpha``.
        seed: base seed of the OOD labels (a step's draw is a function of ``(seed, global_step, rank)``).
        **kwargs: any other ``LongTailClassifier`` argument (``loss`` for the ID term, backbone, optimizer, ...).
    """

    def __init__(
        self,
        class_counts: Sequence[int],
        lambda_o: float = 1.0,
        alpha: float | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if isinstance(lambda_o, bool) or not isinstance(lambda_o, int | float) or not math.isfinite(lambda_o):
            raise ValueError(f"lambda_o must be a finite number >= 0, got {lambda_o!r}")
        if lambda_o < 0:
            raise ValueError(f"lambda_o must be a finite number >= 0, got {lambda_o!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, int | float)):
            raise ValueError(f"alpha must be a number or None, got {alpha!r}")
        gamma = complementary_distribution(class_counts, alpha)  # validates alpha against the prior
        super().__init__(class_counts, **kwargs)
        self.register_buffer("gamma", gamma.float(), persistent=False)

    def on_fit_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        no_aux = datamodule is not None and hasattr(datamodule, "aux_set") and datamodule.aux_set is None
        if no_aux and self.hparams.lambda_o > 0:
            raise ValueError(f"{NO_AUX_HINT}; the datamodule has aux_dataset=None")

    def ood_labels(self, num: int) -> Tensor:
        """The step's OOD labels, from a generator seeded by ``(seed, global_step, rank)``."""
        rank = self.global_rank if self._trainer is not None else 0
        generator = label_generator(self.hparams.seed, self.global_step if self._trainer is not None else 0, rank)
        return sample_complementary_labels(self.gamma, num, generator)

    def training_loss(self, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        if self.hparams.lambda_o == 0:
            return super().training_loss(batch)
        if not isinstance(batch, list | tuple) or len(batch) < 3:
            raise ValueError(NO_AUX_HINT)
        x, y, x_aux = batch[0], batch[1], batch[2]
        n = len(x)
        logits = self(torch.cat([x, x_aux]))
        id_logits, ood_logits = logits[:n], logits[n:]
        id_loss = self.criterion_on(id_logits, y)
        if len(ood_logits) == 0:
            return id_loss, id_logits, y
        ood_loss = open_sampling_ood_loss(ood_logits, self.ood_labels(len(ood_logits)), self.gamma)
        if self._trainer is not None:
            self.log("open_sampling/ood_loss", ood_loss.detach(), on_step=False, on_epoch=True, batch_size=n)
        return id_loss + self.hparams.lambda_o * ood_loss, id_logits, y
