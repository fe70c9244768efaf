"""Long-tail losses as ``nn.Module``\\ s built from the training class counts.

Each loss is a thin module over a pure function of :mod:`lt_lightning.functional.losses`. The first
constructor argument is always ``class_counts`` (training images per class, head to tail in label order);
everything derived from it (margins, scalings, log priors) is computed once and registered as a buffer,
so it follows ``.to(device/dtype)`` and is saved in ``state_dict()``.

Contract shared by every loss (:class:`ClassCountLoss`):

* ``class_counts`` (long buffer) and ``class_weight`` (float buffer, ones when no weight is given);
* ``set_class_weight(weight)`` replaces the per-class weights in place: this is how deferred re-weighting
  (DRW) switches weights at an epoch without rebuilding the loss;
* ``reduction`` attribute: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-sample losses, for ABSGD);
* ``requires_normed_head`` / ``sigmoid_bias_init`` class flags tell the model which head the loss expects.

Example:
    >>> loss = create_loss("ldam", class_counts=[100, 10])
    >>> loss.margins.tolist(), loss.requires_normed_head
    ([0.28117066621780396, 0.5], True)
    >>> loss.set_class_weight([0.5, 1.5])
    >>> loss(torch.zeros(2, 2), torch.tensor([0, 1])).shape
    torch.Size([])
"""

from __future__ import annotations

import importlib
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from lt_lightning.functional import losses as LF
from lt_lightning.functional.losses import MMPositive, Reduction, check_mm_positive, check_reduction
from lt_lightning.functional.weights import (
    check_class_counts,
    effective_number_weights,
    ldam_margins,
    log_priors,
    vs_scaling,
)

__all__ = [
    "LOSSES",
    "BalancedSoftmaxLoss",
    "CDTLoss",
    "ClassBalancedFocalLoss",
    "ClassCountLoss",
    "ClassTemperatureMixLoss",
    "CrossEntropyLoss",
    "FocalLoss",
    "LDAMLoss",
    "LogitAdjustedLoss",
    "MMLoss",
    "SigmoidFocalLoss",
    "VSLoss",
    "create_loss",
]

ClassWeight = Tensor | Sequence[float] | None


def _check_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def _check_non_negative(name: str, value: object) -> float:
    value_f = _check_finite(name, value)
    if value_f < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value_f


def _check_positive(name: str, value: object) -> float:
    value_f = _check_finite(name, value)
    if value_f <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value_f


def warn_unusual(owner: str, name: str, value: float, low: float, high: float, usual: str, *, open_high=False) -> None:
    """Warn (``UserWarning``) when a valid but absurd setting lies outside the range the literature uses.

    Such values are not errors (a study may probe them on purpose), but they usually come from a typo or a unit
    slip, and their symptom is a run that "works" at chance accuracy: LDAM with ``scale=1e6`` trains on losses of
    1e5 and more. The warning names the argument, the value and the usual range.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_unusual("LDAMLoss", "scale", 1e6, 1, 100, "30 in the LDAM-DRW recipe")
        >>> print(caught[0].message)  # doctest: +ELLIPSIS
        LDAMLoss: scale=1000000.0 is outside the usual range [1, 100] (30 in the LDAM-DRW recipe)...
    """
    if low <= value < high if open_high else low <= value <= high:
        return
    closing = ")" if open_high else "]"
    warnings.warn(
        f"{owner}: {name}={value!r} is outside the usual range [{low:g}, {high:g}{closing} ({usual}); such a value "
        "usually trains at chance accuracy or diverges. Check the setting (it is allowed, for deliberate studies)",
        UserWarning,
        stacklevel=3,
    )


