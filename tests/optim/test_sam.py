"""SAM optimizer wrapper: the analytic update on a quadratic, exact restoration, base-optimizer state, errors."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch

from lt_lightning.optim import SAM

# L(w) = 0.5 w1^T A w1 + 0.5 c w2^2: two parameter tensors, so the ascent step's norm must be taken over both.
A = np.array([[2.0, 0.5], [0.5, 1.0]])
C = 3.0
W1 = np.array([1.0, -2.0])
W2 = np.array([0.5])


def quadratic_grad(w1: np.ndarray, w2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return A @ w1, C * w2


def sam_grad(w1, w2, rho, adaptive=False):
    """g_SAM = grad L(w + e), e = rho g / ||g|| (or rho w^2 g / ||w g||), norms over both tensors."""
    g1, g2 = quadratic_grad(w1, w2)
    if adaptive:
        norm = math.sqrt(np.sum((w1 * g1) ** 2) + np.sum((w2 * g2) ** 2))
        e1, e2 = rho * w1**2 * g1 / (norm + 1e-12), rho * w2**2 * g2 / (norm + 1e-12)
    else:
        norm = math.sqrt(np.sum(g1**2) + np.sum(g2**2))
        e1, e2 = rho * g1 / (norm + 1e-12), rho * g2 / (norm + 1e-12)
    return quadratic_grad(w1 + e1, w2 + e2), (e1, e2)


def make_params():
    return (
        torch.nn.Parameter(torch.tensor(W1, dtype=torch.float64)),
        torch.nn.Parameter(torch.tensor(W2, dtype=torch.float64)),
    )


def make_closure(opt, w1, w2, calls=None):
    a = torch.tensor(A, dtype=torch.float64)

    def closure():
        opt.zero_grad()
        loss = 0.5 * w1 @ a @ w1 + 0.5 * C * (w2**2).sum()
        loss.backward()
        if calls is not None:
            calls.append((float(loss.detach()), w1.detach().clone(), w2.detach().clone()))
        return loss

    return closure


def close(tensor, array):
    torch.testing.assert_close(tensor.detach(), torch.tensor(array, dtype=torch.float64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_step_is_the_analytic_sam_update(adaptive):
    w1, w2 = make_params()
    rho, lr = 0.4, 0.1
    opt = SAM(torch.optim.SGD([w1, w2], lr=lr), rho=rho, adaptive=adaptive)
    calls = []
    loss = opt.step(make_closure(opt, w1, w2, calls))

    (s1, s2), (e1, e2) = sam_grad(W1, W2, rho, adaptive)
    # Hand-checked numbers for the plain case: g = (1, -1.5 | 1.5), ||g|| = sqrt(5.5).
    if not adaptive:
        np.testing.assert_allclose(np.concatenate([e1, e2]), 0.4 * np.array([1, -1.5, 1.5]) / math.sqrt(5.5))
    assert len(calls) == 2  # the closure runs at w and at w + e
    assert float(loss.detach()) == pytest.approx(0.5 * W1 @ A @ W1 + 0.5 * C * W2 @ W2) == calls[0][0]  # loss at w
    close(calls[0][1], W1)
    close(calls[1][1], W1 + e1)
    close(calls[1][2], W2 + e2)
    close(w1, W1 - lr * s1)
    close(w2, W2 - lr * s2)
    assert w1.grad is None and w2.grad is None  # left zeroed


def test_first_step_moves_to_the_ascent_point_and_second_step_restores_exactly(monkeypatch):
    # float32 values on which (w + e) - e != w for some entries: the restore must be a copy, not a subtraction.
    g = torch.Generator().manual_seed(0)
    w1 = torch.nn.Parameter(torch.randn(40, 25, generator=g) * 3)
    w2 = torch.nn.Parameter(torch.rand(25, generator=g))
    frozen = torch.nn.Parameter(torch.ones(3))  # in the optimizer, but no gradient: never perturbed
    origin = [w1.detach().clone(), w2.detach().clone(), frozen.detach().clone()]
    base = torch.optim.SGD([w1, w2, frozen], lr=0.1)
    opt = SAM(base, rho=0.5)

    seen_by_base_step = []
    original_step = base.step

    def capturing_step(*args, **kwargs):
        seen_by_base_step.append([p.detach().clone() for p in (w1, w2, frozen)])
        return original_step(*args, **kwargs)

    monkeypatch.setattr(base, "step", capturing_step)

    loss = (w1.sin() * w1).sum() + (w2**3).sum()
    loss.backward()
    g1, g2 = w1.grad.clone(), w2.grad.clone()
    norm = torch.cat([g1.flatten(), g2]).norm()
    opt.first_step()
    torch.testing.assert_close(w1.detach(), origin[0] + 0.5 * g1 / norm)
    torch.testing.assert_close(w2.detach(), origin[1] + 0.5 * g2 / norm)
    assert torch.equal(frozen.detach(), origin[2])
    assert w1.grad is None and not seen_by_base_step
    assert not torch.equal(w1.detach(), origin[0])

    ((w1.sin() * w1).sum() + (w2**3).sum()).backward()
    opt.second_step()
    assert len(seen_by_base_step) == 1
    for restored, expected in zip(seen_by_base_step[0], origin, strict=True):
        assert torch.equal(restored, expected)  # bit-exact w when the base optimizer steps
    assert not torch.equal(w1.detach(), origin[0])  # and then it stepped


def test_base_optimizer_state_sees_only_the_sam_gradient():
    w1, w2 = make_params()
    rho, lr, mu, wd = 0.3, 0.05, 0.9, 0.01
    opt = SAM(torch.optim.SGD([w1, w2], lr=lr, momentum=mu, weight_decay=wd), rho=rho)
    closure = make_closure(opt, w1, w2)

    # Step 1: momentum buffer = g_SAM + wd * w (weight decay at the restored w, not at w + e).
    opt.step(closure)
    (s1, s2), _ = sam_grad(W1, W2, rho)
    buf1, buf2 = s1 + wd * W1, s2 + wd * W2
    close(opt.state[w1]["momentum_buffer"], buf1)
    close(opt.base_optimizer.state[w2]["momentum_buffer"], buf2)
    x1, x2 = W1 - lr * buf1, W2 - lr * buf2
    close(w1, x1)
    close(w2, x2)

    # Step 2: buffer = mu * buffer + the SAM gradient at the new point; plain gradients never enter.
    opt.step(closure)
    (t1, t2), _ = sam_grad(x1, x2, rho)
    buf1, buf2 = mu * buf1 + t1 + wd * x1, mu * buf2 + t2 + wd * x2
    close(opt.state[w1]["momentum_buffer"], buf1)
    close(opt.state[w2]["momentum_buffer"], buf2)
    close(w1, x1 - lr * buf1)
    close(w2, x2 - lr * buf2)


def test_step_needs_a_closure_and_second_step_needs_a_first_step():
    w1, w2 = make_params()
    opt = SAM(torch.optim.SGD([w1, w2], lr=0.1), rho=0.1)
    with pytest.raises(RuntimeError, match="needs a closure"):
        opt.step()
    with pytest.raises(RuntimeError, match="second_step called without first_step"):
        opt.second_step()
    with pytest.raises(RuntimeError, match="no gradients"):
        opt.first_step()  # nothing to ascend along before backward()
    close(w1, W1)
    close(w2, W2)


@pytest.mark.parametrize("rho", [0, 0.0, -1.0, float("nan"), float("inf"), True, "0.1", None])
def test_bad_rho_raises(rho):
    w1, w2 = make_params()
    with pytest.raises(ValueError, match=r"rho must be a finite number > 0, got"):
        SAM(torch.optim.SGD([w1, w2], lr=0.1), rho=rho)


def test_bad_base_optimizer_raises():
    w1, w2 = make_params()
    sam = SAM(torch.optim.SGD([w1, w2], lr=0.1))
    with pytest.raises(TypeError, match="already a SAM optimizer"):
        SAM(sam)
    with pytest.raises(TypeError, match="base_optimizer must be a torch.optim.Optimizer, got list"):
        SAM([w1, w2])


def test_lr_scheduler_attached_to_sam_drives_the_base_optimizer():
    w1, w2 = make_params()
    base = torch.optim.SGD([w1, w2], lr=0.1)
    opt = SAM(base, rho=0.2)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    closure = make_closure(opt, w1, w2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        opt.step(closure)
        scheduler.step()
    assert base.param_groups[0]["lr"] == 0.05 and scheduler.get_last_lr() == [0.05]
    x1, x2 = w1.detach().numpy().copy(), w2.detach().numpy().copy()
    opt.step(closure)
    (s1, s2), _ = sam_grad(x1, x2, 0.2)
    close(w1, x1 - 0.05 * s1)  # the base optimizer really used the scheduled lr
    close(w2, x2 - 0.05 * s2)


def test_state_dict_round_trip_keeps_momentum_rho_and_adaptive():
    w1, w2 = make_params()
    opt = SAM(torch.optim.SGD([w1, w2], lr=0.05, momentum=0.9), rho=0.3, adaptive=True)
    closure = make_closure(opt, w1, w2)
    opt.step(closure)
    opt.step(closure)
    saved = copy.deepcopy(opt.state_dict())  # what a checkpoint holds
    assert saved["rho"] == 0.3 and saved["adaptive"] is True

    v1, v2 = (torch.nn.Parameter(p.detach().clone()) for p in (w1, w2))
    fresh = SAM(torch.optim.SGD([v1, v2], lr=0.05, momentum=0.9), rho=0.05)
    fresh.load_state_dict(saved)
    assert fresh.rho == 0.3 and fresh.adaptive is True
    assert torch.equal(fresh.state[v1]["momentum_buffer"], opt.state[w1]["momentum_buffer"])
    assert fresh.param_groups is fresh.base_optimizer.param_groups and fresh.state is fresh.base_optimizer.state

    # The restored optimizer continues exactly like the original one.
    opt.step(closure)
    fresh.step(make_closure(fresh, v1, v2))
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    assert torch.equal(fresh.state[v2]["momentum_buffer"], opt.state[w2]["momentum_buffer"])
