"""``ScaleLearningRate``: hand-computed factors (linear and square-root rules), where the per-device batch comes from,
the warm-up and cosine schedules scaled epoch by epoch, SAM (whose groups are its base optimizer's) scaled once,
resume without double scaling (and the ratio applied when the global batch changed), and bad arguments.

The 2-process ``ddp_spawn`` check (world size 2 in the factor) is in ``tests/data/test_samplers_cycle_ddp.py``."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

from lt_lightning.callbacks import ScaleLearningRate
from lt_lightning.callbacks.lr_scaling import per_device_batch_size
from lt_lightning.methods import LongTailClassifier, SAMClassifier
from lt_lightning.optim.schedulers import WarmupMultiStepLR
from tests.helpers import cpu_trainer

COUNTS = (50, 20, 5)
TINY = {"backbone": "small_cnn", "backbone_kwargs": {"width": 8}, "in_chans": 1}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_loader(n=32, batch_size=8):
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 3), batch_size=batch_size)


class LRRecorder(Callback):
    """The lr of the first param group at the start of each epoch (after ScaleLearningRate ran) and at the end."""

    def __init__(self):
        self.epochs: dict[int, float] = {}
        self.final: float | None = None

    def on_train_epoch_start(self, trainer, pl_module):
        self.epochs[trainer.current_epoch] = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_end(self, trainer, pl_module):
        self.final = trainer.optimizers[0].param_groups[0]["lr"]


def stub_trainer(batch_size=32, world_size=2, accumulate=2, lr=0.1):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)
    scheduler = WarmupMultiStepLR(optimizer, warmup_epochs=5)  # epoch 0: lr = 0.2 x base
    return SimpleNamespace(
        datamodule=SimpleNamespace(batch_size=batch_size),
        train_dataloader=None,
        world_size=world_size,
        accumulate_grad_batches=accumulate,
        optimizers=[optimizer],
        lr_scheduler_configs=[SimpleNamespace(scheduler=scheduler)],
    )


@pytest.mark.parametrize(("rule", "factor"), [("linear", 0.5), ("sqrt", math.sqrt(0.5))])
def test_factor_of_32_per_device_x_2_devices_x_2_accumulated_vs_256(rule, factor):
    trainer = stub_trainer()
    callback = ScaleLearningRate(256, rule=rule)
    callback.on_train_start(trainer, None)
    assert callback.global_batch_size == 128  # 32 x 2 x 2
    assert callback.factor == pytest.approx(factor, rel=1e-15)  # 0.5, or 0.70710678...
    group, scheduler = trainer.optimizers[0].param_groups[0], trainer.lr_scheduler_configs[0].scheduler
    assert group["initial_lr"] == pytest.approx(0.1 * factor, rel=1e-15)
    assert group["lr"] == pytest.approx(0.02 * factor, rel=1e-12)  # warm-up epoch 0: 0.1 x 1/5
    assert scheduler.base_lrs == [pytest.approx(0.1 * factor, rel=1e-15)]
    trainer.optimizers[0].step()  # no gradient: a no-op, but the order PyTorch expects
    scheduler.step()  # epoch 1 of the warm-up: 0.1 x 2/5, scaled
    assert group["lr"] == pytest.approx(0.04 * factor, rel=1e-12)
    assert callback.state_dict() == {"factor": callback.factor, "reference_batch_size": 256, "rule": rule}


def test_larger_global_batch_scales_up_and_equal_batch_leaves_lrs_alone():
    trainer = stub_trainer(batch_size=64, world_size=8, accumulate=1)  # 512 vs 128: x4 (linear), x2 (sqrt)
    ScaleLearningRate(128).on_train_start(trainer, None)
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == pytest.approx(0.4)
    trainer = stub_trainer(batch_size=64, world_size=8, accumulate=1)
    ScaleLearningRate(128, rule="sqrt").on_train_start(trainer, None)
    assert trainer.optimizers[0].param_groups[0]["initial_lr"] == pytest.approx(0.2)
    trainer = stub_trainer(batch_size=128, world_size=1, accumulate=1)
    callback = ScaleLearningRate(128)
    callback.on_train_start(trainer, None)
    assert callback.factor == 1.0 and trainer.optimizers[0].param_groups[0]["initial_lr"] == 0.1


def test_batch_size_from_the_loader_and_a_clear_error_when_unknown():
    loader = tiny_loader(batch_size=4)
    assert per_device_batch_size(SimpleNamespace(datamodule=None, train_dataloader=loader)) == 4
    batches = DataLoader(loader.dataset, batch_sampler=BatchSampler(SequentialSampler(loader.dataset), 6, False))
    assert per_device_batch_size(SimpleNamespace(datamodule=None, train_dataloader=batches)) == 6
    custom = DataLoader(loader.dataset, batch_sampler=[[0, 1], [2, 3, 4]])  # no batch size anywhere
    with pytest.raises(ValueError, match=r"ScaleLearningRate: cannot find the per-device batch size"):
        per_device_batch_size(SimpleNamespace(datamodule=SimpleNamespace(), train_dataloader=custom))


def _fit(tmp_path, callbacks, max_epochs=4, accumulate=2, ckpt_path=None, lr_scheduler=None, **trainer_kw):
    torch.manual_seed(0)
    model = LongTailClassifier(COUNTS, lr_scheduler=lr_scheduler, **TINY)
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=max_epochs,
        accumulate_grad_batches=accumulate,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
        **trainer_kw,
    )
    trainer.fit(model, train_dataloaders=tiny_loader(), ckpt_path=ckpt_path)
    return trainer


def test_warmup_schedule_is_scaled_every_epoch(tmp_path):
    """Default schedule (warm-up 5 epochs from 0, SGD lr 0.1): batch 8 x 1 device x 2 accumulated = 16 vs 64: x0.25,
    so the epoch-k lr is 0.25 x 0.1 x (k + 1) / 5."""
    plain, scaled = LRRecorder(), LRRecorder()
    _fit(tmp_path / "plain", [plain])
    _fit(tmp_path / "scaled", [scaled, ScaleLearningRate(64)])
    assert plain.epochs == pytest.approx({k: 0.1 * (k + 1) / 5 for k in range(4)})
    assert scaled.epochs[0] == pytest.approx(0.25 * plain.epochs[0], rel=1e-12)  # 0.005
    assert scaled.epochs == pytest.approx({k: 0.25 * v for k, v in plain.epochs.items()}, rel=1e-12)


def test_cosine_schedule_is_scaled(tmp_path):
    def cosine(optimizer):
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)

    plain, scaled = LRRecorder(), LRRecorder()
    _fit(tmp_path / "plain", [plain], lr_scheduler=cosine)
    _fit(tmp_path / "scaled", [scaled, ScaleLearningRate(8, rule="sqrt")], lr_scheduler=cosine)  # 16 vs 8: x sqrt 2
    assert plain.epochs[0] == pytest.approx(0.1) and plain.epochs[2] == pytest.approx(0.05)
    assert scaled.epochs == pytest.approx({k: math.sqrt(2) * v for k, v in plain.epochs.items()}, rel=1e-12)


def test_resume_does_not_scale_twice(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    whole = LRRecorder()
    first = _fit(tmp_path / "whole", [whole, ScaleLearningRate(64), ckpt], enable_checkpointing=True)
    resumed = LRRecorder()
    second = _fit(tmp_path / "resumed", [resumed, ScaleLearningRate(64)], ckpt_path=tmp_path / "ckpt" / "epoch=1.ckpt")
    assert sorted(resumed.epochs) == [2, 3]
    assert resumed.epochs == pytest.approx({k: whole.epochs[k] for k in (2, 3)}, rel=1e-12)
    assert resumed.final == pytest.approx(whole.final, rel=1e-12) and whole.final == pytest.approx(0.25 * 0.1)
    for a, b in zip(first.optimizers[0].param_groups, second.optimizers[0].param_groups, strict=True):
        assert b["initial_lr"] == pytest.approx(a["initial_lr"], rel=1e-12)
    assert second.lr_scheduler_configs[0].scheduler.base_lrs == pytest.approx(
        first.lr_scheduler_configs[0].scheduler.base_lrs, rel=1e-12
    )
    saved = torch.load(tmp_path / "ckpt" / "epoch=1.ckpt", weights_only=False)["callbacks"]
    assert saved["ScaleLearningRate"]["factor"] == 0.25

    # Resumed with no accumulation: global batch 8 (factor 0.125), so only the ratio 0.5 is applied on top.
    halved = LRRecorder()
    _fit(
        tmp_path / "halved",
        [halved, ScaleLearningRate(64)],
        accumulate=1,
        ckpt_path=tmp_path / "ckpt" / "epoch=1.ckpt",
    )
    assert halved.epochs == pytest.approx({k: 0.5 * whole.epochs[k] for k in (2, 3)}, rel=1e-12)


def test_adding_it_on_resume_of_an_unscaled_run_scales_once(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    plain = LRRecorder()
    _fit(tmp_path / "plain", [plain, ckpt], enable_checkpointing=True)
    resumed = LRRecorder()
    _fit(tmp_path / "resumed", [resumed, ScaleLearningRate(64)], ckpt_path=tmp_path / "ckpt" / "epoch=1.ckpt")
    assert resumed.epochs == pytest.approx({k: 0.25 * plain.epochs[k] for k in (2, 3)}, rel=1e-12)


def test_sam_is_scaled_once(tmp_path):
    """SAM shares its base optimizer's param groups: they are scaled once, not once per object."""
    torch.manual_seed(0)
    model = SAMClassifier(COUNTS, **TINY)
    recorder = LRRecorder()
    trainer = cpu_trainer(
        tmp_path,
        limit_train_batches=2,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[recorder, ScaleLearningRate(16)],  # 8 vs 16: x0.5
    )
    trainer.fit(model, train_dataloaders=tiny_loader())
    optimizer = trainer.optimizers[0]
    assert optimizer.param_groups is optimizer.base_optimizer.param_groups
    assert recorder.epochs[0] == pytest.approx(0.5 * 0.1 / 5, rel=1e-12)
    assert optimizer.base_optimizer.param_groups[0]["initial_lr"] == pytest.approx(0.05, rel=1e-12)