class ClassCountLoss(nn.Module):
    """Base class: a loss that knows the training class counts and holds re-settable per-class weights.

    Args:
        class_counts: training images per class (sequence of ints >= 1).
        weight: optional per-class weights of length ``C`` (finite, > 0); ``None`` stores ones.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-sample losses); also settable later as
            ``loss.reduction = "none"``.

    Attributes:
        class_counts: long buffer ``(C,)``.
        class_weight: float buffer ``(C,)``, the weights the loss applies per sample through the label.
        requires_normed_head: the loss expects cosine logits from a ``NormedLinear`` head (LDAM).
        sigmoid_bias_init: the loss is a one-vs-all sigmoid loss whose head bias should start at
            ``-log(C - 1)`` (:func:`lt_lightning.functional.sigmoid_bias_init`).
    """

    requires_normed_head: ClassVar[bool] = False
    sigmoid_bias_init: ClassVar[bool] = False

    class_counts: Tensor
    class_weight: Tensor

    def __init__(
        self, class_counts: Sequence[int], weight: ClassWeight = None, *, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        counts = check_class_counts(class_counts)
        self.register_buffer("class_counts", torch.tensor(counts, dtype=torch.long))
        self.register_buffer("class_weight", torch.ones(len(counts), dtype=torch.float32))
        self.reduction = reduction
        self.set_class_weight(weight)

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return self.class_counts.numel()

    @property
    def reduction(self) -> Reduction:
        """``"mean"``, ``"sum"`` or ``"none"``; ``"none"`` makes ``forward`` return ``(N,)`` per-sample losses."""
        return self._reduction

    @reduction.setter
    def reduction(self, value: Reduction) -> None:
        self._reduction = check_reduction(value)

    @torch.no_grad()
    def set_class_weight(self, weight: ClassWeight) -> None:
        """Replace the per-class weights in place (``None`` restores all ones).

        This is the contract deferred re-weighting relies on: a callback calls ``loss.set_class_weight(w)`` at
        each epoch start (e.g. ones before the DRW switch, class-balanced weights after). The values are
        copied into the existing ``class_weight`` buffer, so its device and dtype stay those of the module and
        the change is saved in ``state_dict()``. Weights are used as given (not renormalised).

        Args:
            weight: ``C`` finite positive values (tensor, array or sequence of floats), or ``None``.

        Raises:
            ValueError: wrong length or shape, a non-finite value or a value <= 0.

        Example:
            >>> loss = CrossEntropyLoss([10, 5])
            >>> loss.set_class_weight([0.5, 1.5]); loss.class_weight.tolist()
            [0.5, 1.5]
            >>> loss.set_class_weight(None); loss.class_weight.tolist()
            [1.0, 1.0]
        """
        if weight is None:
            self.class_weight.fill_(1.0)
            return
        try:
            values = torch.as_tensor(
                weight.detach().cpu() if isinstance(weight, Tensor) else weight, dtype=torch.float64
            )
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"weight must be None or {self.num_classes} finite positive numbers, got {weight!r}"
            ) from err
        if values.shape != (self.num_classes,):
            raise ValueError(
                f"weight must have {self.num_classes} entries (one per class), got shape {tuple(values.shape)}"
            )
        if not bool(torch.isfinite(values).all()) or bool((values <= 0).any()):
            raise ValueError(f"weight must be finite and > 0 for every class, got {values.tolist()}")
        self.class_weight.copy_(values)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, reduction={self.reduction!r}"


class CrossEntropyLoss(ClassCountLoss):
    """Softmax cross-entropy with per-class weights and PyTorch's weighted-mean reduction.

    ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` for ``"mean"``; see :func:`lt_lightning.functional.cross_entropy`.
    With DRW weights this is the "CE-DRW" baseline (METHODS §3.5).

    Args:
        class_counts: training images per class.
        weight: optional per-class weights (ones when ``None``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = CrossEntropyLoss([10, 5])
        >>> round(loss(torch.zeros(1, 2), torch.tensor([1])).item(), 4)  # log 2
        0.6931
    """

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return LF.cross_entropy(logits, target, weight=self.class_weight, reduction=self.reduction)


