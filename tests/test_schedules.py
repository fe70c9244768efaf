"""Deferred schedules as pure functions of the 0-indexed epoch (METHODS.md §3.5: ``idx = epoch // 160``)."""

from __future__ import annotations

import pytest
import torch

from lt_lightning.schedules import check_stages, default_switch_epoch, deferred_beta, deferred_class_weights

CIFAR10_LT_100 = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)
# METHODS.md §3.2: CB weights of CIFAR-10-LT rho = 100, beta = 0.9999, normalised to sum to C = 10.
CB_REFERENCE = torch.tensor([0.0506, 0.0769, 0.1211, 0.1950, 0.3188, 0.5246, 0.8683, 1.4426, 2.4092, 3.9927])
RECIPE = [(160, 0.9999)]


def test_default_switch_epoch_is_the_161st_of_200():
    assert default_switch_epoch(200) == 160  # 0-indexed: the LDAM-DRW switch, epoch // 160 == 1
    assert default_switch_epoch(5) == 4
    assert default_switch_epoch(10, fraction=0.5) == 5
    assert default_switch_epoch(1) == 1  # round(0.8): the switch falls after the only epoch


@pytest.mark.parametrize(
    ("args", "match"),
    [((0,), "max_epochs must be an integer >= 1"), ((2.5,), "max_epochs"), ((10, 0.0), "fraction must be in")],
)
def test_default_switch_epoch_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        default_switch_epoch(*args)


@pytest.mark.parametrize(("epoch", "switched"), [(0, False), (159, False), (160, True), (199, True)])
def test_recipe_weights_around_the_switch(epoch, switched):
    weights = deferred_class_weights(epoch, CIFAR10_LT_100, RECIPE)
    assert weights.dtype == torch.float32 and weights.shape == (10,)
    if switched:
        assert deferred_beta(epoch, RECIPE) == 0.9999
        torch.testing.assert_close(weights, CB_REFERENCE, atol=1e-4, rtol=0)
        assert float(weights.sum()) == pytest.approx(10.0, abs=1e-4)
    else:
        assert deferred_beta(epoch, RECIPE) == 0.0
        assert torch.equal(weights, torch.ones(10))


def test_multi_stage_schedule():
    stages = [(10, 0.9), (20, 0.9999)]
    assert [deferred_beta(e, stages) for e in (0, 9, 10, 19, 20, 500)] == [0.0, 0.0, 0.9, 0.9, 0.9999, 0.9999]
    counts = (100, 10)
    # Hand-computed: 1 / (1 - 0.9^100) = 1.0000266, 1 / (1 - 0.9^10) = 1.5353399; scaled to sum 2.
    w_09 = torch.tensor([0.788862, 1.211138])
    assert torch.equal(deferred_class_weights(9, counts, stages), torch.ones(2))
    torch.testing.assert_close(deferred_class_weights(10, counts, stages), w_09, atol=1e-5, rtol=0)
    torch.testing.assert_close(deferred_class_weights(19, counts, stages), w_09, atol=1e-5, rtol=0)
    w_late = deferred_class_weights(20, CIFAR10_LT_100, stages)
    torch.testing.assert_close(w_late, CB_REFERENCE, atol=1e-4, rtol=0)


def test_check_stages_normalises_valid_input():
    assert check_stages([(160, 0.9999)]) == ((160, 0.9999),)
    assert check_stages([[0, 0], (5, 0.5)]) == ((0, 0.0), (5, 0.5))


@pytest.mark.parametrize(
    ("stages", "match"),
    [
        ([(10, 0.9), (10, 0.99)], "increase strictly"),
        ([(20, 0.9), (10, 0.99)], "increase strictly"),
        ([(-1, 0.9)], r"stage epoch must be an integer >= 0.*-1"),
        ([(1.5, 0.9)], "stage epoch must be an integer"),
        ([(True, 0.9)], "stage epoch must be an integer"),
        ([(10, 1.0)], r"beta must be in \[0, 1\), got 1.0"),
        ([(10, -0.1)], r"beta must be in \[0, 1\), got -0.1"),
        ([(10, float("nan"))], "beta must be in"),
        ([], "at least one"),
        ([(10,)], "pairs"),
        ([(10, 0.9, 3)], "pairs"),
        ([5], "pairs"),
    ],
)
def test_check_stages_rejects(stages, match):
    with pytest.raises(ValueError, match=match):
        check_stages(stages)
