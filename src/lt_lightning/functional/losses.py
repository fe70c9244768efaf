"""Long-tail classification losses as pure functions of ``(logits, target)`` and per-class tensors.

Notation: ``z`` logits of shape ``(N, C)``, ``y`` integer targets of shape ``(N,)``, ``w`` optional per-class
weights of shape ``(C,)`` applied per sample through the label. Every function takes
``reduction in {"mean", "sum", "none"}``; ``"none"`` returns one loss per sample (``w_{y_i}`` already applied),
which is what per-sample re-weighting schemes such as ABSGD need.

Two reductions coexist on purpose, each matching its reference code (METHODS §3):

* softmax cross-entropy family (:func:`cross_entropy`, :func:`ldam_loss`, :func:`vs_loss`,
  :func:`logit_adjusted_loss`, :func:`mm_loss`): PyTorch's weighted mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}``;
* focal losses (:func:`focal_loss`, :func:`sigmoid_focal_loss`): a plain mean over the ``N`` samples.

Per-class tensors (``weight``, ``margins``, ``scaling``, ``offsets``, ``log_prior``) are cast to the logits'
dtype and must be on the logits' device. Half-precision logits are promoted to float32 first, as autocast
does for ``cross_entropy``. Target values are not range-checked here (that would force a device sync);
PyTorch raises on an out-of-range class index.

Example:
    >>> z = torch.tensor([[2.0, 0.0], [0.0, 1.0]]); y = torch.tensor([0, 1])
    >>> round(cross_entropy(z, y).item(), 4), round(focal_loss(z, y, gamma=0.0).item(), 4)
    (0.2201, 0.2201)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MMPositive",
    "Reduction",
    "check_mm_positive",
    "check_reduction",
    "class_temperatures",
    "cross_entropy",
    "focal_loss",
    "ldam_loss",
    "log1m_softmax",
    "logit_adjusted_loss",
    "mix_soft_target_loss",
    "mm_loss",
    "mm_margins",
    "sigmoid_bias_init",
    "sigmoid_focal_loss",
    "vs_loss",
]

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")
MMPositive = Literal["code", "own"]
_MM_POSITIVES = ("code", "own")


def check_reduction(reduction: object) -> str:
    """Raise ``ValueError`` unless ``reduction`` is one of ``"mean"``, ``"sum"``, ``"none"``."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}")
    return reduction  # type: ignore[return-value]


def _check_real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return type(x).__name__


def _check_inputs(logits: Tensor, target: Tensor, reduction: str) -> Tensor:
    """Validate the shared arguments; return the logits promoted to at least float32."""
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor of shape (N, C), got {_describe(logits)}")
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got shape {tuple(logits.shape)}")
    if not isinstance(target, Tensor) or target.dtype != torch.long:
        raise TypeError(f"target must be a torch.long tensor of class indices, shape (N,), got {_describe(target)}")
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"target must have shape (N,) = ({logits.shape[0]},) to match logits {tuple(logits.shape)}, "
            f"got shape {tuple(target.shape)}"
        )
    check_reduction(reduction)
    # Low-precision logits lose too much in log-softmax; autocast promotes cross_entropy the same way.
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return logits


def _class_vector(name: str, value: Tensor | None, logits: Tensor) -> Tensor | None:
    """Check a per-class tensor has shape (C,) and cast it to the logits' dtype."""
    if value is None:
        return None
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a tensor of shape (C,) = ({logits.shape[1]},), got {_describe(value)}")
    if value.shape != (logits.shape[1],):
        raise ValueError(
            f"{name} must have shape (C,) = ({logits.shape[1]},) to match logits {tuple(logits.shape)}, "
            f"got shape {tuple(value.shape)}"
        )
    return value.to(dtype=logits.dtype)


