"""LDAM-DRW (Cao et al., NeurIPS 2019): LDAM loss on a cosine head, with deferred re-weighting.

The re-weighting schedule is the :class:`~lt_lightning.callbacks.DeferredReweighting` callback, which the module
attaches through ``configure_callbacks``: one implementation serves the module and users who drop the callback into
their own project. CE-DRW is ``LDAMDRW(loss="ce")`` or ``LongTailClassifier`` + the callback (see ``examples/``).

Example:
    >>> model = LDAMDRW(class_counts=(5000, 500, 50), backbone="small_cnn", in_chans=1, drw_start_epoch=160)
    >>> type(model.criterion).__name__, type(model.backbone.head).__name__
    ('LDAMLoss', 'NormedLinear')
    >>> [type(cb).__name__ for cb in model.configure_callbacks()]
    ['DeferredReweighting', 'DivergenceGuard']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch.callbacks import Callback

from lt_lightning.callbacks.deferred import DeferredReweighting
from lt_lightning.methods.base import LongTailClassifier


class LDAMDRW(LongTailClassifier):
    """``LongTailClassifier`` with LDAM (max margin 0.5, s = 30, cosine head) and DRW (beta 0.9999 from 80 % of
    ``max_epochs``: epoch 160 of 200) as defaults, on ResNet-32.

    Args:
        class_counts: training images per class (linked from the datamodule by the CLI).
        backbone: backbone name (``resnet32`` in the CIFAR recipe).
        loss: loss name or callable (``ldam``; ``ce`` gives CE-DRW).
        drw_start_epoch: 0-indexed epoch of the switch; None = ``round(0.8 * max_epochs)``.
        drw_beta: effective-number beta after the switch.
        drw_stages: several ``(epoch, beta)`` stages instead of one switch.
        **kwargs: any other ``LongTailClassifier`` argument (optimizer, lr_scheduler, head, loss_kwargs, ...).
    """

    def __init__(
        self,
        class_counts: Sequence[int],
        backbone: str = "resnet32",
        loss: Any = "ldam",
        drw_start_epoch: int | None = None,
        drw_beta: float = 0.9999,
        drw_stages: Sequence[tuple[int, float]] | None = None,
        **kwargs: Any,
    ) -> None:
        # Built first so that bad schedule arguments fail here, at construction, not at fit start.
        self._drw = DeferredReweighting(start_epoch=drw_start_epoch, beta=drw_beta, stages=drw_stages)
        super().__init__(class_counts, backbone=backbone, loss=loss, **kwargs)

    def configure_callbacks(self) -> list[Callback]:
        return [self._drw, *super().configure_callbacks()]