@pytest.mark.parametrize("bad", [0, -256, 2.5, "256", True, None])
def test_bad_reference_batch_size(bad):
    with pytest.raises(ValueError, match=rf"reference_batch_size must be an integer >= 1, got {bad!r}"):
        ScaleLearningRate(bad)


@pytest.mark.parametrize("bad", ["square", "Linear", None, 2])
def test_bad_rule(bad):
    with pytest.raises(ValueError, match=rf"rule must be one of \('linear', 'sqrt'\), got {bad!r}"):
        ScaleLearningRate(256, rule=bad)


def test_is_a_lightning_callback_exported_from_the_package():
    assert isinstance(ScaleLearningRate(256), L.Callback)


def test_cyclic_lr_peak_is_scaled_too():
    """CyclicLR keeps its peak in ``max_lrs`` (not in the param groups): scaled by 2, base 0.1 -> 0.2 and peak
    1.0 -> 2.0, so the cycle 0.2 .. 2.0 is the unscaled cycle times 2 at every step."""
    from lt_lightning.callbacks.lr_scaling import _scale_scheduler

    def cycle(ratio):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = torch.optim.lr_scheduler.CyclicLR(opt, base_lr=0.1, max_lr=1.0, step_size_up=4)
        if ratio != 1:
            for group in opt.param_groups:
                group["lr"] *= ratio
                group["initial_lr"] *= ratio
            _scale_scheduler(sched, ratio, set())
        lrs = []
        for _ in range(9):
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        return lrs

    assert max(cycle(2.0)) == pytest.approx(2.0)
    assert cycle(2.0) == pytest.approx([2 * lr for lr in cycle(1.0)])
