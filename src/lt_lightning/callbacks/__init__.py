"""Callbacks that drop into any Lightning project."""

from lt_lightning.callbacks.cmo import CMO
from lt_lightning.callbacks.deferred import DeferredResampling, DeferredReweighting
from lt_lightning.callbacks.divergence import DivergenceError, DivergenceGuard
from lt_lightning.callbacks.ekld import ExpectedKLDivergence
from lt_lightning.callbacks.git import GenerativeInvarianceTransfer
from lt_lightning.callbacks.hessian import ClassHessianSpectrum
from lt_lightning.callbacks.lr_scaling import ScaleLearningRate
from lt_lightning.callbacks.per_class import PerClassAccuracy
from lt_lightning.callbacks.posthoc import PostHocLogitAdjustment, TauNormalization
from lt_lightning.callbacks.predictions import PredictionWriter
from lt_lightning.callbacks.pure_noise import PureNoiseOversampling

__all__ = [
    "CMO",
    "ClassHessianSpectrum",
    "DeferredResampling",
    "DeferredReweighting",
    "DivergenceError",
    "DivergenceGuard",
    "ExpectedKLDivergence",
    "GenerativeInvarianceTransfer",
    "PerClassAccuracy",
    "PostHocLogitAdjustment",
    "PredictionWriter",
    "PureNoiseOversampling",
    "ScaleLearningRate",
    "TauNormalization",
]
