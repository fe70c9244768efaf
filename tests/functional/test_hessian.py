"""Checks of lt_lightning.functional.hessian against known spectra and explicit Hessians (research/hessian.md §4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lt_lightning.functional.hessian import (
    Spectrum,
    class_subsets,
    flatten_tensors,
    hessian_spectrum,
    hutchinson_trace,
    lanczos,
    make_hvp,
    power_iteration,
    ritz,
    slq,
    spectral_density,
    spectral_summary,
    unflatten_vector,
)

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------ T1: known spectrum
T1_EIGS = torch.cat([torch.tensor([-5.0, 1.0, 2.0, 3.0], dtype=F64), torch.zeros(96, dtype=F64)])


def t1_matrix() -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(100, 100, generator=gen(123), dtype=F64))
    return q @ torch.diag(T1_EIGS) @ q.T


def test_t1_lanczos_exact_extremes_with_residual_bounds():
    a = t1_matrix()
    alphas, betas = lanczos(lambda v: a @ v, 100, 30, gen(0), dtype=F64)
    assert len(alphas) == 5  # 5 distinct eigenvalues: breakdown, no restart
    nodes, weights, residuals = ritz(alphas, betas)
    assert nodes[0].item() == pytest.approx(-5.0, abs=1e-10)
    assert nodes[-1].item() == pytest.approx(3.0, abs=1e-10)
    assert torch.allclose(nodes, torch.tensor([-5.0, 0.0, 1.0, 2.0, 3.0], dtype=F64), atol=1e-10)
    assert residuals.max().item() < 1e-8
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_t1_power_iteration_returns_largest_magnitude_and_shift_gives_min():
    a = t1_matrix()
    lam, used = power_iteration(lambda v: a @ v, 100, gen(0), iters=500, tol=1e-10, dtype=F64)
    assert lam == pytest.approx(-5.0, abs=1e-3)  # largest |lambda|, not lambda_max = 3
    assert 1 < used <= 500
    shifted, _ = power_iteration(lambda v: a @ v - 3.0 * v, 100, gen(1), iters=500, tol=1e-10, dtype=F64)
    assert shifted + 3.0 == pytest.approx(-5.0, abs=1e-3)


def test_t1_gauss_quadrature_moments_exact():
    a = t1_matrix()
    v0 = torch.randint(0, 2, (100,), generator=gen(5)).to(F64) * 2 - 1
    v0 = v0 / v0.norm()
    m = 3
    alphas, betas = lanczos(lambda v: a @ v, 100, m, gen(0), start=v0)
    assert len(alphas) == m
    nodes, weights, _ = ritz(alphas, betas)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-12)
    power = v0.clone()
    for k in range(2 * m):
        exact = torch.dot(v0, power).item()  # v0^T A^k v0
        assert (weights * nodes**k).sum().item() == pytest.approx(exact, abs=1e-10 * max(1.0, 5.0**k))
        power = a @ power


def test_t1_density_integrates_to_one_with_mean_trace_over_d():
    a = t1_matrix()
    runs = 400
    nodes, weights, residuals = slq(lambda v: a @ v, 100, 30, runs, gen(0), dtype=F64)
    assert nodes.shape == (runs, 5)
    grid, dens = spectral_density(nodes, weights)
    assert grid.shape == dens.shape == (10000,)
    assert torch.trapezoid(dens, grid).item() == pytest.approx(1.0, abs=1e-3)
    per_run = (weights * nodes).sum(1)  # = alpha_1 = v0^T A v0, unbiased for tr(A)/d
    se = per_run.std().item() / math.sqrt(runs)
    # PyHessian's grid ends 0.01 (about 1 sigma) past the extreme nodes, so their Gaussians are truncated and the
    # mean moves by ~2e-3 here; a wider margin keeps the whole mass and hence the quadrature mean.
    grid, dens = spectral_density(nodes, weights, overhead=0.1)
    mean = torch.trapezoid(grid * dens, grid).item()
    assert torch.trapezoid(dens, grid).item() == pytest.approx(1.0, abs=1e-6)
    assert mean == pytest.approx(per_run.mean().item(), abs=1e-6)
    assert abs(mean - 1.0 / 100) < 4 * se
    assert residuals.max().item() < 1e-8


def test_t1_hutchinson_within_four_standard_errors():
    a = t1_matrix()
    mean, se = hutchinson_trace(lambda v: a @ v, 100, 4000, gen(0), dtype=F64)
    assert 0 < se < 0.2
    assert abs(mean - 1.0) < 4 * se


def test_hutchinson_edge_cases_and_pooled_samples():
    h = torch.eye(3, dtype=F64)
    assert all(math.isnan(x) for x in hutchinson_trace(lambda v: h @ v, 3, 0, gen(0)))
    mean, se = hutchinson_trace(lambda v: h @ v, 3, 1, gen(0), dtype=F64)
    assert mean == 3.0 and math.isnan(se)
    assert hutchinson_trace(lambda v: h @ v, 3, 1, gen(0), dtype=F64, samples=[5.0]) == (4.0, 1.0)


# ------------------------------------------------------------------------------------------ T2: indefinite quadratic
S_SIGNS = torch.tensor([1.0, 1.0, -1.0], dtype=F64)


def t2_setup(n: int = 10):
    torch.manual_seed(0)  # only the model init; the HVP code itself never touches the global RNG
    lin = nn.Linear(4, 3, bias=False).to(F64)
    x = torch.randn(n, 4, generator=gen(7), dtype=F64)

    def loss_fn(z, _):
        return 0.5 * (z.square() * S_SIGNS).sum(1)  # per-sample: reduced with .mean() by make_hvp

    mu = torch.linalg.eigvalsh(x.T @ x / n)
    exact = torch.kron(torch.diag(S_SIGNS), x.T @ x / n)  # W flattened row-major: W[k, j]
    return lin, x, loss_fn, mu, exact


@pytest.mark.parametrize("batch_size", [128, 3])
def test_t2_indefinite_module_quadratic(batch_size):
    lin, x, loss_fn, mu, exact = t2_setup()
    hvp = make_hvp(lin, loss_fn, x, None, list(lin.parameters()), batch_size=batch_size)
    assert hvp.dim == 12 and hvp.dtype == F64
    for seed in range(3):
        v = torch.randn(12, generator=gen(seed), dtype=F64)
        assert torch.allclose(hvp(v), exact @ v, atol=1e-12)
    nodes, _, residuals = ritz(*lanczos(hvp, 12, 12, gen(0), dtype=F64))
    assert nodes[-1].item() == pytest.approx(mu.max().item(), abs=1e-10)
    assert nodes[0].item() == pytest.approx(-mu.max().item(), abs=1e-10)
    expected = torch.cat([-mu, mu]).sort().values
    assert torch.allclose(nodes, expected, atol=1e-10)  # distinct values +-mu; breakdown at 8 steps
    assert residuals.max().item() < 1e-8
    assert lin.weight.grad is None


def test_t2_chunk_weighting_matches_single_chunk():
    lin, x, loss_fn, _, _ = t2_setup()
    one = make_hvp(lin, loss_fn, x, None, list(lin.parameters()), batch_size=10)
    chunked = make_hvp(lin, loss_fn, x, None, list(lin.parameters()), batch_size=3)  # chunks 3, 3, 3, 1
    v = torch.randn(12, generator=gen(1), dtype=F64)
    assert torch.allclose(one(v), chunked(v), atol=1e-13)
    # The plain mean of the 4 chunk Hessians (no n_b weighting) is a different matrix: the weighting matters here.
    unweighted = sum(make_hvp(lin, loss_fn, x[s : s + 3], None, list(lin.parameters()))(v) for s in range(0, 10, 3)) / 4
    assert not torch.allclose(unweighted, one(v), atol=1e-6)
    assert one.calls == 2 and chunked.calls == 1


# ------------------------------------------------------------------------------------------ explicit Hessians
def explicit_hessian(model: nn.Module, loss_fn, x, y) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for _, p in model.named_parameters()]

    def f(flat):
        tensors = unflatten_vector(flat, params)  # differentiable views of flat
        return loss_fn(functional_call(model, dict(zip(names, tensors, strict=True)), (x,)), y).mean()

    return torch.autograd.functional.hessian(f, flatten_tensors(params))


def assert_sets_match(nodes: torch.Tensor, exact: torch.Tensor, tol: float) -> None:
    """Every Ritz value is within tol of an exact eigenvalue, and every exact eigenvalue of a Ritz value."""
    dist = (nodes[:, None] - exact[None, :]).abs()
    assert dist.min(1).values.max().item() < tol
    assert dist.min(0).values.max().item() < tol


def test_t3_linear_softmax_against_explicit_hessian():
    torch.manual_seed(1)
    model = nn.Linear(5, 3).to(F64)
    x = torch.randn(7, 5, generator=gen(3), dtype=F64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    exact = torch.linalg.eigvalsh(explicit_hessian(model, F.cross_entropy, x, y))
    hvp = make_hvp(model, F.cross_entropy, x, y, list(model.parameters()))
    assert hvp.dim == 18
    alphas, betas = lanczos(hvp, 18, 18, gen(0), dtype=F64)
    assert len(alphas) < 18  # the 6-dim softmax null space forces a breakdown
    nodes, weights, residuals = ritz(alphas, betas)
    assert torch.isfinite(nodes).all() and torch.isfinite(weights).all() and torch.isfinite(residuals).all()
    assert nodes[-1].item() == pytest.approx(exact[-1].item(), abs=1e-8)
    assert nodes[0].item() >= -1e-10  # CE of a linear model is convex
    assert_sets_match(nodes, exact, 1e-8)


class TanhMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def t4_setup():
    torch.manual_seed(0)
    model = TanhMLP().to(F64)
    x = 2.0 * torch.randn(12, 5, generator=gen(4), dtype=F64)
    y = torch.randint(0, 3, (12,), generator=gen(5))
    return model, x, y


def test_t4_tanh_mlp_full_spectrum_and_negative_curvature():
    model, x, y = t4_setup()
    exact = torch.linalg.eigvalsh(explicit_hessian(model, F.cross_entropy, x, y))
    assert exact.numel() == 39
    hvp = make_hvp(model, F.cross_entropy, x, y, list(model.parameters()), batch_size=5)
    nodes, _, residuals = ritz(*lanczos(hvp, 39, 39, gen(0), dtype=F64))
    # The last layer's softmax invariance gives eigenvalue 0 five times; Lanczos finds each distinct value once.
    assert_sets_match(nodes, exact, 1e-8)
    assert nodes[0].item() == pytest.approx(exact[0].item(), abs=1e-8)
    assert nodes[-1].item() == pytest.approx(exact[-1].item(), abs=1e-8)
    assert exact[0].item() < -1e-4 and nodes[0].item() < -1e-4  # the negative side is really tested
    assert residuals.max().item() < 1e-6
    s = spectral_summary(*slq(hvp, 39, 39, 1, gen(1), dtype=F64))
    assert s.lambda_min == pytest.approx(exact[0].item(), abs=1e-8)
    assert s.neg_ratio == pytest.approx(-exact[0].item() / exact[-1].item(), rel=1e-6)


# ------------------------------------------------------------------------------------------ T6: reproducibility
def test_t6_same_seed_equal_other_seed_differs():
    a = t1_matrix()
    one = slq(lambda v: a @ v, 100, 30, 2, gen(0), dtype=F64)
    two = slq(lambda v: a @ v, 100, 30, 2, gen(0), dtype=F64)
    assert all(torch.equal(p, q) for p, q in zip(one, two, strict=True))
    other = slq(lambda v: a @ v, 100, 30, 2, gen(1), dtype=F64)
    assert abs(spectral_summary(*one).lambda_max - spectral_summary(*other).lambda_max) < 1e-6
    assert not torch.allclose(one[1], other[1], atol=1e-3)  # weights depend on the start
    short, short_other = (ritz(*lanczos(lambda v: a @ v, 100, 3, gen(s), dtype=F64))[0] for s in (0, 1))
    assert not torch.allclose(short, short_other, atol=1e-3)
    s1 = hessian_spectrum(lambda v: a @ v, 100, gen(0), lanczos_steps=10, trace_probes=4, dtype=F64)
    s2 = hessian_spectrum(lambda v: a @ v, 100, gen(0), lanczos_steps=10, trace_probes=4, dtype=F64)
    assert s1[0] == s2[0] and torch.equal(s1[1], s2[1])


def test_global_rng_untouched():
    a = t1_matrix()
    model, x, y = t4_setup()
    state = torch.get_rng_state()
    hvp = make_hvp(model, F.cross_entropy, x, y, list(model.parameters()))
    hessian_spectrum(hvp, 39, gen(0), lanczos_steps=5, trace_probes=2, dtype=F64)
    power_iteration(lambda v: a @ v, 100, gen(0), iters=5, dtype=F64)
    class_subsets(y, 3, 2, gen(0))
    assert torch.equal(state, torch.get_rng_state())


# ------------------------------------------------------------------------------------------ state / modes
def test_grad_stays_none_and_no_accumulation_hooks_fire():
    model, x, y = t4_setup()
    fired = []
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(lambda _p: fired.append(1))
    for batch_size in (128, 5):
        hvp = make_hvp(model, F.cross_entropy, x, y, list(model.parameters()), batch_size=batch_size)
        hessian_spectrum(hvp, 39, gen(0), lanczos_steps=4, trace_probes=2, dtype=F64)
    assert fired == []
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("context", ["inference_mode", "no_grad"])
@pytest.mark.parametrize("batch_size", [128, 5])
def test_make_hvp_works_under_outer_inference_mode(context, batch_size):
    model, x, y = t4_setup()
    params = list(model.parameters())
    v = torch.randn(39, generator=gen(2), dtype=F64)
    reference = make_hvp(model, F.cross_entropy, x, y, params, batch_size=batch_size)(v)
    outer = torch.inference_mode() if context == "inference_mode" else torch.no_grad()
    with outer:
        x_in, y_in, v_in = x.clone(), y.clone(), v.clone()  # inference tensors under inference_mode
        hvp = make_hvp(model, F.cross_entropy, x_in, y_in, params, batch_size=batch_size)
        assert torch.allclose(hvp(v_in), reference, atol=1e-13)
        spectrum, _, _ = hessian_spectrum(hvp, 39, gen(0), lanczos_steps=6, trace_probes=2, dtype=F64)
    expected, _, _ = hessian_spectrum(
        make_hvp(model, F.cross_entropy, x, y, params, batch_size=batch_size),
        39,
        gen(0),
        lanczos_steps=6,
        trace_probes=2,
        dtype=F64,
    )
    assert spectrum == expected
    assert all(p.grad is None for p in params)


def test_make_hvp_float32_model_and_errors():
    torch.manual_seed(0)
    model = TanhMLP()
    x = torch.randn(6, 5, generator=gen(4))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    hvp = make_hvp(model, F.cross_entropy, x, y, list(model.parameters()))
    assert hvp.dtype == torch.float32
    alphas, betas = lanczos(hvp, hvp.dim, 10, gen(0), dtype=hvp.dtype, basis_device="cpu")
    assert alphas.dtype == betas.dtype == F64 and torch.isfinite(alphas).all()
    with pytest.raises(ValueError, match="does not require grad"):
        make_hvp(model, F.cross_entropy, x, y, [torch.zeros(3)])
    with pytest.raises(ValueError, match="batch_size"):
        make_hvp(model, F.cross_entropy, x, y, list(model.parameters()), batch_size=0)
    with pytest.raises(ValueError, match="flat"):
        hvp(torch.zeros(3))
    with torch.inference_mode():
        frozen = torch.zeros(3)
    with pytest.raises(ValueError, match="inference tensor"):
        make_hvp(model, F.cross_entropy, x, y, [frozen])


def test_unused_and_linear_params_get_zero_curvature():
    w = torch.tensor([1.0, -1.0], dtype=F64, requires_grad=True)
    b = torch.tensor(0.5, dtype=F64, requires_grad=True)  # enters linearly: constant gradient
    unused = torch.zeros(2, dtype=F64, requires_grad=True)
    x = torch.randn(4, 2, generator=gen(0), dtype=F64)
    hvp = make_hvp(lambda t: t @ w, lambda z, _: 0.5 * z.square() + b, x, None, [w, b, unused])
    out = hvp(torch.ones(5, dtype=F64))
    assert torch.allclose(out[:2], (x.T @ x / 4) @ torch.ones(2, dtype=F64), atol=1e-13)
    assert out[2:].abs().max().item() == 0.0


# ------------------------------------------------------------------------------------------ helpers
def test_flatten_roundtrip():
    like = [torch.randn(2, 3, generator=gen(0)), torch.randn(4, generator=gen(1))]
    flat = flatten_tensors(like, dtype=F64)
    assert flat.shape == (10,) and flat.dtype == F64
    back = unflatten_vector(flat, like)
    assert all(torch.equal(a, b) for a, b in zip(back, like, strict=True))
    with pytest.raises(ValueError):
        unflatten_vector(flat[:9], like)


def test_class_subsets_caps_without_duplicates_and_is_seeded():
    targets = torch.tensor([0] * 10 + [1] * 3 + [3] * 5)
    subs = class_subsets(targets, 4, 4, gen(0))
    assert [len(s) for s in subs] == [4, 3, 0, 4]
    for c, s in enumerate(subs):
        assert s.dtype == torch.int64 and len(set(s.tolist())) == len(s)
        assert bool((targets[s] == c).all())
    assert all(torch.equal(a, b) for a, b in zip(subs, class_subsets(targets, 4, 4, gen(0)), strict=True))
    assert [len(s) for s in class_subsets(targets, 4, None, gen(0))] == [10, 3, 0, 5]
    with pytest.raises(ValueError):
        class_subsets(targets, 4, 0, gen(0))


def test_spectral_summary_fields_and_padding():
    nodes = torch.tensor([[-2.0, 1.0, 4.0], [-1.0, 3.0, math.nan]], dtype=F64)
    weights = torch.tensor([[0.25, 0.5, 0.25], [0.5, 0.5, 0.0]], dtype=F64)
    residuals = torch.tensor([[1e-3, 0.0, 2e-3], [0.0, 0.0, math.nan]], dtype=F64)
    s = spectral_summary(nodes, weights, residuals, trace=7.0, trace_se=0.5)
    assert s == Spectrum(4.0, -2.0, 2e-3, 1e-3, 0.5, (0.25 + 0.5) / 2, 7.0, 0.5, 5)
    grid, dens = spectral_density(nodes, weights, num_bins=500)
    assert torch.isfinite(dens).all() and grid[0].item() == pytest.approx(-1.5 - 0.01)
    positive = spectral_summary(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.5]), torch.zeros(2))
    assert positive.neg_ratio == 0.0 and positive.neg_mass == 0.0 and math.isnan(positive.trace)
    with pytest.raises(dataclasses_frozen_error()):
        positive.hvps = 3  # type: ignore[misc]


def dataclasses_frozen_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_lanczos_zero_operator_and_bad_arguments():
    alphas, betas = lanczos(lambda v: torch.zeros_like(v), 4, 4, gen(0), dtype=F64)
    assert alphas.tolist() == [0.0] and betas.tolist() == [0.0]
    with pytest.raises(ValueError):
        lanczos(lambda v: v, 4, 0, gen(0))
    with pytest.raises(ValueError):
        lanczos(lambda v: v, 4, 2, gen(0), start=torch.zeros(4))
    with pytest.raises(ValueError):
        lanczos(lambda v: v, 4, 2, gen(0), start="uniform")  # type: ignore[arg-type]


def test_bn_eval_inplace_relu_under_inference_mode_leaves_state_alone():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(8, 3)
    ).to(F64)
    model[1].running_mean.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(9, 1, 4, 4, generator=gen(0), dtype=F64)
    y = torch.arange(9) % 3
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    exact = torch.linalg.eigvalsh(explicit_hessian(model, F.cross_entropy, x, y))
    with torch.inference_mode():
        hvp = make_hvp(model, F.cross_entropy, x.clone(), y.clone(), list(model.parameters()), batch_size=4)
        spectrum, _, _ = hessian_spectrum(hvp, hvp.dim, gen(0), lanczos_steps=hvp.dim, trace_probes=0, dtype=F64)
    assert spectrum.lambda_max == pytest.approx(exact[-1].item(), abs=1e-8)
    assert spectrum.lambda_min == pytest.approx(exact[0].item(), abs=1e-8)
    assert math.isfinite(spectrum.trace) and math.isnan(spectrum.trace_se)  # one free SLQ sample, no probes
    assert all(torch.equal(buffers[k], v) for k, v in model.state_dict().items())
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_float32_model_agrees_with_float64_reference():
    model, x, y = t4_setup()
    exact = torch.linalg.eigvalsh(explicit_hessian(model, F.cross_entropy, x, y))
    model32 = model.to(torch.float32)
    hvp = make_hvp(model32, F.cross_entropy, x.float(), y, list(model32.parameters()))
    spectrum, _, _ = hessian_spectrum(hvp, hvp.dim, gen(0), lanczos_steps=30, trace_probes=0, dtype=hvp.dtype)
    scale = exact.abs().max().item()
    assert spectrum.lambda_max == pytest.approx(exact[-1].item(), abs=1e-4 * scale)
    assert spectrum.lambda_min == pytest.approx(exact[0].item(), abs=1e-4 * scale)
