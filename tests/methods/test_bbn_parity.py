"""BBN parity with the official code (issue 19, METHODS.md §4): the facts checked side by side against
Megvii-Nanjing/BBN (``benchmarks/bbn_parity.py --official DIR`` runs the official code itself), pinned here.

Checked: the α of every epoch, the reversed sampler's class frequencies, the paired batches (drop_last), one
training step's loss by hand (factor 2, one shared bias, α-weighted CE), the BatchNorm updates of the two passes,
the official recipe as BBN's default (Nesterov SGD, weight decay on every parameter, warm-up from lr/3, x0.01 at
the official epochs), and the inference formula with the trunk run once."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.paired import PairedSampler
from lt_lightning.data.samplers import InstanceSampler, ReversedSampler
from lt_lightning.methods import BBN
from lt_lightning.methods.bbn import bbn_milestones
from lt_lightning.optim import WarmupMultiStepLR
from lt_lightning.schedules import bbn_alpha

CIFAR10_RHO100 = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)


def small_bbn(counts=(50, 20, 5), **kwargs) -> BBN:
    torch.manual_seed(0)
    return BBN(counts, backbone="small_cnn", in_chans=1, backbone_kwargs={"width": 8}, **kwargs)


def attach(model: BBN, max_epochs: int, epoch: int = 0) -> L.Trainer:
    trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    model.trainer = trainer
    trainer.fit_loop.epoch_progress.current.completed = epoch
    return trainer


# ----------------------------------------------------------------- alpha
def test_alpha_per_epoch_is_the_official_combiner():
    # combiner.py: l = 1 - ((epoch - 1) / div_epoch) ** 2 with 1-indexed epochs; div_epoch = MAX_EPOCH (200).
    expected = {1: 1.0, 2: 0.999975, 50: 0.939975, 100: 0.754975, 120: 0.645975, 160: 0.367975, 200: 0.009975}
    model = small_bbn()
    for e, value in expected.items():
        assert bbn_alpha(e - 1, 200) == pytest.approx(value, abs=1e-12)
        attach(model, 200, e - 1)
        assert model.alpha() == pytest.approx(value, abs=1e-12)
    # The div_epoch quirk: 90 and 180 epochs divide by 100 and 200, so alpha ends near 0.2, never near 0.
    assert bbn_alpha(89, 90) == pytest.approx(1 - (89 / 100) ** 2)
    assert bbn_alpha(179, 180) == pytest.approx(1 - (179 / 200) ** 2)


# ----------------------------------------------------------------- sampler and batches
def test_reversed_sampler_frequencies_are_inverse_class_counts():
    counts = np.array(CIFAR10_RHO100)
    targets = np.repeat(np.arange(10), counts)
    expected = (1 / counts) / (1 / counts).sum()  # = (n_max / n_c) / sum_j (n_max / n_j), official get_weight
    sampler = ReversedSampler(targets, seed=0, num_samples=200_000)
    np.testing.assert_allclose(sampler.class_probabilities(), expected, rtol=1e-12)
    drawn = np.bincount(targets[np.fromiter(iter(sampler), int)], minlength=10) / 200_000
    standard_error = np.sqrt(expected * (1 - expected) / 200_000)
    assert np.all(np.abs(drawn - expected) < 5 * standard_error)
    np.testing.assert_allclose(expected[[0, 9]], [0.0040, 0.4024], atol=5e-5)  # METHODS.md §4


def test_paired_epoch_is_a_shuffle_zipped_with_independent_reversed_draws():
    targets = np.repeat(np.arange(10), CIFAR10_RHO100)
    pairs = list(PairedSampler(InstanceSampler(targets, seed=0), ReversedSampler(targets, seed=1_000_003)))
    assert len(pairs) == len(targets)
    assert sorted(i for i, _ in pairs) == list(range(len(targets)))  # uniform, without replacement
    tail = np.mean([targets[j] == 9 for _, j in pairs])
    assert tail == pytest.approx(0.4024, abs=0.02)


@pytest.mark.parametrize(("drop_last", "batches"), [(False, 12), (True, 11)])
def test_drop_last_reaches_the_paired_loader(drop_last, batches):
    dm = LongTailDataModule(
        "digits", imbalance_ratio=50, batch_size=32, rebalancing_sampler="reversed", drop_last=drop_last
    )
    n = sum(dm.class_counts)
    assert n == 371 and math.ceil(n / 32) == 12 and n // 32 == 11
    loader = dm.train_dataloader()
    assert len(loader) == batches
    sizes = [len(batch[0]) for batch in loader]
    assert sizes[0] == 32 and len(sizes) == batches
    assert sizes[-1] == (32 if drop_last else n - 11 * 32)
    batch = next(iter(loader))
    assert len(batch) == 4 and len(batch[2]) == len(batch[0])


def test_drop_last_validation():
    with pytest.raises(TypeError, match="drop_last must be a bool"):
        LongTailDataModule("digits", drop_last="yes")
    dm = LongTailDataModule("digits", imbalance_ratio=50, batch_size=512, drop_last=True)
    with pytest.raises(ValueError, match="leaves no training batch"):
        dm.train_dataloader()


# ----------------------------------------------------------------- one step by hand
def test_one_training_step_loss_and_gradient_by_hand():
    """C = 2, one feature per branch: f_c(x) = x, f_r(x) = x; W = I, b = (0.5, 0); alpha = 0.75 (epoch 2 of 4).

    mixed = 2 (0.75 * 1, 0.25 * 2) = (1.5, 1.0);  z = W mixed + b = (2.0, 1.0)
    loss  = 0.75 CE(z, 0) + 0.25 CE(z, 1) = 0.75 log(1 + e^-1) + 0.25 log(1 + e) = log(1 + e^-1) + 0.25
    dL/db = softmax(z) - (0.75, 0.25)   (one bias, shared by both terms)
    """
    model = small_bbn(counts=(5, 2))
    attach(model, max_epochs=4, epoch=2)
    assert model.alpha() == 0.75
    model.conventional_features = lambda x: x.flatten(1)
    model.rebalancing_features = lambda x: x.flatten(1)
    model.classifier = nn.Linear(2, 2)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.eye(2))
        model.classifier.bias.copy_(torch.tensor([0.5, 0.0]))
    batch = (torch.tensor([[1.0]]), torch.tensor([0]), torch.tensor([[2.0]]), torch.tensor([1]))
    loss, logits, _ = model.training_loss(batch)
    torch.testing.assert_close(logits, torch.tensor([[2.0, 1.0]]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1)) + 0.25, abs=1e-6)  # 0.563262
    loss.backward()
    sig = 1 / (1 + math.exp(-1))  # softmax((2, 1))[0]
    dz = torch.tensor([sig - 0.75, (1 - sig) - 0.25])
    torch.testing.assert_close(model.classifier.bias.grad, dz)
    # dL/dW = dL/dz mixed^T: the factor 2 is in the features the weights see.
    torch.testing.assert_close(model.classifier.weight.grad, torch.outer(dz, torch.tensor([1.5, 1.0])))


def test_one_resnet32_step_matches_the_value_of_the_official_code():
    """Seeded weights and batch as in ``benchmarks/bbn_parity.py``; the official ``Combiner.bbn_mix`` on the same
    weights and batch gave loss 3.539693 (and identical gradients, BN statistics, step and inference)."""
    torch.manual_seed(0)
    model = BBN(CIFAR10_RHO100, backbone="resnet32")
    attach(model, max_epochs=200, epoch=49)
    g = torch.Generator().manual_seed(0)
    x_c, y_c = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    x_r, y_r = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    loss, _, _ = model.train().training_loss((x_c, y_c, x_r, y_r))
    assert loss.item() == pytest.approx(3.539693, abs=2e-5)


def test_two_passes_update_batchnorm_once_per_stream():
    model = small_bbn().train()
    attach(model, max_epochs=10, epoch=3)
    twin = small_bbn().train()
    g = torch.Generator().manual_seed(4)
    x_c, x_r = torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 1, 8, 8, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    model.training_loss((x_c, y, x_r, y))
    with torch.no_grad():  # the official order: x_c through trunk + cb_block, then x_r through trunk + rb_block
        twin.backbone.last_block(twin.backbone.forward_trunk(x_c))
        twin.rb_branch(twin.backbone.forward_trunk(x_r))
    bns = [(k, b) for k, b in model.named_buffers() if "running" in k or "num_batches" in k]
    twin_buffers = dict(twin.named_buffers())
    for k, b in bns:
        torch.testing.assert_close(b, twin_buffers[k], msg=k)
    trunk_bn = next(m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    assert int(trunk_bn.num_batches_tracked) == 2


# ----------------------------------------------------------------- the official recipe as the default
OFFICIAL_LR_200 = {
    1: 0.1 * 7 / 15,
    2: 0.06,
    3: 0.1 * 11 / 15,
    4: 0.1 * 13 / 15,
    5: 0.1,
    119: 0.1,
    120: 1e-3,
    159: 1e-3,
    160: 1e-5,
    200: 1e-5,
}  # lr_scheduler.py stepped before each 1-indexed epoch


def lrs(model: BBN, max_epochs: int) -> list[float]:
    attach(model, max_epochs)
    optimizer = model.build_optimizer()
    scheduler = model.build_lr_scheduler(optimizer)
    out = []
    for _ in range(max_epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: a no-op that keeps torch's step-order check quiet
        scheduler.step()
    return out


def test_default_optimizer_is_the_official_nesterov_sgd_decaying_every_parameter():
    model = small_bbn()
    attach(model, 30)
    optimizer = model.build_optimizer()
    assert type(optimizer) is torch.optim.SGD
    groups = optimizer.param_groups
    assert all(g["lr"] == 0.1 and g["momentum"] == 0.9 and g["weight_decay"] == 2e-4 and g["nesterov"] for g in groups)
    decayed = {id(p) for g in groups for p in g["params"]}
    assert decayed == {id(p) for p in model.parameters()}  # BatchNorm weights and biases too, as the official code


def test_default_lr_schedule_is_the_official_one_and_scales_with_max_epochs():
    by_epoch = lrs(small_bbn(), 200)
    for e, lr in OFFICIAL_LR_200.items():
        assert by_epoch[e - 1] == pytest.approx(lr, rel=1e-9), e
    assert bbn_milestones(200) == (119, 159) and bbn_milestones(30) == (17, 23)
    short = lrs(small_bbn(), 30)
    assert short[16] == pytest.approx(0.1) and short[17] == pytest.approx(1e-3) and short[23] == pytest.approx(1e-5)


def test_explicit_optimizer_and_scheduler_replace_the_default():
    model = small_bbn(
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05),
        lr_scheduler=lambda opt: WarmupMultiStepLR(opt, warmup_epochs=0, milestones=[2], gamma=0.1),
    )
    assert lrs(model, 4) == pytest.approx([0.05, 0.05, 0.005, 0.005])
    assert not model.build_optimizer().param_groups[0]["nesterov"]


# ----------------------------------------------------------------- inference
def test_inference_is_the_official_feature_flag_path_with_one_trunk_pass(monkeypatch):
    model = small_bbn().eval()
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        trunk = model.backbone.forward_trunk(x)
        f_c = model.backbone.forward_pool(model.backbone.last_block(trunk))
        f_r = model.backbone.forward_pool(model.rb_branch(trunk))
        official = F.linear(torch.cat([f_c, f_r], 1), model.classifier.weight, model.classifier.bias)
        calls = []
        original = model.backbone.forward_trunk
        monkeypatch.setattr(model.backbone, "forward_trunk", lambda t: calls.append(1) or original(t))
        torch.testing.assert_close(model.predict_logits(x), official)
        assert len(calls) == 1
        torch.testing.assert_close(model.mixed_logits(x, x, 0.5), official)  # alpha 0.5 in the training formula
