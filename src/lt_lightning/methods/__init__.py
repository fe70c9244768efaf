"""Long-tail methods as LightningModules: the ``LongTailClassifier`` base and its thin subclasses."""

from lt_lightning.methods.base import LongTailClassifier

__all__ = ["LongTailClassifier"]
