"""Nuisance generators for GIT: the oracle (true transform) and learned MUNIT generators, with their file format."""

from lt_lightning.generators.loading import load_generator, save_generator
from lt_lightning.generators.munit import MUNIT_CONFIGS, MUNITDiscriminator, MUNITGenerator, munit_config
from lt_lightning.generators.oracle import OracleGenerator

__all__ = [
    "MUNIT_CONFIGS",
    "MUNITDiscriminator",
    "MUNITGenerator",
    "OracleGenerator",
    "load_generator",
    "munit_config",
    "save_generator",
]