class FocalLoss(ClassCountLoss):
    """Softmax focal loss of the LDAM-DRW code (METHODS §3.3(b)), plain mean over the batch.

    ``ce_i = w_{y_i} CE_i``, ``loss = mean_i (1 - exp(-ce_i))^gamma ce_i``; see
    :func:`lt_lightning.functional.focal_loss`.

    Args:
        class_counts: training images per class.
        gamma: focusing parameter >= 0 (1.0 in the reference).
        weight: optional per-class weights (ones when ``None``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = FocalLoss([10, 5], gamma=1.0)
        >>> round(loss(torch.zeros(1, 2), torch.tensor([0])).item(), 4)  # 0.5 * log 2
        0.3466
    """

    def __init__(
        self,
        class_counts: Sequence[int],
        gamma: float = 1.0,
        weight: ClassWeight = None,
        *,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_counts, weight, reduction=reduction)
        self.gamma = _check_non_negative("gamma", gamma)
        warn_unusual(type(self).__name__, "gamma", self.gamma, 0, 10, "1 in the LDAM-DRW code, 0.5-5 in the paper")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return LF.focal_loss(logits, target, gamma=self.gamma, weight=self.class_weight, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}"


class SigmoidFocalLoss(ClassCountLoss):
    """One-vs-all sigmoid focal loss of the class-balanced loss code (METHODS §3.3(a)).

    ``(1/N) sum_i sum_j w_{y_i} (1 - p_t,ij)^gamma BCE(z_ij, [j == y_i])``; see
    :func:`lt_lightning.functional.sigmoid_focal_loss`. Initialise the head bias to ``-log(C - 1)``
    (``sigmoid_bias_init`` is ``True``).

    Args:
        class_counts: training images per class.
        gamma: focusing parameter >= 0 (1.0 in the reference).
        weight: optional per-class weights (ones when ``None``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = SigmoidFocalLoss([10, 5], gamma=0.0)
        >>> round(loss(torch.zeros(1, 2), torch.tensor([0])).item(), 4)  # 2 * log 2
        1.3863
    """

    sigmoid_bias_init: ClassVar[bool] = True

    def __init__(
        self,
        class_counts: Sequence[int],
        gamma: float = 1.0,
        weight: ClassWeight = None,
        *,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_counts, weight, reduction=reduction)
        self.gamma = _check_non_negative("gamma", gamma)
        warn_unusual(type(self).__name__, "gamma", self.gamma, 0, 10, "1 in the class-balanced loss scripts")

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return LF.sigmoid_focal_loss(
            logits, target, gamma=self.gamma, weight=self.class_weight, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}"


class ClassBalancedFocalLoss(SigmoidFocalLoss):
    """ "CB Focal" of Cui et al. (CVPR 2019): sigmoid focal loss weighted by effective-number weights.

    ``w_c = (1 - beta) / (1 - beta^{n_c})`` normalised to sum ``C`` (METHODS §3.2), fixed from the first
    epoch; ``set_class_weight`` can still replace them (``None`` then means ones, i.e. no weighting).

    Args:
        class_counts: training images per class.
        beta: in ``[0, 1)`` (0.9999 in the CIFAR scripts; 0 gives the unweighted sigmoid focal loss).
        gamma: focusing parameter >= 0 (1.0 in the CIFAR scripts).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = ClassBalancedFocalLoss([100, 10], beta=0.9)
        >>> [round(w, 4) for w in loss.class_weight.tolist()]
        [0.7889, 1.2111]
    """

    def __init__(
        self,
        class_counts: Sequence[int],
        beta: float = 0.9999,
        gamma: float = 1.0,
        *,
        reduction: Reduction = "mean",
    ) -> None:
        weight = effective_number_weights(class_counts, beta)
        super().__init__(class_counts, gamma=gamma, weight=weight, reduction=reduction)
        self.beta = float(beta)
        if self.beta != 0:  # 0 is the documented "no weighting"; (0, 0.9) weights all classes almost alike
            usual = "0.9999 in the CB CIFAR scripts"
            warn_unusual(type(self).__name__, "beta", self.beta, 0.9, 1, usual, open_high=True)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta}"


