"""Nuisance generators for GIT: the oracle (true transform) and learned MUNIT generators."""

from lt_lightning.generators.oracle import OracleGenerator

__all__ = ["OracleGenerator"]
