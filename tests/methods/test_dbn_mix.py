"""DBN-Mix (issue 15 item 5): the class-temperature soft-target loss, bilateral mixup, the two-branch network, the
inference / stage-2 split, DRW, the data check, bad input, a digits smoke run and 2-process DDP."""

from __future__ import annotations

import math

import pytest
import torch

from lt_lightning.callbacks import DeferredReweighting
from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.functional.losses import class_temperatures, log1m_softmax, mix_soft_target_loss
from lt_lightning.functional.mixing import mixed_target_loss
from lt_lightning.losses import LOSSES, ClassTemperatureMixLoss, CrossEntropyLoss
from lt_lightning.methods import BBN, ClassifierRetraining, DBNMix
from lt_lightning.methods.dbn_mix import StepWarmupMultiStepLR, bilateral_mixup
from tests.helpers import cpu_trainer

SMALL = {"backbone": "small_cnn", "backbone_kwargs": {"width": 8}, "in_chans": 1}
TINY_DIGITS = {"dataset": "digits", "imbalance_ratio": 10, "head_size": 30, "batch_size": 16}


def paired_batch(n: int = 6, size: int = 8, classes: int = 3):
    g = torch.Generator().manual_seed(0)
    x, x_b = torch.randn(n, 1, size, size, generator=g), torch.randn(n, 1, size, size, generator=g)
    return x, torch.arange(n) % classes, x_b, (torch.arange(n) + 1) % classes


# ----------------------------------------------------------------- temperatures
def test_temperatures_are_one_at_the_head_and_grow_toward_the_tail():
    tau = class_temperatures([500, 200, 50, 10, 5], epsilon=0.6, eta=3.0)
    assert tau[0].item() == 1.0
    assert bool((tau[1:] > tau[:-1]).all())
    # By hand: phi = 0.6 * 5 * n / 500 + 0.4, tau = (phi_max / phi)^(1/3).
    phi = [0.6 * 5 * n / 500 + 0.4 for n in (500, 200, 50, 10, 5)]
    assert tau.tolist() == pytest.approx([(phi[0] / p) ** (1 / 3) for p in phi], rel=1e-6)
    assert class_temperatures([7, 7, 7], 0.6, 3.0).tolist() == [1.0, 1.0, 1.0]
    assert class_temperatures([100, 1], 0.0, 3.0).tolist() == [1.0, 1.0]  # epsilon 0: no temperature


# ----------------------------------------------------------------- the loss
def test_one_hot_target_gives_minus_log_p_y_minus_sum_log_one_minus_p_j_by_hand():
    z = torch.tensor([[2.0, 1.0, -1.0]])
    e = [math.exp(v) for v in (2.0, 1.0, -1.0)]
    p = [v / sum(e) for v in e]
    expected = -math.log(p[1]) - math.log(1 - p[0]) - math.log(1 - p[2])
    loss = mix_soft_target_loss(z, torch.tensor([[0.0, 1.0, 0.0]]))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert mix_soft_target_loss(z, torch.tensor([1])).item() == pytest.approx(expected, rel=1e-6)  # hard label
    # Temperatures divide the logits first.
    tau = torch.tensor([1.0, 2.0, 4.0])
    assert mix_soft_target_loss(z, torch.tensor([1]), tau).item() == pytest.approx(
        mix_soft_target_loss(z / tau, torch.tensor([1])).item(), rel=1e-6
    )


