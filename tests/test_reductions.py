"""``AttentionalReduction``: the naive reference over several steps, plain averaging, gradients, errors and 2-process
DDP (gloo on CPU), where the all-gathered statistic must give every rank the single-process ``u``."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lt_lightning.reductions import AttentionalReduction
from tests.attention_reference import BATCHES, naive_steps


@pytest.mark.parametrize(("lam", "gamma", "alpha"), [(5.0, 0.1, 0.5), (0.8, 0.7, 0.3), (-2.0, 0.45, 1.0)])
def test_matches_naive_reference_over_steps(lam, gamma, alpha):
    reduce = AttentionalReduction(lam=lam, gamma=gamma, alpha=alpha)
    assert reduce.log_u.item() == -math.inf and reduce.u == 0.0
    for step, (losses, (p_ref, u_ref, loss_ref)) in enumerate(
        zip(BATCHES, naive_steps(BATCHES, lam, gamma, alpha), strict=True)
    ):
        loss = reduce(torch.tensor(losses, dtype=torch.float64))
        assert loss.item() == pytest.approx(loss_ref, rel=1e-10), step
        torch.testing.assert_close(reduce.last_weights, torch.tensor(p_ref, dtype=torch.float64), rtol=1e-10, atol=0)
        assert reduce.u == pytest.approx(u_ref, rel=1e-10)
        assert reduce.log_u.dtype == torch.float64


def test_lambda_switch_mid_run_keeps_u():
    """Plain steps (lambda 200) leave u at 0; the first attentional step then has sum p = 1 / (gamma alpha)."""
    reduce = AttentionalReduction(lam=200.0, gamma=0.2, alpha=0.5)
    for losses in BATCHES[:2]:
        reduce(torch.tensor(losses))
    assert reduce.log_u.item() == -math.inf
    reduce.lam = 5.0
    reduce(torch.tensor(BATCHES[2]))
    assert reduce.last_weights.sum().item() == pytest.approx(1 / (0.2 * 0.5), rel=1e-6)
    u_after = reduce.u
    reduce.lam = 300.0  # back to plain: u is frozen, not reset
    reduce(torch.tensor(BATCHES[3]))
    assert reduce.u == u_after


@pytest.mark.parametrize("lam", [200.0, 500.0, 1e9])
def test_plain_mean_at_and_above_the_threshold(lam):
    reduce = AttentionalReduction(lam=3.0, gamma=0.1, alpha=0.5)
    reduce(torch.tensor(BATCHES[0]))  # some u from an attentional step
    log_u = reduce.log_u.clone()
    reduce.lam = lam
    assert reduce.is_plain
    losses = torch.tensor([1.0, 5.0, 0.5, 2.5], requires_grad=True)
    loss = reduce(losses)
    assert loss.item() == pytest.approx(9.0 / 4)
    assert torch.equal(reduce.log_u, log_u)
    assert torch.equal(reduce.last_weights, torch.full((4,), 0.25))
    (grad,) = torch.autograd.grad(loss, losses)
    (grad_mean,) = torch.autograd.grad(losses.mean(), losses)
    torch.testing.assert_close(grad, grad_mean)


def test_custom_threshold():
    reduce = AttentionalReduction(lam=10.0, plain_threshold=10.0)
    assert reduce.is_plain
    reduce.lam = 9.99
    assert not reduce.is_plain


@pytest.mark.parametrize("lam", [5.0, -1.5])
def test_gradient_wrt_losses_is_the_detached_weights(lam):
    reduce = AttentionalReduction(lam=lam, gamma=0.3, alpha=0.5)
    reduce(torch.tensor(BATCHES[1]))  # a non-trivial u
    losses = torch.tensor(BATCHES[3], dtype=torch.float64, requires_grad=True)
    loss = reduce(losses)
    (grad,) = torch.autograd.grad(loss, losses)
    assert not reduce.last_weights.requires_grad
    torch.testing.assert_close(grad, reduce.last_weights, rtol=1e-14, atol=0)
    # No gradient through p: the weights are not the softmax-like derivative of sum p_i l_i.
    assert not torch.allclose(grad, reduce.last_weights * (1 + losses.detach() / lam))


def test_gradient_flows_to_the_model_through_per_sample_losses():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 4)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    reduce = AttentionalReduction(lam=2.0, gamma=0.5, alpha=0.5)
    loss = reduce(torch.nn.functional.cross_entropy(layer(x), y, reduction="none"))
    loss.backward()
    weights = reduce.last_weights
    layer_ref = torch.nn.Linear(3, 4)
    layer_ref.load_state_dict(layer.state_dict())
    per_sample = torch.nn.functional.cross_entropy(layer_ref(x), y, reduction="none")
    (per_sample * weights).sum().backward()  # same as backward of the weighted sum with constant weights
    torch.testing.assert_close(layer.weight.grad, layer_ref.weight.grad)


def test_huge_losses_give_finite_loss_and_weights():
    reduce = AttentionalReduction(lam=0.5, gamma=0.1, alpha=0.5)
    loss = reduce(torch.tensor([1000.0, 1.0, 2.0]))
    assert torch.isfinite(loss) and torch.isfinite(reduce.last_weights).all()
    assert loss.item() == pytest.approx(1000.0 / 0.05, rel=1e-6)  # the huge sample takes all 1 / (gamma alpha)
    assert reduce.u == math.inf and math.isfinite(reduce.log_u.item())  # u itself overflows a float; log u does not


def test_log_u_is_a_checkpointed_buffer():
    reduce = AttentionalReduction(lam=2.0)
    reduce(torch.tensor(BATCHES[0]))
    state = reduce.state_dict()
    assert set(state) == {"log_u"}
    fresh = AttentionalReduction(lam=2.0)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.log_u, reduce.log_u)
    assert torch.equal(fresh(torch.tensor(BATCHES[1])), reduce(torch.tensor(BATCHES[1])))


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lam": 0.0}, r"lam \(lambda\) must be a finite non-zero number"),
        ({"lam": float("nan")}, r"lam \(lambda\).*got nan"),
        ({"lam": False}, r"lam \(lambda\).*got False"),
        ({"gamma": 0.0}, r"gamma must be in \(0, 1\], got 0.0"),
        ({"gamma": 1.5}, r"gamma must be in \(0, 1\], got 1.5"),
        ({"alpha": 0.0}, r"alpha must be a finite number > 0, got 0.0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionalReduction(**kwargs)


@pytest.mark.parametrize("value", [0, float("nan"), True])
def test_bad_lambda_setter_keeps_the_old_value(value):
    reduce = AttentionalReduction(lam=5.0)
    with pytest.raises(ValueError, match=r"lam \(lambda\) must be a finite non-zero number"):
        reduce.lam = value
    assert reduce.lam == 5.0


def test_non_finite_losses_name_the_samples():
    reduce = AttentionalReduction(lam=5.0)
    with pytest.raises(ValueError, match=r"per-sample losses must be finite; samples \[2\] are not"):
        reduce(torch.tensor([1.0, 2.0, float("inf")]))
    assert reduce.log_u.item() == -math.inf  # nothing was updated


def test_two_dimensional_losses_are_refused():
    reduce = AttentionalReduction(lam=5.0)
    with pytest.raises(
        ValueError, match=re.escape("per-sample losses of shape (B,), got (4, 3)") + ".*reduction='none'"
    ):
        reduce(torch.ones(4, 3))
    with pytest.raises(ValueError, match=re.escape("per-sample losses of shape (B,), got ()")):
        reduce(torch.tensor(1.0))


# ------------------------------------------------------------------------------------------------ DDP
_WORLD = 2
_GLOBAL = [
    torch.tensor([0.3, 2.1, 0.9, 1.7, 0.2, 3.0], dtype=torch.float64),
    torch.tensor([1.5, 0.1, 4.0, 2.2, 0.7, 0.0], dtype=torch.float64),
    torch.tensor([0.05, 3.3, 1.1, 0.6, 2.8, 1.4], dtype=torch.float64),
]
_ARGS = {"lam": 1.5, "gamma": 0.3, "alpha": 0.5}


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=_WORLD, timeout=timedelta(seconds=60)
    )
    try:
        reduce = AttentionalReduction(**_ARGS)
        results = []
        for losses in _GLOBAL:  # three steps: the moving average is checked, not only the first step
            local = losses.chunk(_WORLD)[rank]
            loss = reduce(local)
            results.append({"log_u": reduce.log_u.clone(), "weights": reduce.last_weights.clone(), "loss": loss})
        unsynced = AttentionalReduction(**_ARGS, sync_dist=False)
        unsynced(_GLOBAL[0].chunk(_WORLD)[rank])
        torch.save({"steps": results, "unsynced_log_u": unsynced.log_u}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.timeout(120)
def test_ddp_all_gather_gives_the_single_process_u(tmp_path):
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(
        _ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=_WORLD, join=True, start_method=start_method
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(_WORLD)]

    single = AttentionalReduction(**_ARGS)
    for step, losses in enumerate(_GLOBAL):
        single_loss = single(losses)
        rank_steps = [ranks[r]["steps"][step] for r in range(_WORLD)]
        # Both ranks hold the very same u, and it is the one of one process on the concatenated global batch.
        assert torch.equal(rank_steps[0]["log_u"], rank_steps[1]["log_u"])
        assert rank_steps[0]["log_u"].item() == pytest.approx(single.log_u.item(), rel=1e-14, abs=1e-14)
        # Each rank normalises by its own batch: p_local = exp(l / lambda) / (u B_local), i.e. the single-process
        # weights of its slice times B_global / B_local; DDP's gradient mean over ranks then restores 1 / (u B).
        b_global = len(losses)
        for rank, chunk in enumerate(single.last_weights.chunk(_WORLD)):
            expected = chunk * (b_global / len(chunk))
            torch.testing.assert_close(rank_steps[rank]["weights"], expected, rtol=1e-12, atol=0)
        mean_of_rank_losses = sum(s["loss"] for s in rank_steps) / _WORLD
        assert mean_of_rank_losses.item() == pytest.approx(single_loss.item(), rel=1e-12)
    # Without the all-gather each rank's u is its own batch's, so the sync above did something.
    assert ranks[0]["unsynced_log_u"].item() != pytest.approx(ranks[1]["unsynced_log_u"].item(), rel=1e-3)
