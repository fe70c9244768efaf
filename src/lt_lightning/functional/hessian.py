"""Hessian spectrum of a class-mean loss: HVPs by double backward, Lanczos / SLQ, Hutchinson, density (pure torch).

For the training images ``x_1 .. x_n`` of one class and parameters ``theta`` (flattened to a ``(d,)`` vector):

    L(theta) = (1/n) sum_i loss(f(x_i; theta), y_i)          H = d^2 L / d theta^2            (d, d), symmetric

    H v = d/d theta < grad L(theta), v >                      (double backward, never forming H)

The spectrum of ``H`` is probed through HVPs only (Saddle-LongTail ``hessian_analysis.py``, a copy of PyHessian):

* **Lanczos** with full re-orthogonalisation builds ``Q^T H Q = T`` (tridiagonal, ``alpha`` on the diagonal,
  ``beta`` beside it) from a unit start ``v0``. The eigenpairs ``(theta_i, s_i)`` of ``T`` are the Ritz values:
  ``lambda_min`` and ``lambda_max`` are their extremes, and ``H`` has an eigenvalue within ``beta_m |s_{m,i}|`` of
  every ``theta_i`` (the residual bound).
* **SLQ** (stochastic Lanczos quadrature): with ``w_i = s_{1,i}^2``, ``sum_i w_i theta_i^k = v0^T H^k v0`` for
  ``k < 2m`` (Gauss quadrature), so ``sum_i w_i delta(t - theta_i)`` estimates the spectral density of ``H`` for a
  Rademacher ``v0``; :func:`spectral_density` broadens it with Gaussians as PyHessian's ``density_generate``.
* **Hutchinson**: ``tr(H) = E[z^T H z]`` for Rademacher ``z``.

Differences from the official code (research/hessian.md §1): no random restart at a Lanczos breakdown (it would break
the quadrature weights), ``torch.linalg.eigh`` instead of the removed ``torch.eig``, a fixed number of trace probes
(no early stop), only ``torch.autograd.grad`` (``.grad`` and DDP reducer hooks untouched), float64 scalars, and all
randomness from an explicit ``torch.Generator``. :func:`power_iteration` keeps PyHessian's rule, which returns the
**largest |lambda|**, not ``lambda_max``.

Example:
    >>> h = torch.diag(torch.tensor([-2.0, 1.0, 3.0], dtype=torch.float64))
    >>> g = torch.Generator().manual_seed(0)
    >>> alphas, betas = lanczos(lambda v: h @ v, 3, steps=10, generator=g, dtype=torch.float64)
    >>> nodes, weights, residuals = ritz(alphas, betas)
    >>> [round(t, 6) for t in nodes.tolist()], round(float(weights.sum()), 6), bool(residuals.max() < 1e-8)
    ([-2.0, 1.0, 3.0], 1.0, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lt_lightning.functional.ekld import _check_classes, _check_num_classes

__all__ = [
    "HessianVectorProduct",
    "Spectrum",
    "class_subsets",
    "flatten_tensors",
    "hessian_spectrum",
    "hutchinson_trace",
    "lanczos",
    "make_hvp",
    "power_iteration",
    "ritz",
    "slq",
    "spectral_density",
    "spectral_summary",
    "unflatten_vector",
]

HVP = Callable[[Tensor], Tensor]
"""A Hessian-vector product on flat ``(d,)`` vectors; returns a ``(d,)`` tensor of the argument's dtype/device."""

