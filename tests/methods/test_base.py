"""LongTailClassifier: building blocks, override points, recipe defaults, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.losses import CrossEntropyLoss, LDAMLoss
from lt_lightning.methods import LongTailClassifier
from lt_lightning.models import NormedLinear
from lt_lightning.optim import WarmupMultiStepLR
from tests.helpers import cpu_trainer

COUNTS = (50, 20, 5)


def tiny_loader(n=24, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.arange(n) % classes
    return DataLoader(TensorDataset(x, y), batch_size=8)


def test_loss_by_name_and_head_auto():
    ce = LongTailClassifier(COUNTS, in_chans=1)
    assert isinstance(ce.criterion, CrossEntropyLoss) and isinstance(ce.backbone.head, nn.Linear)
    ldam = LongTailClassifier(COUNTS, in_chans=1, loss="ldam", loss_kwargs={"max_margin": 0.3})
    assert isinstance(ldam.criterion, LDAMLoss) and isinstance(ldam.backbone.head, NormedLinear)
    assert float(ldam.criterion.margins.max()) == pytest.approx(0.3)
    forced = LongTailClassifier(COUNTS, in_chans=1, loss="ldam", head="linear")
    assert isinstance(forced.backbone.head, nn.Linear)


def test_loss_as_callable_receives_class_counts():
    seen = {}

    def factory(class_counts):
        seen["counts"] = tuple(class_counts)
        return CrossEntropyLoss(class_counts)

    LongTailClassifier(COUNTS, in_chans=1, loss=factory)
    assert seen["counts"] == COUNTS


def test_cb_focal_head_bias_starts_at_uniform_prior():
    model = LongTailClassifier(COUNTS, in_chans=1, loss="cb_focal")
    torch.testing.assert_close(model.backbone.head.bias, torch.full((3,), -math.log(2)))


def test_default_recipe_sgd_and_schedule(tmp_path):
    model = LongTailClassifier(COUNTS, in_chans=1)
    model.trainer = cpu_trainer(tmp_path, max_epochs=200)
    config = model.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.SGD)
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 2e-4 and not opt.defaults["nesterov"]
    assert isinstance(sched, WarmupMultiStepLR) and sched.milestones == (160, 180)
    assert config["lr_scheduler"]["interval"] == "epoch"
    lrs = []
    for _ in range(200):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.02) and lrs[4] == pytest.approx(0.1) and lrs[159] == pytest.approx(0.1)
    assert lrs[160] == pytest.approx(1e-3) and lrs[180] == pytest.approx(1e-5)


def test_injected_optimizer_and_scheduler_are_used(tmp_path):
    model = LongTailClassifier(
        COUNTS,
        in_chans=1,
        optimizer=lambda p: torch.optim.Adam(p, lr=0.005),
        lr_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3),
    )
    config = model.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.Adam)
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)


def test_scheduler_state_round_trips():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = WarmupMultiStepLR(opt, max_epochs=10)
    for _ in range(8):
        opt.step()
        sched.step()
    state = sched.state_dict()
    fresh = WarmupMultiStepLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), max_epochs=10)
    fresh.load_state_dict(state)
    assert fresh.last_epoch == 8 and fresh.milestones == (8, 9) and fresh.factor(8) == pytest.approx(0.01)


class OverrideLoss(LongTailClassifier):
    """Subclass that changes only the loss on a batch and the inference logits."""

    def training_loss(self, batch):
        loss, logits, target = super().training_loss(batch)
        return loss * 0.0 + 1.5, logits, target

    def predict_logits(self, x):
        return torch.zeros(len(x), self.num_classes)


def test_override_points_are_used(tmp_path):
    model = OverrideLoss(COUNTS, in_chans=1)
    t = cpu_trainer(tmp_path, limit_train_batches=1, limit_val_batches=1)
    t.fit(model, tiny_loader(), tiny_loader())
    assert t.callback_metrics["train/loss_epoch"] == pytest.approx(1.5)
    # constant logits predict class 0 for everything: 1/3 of the balanced loader is right
    assert t.callback_metrics["val/acc"] == pytest.approx(3 / 8)


class NaNLoss(LongTailClassifier):
    def training_loss(self, batch):
        loss, logits, target = super().training_loss(batch)
        return loss * float("nan"), logits, target


def test_non_finite_loss_stops_naming_step_and_batch(tmp_path):
    with pytest.raises(FloatingPointError, match=r"non-finite training loss nan at epoch 0, global step 0, batch 0"):
        cpu_trainer(tmp_path, limit_train_batches=1).fit(NaNLoss(COUNTS, in_chans=1), tiny_loader())


def test_test_metrics_logged(tmp_path):
    model = LongTailClassifier(COUNTS, in_chans=1)
    results = cpu_trainer(tmp_path).test(model, tiny_loader())
    assert set(results[0]) == {"test/acc", "test/balanced_acc"}
    assert 0.0 <= results[0]["test/balanced_acc"] <= 1.0


def test_hparams_hold_class_counts_for_reload():
    model = LongTailClassifier(COUNTS, in_chans=1, class_names=("a", "b", "c"))
    assert tuple(model.hparams.class_counts) == COUNTS
    assert model.class_names == ("a", "b", "c")
    assert "optimizer" not in model.hparams


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"loss": "ldma"}, ValueError, r"loss must be one of \[.*'ce'.*'ldam'.*\] .*got 'ldma'"),
        ({"backbone": "resnet_nope"}, ValueError, r"resnet_nope"),
        ({"head": "round"}, ValueError, r"head must be one of \['auto', 'cosine', 'linear'\], got 'round'"),
        ({"class_names": ("a", "b")}, ValueError, r"class_names has 2 entries but class_counts has 3"),
        ({"class_counts": (5, 0, 1)}, ValueError, r"class_counts"),
        ({"class_counts": ()}, ValueError, r"class_counts"),
        ({"loss": "ldam", "loss_kwargs": {"max_margin": 0.0}}, ValueError, r"max_margin must be > 0"),
        ({"loss": "ldam", "loss_kwargs": {"scale": -1.0}}, ValueError, r"scale must be > 0"),
        ({"loss": "cb_focal", "loss_kwargs": {"beta": 1.0}}, ValueError, r"beta must be in \[0, 1\)"),
    ],
)
def test_bad_input(kwargs, error, match):
    kwargs = {"class_counts": COUNTS, "in_chans": 1, **kwargs}
    with pytest.raises(error, match=match):
        LongTailClassifier(**kwargs)
