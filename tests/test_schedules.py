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


# ----------------------------------------------------------------- one horizon for every schedule (issue 12 item 3)
def _trainer(max_epochs, ckpt_path=None, module=None):
    from types import SimpleNamespace

    return SimpleNamespace(max_epochs=max_epochs, ckpt_path=ckpt_path, lightning_module=module, fast_dev_run=False)


def test_training_horizon_is_max_epochs_fresh_and_the_checkpoints_on_resume():
    from types import SimpleNamespace

    from lt_lightning.schedules import training_horizon

    module = SimpleNamespace(schedule_horizon=4)
    assert training_horizon(_trainer(8, None, module)) == 8  # fresh: a stale horizon is ignored
    assert training_horizon(_trainer(8, "a.ckpt", module)) == 4
    assert training_horizon(_trainer(8, "a.ckpt", SimpleNamespace()), restored=5) == 5  # a foreign module
    assert training_horizon(_trainer(8, "a.ckpt", SimpleNamespace())) == 8  # a checkpoint that recorded none
    assert training_horizon(_trainer(None)) is None


def test_every_epoch_derived_schedule_reads_the_horizon():
    from lt_lightning.data.datamodule import LongTailDataModule
    from lt_lightning.methods import ABSGD, BBN

    absgd = ABSGD((50, 20, 5), backbone="small_cnn", in_chans=1)
    absgd.schedule_horizon = 5
    absgd._trainer = _trainer(10, "a.ckpt", absgd)
    assert absgd.resolved_switch_epoch() == 4  # round(0.8 * 5), not 8
    absgd._trainer = _trainer(10, None, absgd)
    assert absgd.resolved_switch_epoch() == 8

    bbn = BBN((50, 20, 5), backbone="small_cnn", in_chans=1)
    bbn.schedule_horizon = 5
    bbn._trainer = _trainer(10, "a.ckpt", bbn)
    assert bbn.alpha(4) == pytest.approx(1 - (4 / 5) ** 2)  # T_max = 5
    assert bbn.alpha(9) == bbn.alpha(4)  # past the horizon: alpha keeps its final value

    dm = LongTailDataModule("digits", sampler="progressive")
    dm.trainer = _trainer(10, "a.ckpt", absgd)
    assert dm.build_sampler().total_epochs == 4  # balanced at the horizon's last epoch
    dm.trainer = _trainer(10)
    assert dm.build_sampler().total_epochs == 9