def test_stable_log_one_minus_p_matches_the_naive_form_and_stays_finite():
    z = torch.randn(64, 7, generator=torch.Generator().manual_seed(1)) * 4
    naive = torch.log(1 - z.softmax(1))
    assert torch.isfinite(naive).all()
    torch.testing.assert_close(log1m_softmax(z), naive, rtol=1e-4, atol=1e-5)
    big = torch.tensor([[120.0, 0.0, -3.0]], requires_grad=True)
    assert torch.isinf(torch.log(1 - big.softmax(1))).any()  # the reference's form fails here
    stable = log1m_softmax(big)
    assert torch.isfinite(stable).all()
    assert stable[0, 0].item() == pytest.approx(math.log(1 + math.exp(-3.0)) - 120.0, abs=1e-4)
    loss = mix_soft_target_loss(big, torch.tensor([[0.5, 0.5, 0.0]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(big.grad).all()


def test_loss_is_affine_in_the_target_so_soft_equals_two_label_mixing():
    loss = ClassTemperatureMixLoss([100, 30, 5])
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    y1, y2, lam = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([2, 2, 0, 1, 1]), 0.7
    soft = lam * torch.nn.functional.one_hot(y1, 3) + (1 - lam) * torch.nn.functional.one_hot(y2, 3)
    torch.testing.assert_close(loss(z, soft.float()), mixed_target_loss(loss, z, y1, y2, lam))


def test_drw_weights_reach_the_loss():
    loss = ClassTemperatureMixLoss([100, 30, 5])
    z, t = torch.randn(4, 3, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 1, 2, 2])
    w = torch.tensor([0.5, 1.0, 3.0])
    plain = loss(z, t)
    loss.set_class_weight(w)
    torch.testing.assert_close(loss(z, t), mix_soft_target_loss(z, t, loss.temperatures, w))
    assert loss(z, t).item() != pytest.approx(plain.item())
    assert LOSSES["class_temperature_mix"] is ClassTemperatureMixLoss


def test_drw_callback_sets_the_weights_of_dbn_mix(tmp_path):
    dm = LongTailDataModule(**TINY_DIGITS, rebalancing_sampler="class_balanced")
    model = DBNMix(dm.class_counts, **SMALL)
    cb = DeferredReweighting(start_epoch=1)
    cpu_trainer(tmp_path, max_epochs=2, limit_train_batches=1, limit_val_batches=0, callbacks=[cb]).fit(
        model, datamodule=dm
    )
    assert not torch.equal(model.criterion.class_weight, torch.ones(10))
    assert model.criterion.class_weight[-1] > model.criterion.class_weight[0]


# ----------------------------------------------------------------- mixup
def test_bilateral_mixup_lam_at_least_half_and_inputs_sum_to_the_pair():
    model = DBNMix((50, 20, 5), **SMALL, mixup_beta=0.5)
    x, y, x_b, y_b = paired_batch()
    for step in range(20):
        model.hparams.mixup_seed = step  # different draws
        lam, perm = model.mixup_draw(len(x))
        assert 0.5 <= lam <= 1.0 and sorted(perm.tolist()) == list(range(len(x)))
        x_cb, t_cb, x_rb, t_rb = bilateral_mixup(x, y, x_b, y_b, lam, perm, 3)
        torch.testing.assert_close(x_cb + x_rb, x[perm] + x_b)
        torch.testing.assert_close(t_cb.sum(1), torch.ones(len(x)))
        both = torch.nn.functional.one_hot(y[perm], 3) + torch.nn.functional.one_hot(y_b, 3)
        torch.testing.assert_close(t_cb + t_rb, both.float())
    model.hparams.mixup_seed = 0
    assert model.mixup_draw(6)[0] == model.mixup_draw(6)[0]  # pure in (seed, global step): resume replays it


# ----------------------------------------------------------------- the network and inference
@pytest.mark.parametrize(
    "backbone,cut", [("small_cnn", "last_block"), ("resnet20", "last_stage"), ("resnet20", "last_block")]
)
def test_inference_is_the_mean_of_the_branches_and_the_classifier_split(backbone, cut):
    kwargs = {"backbone_kwargs": {"width": 8}} if backbone == "small_cnn" else {}
    model = DBNMix((50, 20, 5), backbone=backbone, in_chans=1, cut=cut, **kwargs).eval()
    assert model.cut == cut
    x = paired_batch(size=16)[0]
    with torch.no_grad():
        z = model(x)
        torch.testing.assert_close(z, (model.cb_logits(x) + model.rb_logits(x)) / 2, rtol=1e-5, atol=1e-5)
        assert torch.equal(model.classifier_head()(model.classifier_features(x)), z)
    assert model.classifier_head().weight.requires_grad is False


def test_default_cut_is_the_official_split_for_cifar_resnets():
    model = DBNMix((50, 20, 5), backbone="resnet32", in_chans=1)
    assert model.cut == "last_stage" and model.hparams.cut == "auto"
    # rb = a twin of layer3 (5 blocks, 32 -> 64, stride 2), as the reference's rb_block; separate heads.
    assert len(model.rb_branch) == 5 and model.rb_branch[0].in_planes == 32 and model.rb_branch[0].planes == 64
    assert model.rb_head is not model.backbone.head
    assert DBNMix((50, 20, 5), **SMALL).cut == "last_block"


def test_training_loss_is_half_the_sum_of_the_branch_losses_and_logs_the_dominant_label():
    model = DBNMix((50, 20, 5), **SMALL)
    x, y, x_b, y_b = batch = paired_batch()
    loss, logits, target = model.training_loss(batch)
    lam, perm = model.mixup_draw(len(x))
    x_cb, t_cb, x_rb, t_rb = bilateral_mixup(x, y, x_b, y_b, lam, perm, 3)
    expected = 0.5 * (model.criterion(model.cb_logits(x_cb), t_cb) + model.criterion(model.rb_logits(x_rb), t_rb))
    torch.testing.assert_close(loss, expected)
    assert torch.equal(target, y[perm]) and logits.shape == (len(x), 3)
    # A loss without soft targets (CE) is applied as lam CE(y[perm]) + (1 - lam) CE(y_b): the same for CE.
    ce = DBNMix((50, 20, 5), **SMALL, loss="ce")
    assert isinstance(ce.criterion, CrossEntropyLoss)
    assert torch.isfinite(ce.training_loss(batch)[0])


def test_per_step_official_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = StepWarmupMultiStepLR(opt, steps_per_epoch=4, warmup_epochs=5, milestones=(160, 180))
    lrs = []
    for _ in range(22):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[10] == pytest.approx(0.05) and lrs[20] == pytest.approx(0.1)
    assert sched.factor(160 * 4 - 1) == 1.0 and sched.factor(160 * 4) == pytest.approx(0.1)
    assert sched.factor(180 * 4) == pytest.approx(0.01)


# ----------------------------------------------------------------- bad input and the data check
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"cut": "middle"}, r"cut must be one of \['auto', 'last_block', 'last_stage'\], got 'middle'"),
        ({"mixup_beta": 0.0}, r"mixup_beta must be a finite number > 0, got 0.0"),
        ({"mixup_beta": -1}, r"mixup_beta must be a finite number > 0, got -1"),
        ({"loss_lambda": float("nan")}, r"loss_lambda must be a finite number > 0, got nan"),
        ({"mixup_seed": -1}, r"mixup_seed must be an integer >= 0, got -1"),
        ({"loss_kwargs": {"epsilon": 1.5}}, r"epsilon must be in \[0, 1\], got 1.5"),
        ({"loss_kwargs": {"eta": 0}}, r"eta must be > 0, got 0.0"),
        ({"cut": "last_stage"}, r"cut='last_stage' .* needs a CIFAR ResNet .* backbone 'small_cnn' \(SmallCNN\)"),
        ({"head": "cosine"}, r"DBNMix needs linear heads .* got head 'cosine'"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DBNMix((50, 20, 5), **{**SMALL, **kwargs})


def test_datamodule_without_the_second_stream_fails_at_fit(tmp_path):
    dm = LongTailDataModule(**TINY_DIGITS)
    with pytest.raises(ValueError, match="DBNMix needs the second .* rebalancing_sampler='class_balanced'"):
        cpu_trainer(tmp_path).fit(DBNMix(dm.class_counts, **SMALL), datamodule=dm)
    with pytest.raises(ValueError, match="DBNMix expects training batches .*rebalancing_sampler"):
        DBNMix((50, 20, 5), **SMALL).training_loss(paired_batch()[:2])


# ----------------------------------------------------------------- runs
def test_fast_dev_run_on_digits_with_the_class_balanced_stream(tmp_path):
    dm = LongTailDataModule(dataset="digits", batch_size=32, rebalancing_sampler="class_balanced")
    model = DBNMix(dm.class_counts, **SMALL)
    cpu_trainer(tmp_path, fast_dev_run=True).fit(model, datamodule=dm)
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=1).fit(
        DBNMix(dm.class_counts, **SMALL), datamodule=dm
    )