class LDAMLoss(ClassCountLoss):
    """Label-distribution-aware margin loss (Cao et al., NeurIPS 2019; METHODS §3.1).

    ``CE(s * (z - Delta_y onehot(y)), y, weight=w)`` with ``Delta_j = max_margin * n_j^(-1/4) / max_k
    n_k^(-1/4)`` (buffer ``margins``). The reference pairs it with a cosine ``NormedLinear`` head
    (``requires_normed_head`` is ``True``) and with DRW weights via :meth:`set_class_weight`.

    Args:
        class_counts: training images per class.
        max_margin: margin of the rarest class, > 0 (0.5 on CIFAR, 0.3 on iNaturalist).
        scale: logit scale ``s > 0`` (30).
        weight: optional per-class weights (ones when ``None``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = LDAMLoss([16, 1], max_margin=0.5, scale=10.0)
        >>> loss.margins.tolist()
        [0.25, 0.5]
        >>> round(loss(torch.zeros(1, 2), torch.tensor([1])).item(), 4)  # log(1 + e^5)
        5.0067
    """

    requires_normed_head: ClassVar[bool] = True
    margins: Tensor

    def __init__(
        self,
        class_counts: Sequence[int],
        max_margin: float = 0.5,
        scale: float = 30.0,
        weight: ClassWeight = None,
        *,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_counts, weight, reduction=reduction)
        self.max_margin = _check_positive("max_margin", max_margin)
        self.scale = _check_positive("scale", scale)
        # The head is cosine (logits in [-1, 1]): a margin above 1 exceeds the whole logit range, and the scale
        # multiplies every logit, so the loss (and its gradient) grows with it.
        warn_unusual("LDAMLoss", "max_margin", self.max_margin, 0, 1, "0.5 on CIFAR, 0.3 on iNaturalist")
        warn_unusual("LDAMLoss", "scale", self.scale, 1, 100, "30 in the LDAM-DRW recipe")
        self.register_buffer("margins", ldam_margins(class_counts, self.max_margin))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return LF.ldam_loss(
            logits, target, self.margins, scale=self.scale, weight=self.class_weight, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_margin={self.max_margin}, scale={self.scale}"


class VSLoss(ClassCountLoss):
    """Vector-scaling loss (Kini et al., NeurIPS 2021; SAM-LT's ``VSLoss``; METHODS §3.8).

    ``CE(z * (n_j / n_max)^gamma + tau * log pi_j, y, weight=w)``; buffers ``scaling`` and ``offsets``.

    Args:
        class_counts: training images per class.
        gamma: multiplicative exponent >= 0 (0.3).
        tau: additive log-prior temperature, finite (1.0).
        weight: optional per-class weights (ones when ``None``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = VSLoss([16, 1], gamma=0.5, tau=0.0)
        >>> loss.scaling.tolist()
        [1.0, 0.25]
    """

    scaling: Tensor
    offsets: Tensor
    _gamma_usual: ClassVar[str] = "0.3 in the SAM-LT recipe"

    def __init__(
        self,
        class_counts: Sequence[int],
        gamma: float = 0.3,
        tau: float = 1.0,
        weight: ClassWeight = None,
        *,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_counts, weight, reduction=reduction)
        self.gamma = _check_non_negative("gamma", gamma)
        self.tau = _check_finite("tau", tau)
        # (n_j / n_max) ** gamma multiplies the tail logits: gamma = 1 at rho = 100 already divides them by 100.
        warn_unusual(type(self).__name__, "gamma", self.gamma, 0, 1, self._gamma_usual)
        warn_unusual(type(self).__name__, "tau", self.tau, 0, 10, "1.0 in the SAM-LT recipe")
        self.register_buffer("scaling", vs_scaling(class_counts, self.gamma))
        self.register_buffer("offsets", self.tau * log_priors(class_counts))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return LF.vs_loss(
            logits, target, self.scaling, self.offsets, weight=self.class_weight, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}, tau={self.tau}"


class CDTLoss(VSLoss):
    """Class-dependent temperatures (CDT; Ye et al., "Identifying and compensating for feature deviation in
    imbalanced deep learning", arXiv 2001.01385; reference implementation BagofTricks-LT
    ``lib/loss/loss_impl/class_dependent_temperatures_loss.py``).

    Training loss ``CE(z_c / a_c, y, weight=w)`` with temperatures ``a_c = (n_max / n_c)^gamma``; the model
    predicts with the raw logits. Since ``z_c / a_c = z_c (n_c / n_max)^gamma``, CDT **is** the VS loss with
    ``tau = 0``: this class is :class:`VSLoss` with ``tau`` pinned to 0 (same buffers ``scaling`` and ``offsets``
    (zeros), same function :func:`lt_lightning.functional.vs_loss`), under the paper's name. ``gamma = 0`` is plain
    cross-entropy. DRW composes through :meth:`set_class_weight` (``DeferredReweighting``); note BagofTricks-LT's
    own "CDT + DRW" config instead switches the temperatures on at the DRW epoch.

    Args:
        class_counts: training images per class.
        gamma: temperature exponent, finite and >= 0 (0.2 in the BagofTricks-LT CIFAR configs; the paper searches
            [0, 0.4] on CIFAR-10, [0, 0.2] on CIFAR-100 / Tiny-ImageNet, [0, 0.1] on iNaturalist).
        weight: optional per-class weights (ones when ``None``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = CDTLoss([16, 1], gamma=0.5)  # a = (1, 4): the tail logit is divided by 4
        >>> loss.scaling.tolist(), loss.tau
        ([1.0, 0.25], 0.0)
    """

    _gamma_usual: ClassVar[str] = (
        "0.2 in the BagofTricks-LT configs; the paper searches 0-0.4 on CIFAR-10, 0-0.2 on CIFAR-100"
    )

    def __init__(
        self,
        class_counts: Sequence[int],
        gamma: float = 0.2,
        weight: ClassWeight = None,
        *,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_counts, gamma=gamma, tau=0.0, weight=weight, reduction=reduction)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, reduction={self.reduction!r}, gamma={self.gamma}"


MM_VARIANTS = ("hmm", "hmm_ldam")


class MMLoss(ClassCountLoss):
    """Maximum-margin loss ("HMM" / "HMM-LDAM" in ``ihaeyong/Maximum-Margin-LDAM`` ``losses.py:48-126``).

    LDAM's true-class margin made per sample: ``CE(s * (z - Delta_i onehot(y_i)), y, weight=w)`` where
    ``Delta_i`` (no gradient) peaks for barely-correct (``e^{-gamma mbar}``) and barely-wrong (``e^{-mbar}``)
    samples and decays with the gap ``|p_i - q_i|`` between the positive logit and the largest other logit; see
    :func:`lt_lightning.functional.mm_margins` for the exact formulas. ``mbar`` is ``max_margin`` (``"hmm"``) or
    ``max_margin - m_LDAM,y`` (``"hmm_ldam"``, buffer ``base_margins``), where ``m_LDAM`` is LDAM's
    ``n^{-1/4}`` margin scaled to 0.5 at the rarest class whatever ``max_margin`` is (as the reference).

    ``positive`` chooses ``p_i``: ``"code"`` (default, faithful to the reference whose numbers are published) takes
    the logit in the column of the FIRST sample's label for every row (``losses.py:86``); ``"own"`` takes each
    row's own target logit (the evident intent). In both, ``q_i`` is the row maximum with the own target entry
    set to 0 (so ``q_i >= 0``), as the reference.

    The reference trains it on a cosine ``NormedLinear`` head (``requires_normed_head``: ``head="auto"`` picks it)
    and with DRW (effective-number weights, beta 0.9999, from epoch 160 of 200) through :meth:`set_class_weight`
    (``DeferredReweighting``), like LDAM-DRW.

    Args:
        class_counts: training images per class.
        scale: logit scale ``s > 0`` (30 in the reference's argparse; 19 / 26 in its CIFAR-100 HMM / HMM-LDAM runs).
        max_margin: ``max_m``, finite and >= 0 (0.5 in the argparse; 1.29 in the CIFAR-100 script).
        gamma: exponent factor for correctly classified samples, finite and >= 0 (10 in the argparse; 1.528 in the
            CIFAR-100 script).
        variant: ``"hmm"`` or ``"hmm_ldam"``.
        positive: ``"code"`` or ``"own"`` (above).
        weight: optional per-class weights (ones when ``None``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = MMLoss([16, 1], scale=1.0, max_margin=0.5, gamma=1.0, positive="own")
        >>> loss.base_margins.tolist(), loss.requires_normed_head
        ([0.5, 0.5], True)
        >>> round(loss(torch.tensor([[0.1, 0.6]]), torch.tensor([0])).item(), 4)  # Delta = e^{-1}
        1.2184
        >>> MMLoss([16, 1], max_margin=0.5, variant="hmm_ldam").base_margins.tolist()  # 0.5 - (0.25, 0.5)
        [0.25, 0.0]
    """

    requires_normed_head: ClassVar[bool] = True
    base_margins: Tensor

    def __init__(
        self,
        class_counts: Sequence[int],
        scale: float = 30.0,
        max_margin: float = 0.5,
        gamma: float = 10.0,
        variant: str = "hmm",
        positive: MMPositive = "code",
        weight: ClassWeight = None,
        *,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_counts, weight, reduction=reduction)
        self.scale = _check_positive("scale", scale)
        self.max_margin = _check_non_negative("max_margin", max_margin)
        self.gamma = _check_non_negative("gamma", gamma)
        if variant not in MM_VARIANTS:
            raise ValueError(f"variant must be one of {list(MM_VARIANTS)}, got {variant!r}")
        self.variant = variant
        self.positive = check_mm_positive(positive)
        owner = type(self).__name__
        warn_unusual(owner, "scale", self.scale, 1, 100, "30 in the reference argparse, 19-26 in its CIFAR-100 runs")
        warn_unusual(owner, "max_margin", self.max_margin, 0, 2, "0.5 in the reference argparse, 1.29 for CIFAR-100")
        warn_unusual(owner, "gamma", self.gamma, 0, 20, "10 in the reference argparse, 1.528 for CIFAR-100")
        base = torch.full((self.num_classes,), self.max_margin, dtype=torch.float32)
        if variant == "hmm_ldam":
            base = base - ldam_margins(class_counts, 0.5)
        self.register_buffer("base_margins", base)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return LF.mm_loss(
            logits,
            target,
            self.base_margins,
            scale=self.scale,
            gamma=self.gamma,
            positive=self.positive,
            weight=self.class_weight,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, scale={self.scale}, max_margin={self.max_margin}, gamma={self.gamma}, "
            f"variant={self.variant!r}, positive={self.positive!r}"
        )


class LogitAdjustedLoss(ClassCountLoss):
    """Logit-adjusted cross-entropy ``CE(z + tau * log pi, y, weight=w)`` (Menon et al., ICLR 2021).

    Buffer ``log_prior``; predict with the raw logits. ``tau = 1`` is the balanced softmax.

    Args:
        class_counts: training images per class.
        tau: finite temperature (1.0).
        weight: optional per-class weights (ones when ``None``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = LogitAdjustedLoss([3, 1], tau=1.0)
        >>> round(loss(torch.zeros(1, 2), torch.tensor([1])).item(), 4)  # -log 0.25
        1.3863
    """

    log_prior: Tensor

    def __init__(
        self,
        class_counts: Sequence[int],
        tau: float = 1.0,
        weight: ClassWeight = None,
        *,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_counts, weight, reduction=reduction)
        self.tau = _check_finite("tau", tau)
        # tau * log(prior) shifts the logits; a negative tau favours the head, tau > 10 swamps the logits.
        warn_unusual(type(self).__name__, "tau", self.tau, 0, 10, "1.0 in Menon et al.; 1 is the balanced softmax")
        self.register_buffer("log_prior", log_priors(class_counts))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return LF.logit_adjusted_loss(
            logits, target, self.log_prior, tau=self.tau, weight=self.class_weight, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tau={self.tau}"


class BalancedSoftmaxLoss(LogitAdjustedLoss):
    """Balanced softmax (Ren et al., NeurIPS 2020): ``CE(z + log pi, y)``, the logit-adjusted loss at ``tau = 1``.

    Args:
        class_counts: training images per class.
        weight: optional per-class weights (ones when ``None``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = BalancedSoftmaxLoss([3, 1])
        >>> round(loss(torch.zeros(1, 2), torch.tensor([0])).item(), 4)  # -log 0.75
        0.2877
    """

    def __init__(
        self, class_counts: Sequence[int], weight: ClassWeight = None, *, reduction: Reduction = "mean"
    ) -> None:
        super().__init__(class_counts, tau=1.0, weight=weight, reduction=reduction)


class ClassTemperatureMixLoss(ClassCountLoss):
    """DBN-Mix's class-temperature loss on soft (mixup) targets (Baik, Yoon, Choi, Pattern Recognition 2024,
    arXiv 2207.02173; soony1213/DBN-Mix ``losses.py``, ``MixLoss``).

    ``p = softmax(z / tau)`` with the class temperatures ``tau_c = (max phi / phi_c)^(1/eta)``,
    ``phi_c = epsilon C n_c / n_max + (1 - epsilon)`` (buffer ``temperatures``, 1 at the head and larger toward the
    tail), and ``l_i = -sum_c w_c [t_ic log p_ic + (1 - t_ic) log(1 - p_ic)]``, plain mean over the batch; see
    :func:`lt_lightning.functional.mix_soft_target_loss` (``log(1 - p)`` computed stably, where the reference's
    ``torch.log(1 - pred)`` turns ``-inf``). The model predicts with the raw logits (no temperature at inference).

    ``target`` is ``(N, C)`` soft targets (what :class:`~lt_lightning.methods.DBNMix` passes) or ``(N,)`` class
    indices (one-hot encoded), so the loss also works for any single-stream method (``loss:
    class_temperature_mix``). The per-class weights ``w`` are what :meth:`set_class_weight` sets: the reference's
    ``--train-rule DRW`` (effective-number weights, beta 0.9999, normalised to sum C, from epoch 160 of 200) is
    :class:`~lt_lightning.callbacks.DeferredReweighting` with its defaults.

    Args:
        class_counts: training images per class.
        epsilon: in [0, 1]; 0.6 in the official CIFAR-10 and CIFAR-100 scripts.
        eta: > 0; 3 for CIFAR-10 and 7 for CIFAR-100 in the official scripts.
        weight: optional per-class weights (ones when ``None``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> loss = ClassTemperatureMixLoss([100, 10, 1], epsilon=0.6, eta=3.0)
        >>> [round(t, 3) for t in loss.temperatures.tolist()]
        [1.0, 1.56, 1.739]
        >>> loss(torch.zeros(1, 3), torch.tensor([[0.7, 0.3, 0.0]])).shape
        torch.Size([])
    """

    accepts_soft_targets: ClassVar[bool] = True

    temperatures: Tensor

    def __init__(
        self,
        class_counts: Sequence[int],
        epsilon: float = 0.6,
        eta: float = 3.0,
        weight: ClassWeight = None,
        *,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(class_counts, weight=weight, reduction=reduction)
        if self.num_classes < 2:
            raise ValueError(f"class_counts must hold at least 2 classes, got {self.num_classes}")
        self.register_buffer("temperatures", LF.class_temperatures(class_counts, epsilon, eta))
        self.epsilon = float(epsilon)
        self.eta = float(eta)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return LF.mix_soft_target_loss(
            logits, target, self.temperatures, weight=self.class_weight, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, epsilon={self.epsilon}, eta={self.eta}"


LOSSES: dict[str, type[ClassCountLoss]] = {
    "ce": CrossEntropyLoss,
    "focal": FocalLoss,
    "sigmoid_focal": SigmoidFocalLoss,
    "cb_focal": ClassBalancedFocalLoss,
    "ldam": LDAMLoss,
    "vs": VSLoss,
    "cdt": CDTLoss,
    "mm": MMLoss,
    "logit_adjusted": LogitAdjustedLoss,
    "balanced_softmax": BalancedSoftmaxLoss,
    "class_temperature_mix": ClassTemperatureMixLoss,
}


def create_loss(name: str, class_counts: Sequence[int], **kwargs: object) -> ClassCountLoss:
    """Build a loss from its short name in :data:`LOSSES` (``"ce"``, ``"ldam"``, ...).

    Args:
        name: key of :data:`LOSSES`.
        class_counts: training images per class.
        **kwargs: the loss's other constructor arguments.

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones).

    Example:
        >>> create_loss("vs", [10, 5], gamma=0.0, tau=0.0).scaling.tolist()
        [1.0, 1.0]
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {sorted(LOSSES)}")
    return LOSSES[name](class_counts, **kwargs)


def check_loss_config(config: Mapping[str, Any]) -> None:
    """Check a ``{"class_path": ..., "init_args": {...}}`` loss mapping where it enters (the module's constructor).

    Example:
        >>> check_loss_config({"class_path": "lt_lightning.losses.LDAMLoss", "init_args": {"max_margin": 0.3}})
        >>> check_loss_config({"init_args": {}})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: loss given as a mapping needs 'class_path' ... got keys ['init_args']
    """
    keys = sorted(config)
    if "class_path" not in config or not set(keys) <= {"class_path", "init_args", "dict_kwargs"}:
        raise ValueError(
            "loss given as a mapping needs 'class_path' (a loss class such as lt_lightning.losses.LDAMLoss) and "
            f"optionally 'init_args', got keys {keys}"
        )
    init_args = config.get("init_args") or {}
    if not isinstance(init_args, Mapping):
        raise ValueError(f"loss init_args must be a mapping of keyword arguments, got {init_args!r}")
    if "class_counts" in init_args:
        raise ValueError("loss init_args must not set class_counts: the module fills it in from the datamodule")


def loss_from_config(config: Mapping[str, Any], class_counts: Sequence[int]) -> nn.Module:
    """Instantiate ``config["class_path"]`` with ``class_counts`` first and ``config["init_args"]`` as keywords.

    This is how a loss outside :data:`LOSSES` given in YAML (and recorded so in the checkpoint) is built.

    Example:
        >>> loss = loss_from_config({"class_path": "lt_lightning.losses.LDAMLoss", "init_args": {"scale": 10}}, [9, 1])
        >>> type(loss).__name__, loss.scale
        ('LDAMLoss', 10.0)
    """
    check_loss_config(config)
    module_name, _, name = str(config["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"loss class_path {config['class_path']!r} cannot be imported: {err}") from None
    loss = cls(class_counts, **dict(config.get("init_args") or {}), **dict(config.get("dict_kwargs") or {}))
    if not isinstance(loss, nn.Module):
        raise TypeError(f"loss class_path {config['class_path']!r} must build an nn.Module, got {type(loss).__name__}")
    return loss
