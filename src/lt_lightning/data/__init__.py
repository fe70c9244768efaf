"""Long-tailed data: base datasets, seeded subsets, samplers and the ``LongTailDataModule``."""

from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.datasets import DATASETS, ArrayDataset, BaseSplits, ImageFileDataset, load_dataset
from lt_lightning.data.inference import InferenceDataModule
from lt_lightning.data.nuisance import NUISANCES, create_nuisance
from lt_lightning.data.nuisance_lt import freeze_nuisance, materialise, nuisance_generator
from lt_lightning.data.paired import PairedDataset, PairedSampler
from lt_lightning.data.samplers import (
    SAMPLERS,
    ClassAwareCycleSampler,
    ClassBalancedSampler,
    InstanceSampler,
    LongTailSampler,
    ProgressiveSampler,
    ReversedSampler,
    SquareRootSampler,
    create_sampler,
)
from lt_lightning.data.subsets import long_tail_indices

__all__ = [
    "DATASETS",
    "NUISANCES",
    "SAMPLERS",
    "ArrayDataset",
    "BaseSplits",
    "ClassAwareCycleSampler",
    "ClassBalancedSampler",
    "ImageFileDataset",
    "InferenceDataModule",
    "InstanceSampler",
    "LongTailDataModule",
    "LongTailSampler",
    "PairedDataset",
    "PairedSampler",
    "ProgressiveSampler",
    "ReversedSampler",
    "SquareRootSampler",
    "create_nuisance",
    "create_sampler",
    "freeze_nuisance",
    "load_dataset",
    "long_tail_indices",
    "materialise",
    "nuisance_generator",
]