def test_lws_on_a_dbn_mix_checkpoint_reproduces_its_logits_exactly(tmp_path):
    from lt_lightning.checkpoints import load_trained_module

    dm = LongTailDataModule(dataset="digits", batch_size=64, rebalancing_sampler="class_balanced")
    torch.manual_seed(0)
    model = DBNMix(dm.class_counts, class_names=dm.class_names, **SMALL)
    trainer = cpu_trainer(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "dbn_mix.ckpt"
    trainer.save_checkpoint(path)
    x = torch.stack([dm.test_set[i][0] for i in range(16)])
    with torch.no_grad():
        expected = load_trained_module(path).predict_logits(x)
        for mode in ("lws", "marc"):
            stage2 = ClassifierRetraining(path, mode=mode).eval()
            assert torch.equal(stage2.predict_logits(x), expected), mode
    crt = ClassifierRetraining(path, mode="crt")
    with pytest.warns(UserWarning, match="instance' sampler"):
        cpu_trainer(tmp_path / "crt", max_epochs=1, limit_train_batches=1, limit_val_batches=0).fit(crt, datamodule=dm)


def test_bbn_is_untouched():
    model = BBN((50, 20, 5), **SMALL).eval()
    x = paired_batch()[0]
    with torch.no_grad():
        assert torch.equal(model(x), model.classifier_head()(model.classifier_features(x)))


@pytest.mark.ddp
def test_two_process_ddp_spawn_smoke(tmp_path):
    dm = LongTailDataModule(**TINY_DIGITS, rebalancing_sampler="class_balanced")
    trainer = cpu_trainer(
        tmp_path,
        devices=2,
        strategy="ddp_spawn",
        max_epochs=2,
        callbacks=[DeferredReweighting(start_epoch=1)],
        num_sanity_val_steps=0,
        limit_val_batches=1,
    )
    model = DBNMix(dm.class_counts, **SMALL)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.fit(model, datamodule=dm)
    assert trainer.state.finished
    # ddp_spawn hands the trained weights back to this process: both branches and heads were trained.
    for name in ("rb_head.weight", "backbone.head.weight"):
        assert not torch.equal(model.state_dict()[name], before[name]), name