# Gram-Schmidt in float64 over row blocks of the basis: at most this many float64 elements live at once.
_BLOCK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------------- flat vectors
def flatten_tensors(tensors: Sequence[Tensor], dtype: torch.dtype | None = None, device=None) -> Tensor:
    """Concatenate tensors (e.g. parameters or their gradients) into one flat ``(d,)`` vector, in order.

    Args:
        tensors: the tensors; each contributes ``t.reshape(-1)``.
        dtype: output dtype; None promotes the inputs' dtypes.
        device: output device; None uses the first tensor's.

    Returns:
        ``(sum of numel,)`` tensor (a new tensor, detached from nothing: autograd sees ``cat``).

    Example:
        >>> flatten_tensors([torch.ones(2, 2), torch.zeros(1)]).tolist()
        [1.0, 1.0, 1.0, 1.0, 0.0]
    """
    if len(tensors) == 0:
        raise ValueError("flatten_tensors needs at least one tensor")
    if dtype is None:
        dtype = tensors[0].dtype
        for t in tensors[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
    device = tensors[0].device if device is None else device
    return torch.cat([t.reshape(-1).to(device=device, dtype=dtype) for t in tensors])


def unflatten_vector(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """Split a flat ``(d,)`` vector into tensors shaped, typed and placed like ``like`` (the inverse of flatten).

    Example:
        >>> [t.shape for t in unflatten_vector(torch.arange(5.0), [torch.ones(2, 2), torch.zeros(1)])]
        [torch.Size([2, 2]), torch.Size([1])]
    """
    sizes = [t.numel() for t in like]
    if vector.ndim != 1 or vector.shape[0] != sum(sizes):
        raise ValueError(f"vector must be flat with {sum(sizes)} entries, got shape {tuple(vector.shape)}")
    return [
        piece.view(t.shape).to(device=t.device, dtype=t.dtype)
        for piece, t in zip(vector.split(sizes), like, strict=True)
    ]


# --------------------------------------------------------------------------------------------------- class subsets
def class_subsets(
    targets: Tensor, num_classes: int, max_per_class: int | None, generator: torch.Generator
) -> list[Tensor]:
    """Per class, the indices of at most ``max_per_class`` of its samples: the first of a seeded permutation.

    There is no cycling (unlike :func:`~lt_lightning.functional.ekld.per_class_selection`): a duplicate would
    re-weight a sample in the class-mean Hessian. A class with ``n_c`` samples gets ``min(n_c, max_per_class)``.

    Args:
        targets: ``(N,)`` integer labels in ``[0, num_classes)``.
        num_classes: ``C >= 1``.
        max_per_class: cap per class (``>= 1``); None keeps every sample (the official script).
        generator: seeds the permutation (draws on its device, results on CPU).

    Returns:
        ``C`` int64 CPU tensors of dataset indices (an empty one for a class without samples).

    Example:
        >>> subs = class_subsets(torch.tensor([0, 1, 0, 0, 2]), 4, 2, torch.Generator().manual_seed(0))
        >>> [len(s) for s in subs], sorted(subs[1].tolist())
        ([2, 1, 1, 0], [1])
    """
    num_classes = _check_num_classes(num_classes)
    if max_per_class is not None and (
        isinstance(max_per_class, bool) or not isinstance(max_per_class, int) or max_per_class < 1
    ):
        raise ValueError(f"max_per_class must be None or an integer >= 1, got {max_per_class!r}")
    targets = _check_classes(torch.as_tensor(targets), len(targets), num_classes).cpu()
    order = torch.randperm(len(targets), generator=generator, device=generator.device).cpu()
    by_class = order[torch.sort(targets[order], stable=True).indices]  # stable: keeps the seeded order per class
    counts = torch.bincount(targets, minlength=num_classes).tolist()
    out, start = [], 0
    for n in counts:
        take = n if max_per_class is None else min(n, max_per_class)
        out.append(by_class[start : start + take].clone())
        start += n
    return out


# --------------------------------------------------------------------------------------------------- HVP
class HessianVectorProduct:
    """``v -> H v`` for the mean loss over ``inputs`` (built by :func:`make_hvp`); see there for the contract.

    Attributes:
        dim: ``d``, the number of parameter entries.
        dtype: dtype of the parameters (promoted over them): the natural dtype of the vectors.
        device: device of the first parameter.
        calls: how many products were computed so far (each is one pass over all chunks).
    """

    def __init__(
        self,
        forward: Callable[[Tensor], Tensor],
        loss_fn: Callable[[Tensor, Tensor | None], Tensor],
        inputs: Tensor,
        targets: Tensor | None,
        params: Sequence[Tensor],
        batch_size: int = 128,
    ) -> None:
        params = list(params)
        if not params:
            raise ValueError("params must hold at least one tensor")
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"params[{i}] must be a tensor, got {type(p).__name__}")
            if p.is_inference():
                raise ValueError(
                    f"params[{i}] is an inference tensor (created under torch.inference_mode()); autograd cannot "
                    "differentiate it. Create the model outside inference mode."
                )
            if not p.requires_grad:
                raise ValueError(f"params[{i}] does not require grad; pass only tensors with requires_grad=True")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        n = len(inputs)
        if n < 1:
            raise ValueError("inputs must hold at least one sample")
        if targets is not None and len(targets) != n:
            raise ValueError(f"inputs has {n} samples but targets has {len(targets)}")
        with torch.inference_mode(False):
            # Inference tensors "cannot be saved for backward": a normal copy lets the HVP run inside test loops.
            inputs = inputs.clone() if inputs.is_inference() else inputs
            if targets is not None and targets.is_inference():
                targets = targets.clone()
        self._forward, self._loss_fn = forward, loss_fn
        self._inputs, self._targets, self._params = inputs, targets, params
        self._batch_size, self._n = batch_size, n
        self.dim = sum(p.numel() for p in params)
        dtype = params[0].dtype
        for p in params[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        self.dtype: torch.dtype = dtype
        self.device: torch.device = params[0].device
        self.calls = 0
        self._cached: tuple[list[int], list[Tensor]] | None = None  # single-chunk path: the gradient graph

    def _grad_graph(self, start: int, stop: int) -> tuple[list[int], list[Tensor]]:
        x = self._inputs[start:stop]
        y = None if self._targets is None else self._targets[start:stop]
        loss = self._loss_fn(self._forward(x), y)
        if loss.ndim > 0:
            loss = loss.mean()
        if not loss.requires_grad:
            raise ValueError("the loss does not depend on params (it does not require grad)")
        grads = torch.autograd.grad(loss, self._params, create_graph=True, allow_unused=True)
        # A gradient that is None or constant (loss linear in that tensor) contributes no curvature.
        keep = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        return keep, [grads[i] for i in keep]

    def _second(self, keep: list[int], grads: list[Tensor], pieces: list[Tensor], retain: bool) -> list[Tensor]:
        out = [torch.zeros_like(p) for p in self._params]
        if keep:
            hv = torch.autograd.grad(
                grads, self._params, grad_outputs=[pieces[i] for i in keep], retain_graph=retain, allow_unused=True
            )
            out = [o if h is None else h for o, h in zip(out, hv, strict=True)]
        return out

    def __call__(self, v: Tensor) -> Tensor:
        if not isinstance(v, Tensor) or v.ndim != 1 or v.shape[0] != self.dim:
            raise ValueError(f"v must be a flat ({self.dim},) tensor, got {getattr(v, 'shape', type(v).__name__)}")
        with torch.inference_mode(False), torch.enable_grad():
            pieces = [t.detach().clone() if t.is_inference() else t.detach() for t in unflatten_vector(v, self._params)]
            if self._n <= self._batch_size:
                if self._cached is None:
                    self._cached = self._grad_graph(0, self._n)
                hv = self._second(*self._cached, pieces, retain=True)
                result = flatten_tensors(hv, dtype=v.dtype, device=v.device)
            else:
                result = torch.zeros(self.dim, dtype=v.dtype, device=v.device)
                for start in range(0, self._n, self._batch_size):
                    stop = min(start + self._batch_size, self._n)
                    hv = self._second(*self._grad_graph(start, stop), pieces, retain=False)
                    result += (stop - start) * flatten_tensors(hv, dtype=v.dtype, device=v.device)
                result /= self._n
        self.calls += 1
        return result.detach()


def make_hvp(
    forward: Callable[[Tensor], Tensor],
    loss_fn: Callable[[Tensor, Tensor | None], Tensor],
    inputs: Tensor,
    targets: Tensor | None,
    params: Sequence[Tensor],
    batch_size: int = 128,
) -> HessianVectorProduct:
    """The Hessian-vector product of the **mean** loss over ``inputs`` w.r.t. ``params``, on flat vectors.

    ``H v`` is computed by double backward with ``torch.autograd.grad`` only: ``g = grad(L_b, params,
    create_graph=True)``, then ``grad(g, params, grad_outputs=v)``. ``.backward()`` is never called, so every
    ``p.grad`` stays as it was and no gradient-accumulation hook (DDP's reducer) fires. The samples are processed in
    chunks of ``batch_size``; chunk ``b`` contributes ``n_b H_b v`` and the sum is divided by ``n`` (exact for a loss
    that is a batch mean). When all samples fit in one chunk, ``g`` is built once on the first call and its graph is
    kept (``retain_graph=True``) until the returned object is dropped; it then reflects the parameter values of that
    first call, so build a new HVP after changing the parameters.

    Inference mode: every product runs under ``torch.inference_mode(False)`` and ``torch.enable_grad()``, so it
    works when called from an outer ``torch.no_grad()`` or ``torch.inference_mode()`` (e.g. Lightning's test loop).
    ``inputs``/``targets`` and ``v`` that are inference tensors are cloned into normal tensors first. Parameters
    (and any buffer the forward *saves for backward*) must be normal tensors: inference-tensor parameters raise.

    The module's mode is the caller's business: put it in ``eval()`` for BN running statistics and no dropout.

    Args:
        forward: ``inputs[chunk] -> outputs`` (e.g. the module).
        loss_fn: ``(outputs, targets[chunk]) -> loss``; a scalar must be the chunk mean (PyTorch's default
            reduction); a non-scalar is reduced with ``.mean()``. ``targets`` is None when None was passed.
        inputs: ``(n, ...)`` samples, ``n >= 1``.
        targets: ``(n, ...)`` targets, or None.
        params: tensors with ``requires_grad=True``; their flattened concatenation defines the vector layout
            (:func:`flatten_tensors`). A tensor the loss does not use gets zero curvature.
        batch_size: samples per chunk.

    Returns:
        A :class:`HessianVectorProduct`: call it on a ``(d,)`` vector to get ``H v`` in the vector's dtype and
        device (computed in the parameters' dtype); ``.dim``, ``.dtype``, ``.device`` and ``.calls`` describe it.

    Example:
        >>> w = torch.tensor([1.0, 2.0], requires_grad=True)  # loss = mean_i (x_i . w)^2  =>  H = 2 X^T X / n
        >>> hvp = make_hvp(lambda x: x @ w, lambda z, _: z.pow(2), torch.eye(2), None, [w])
        >>> hvp(torch.tensor([1.0, 0.0])).tolist(), w.grad is None
        ([1.0, 0.0], True)
    """
    return HessianVectorProduct(forward, loss_fn, inputs, targets, params, batch_size)


# --------------------------------------------------------------------------------------------------- random vectors
def _rademacher(dim: int, generator: torch.Generator, dtype: torch.dtype, device) -> Tensor:
    z = torch.randint(0, 2, (dim,), generator=generator, device=generator.device)
    return (z * 2 - 1).to(device=device, dtype=dtype)


def _gaussian(dim: int, generator: torch.Generator, dtype: torch.dtype, device) -> Tensor:
    return torch.randn(dim, generator=generator, device=generator.device, dtype=torch.float64).to(device, dtype)


def _check_dim(dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    return dim


def _resolve(dtype: torch.dtype | None, device) -> tuple[torch.dtype, torch.device]:
    return (torch.get_default_dtype() if dtype is None else dtype), torch.device("cpu" if device is None else device)


def _dot64(a: Tensor, b: Tensor) -> float:
    return float(torch.dot(a.to(torch.float64), b.to(torch.float64)))


# --------------------------------------------------------------------------------------------------- power iteration
def power_iteration(
    hvp: HVP,
    dim: int,
    generator: torch.Generator,
    iters: int = 100,
    tol: float = 1e-3,
    dtype: torch.dtype | None = None,
    device=None,
) -> tuple[float, int]:
    """PyHessian's "top eigenvalue": power iteration, which converges to the eigenvalue of **largest |lambda|**.

    Rule of ``PyHessian hessian.py eigenvalues`` (``SLT hessian.py:112-159``): Gaussian start, ``v <- Hv/|Hv|``,
    estimate ``v^T H v``; stop when ``|est_old - est| / (|est_old| + 1e-6) < tol`` and return the previous estimate.
    For an indefinite ``H`` whose most negative eigenvalue dominates it returns that negative value: it is kept for
    parity with the official numbers and as a test cross-check (shift ``H - sigma I`` for the other end); use
    :func:`lanczos` / :func:`ritz` for ``lambda_max`` and ``lambda_min``.

    Args:
        hvp: ``v -> H v`` on ``(dim,)`` vectors.
        dim: ``d``.
        generator: draws the start vector.
        iters: maximum number of HVPs.
        tol: relative change that stops the iteration.
        dtype, device: of the vectors (default dtype / CPU when None).

    Returns:
        ``(eigenvalue, hvps)``: the estimate (float) and the number of HVPs used.

    Example:
        >>> h = torch.diag(torch.tensor([-5.0, 1.0, 3.0], dtype=torch.float64))
        >>> lam, n = power_iteration(lambda v: h @ v, 3, torch.Generator().manual_seed(0), tol=1e-9,
        ...                          dtype=torch.float64)
        >>> round(lam, 6)
        -5.0
    """
    dim = _check_dim(dim)
    dtype, device = _resolve(dtype, device)
    v = _gaussian(dim, generator, dtype, device)
    v = v / torch.linalg.vector_norm(v.to(torch.float64)).to(dtype)
    estimate: float | None = None
    used = 0
    for _ in range(iters):
        hv = hvp(v)
        used += 1
        current = _dot64(hv, v)
        norm = float(torch.linalg.vector_norm(hv.to(torch.float64)))
        if norm == 0.0:
            return 0.0, used
        v = (hv.to(torch.float64) / norm).to(dtype)
        if estimate is None:
            estimate = current
        elif abs(estimate - current) / (abs(estimate) + 1e-6) < tol:
            break
        else:
            estimate = current
    return (math.nan if estimate is None else estimate), used


# --------------------------------------------------------------------------------------------------- Lanczos
def _orthogonalise(w: Tensor, basis: Tensor) -> Tensor:
    """``w - Q^T (Q w)`` by row blocks of ``Q``, in float64 on ``basis``'s device (block modified Gram-Schmidt)."""
    rows = max(1, _BLOCK_ELEMENTS // max(1, basis.shape[1]))
    for start in range(0, basis.shape[0], rows):
        block = basis[start : start + rows].to(torch.float64)
        w = w - block.T @ (block @ w)
    return w


def lanczos(
    hvp: HVP,
    dim: int,
    steps: int,
    generator: torch.Generator,
    start: Literal["rademacher", "gaussian"] | Tensor = "rademacher",
    basis_device=None,
    dtype: torch.dtype | None = None,
    device=None,
) -> tuple[Tensor, Tensor]:
    """Lanczos tridiagonalisation of ``H`` with full re-orthogonalisation ("twice is enough").

    Step ``j`` (one HVP): ``w = H q_j``, ``alpha_j = q_j . w``, ``w -= alpha_j q_j + beta_{j-1} q_{j-1}``, then
    ``w`` is orthogonalised against all stored ``q`` twice, ``beta_j = |w|`` and ``q_{j+1} = w / beta_j``. All
    scalars (dots, norms, Gram-Schmidt coefficients) are float64 even for a float32 ``H``; the basis is stored in
    ``dtype``. The run stops early at a breakdown ``beta_j <= 1e-8 ||T||`` (a Gershgorin bound of the ``T`` so far):
    the Krylov space is invariant, the Ritz values are exact eigenvalues, and there is **no** random restart.

    Args:
        hvp: ``v -> H v`` on ``(dim,)`` vectors (symmetric ``H``).
        dim: ``d``.
        steps: maximum number of steps (= HVPs), ``1 <= steps``; at most ``d`` are useful.
        generator: draws the start vector (unused when ``start`` is a tensor).
        start: ``"rademacher"`` (entries ``+-1/sqrt(d)``, SLQ's choice), ``"gaussian"`` (normalised), or a
            ``(d,)`` tensor (normalised; its dtype and device then define the vectors').
        basis_device: where the ``steps x d`` basis lives (``"cpu"`` saves accelerator memory for large models;
            re-orthogonalisation then runs there); None keeps it with the vectors.
        dtype, device: of the vectors (default dtype / CPU when None; ignored for a tensor ``start``).

    Returns:
        ``(alphas, betas)``: float64 CPU tensors of equal length ``k <= steps`` (``k`` = HVPs done). ``alphas`` is
        the diagonal of ``T``, ``betas[:-1]`` its off-diagonal, and ``betas[-1]`` the residual norm after the last
        step (tiny after a breakdown), used by :func:`ritz` for error bounds.

    Example:
        >>> h = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 1.0], [0.0, 1.0, 2.0]], dtype=torch.float64)
        >>> a, b = lanczos(lambda v: h @ v, 3, 5, torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> len(a), [round(t, 4) for t in ritz(a, b)[0].tolist()]  # 2 -+ sqrt(2), 2; stops after d steps
        (3, [0.5858, 2.0, 3.4142])
    """
    dim = _check_dim(dim)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if isinstance(start, Tensor):
        if start.ndim != 1 or start.shape[0] != dim:
            raise ValueError(f"start must be a ({dim},) tensor, got shape {tuple(start.shape)}")
        dtype, device = start.dtype, start.device
        v64 = start.detach().to(torch.float64)
    else:
        dtype, device = _resolve(dtype, device)
        if start == "rademacher":
            v64 = _rademacher(dim, generator, torch.float64, device)
        elif start == "gaussian":
            v64 = _gaussian(dim, generator, torch.float64, device)
        else:
            raise ValueError(f"start must be 'rademacher', 'gaussian' or a tensor, got {start!r}")
    norm = float(torch.linalg.vector_norm(v64))
    if not norm > 0.0 or not math.isfinite(norm):
        raise ValueError("the start vector must be finite and non-zero")
    v64 = v64 / norm
    basis_device = device if basis_device is None else torch.device(basis_device)
    basis = torch.empty(min(steps, dim), dim, dtype=dtype, device=basis_device)
    alphas: list[float] = []
    betas: list[float] = []
    prev64: Tensor | None = None
    t_norm = 0.0
    for j in range(min(steps, dim)):
        basis[j] = v64.to(dtype)
        w64 = hvp(v64.to(dtype)).to(torch.float64)
        alpha = float(torch.dot(w64, v64))
        w64 = w64 - alpha * v64
        if prev64 is not None:
            w64 = w64 - betas[-1] * prev64
        w_b = w64.to(basis_device)
        for _ in range(2):
            w_b = _orthogonalise(w_b, basis[: j + 1])
        w64 = w_b.to(device)
        beta = float(torch.linalg.vector_norm(w64))
        t_norm = max(t_norm, abs(alpha) + (betas[-1] if betas else 0.0) + beta)
        alphas.append(alpha)
        betas.append(beta)
        if not math.isfinite(beta):
            raise FloatingPointError(f"Lanczos produced a non-finite value at step {j + 1} (alpha={alpha})")
        if beta <= 1e-8 * t_norm:
            break
        prev64, v64 = v64, w64 / beta
    f64 = torch.float64
    return torch.tensor(alphas, dtype=f64), torch.tensor(betas, dtype=f64)


def ritz(alphas: Tensor, betas: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ritz values, Gauss-quadrature weights and residual bounds of a Lanczos run (``torch.linalg.eigh``, float64).

    With ``T = S diag(theta) S^T``: ``nodes = theta`` (ascending), ``weights = S[0, :]^2`` (summing to 1), and
    ``residuals = beta_m |S[m-1, :]|``: ``H`` has an eigenvalue within ``residuals[i]`` of ``nodes[i]``.

    Args:
        alphas: ``(m,)`` diagonal of ``T``.
        betas: ``(m,)`` as returned by :func:`lanczos` (``betas[:-1]`` off-diagonal, ``betas[-1]`` residual norm).

    Returns:
        ``(nodes, weights, residuals)``, each ``(m,)`` float64 on CPU.

    Example:
        >>> nodes, weights, res = ritz(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]))
        >>> nodes.tolist(), [round(w, 12) for w in weights.tolist()], res.tolist()
        ([-1.0, 1.0], [0.5, 0.5], [0.0, 0.0])
    """
    a = torch.as_tensor(alphas, dtype=torch.float64).cpu()
    b = torch.as_tensor(betas, dtype=torch.float64).cpu()
    if a.ndim != 1 or b.shape != a.shape or a.numel() < 1:
        raise ValueError(f"alphas and betas must be 1-D of one length >= 1, got {tuple(a.shape)} and {tuple(b.shape)}")
    t = torch.diag(a) + torch.diag(b[:-1], 1) + torch.diag(b[:-1], -1)
    nodes, vecs = torch.linalg.eigh(t)
    weights = vecs[0].square()
    residuals = b[-1].abs() * vecs[-1].abs()
    return nodes, weights, residuals


# --------------------------------------------------------------------------------------------------- SLQ, trace
def hutchinson_trace(
    hvp: HVP,
    dim: int,
    probes: int,
    generator: torch.Generator,
    dtype: torch.dtype | None = None,
    device=None,
    samples: Sequence[float] = (),
) -> tuple[float, float]:
    """Hutchinson's trace estimate ``tr(H) ~ mean_k z_k^T H z_k`` with a fixed number of Rademacher probes.

    No early stop (PyHessian stops at a 1e-3 relative change, which can happen after 2 probes).

    Args:
        hvp: ``v -> H v``.
        dim: ``d``.
        probes: number of probes (HVPs), ``>= 0``.
        generator: draws the probes.
        dtype, device: of the probes (default dtype / CPU when None).
        samples: extra unbiased samples pooled with the probes, e.g. ``d * alpha_1`` of each Rademacher-started
            Lanczos run (``= d * sum_i w_i theta_i``), which come for free.

    Returns:
        ``(mean, stderr)``: the estimate and its standard error ``std / sqrt(n)`` (NaN with fewer than 2 samples;
        both NaN with none).

    Example:
        >>> h = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> hutchinson_trace(lambda v: h @ v, 3, 4, torch.Generator().manual_seed(0), dtype=torch.float64)
        (6.0, 0.0)
    """
    dim = _check_dim(dim)
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 0:
        raise ValueError(f"probes must be an integer >= 0, got {probes!r}")
    dtype, device = _resolve(dtype, device)
    values = [float(s) for s in samples]
    for _ in range(probes):
        z = _rademacher(dim, generator, dtype, device)
        values.append(_dot64(hvp(z), z))
    if not values:
        return math.nan, math.nan
    x = torch.tensor(values, dtype=torch.float64)
    se = float(x.std(correction=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return float(x.mean()), se


def slq(
    hvp: HVP,
    dim: int,
    steps: int,
    runs: int,
    generator: torch.Generator,
    dtype: torch.dtype | None = None,
    device=None,
    basis_device=None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Stochastic Lanczos quadrature: ``runs`` Rademacher-started :func:`lanczos` runs, each through :func:`ritz`.

    A run that breaks down after ``k < steps`` steps is padded: nodes and residuals NaN, weights 0. The number of
    HVPs is the number of finite nodes.

    Returns:
        ``(nodes, weights, residuals)``, each ``(runs, m)`` float64 on CPU with ``m`` the longest run.

    Example:
        >>> h = torch.diag(torch.tensor([-1.0, 0.0, 0.0, 2.0], dtype=torch.float64))
        >>> nodes, weights, _ = slq(lambda v: h @ v, 4, 10, 2, torch.Generator().manual_seed(0), dtype=torch.float64)
        >>> nodes.shape, [round(t, 6) for t in nodes[0].tolist()], weights.sum(1).tolist()
        (torch.Size([2, 3]), [-1.0, 0.0, 2.0], [1.0, 1.0])
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an integer >= 1, got {runs!r}")
    results = [
        ritz(*lanczos(hvp, dim, steps, generator, "rademacher", basis_device, dtype, device)) for _ in range(runs)
    ]
    m = max(r[0].numel() for r in results)
    nodes = torch.full((runs, m), math.nan, dtype=torch.float64)
    weights = torch.zeros(runs, m, dtype=torch.float64)
    residuals = torch.full((runs, m), math.nan, dtype=torch.float64)
    for i, (n, w, r) in enumerate(results):
        nodes[i, : n.numel()], weights[i, : n.numel()], residuals[i, : n.numel()] = n, w, r
    return nodes, weights, residuals


def spectral_density(
    nodes: Tensor, weights: Tensor, num_bins: int = 10000, sigma2: float = 1e-5, overhead: float = 0.01
) -> tuple[Tensor, Tensor]:
    """PyHessian's ``density_generate``: Gaussian-broadened SLQ density on a grid, averaged over runs.

    The grid spans ``[mean_r min_i theta_ri - overhead, mean_r max_i theta_ri + overhead]`` in ``num_bins`` points;
    each node is a Gaussian of **variance** ``sigma2 * max(1, grid span)`` weighted by its ``w``; runs are averaged
    and the result is normalised so that ``sum(density) * step = 1``. NaN nodes (padding) are ignored. With the
    default ``overhead`` the grid ends about one standard deviation past the extreme nodes, so their Gaussians are
    cut there (as in PyHessian): the density's mean then differs slightly from ``sum_i w_i theta_i``.

    Args:
        nodes: ``(runs, m)`` or ``(m,)`` Ritz values.
        weights: same shape, quadrature weights.
        num_bins: grid points (``>= 2``).
        sigma2: variance factor.
        overhead: margin added on both sides of the grid.

    Returns:
        ``(grid, density)``, each ``(num_bins,)`` float64.

    Example:
        >>> grid, dens = spectral_density(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), num_bins=101,
        ...                               sigma2=1e-3, overhead=0.5)
        >>> round(float(dens.sum() * (grid[1] - grid[0])), 6), round(float((grid * dens).sum() / dens.sum()), 6)
        (1.0, 0.5)
    """
    nodes = torch.as_tensor(nodes, dtype=torch.float64).cpu()
    weights = torch.as_tensor(weights, dtype=torch.float64).cpu()
    if nodes.ndim == 1:
        nodes, weights = nodes[None], weights[None]
    if nodes.ndim != 2 or weights.shape != nodes.shape:
        raise ValueError(f"nodes and weights must be (runs, m) of one shape, got {nodes.shape} and {weights.shape}")
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
    finite = torch.isfinite(nodes)
    if not bool(finite.any(1).all()):
        raise ValueError("every run needs at least one finite node")
    hi = float(torch.where(finite, nodes, -math.inf).amax(1).mean()) + overhead
    lo = float(torch.where(finite, nodes, math.inf).amin(1).mean()) - overhead
    grid = torch.linspace(lo, hi, num_bins, dtype=torch.float64)
    var = sigma2 * max(1.0, hi - lo)
    flat_nodes = nodes[finite]
    flat_weights = weights[finite] / nodes.shape[0]
    density = torch.zeros(num_bins, dtype=torch.float64)
    chunk = max(1, _BLOCK_ELEMENTS // num_bins)
    for s in range(0, flat_nodes.numel(), chunk):
        t, w = flat_nodes[s : s + chunk], flat_weights[s : s + chunk]
        gauss = torch.exp(-(grid[None, :] - t[:, None]).square() / (2.0 * var)) / math.sqrt(2.0 * math.pi * var)
        density += w @ gauss
    density = density / (density.sum() * (grid[1] - grid[0]))
    return grid, density


# --------------------------------------------------------------------------------------------------- summary
@dataclass(frozen=True)
class Spectrum:
    """Scalar summary of one Hessian spectrum (one class).

    Attributes:
        lambda_max: largest Ritz value over all SLQ runs.
        lambda_min: smallest Ritz value (the paper's ``lambda_min``; negative means a saddle direction).
        lambda_max_err: residual bound of ``lambda_max`` (an eigenvalue of ``H`` lies within it).
        lambda_min_err: residual bound of ``lambda_min``.
        neg_ratio: ``max(0, -lambda_min) / lambda_max`` (scale-free; NaN when ``lambda_max <= 0``).
        neg_mass: SLQ weight on nodes below ``-neg_threshold * max|theta|``, averaged over runs.
        trace: Hutchinson estimate of ``tr(H)`` (NaN if none).
        trace_se: its standard error.
        hvps: Hessian-vector products spent.
    """

    lambda_max: float
    lambda_min: float
    lambda_max_err: float
    lambda_min_err: float
    neg_ratio: float
    neg_mass: float
    trace: float
    trace_se: float
    hvps: int


def spectral_summary(
    nodes: Tensor,
    weights: Tensor,
    residuals: Tensor,
    trace: float = math.nan,
    trace_se: float = math.nan,
    hvps: int | None = None,
    neg_threshold: float = 1e-3,
) -> Spectrum:
    """Summarise SLQ output (:func:`slq`, or one :func:`ritz` run) and a trace estimate into a :class:`Spectrum`.

    Args:
        nodes, weights, residuals: ``(runs, m)`` or ``(m,)``; NaN nodes are padding.
        trace, trace_se: from :func:`hutchinson_trace`.
        hvps: HVPs spent; None counts the Lanczos steps (finite nodes) only.
        neg_threshold: relative threshold of ``neg_mass``.

    Example:
        >>> s = spectral_summary(torch.tensor([-1.0, 0.0, 4.0]), torch.tensor([0.25, 0.5, 0.25]), torch.zeros(3))
        >>> s.lambda_min, s.lambda_max, s.neg_ratio, s.neg_mass, s.hvps
        (-1.0, 4.0, 0.25, 0.25, 3)
    """
    nodes = torch.as_tensor(nodes, dtype=torch.float64).cpu()
    weights = torch.as_tensor(weights, dtype=torch.float64).cpu()
    residuals = torch.as_tensor(residuals, dtype=torch.float64).cpu()
    if nodes.ndim == 1:
        nodes, weights, residuals = nodes[None], weights[None], residuals[None]
    if not (nodes.ndim == 2 and weights.shape == nodes.shape and residuals.shape == nodes.shape):
        raise ValueError(
            f"nodes, weights and residuals must share a (runs, m) shape, got {tuple(nodes.shape)}, "
            f"{tuple(weights.shape)} and {tuple(residuals.shape)}"
        )
    finite = torch.isfinite(nodes)
    if not bool(finite.any()):
        raise ValueError("nodes hold no finite value")
    i_max = int(torch.where(finite, nodes, -math.inf).flatten().argmax())
    i_min = int(torch.where(finite, nodes, math.inf).flatten().argmin())
    lam_max, lam_min = float(nodes.flatten()[i_max]), float(nodes.flatten()[i_min])
    neg_ratio = max(0.0, -lam_min) / lam_max if lam_max > 0 else math.nan
    scale = max(abs(lam_max), abs(lam_min))
    below = finite & (torch.where(finite, nodes, 0.0) < -neg_threshold * scale)
    neg_mass = float(torch.where(below, weights, 0.0).sum() / nodes.shape[0])
    return Spectrum(
        lambda_max=lam_max,
        lambda_min=lam_min,
        lambda_max_err=float(residuals.flatten()[i_max]),
        lambda_min_err=float(residuals.flatten()[i_min]),
        neg_ratio=neg_ratio,
        neg_mass=neg_mass,
        trace=float(trace),
        trace_se=float(trace_se),
        hvps=int(finite.sum()) if hvps is None else int(hvps),
    )


def hessian_spectrum(
    hvp: HVP,
    dim: int,
    generator: torch.Generator,
    lanczos_steps: int = 48,
    slq_runs: int = 1,
    trace_probes: int = 16,
    dtype: torch.dtype | None = None,
    device=None,
    basis_device=None,
    neg_threshold: float = 1e-3,
) -> tuple[Spectrum, Tensor, Tensor]:
    """One class's measurement: :func:`slq`, then :func:`hutchinson_trace`, then :func:`spectral_summary`.

    The random draws happen in that order from ``generator`` (SLQ starts, then trace probes). The trace pools the
    ``trace_probes`` probes with the free sample ``d * alpha_1`` of each SLQ run; with ``trace_probes=0`` the trace
    rests on the SLQ runs alone. ``Spectrum.hvps`` counts Lanczos steps plus probes.

    Returns:
        ``(spectrum, nodes, weights)``: the summary and the ``(runs, m)`` SLQ nodes/weights (NaN/0 padding) for
        :func:`spectral_density` or saving.

    Example:
        >>> h = torch.diag(torch.tensor([-1.0, 2.0, 3.0], dtype=torch.float64))
        >>> s, nodes, _ = hessian_spectrum(lambda v: h @ v, 3, torch.Generator().manual_seed(0), trace_probes=2,
        ...                                dtype=torch.float64)
        >>> round(s.lambda_min, 6), round(s.lambda_max, 6), s.trace, s.hvps
        (-1.0, 3.0, 4.0, 5)
    """
    dim = _check_dim(dim)
    nodes, weights, residuals = slq(hvp, dim, lanczos_steps, slq_runs, generator, dtype, device, basis_device)
    free = (dim * torch.where(torch.isfinite(nodes), nodes * weights, 0.0).sum(1)).tolist()
    trace, trace_se = hutchinson_trace(hvp, dim, trace_probes, generator, dtype, device, samples=free)
    hvps = int(torch.isfinite(nodes).sum()) + trace_probes
    spectrum = spectral_summary(nodes, weights, residuals, trace, trace_se, hvps, neg_threshold)
    return spectrum, nodes, weights
