"""Long-tail methods as LightningModules: the ``LongTailClassifier`` base and its thin subclasses,
``ClassifierRetraining`` (stage 2 of decoupled learning on any of them), ``NuisanceMUNIT`` (GIT's nuisance
generator) and ``OpenSampling`` (out-of-distribution images with complementary labels)."""

from lt_lightning.methods.absgd import ABSGD
from lt_lightning.methods.base import LongTailClassifier
from lt_lightning.methods.bbn import BBN
from lt_lightning.methods.dbn_mix import DBNMix
from lt_lightning.methods.decoupled import ClassifierRetraining
from lt_lightning.methods.drw import LDAMDRW
from lt_lightning.methods.munit import NuisanceMUNIT
from lt_lightning.methods.open_sampling import OpenSampling
from lt_lightning.methods.sam import SAMClassifier

__all__ = [
    "ABSGD",
    "BBN",
    "ClassifierRetraining",
    "DBNMix",
    "LDAMDRW",
    "LongTailClassifier",
    "NuisanceMUNIT",
    "OpenSampling",
    "SAMClassifier",
]