def _reduce_plain(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def cross_entropy(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, reduction: Reduction = "mean"
) -> Tensor:
    """Softmax cross-entropy with PyTorch's semantics (class weights, weighted-mean reduction).

    ``l_i = -log softmax(z_i)_{y_i}``; ``"none"`` returns ``w_{y_i} * l_i``, ``"sum"`` their sum and ``"mean"``
    ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` (the batch's weight sum, not ``N``; METHODS §3.1).

    Args:
        logits: ``(N, C)`` unnormalised scores.
        target: ``(N,)`` long class indices.
        weight: optional ``(C,)`` per-class weights.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or ``(N,)`` per-sample losses for ``"none"``.

    Example:
        >>> z = torch.zeros(2, 2); y = torch.tensor([0, 1])
        >>> round(cross_entropy(z, y, weight=torch.tensor([1.0, 3.0])).item(), 4)  # log 2
        0.6931
    """
    logits = _check_inputs(logits, target, reduction)
    weight = _class_vector("weight", weight, logits)
    return F.cross_entropy(logits, target, weight=weight, reduction=reduction)


def ldam_loss(
    logits: Tensor,
    target: Tensor,
    margins: Tensor,
    scale: float = 30.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Label-distribution-aware margin loss (Cao et al., NeurIPS 2019; METHODS §3.1).

    ``z'_ij = z_ij - Delta_{y_i} [j == y_i]`` (margin on the true-class logit only), then
    ``CE(s * z', y, weight=w)`` with PyTorch's weighted-mean reduction. The margin is subtracted *before*
    scaling, so the effective logit margin is ``s * Delta_y``; the official code feeds cosine logits from a
    ``NormedLinear`` head.

    Args:
        logits: ``(N, C)`` logits (cosine similarities in the reference setup).
        target: ``(N,)`` long class indices.
        margins: ``(C,)`` per-class margins, see :func:`~lt_lightning.functional.weights.ldam_margins`.
        scale: ``s > 0`` (30 in the reference).
        weight: optional ``(C,)`` per-class weights (e.g. DRW's class-balanced weights).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or ``(N,)`` per-sample losses for ``"none"``.

    Example:
        >>> z = torch.zeros(1, 2); y = torch.tensor([0])
        >>> round(ldam_loss(z, y, torch.tensor([0.1, 0.2]), scale=10.0).item(), 4)  # log(1 + e^1)
        1.3133
    """
    logits = _check_inputs(logits, target, reduction)
    scale = _check_real("scale", scale)
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    margins = _class_vector("margins", margins, logits)
    weight = _class_vector("weight", weight, logits)
    true_margin = torch.zeros_like(logits).scatter_(1, target.unsqueeze(1), margins[target].unsqueeze(1))
    return F.cross_entropy(scale * (logits - true_margin), target, weight=weight, reduction=reduction)


def focal_loss(
    logits: Tensor,
    target: Tensor,
    gamma: float = 1.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Softmax focal loss as in the LDAM-DRW repository (METHODS §3.3(b)).

    ``ce_i = w_{y_i} CE(z_i, y_i)``, ``p_i = exp(-ce_i)``, ``l_i = (1 - p_i)^gamma ce_i``; ``"mean"`` is a
    plain mean over ``N`` (not weight-normalised). With weights, ``p_i`` is ``exp(-w CE)``, not the
    true-class probability: this is the reference behaviour, kept on purpose.

    Args:
        logits: ``(N, C)`` unnormalised scores.
        target: ``(N,)`` long class indices.
        gamma: focusing parameter >= 0 (1.0 in the reference); 0 gives weighted CE averaged over ``N``.
        weight: optional ``(C,)`` per-class weights.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or ``(N,)`` per-sample losses for ``"none"``.

    Example:
        >>> z = torch.zeros(1, 2); y = torch.tensor([0])
        >>> round(focal_loss(z, y, gamma=1.0).item(), 4)  # (1 - 1/2) * log 2
        0.3466
    """
    logits = _check_inputs(logits, target, reduction)
    gamma = _check_real("gamma", gamma)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    weight = _class_vector("weight", weight, logits)
    ce = F.cross_entropy(logits, target, weight=weight, reduction="none")
    # 1 - exp(-ce) via expm1 keeps precision for well-classified samples (ce -> 0).
    loss = (-torch.expm1(-ce)).pow(gamma) * ce
    return _reduce_plain(loss, reduction)


def sigmoid_focal_loss(
    logits: Tensor,
    target: Tensor,
    gamma: float = 1.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """One-vs-all sigmoid focal loss of the class-balanced loss paper (Cui et al., CVPR 2019; METHODS §3.3(a)).

    With ``t_ij = [j == y_i]`` and ``p_t`` the sigmoid probability of ``t``::

        loss = (1/N) sum_i sum_j w_{y_i} (1 - p_t,ij)^gamma BCE(z_ij, t_ij)

    The modulator ``(1 - p_t)^gamma = exp(gamma * logsigmoid((1 - 2t) z))`` (the reference's
    ``exp(-gamma t z - gamma log1p(exp(-z)))``) is computed in log space, finite for any ``|z|``. "mean"
    divides by ``N`` (the number of positives), not by the weight sum; ``"none"`` returns the per-sample
    sum over classes. Pair it with a last-layer bias initialised by :func:`sigmoid_bias_init`.

    Args:
        logits: ``(N, C)`` unnormalised scores, one independent sigmoid per class.
        target: ``(N,)`` long class indices.
        gamma: focusing parameter >= 0 (1.0 in the CB scripts); 0 gives weighted one-vs-all BCE.
        weight: optional ``(C,)`` per-class weights (class-balanced weights for "CB Focal").
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or ``(N,)`` per-sample losses for ``"none"``.

    Example:
        >>> z = torch.zeros(1, 2); y = torch.tensor([0])
        >>> round(sigmoid_focal_loss(z, y, gamma=1.0).item(), 4)  # 2 classes * 0.5 * log 2
        0.6931
    """
    logits = _check_inputs(logits, target, reduction)
    gamma = _check_real("gamma", gamma)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    weight = _class_vector("weight", weight, logits)
    onehot = torch.zeros_like(logits).scatter_(1, target.unsqueeze(1), 1.0)
    bce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    loss = bce if gamma == 0 else torch.exp(gamma * F.logsigmoid((1.0 - 2.0 * onehot) * logits)) * bce
    per_sample = loss.sum(dim=1)
    if weight is not None:
        per_sample = per_sample * weight[target]
    return _reduce_plain(per_sample, reduction)


def sigmoid_bias_init(num_classes: int) -> float:
    """Initial last-layer bias ``-log(C - 1)`` for sigmoid losses: every class starts at prior ``pi = 1/C``.

    From ``sigmoid(b) = 1/C``, as in the CB code (``model_base.py``); without it the ``C - 1`` negatives per
    sample dominate the first steps.

    Args:
        num_classes: ``C >= 2``.

    Example:
        >>> round(sigmoid_bias_init(10), 4)  # -log 9
        -2.1972
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    return -math.log(num_classes - 1)


def vs_loss(
    logits: Tensor,
    target: Tensor,
    scaling: Tensor,
    offsets: Tensor,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Vector-scaling loss (Kini et al., NeurIPS 2021; as in SAM-LT ``losses.py``; METHODS §3.8).

    ``CE(z * scaling + offsets, y, weight=w)`` with ``scaling_j = (n_j / n_max)^gamma`` (``1/Delta_j``) and
    ``offsets_j = tau * log pi_j``; precompute them with
    :func:`~lt_lightning.functional.weights.vs_scaling` and ``tau *``
    :func:`~lt_lightning.functional.weights.log_priors`. PyTorch's weighted-mean reduction.

    Args:
        logits: ``(N, C)`` unnormalised scores.
        target: ``(N,)`` long class indices.
        scaling: ``(C,)`` multiplicative logit scaling.
        offsets: ``(C,)`` additive logit offsets.
        weight: optional ``(C,)`` per-class weights.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or ``(N,)`` per-sample losses for ``"none"``.

    Example:
        >>> z = torch.tensor([[2.0, 0.0]]); y = torch.tensor([0])
        >>> round(vs_loss(z, y, torch.tensor([0.5, 1.0]), torch.zeros(2)).item(), 4)  # log(1 + e^-1)
        0.3133
    """
    logits = _check_inputs(logits, target, reduction)
    scaling = _class_vector("scaling", scaling, logits)
    offsets = _class_vector("offsets", offsets, logits)
    weight = _class_vector("weight", weight, logits)
    return F.cross_entropy(logits * scaling + offsets, target, weight=weight, reduction=reduction)


def logit_adjusted_loss(
    logits: Tensor,
    target: Tensor,
    log_prior: Tensor,
    tau: float = 1.0,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Logit-adjusted cross-entropy ``CE(z + tau * log pi, y, weight=w)`` (Menon et al., ICLR 2021).

    ``tau = 1`` is the balanced softmax (Ren et al., NeurIPS 2020): ``softmax`` of ``n_j e^{z_j}``. Predict
    with the raw logits ``z``; the adjustment exists only in training. PyTorch's weighted-mean reduction.

    Args:
        logits: ``(N, C)`` unnormalised scores.
        target: ``(N,)`` long class indices.
        log_prior: ``(C,)`` log class priors, see :func:`~lt_lightning.functional.weights.log_priors`.
        tau: finite temperature of the adjustment (0 gives plain CE).
        weight: optional ``(C,)`` per-class weights.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or ``(N,)`` per-sample losses for ``"none"``.

    Example:
        >>> z = torch.zeros(1, 2); y = torch.tensor([1])
        >>> log_prior = torch.tensor([0.75, 0.25]).log()
        >>> round(logit_adjusted_loss(z, y, log_prior).item(), 4)  # -log 0.25
        1.3863
    """
    logits = _check_inputs(logits, target, reduction)
    tau = _check_real("tau", tau)
    log_prior = _class_vector("log_prior", log_prior, logits)
    weight = _class_vector("weight", weight, logits)
    return F.cross_entropy(logits + tau * log_prior, target, weight=weight, reduction=reduction)


def check_mm_positive(positive: object) -> str:
    """Raise ``ValueError`` unless ``positive`` is ``"code"`` or ``"own"`` (see :func:`mm_margins`)."""
    if positive not in _MM_POSITIVES:
        raise ValueError(f"positive must be one of {list(_MM_POSITIVES)}, got {positive!r}")
    return positive  # type: ignore[return-value]


def mm_margins(
    logits: Tensor, target: Tensor, base_margins: Tensor, gamma: float = 10.0, positive: MMPositive = "code"
) -> Tensor:
    """Per-sample margins of the maximum-margin ("HMM") loss, ``ihaeyong/Maximum-Margin-LDAM`` ``losses.py:48-126``.

    Computed without gradient (the reference runs them under ``no_grad`` and returns ``.data``). With ``z`` the
    (cosine) logits, ``onehot`` the rows' own labels and ``mbar_i = base_margins[y_i]``::

        p_i   = z[i, y_0]   (positive="code": the FIRST sample's label column, for every row, as the reference)
              = z[i, y_i]   (positive="own": each row's own label, the evident intent)
        q_i   = max_j z_ij (1 - onehot_ij)      (target entry zeroed, not excluded: q_i >= 0)
        d_i   = p_i - q_i
        Delta_i = exp(-d_i - gamma mbar_i)   if d_i > 0   (correct: at most e^{-gamma mbar}, decaying with d)
                = exp( d_i - mbar_i)         if d_i < 0   (wrong: at most e^{-mbar}, decaying with |d|)
                = 0                          if d_i = 0

    ``"code"`` makes every row's margin depend on the first sample's label (and so on the batch order); it is the
    default of :class:`~lt_lightning.losses.MMLoss` because the published numbers come from that code.

    Args:
        logits: ``(N, C)`` logits (cosine similarities in the reference setup).
        target: ``(N,)`` long class indices.
        base_margins: ``(C,)`` per-class ``mbar`` (HMM: all ``max_margin``; HMM-LDAM: ``max_margin - m_LDAM``).
        gamma: finite, >= 0; scales ``mbar`` in the exponent for correctly classified samples.
        positive: ``"code"`` or ``"own"`` (above).

    Returns:
        ``(N,)`` margins, detached, in the logits' (promoted) dtype.

    Example:
        >>> z = torch.tensor([[0.6, 0.1], [0.6, 0.1]]); y = torch.tensor([0, 1])
        >>> [round(v, 4) for v in mm_margins(z, y, torch.full((2,), 0.5), gamma=1.0, positive="own").tolist()]
        [0.3679, 0.3679]
        >>> [round(v, 4) for v in mm_margins(z, y, torch.full((2,), 0.5), gamma=1.0, positive="code").tolist()]
        [0.3679, 0.0]
    """
    logits = _check_inputs(logits, target, "none")
    gamma = _check_real("gamma", gamma)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    check_mm_positive(positive)
    base = _class_vector("base_margins", base_margins, logits)
    with torch.no_grad():
        z = logits.detach()
        onehot = torch.zeros_like(z).scatter_(1, target.unsqueeze(1), 1.0)
        if positive == "code":
            # index_select with a length-1 index: the first label's column, no host sync; empty for N = 0
            p = z.index_select(1, target[:1]).squeeze(1) if z.shape[0] else z.new_zeros(0)
        else:
            p = z.gather(1, target.unsqueeze(1)).squeeze(1)
        q = (z * (1.0 - onehot)).max(dim=1).values if z.shape[0] else z.new_zeros(0)
        mbar = base[target]
        d = p - q
        correct = torch.exp(-d - gamma * mbar)
        wrong = torch.exp(d - mbar)
        return torch.where(d > 0, correct, torch.where(d < 0, wrong, torch.zeros_like(d)))


def mm_loss(
    logits: Tensor,
    target: Tensor,
    base_margins: Tensor,
    scale: float = 30.0,
    gamma: float = 10.0,
    positive: MMPositive = "code",
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Maximum-margin loss (HMM / HMM-LDAM of ``ihaeyong/Maximum-Margin-LDAM``): LDAM with a per-sample margin.

    ``CE(s * (z - Delta_i onehot(y_i)), y, weight=w)`` with ``Delta`` of :func:`mm_margins` (no gradient flows
    through it), subtracted from each row's own target logit. PyTorch's weighted-mean reduction.

    Args:
        logits: ``(N, C)`` logits (cosine similarities in the reference setup).
        target: ``(N,)`` long class indices.
        base_margins: ``(C,)`` per-class ``mbar``.
        scale: ``s > 0`` (30 in the reference's argparse).
        gamma: finite, >= 0 (10 in the reference's argparse).
        positive: ``"code"`` (reference) or ``"own"``, see :func:`mm_margins`.
        weight: optional ``(C,)`` per-class weights (DRW).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or ``(N,)`` per-sample losses for ``"none"``.

    Example:
        >>> z = torch.tensor([[0.1, 0.6]]); y = torch.tensor([0])  # wrong by 0.5: Delta = e^{-0.5-0.5}
        >>> round(mm_loss(z, y, torch.full((2,), 0.5), scale=1.0, gamma=1.0).item(), 4)  # log(1 + e^{0.5+e^-1})
        1.2184
    """
    logits = _check_inputs(logits, target, reduction)
    scale = _check_real("scale", scale)
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    weight = _class_vector("weight", weight, logits)
    delta = mm_margins(logits, target, base_margins, gamma=gamma, positive=positive)
    true_margin = torch.zeros_like(logits).scatter_(1, target.unsqueeze(1), delta.unsqueeze(1))
    return F.cross_entropy(scale * (logits - true_margin), target, weight=weight, reduction=reduction)


def class_temperatures(class_counts: Tensor | Sequence[int], epsilon: float = 0.6, eta: float = 3.0) -> Tensor:
    """DBN-Mix's class-conditional temperatures (soony1213/DBN-Mix ``losses.py``, ``MixLoss``).

    ``phi_c = epsilon * C * n_c / n_max + (1 - epsilon)`` and ``tau_c = (max_j phi_j / phi_c)^(1 / eta)``: the
    most frequent class has ``tau = 1``, rarer classes larger temperatures (their logits are divided by ``tau_c``
    in the training loss), equal counts give all ones, ``epsilon = 0`` gives all ones.

    Args:
        class_counts: training images per class (``C`` values >= 1).
        epsilon: in [0, 1] (0.6 in the official CIFAR scripts).
        eta: > 0 (3 for CIFAR-10, 7 for CIFAR-100 in the official scripts; 7 is its argparse default).

    Returns:
        A float32 ``(C,)`` tensor of temperatures >= 1.

    Example:
        >>> class_temperatures([100, 10, 1], epsilon=0.6, eta=3.0).tolist()  # doctest: +ELLIPSIS
        [1.0, 1.559..., 1.739...]
    """
    epsilon = _check_real("epsilon", epsilon)
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon!r}")
    eta = _check_real("eta", eta)
    if eta <= 0:
        raise ValueError(f"eta must be > 0, got {eta!r}")
    counts = torch.as_tensor(
        class_counts.detach().cpu() if isinstance(class_counts, Tensor) else class_counts, dtype=torch.float64
    )
    if counts.ndim != 1 or counts.numel() == 0 or bool((counts <= 0).any()) or not bool(torch.isfinite(counts).all()):
        raise ValueError(f"class_counts must be a non-empty sequence of counts > 0, got {counts.tolist()!r}")
    phi = epsilon * counts.numel() * counts / counts.max() + (1.0 - epsilon)
    return ((phi.max() / phi) ** (1.0 / eta)).float()


def log1m_softmax(logits: Tensor) -> Tensor:
    """``log(1 - softmax(z)_c)`` for every class, finite wherever the true value is (``(N, C)`` in and out).

    The naive ``torch.log(1 - softmax(z))`` (the DBN-Mix reference) is ``-inf`` (and its gradient NaN) as soon as
    one probability rounds to 1 in floating point. Here, per row, the class with the largest logit uses
    ``logsumexp_{j != c} z_j - logsumexp_j z_j`` (exact, no cancellation) and every other class ``log1p(-p_c)``
    with ``p_c <= 1/2`` (accurate). Needs ``C >= 2``.

    Example:
        >>> z = torch.tensor([[0.0, 0.0], [200.0, 0.0]])
        >>> log1m_softmax(z).tolist()  # log(1/2), and log(1 - p) = -200 where the naive form gives -inf
        [[-0.6931471824645996, -0.6931471824645996], [-200.0, -0.0]]
    """
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, C) with C >= 2, got shape {tuple(logits.shape)}")
    lse = torch.logsumexp(logits, dim=1, keepdim=True)
    top = logits.argmax(dim=1, keepdim=True)
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, top, True)
    others = torch.logsumexp(logits.masked_fill(is_top, float("-inf")), dim=1, keepdim=True) - lse
    # The top class is masked out of log1p's input so that its (unused) branch has neither -inf nor a NaN gradient.
    p = torch.exp(logits - lse).masked_fill(is_top, 0.0)
    return torch.where(is_top, others, torch.log1p(-p))


def mix_soft_target_loss(
    logits: Tensor,
    soft_targets: Tensor,
    temperatures: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """DBN-Mix's loss on (mixed) soft targets (soony1213/DBN-Mix ``losses.py``, ``MixLoss.forward``).

    With ``p = softmax(z / tau)`` and per-class weights ``w`` (ones when ``None``)::

        l_i = - sum_c [ t_ic w_c log p_ic + (1 - t_ic) w_c log(1 - p_ic) ]

    and a plain mean over the ``N`` samples for ``"mean"`` (as the reference). ``log(1 - p)`` is computed stably
    (:func:`log1m_softmax`) where the reference's ``torch.log(1 - pred)`` becomes ``-inf``: a fix of a numerical
    failure, equal to the reference wherever that is finite. The loss is affine in ``t``, so on a mixed target
    ``lam t1 + (1 - lam) t2`` it equals ``lam l(t1) + (1 - lam) l(t2)``.

    Args:
        logits: ``(N, C)`` unnormalised scores.
        soft_targets: ``(N, C)`` target distributions (e.g. mixup's ``lam onehot(y1) + (1 - lam) onehot(y2)``), or
            ``(N,)`` long class indices (one-hot encoded here).
        temperatures: optional ``(C,)`` divisors of the logits (:func:`class_temperatures`); ``None`` is all ones.
        weight: optional ``(C,)`` per-class weights (DRW).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> z = torch.tensor([[1.0, 0.0, -1.0]]); t = torch.tensor([[1.0, 0.0, 0.0]])
        >>> p = z.softmax(1)[0]
        >>> expected = -(p[0].log() + (1 - p[1]).log() + (1 - p[2]).log())
        >>> bool(torch.isclose(mix_soft_target_loss(z, t), expected))
        True
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.ndim != 2:
        raise TypeError(f"logits must be a floating-point tensor of shape (N, C), got {_describe(logits)}")
    check_reduction(reduction)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    n, c = logits.shape
    if isinstance(soft_targets, Tensor) and soft_targets.dtype == torch.long and soft_targets.shape == (n,):
        soft_targets = F.one_hot(soft_targets, c)
    if not isinstance(soft_targets, Tensor) or soft_targets.shape != (n, c):
        raise ValueError(
            f"soft_targets must be a (N, C) = ({n}, {c}) tensor of target distributions or (N,) long class "
            f"indices, got {_describe(soft_targets)}"
        )
    t = soft_targets.to(dtype=logits.dtype)
    temperatures = _class_vector("temperatures", temperatures, logits)
    weight = _class_vector("weight", weight, logits)
    z = logits if temperatures is None else logits / temperatures
    terms = t * F.log_softmax(z, dim=1) + (1.0 - t) * log1m_softmax(z)
    if weight is not None:
        terms = terms * weight
    return _reduce_plain(-terms.sum(dim=1), reduction)
