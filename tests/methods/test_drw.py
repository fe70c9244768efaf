"""LDAMDRW: recipe defaults, the DRW callback it attaches, bad arguments, and a short fit on digits."""

from __future__ import annotations

from collections import defaultdict

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from lt_lightning.callbacks import DeferredReweighting
from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.functional.weights import effective_number_weights, ldam_margins
from lt_lightning.losses import CrossEntropyLoss, LDAMLoss
from lt_lightning.methods import LDAMDRW
from lt_lightning.models import NormedLinear
from lt_lightning.optim import WarmupMultiStepLR

COUNTS = (50, 20, 5)


def test_defaults_are_the_ldam_drw_recipe():
    model = LDAMDRW(COUNTS, in_chans=1)
    assert model.hparams.backbone == "resnet32"
    assert isinstance(model.criterion, LDAMLoss) and isinstance(model.backbone.head, NormedLinear)
    assert model.criterion.max_margin == 0.5 and model.criterion.scale == 30.0
    torch.testing.assert_close(model.criterion.margins, ldam_margins(COUNTS, 0.5))
    assert torch.equal(model.criterion.class_weight, torch.ones(3))  # unweighted until the switch
    callbacks = model.configure_callbacks()
    # DRW, then the base class's divergence guard (a subclass keeps the base's callbacks)
    assert [type(cb).__name__ for cb in callbacks] == ["DeferredReweighting", "DivergenceGuard"]
    drw = callbacks[0]
    assert drw.beta == 0.9999 and drw.start_epoch is None and drw.stages is None  # None: 80 % of max_epochs
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 3)


def test_configured_stages_reach_the_callback():
    single = LDAMDRW(COUNTS, backbone="small_cnn", in_chans=1, drw_start_epoch=160, drw_beta=0.999)
    drw = single.configure_callbacks()[0]
    assert drw.resolved_stages() == ((160, 0.999),)
    multi = LDAMDRW(COUNTS, backbone="small_cnn", in_chans=1, drw_stages=[(10, 0.9), (20, 0.9999)])
    drw = multi.configure_callbacks()[0]
    assert drw.resolved_stages() == ((10, 0.9), (20, 0.9999))
    assert multi.hparams.drw_stages == [(10, 0.9), (20, 0.9999)]  # saved, so a checkpoint rebuilds the schedule


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"drw_start_epoch": -1}, "start_epoch must be an integer >= 0"),
        ({"drw_beta": 1.5}, r"beta must be in \[0, 1\), got 1.5"),
        ({"drw_beta": 1.0}, r"beta must be in \[0, 1\), got 1.0"),
        ({"drw_stages": [(5, 0.9), (3, 0.99)]}, "increase strictly"),
        ({"loss": "nope"}, "loss must be one of"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LDAMDRW(COUNTS, backbone="small_cnn", in_chans=1, **kwargs)


def test_ce_drw():
    model = LDAMDRW(COUNTS, backbone="small_cnn", in_chans=1, loss="ce")
    assert type(model.criterion) is CrossEntropyLoss and isinstance(model.backbone.head, nn.Linear)
    assert isinstance(model.configure_callbacks()[0], DeferredReweighting)


class WeightProbe(Callback):
    def __init__(self):
        self.seen: dict[int, list[torch.Tensor]] = defaultdict(list)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen[trainer.current_epoch].append(pl_module.criterion.class_weight.detach().clone())


def test_short_fit_switches_the_loss_weights_and_reloads(tmp_path):
    dm = LongTailDataModule("digits", imbalance_ratio=10, batch_size=64)
    model = LDAMDRW(dm.class_counts, backbone="small_cnn", in_chans=dm.in_chans, drw_start_epoch=1)
    probe = WeightProbe()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        limit_train_batches=3,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[probe],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    # configure_callbacks put the module's DRW callback on the trainer.
    assert sum(isinstance(cb, DeferredReweighting) for cb in trainer.callbacks) == 1

    expected = effective_number_weights(dm.class_counts, 0.9999)
    assert sorted(probe.seen) == [0, 1, 2] and all(len(v) == 3 for v in probe.seen.values())
    assert all(torch.equal(w, torch.ones(10)) for w in probe.seen[0])
    assert all(torch.equal(w, expected) for w in probe.seen[1] + probe.seen[2])
    assert expected[-1] > 3 * expected[0]  # tail (13 images) weighted well above head (134)

    path = tmp_path / "final.ckpt"
    trainer.save_checkpoint(path)
    reloaded = LDAMDRW.load_from_checkpoint(path)
    assert torch.equal(reloaded.criterion.class_weight, expected)
    assert reloaded.configure_callbacks()[0].resolved_stages() == ((1, 0.9999),)


# ----------------------------------------------------------------- resume with another max_epochs (issue 12 item 3)
class ScheduleProbe(Callback):
    """Per epoch: the DRW beta in force and the LR milestones / LR the optimizer runs with."""

    def __init__(self):
        self.beta: dict[int, float] = {}
        self.lr: dict[int, float] = {}
        self.milestones: tuple[int, ...] = ()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        epoch = trainer.current_epoch
        self.beta[epoch] = float(pl_module.criterion.class_weight[-1] != 1)  # 1.0 once DRW weights are on
        self.lr[epoch] = trainer.optimizers[0].param_groups[0]["lr"]
        self.milestones = trainer.lr_scheduler_configs[0].scheduler.milestones


def _drw_trainer(root, max_epochs, *callbacks):
    return L.Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        limit_train_batches=2,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )


def _ce_drw(dm):
    # CE-DRW with the default schedules: DRW and the LR drops both derive from max_epochs (80 %; 80 % / 90 %); no
    # warm-up, so that the LR drops show within these few epochs.
    return LDAMDRW(
        dm.class_counts,
        backbone="small_cnn",
        in_chans=dm.in_chans,
        loss="ce",
        lr_scheduler=lambda optimizer: WarmupMultiStepLR(optimizer, warmup_epochs=0),
    )


def test_resume_with_a_longer_run_keeps_the_checkpoints_horizon_for_every_schedule(tmp_path):
    dm = LongTailDataModule("digits", imbalance_ratio=10, batch_size=64)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    _drw_trainer(tmp_path, 4, checkpoint).fit(_ce_drw(dm), datamodule=dm)
    saved = torch.load(tmp_path / "ckpt" / "epoch=1.ckpt", map_location="cpu", weights_only=True)
    assert saved["schedule_horizon"] == 4

    probe = ScheduleProbe()
    trainer = _drw_trainer(tmp_path / "resumed", 8, probe)
    with pytest.warns(
        UserWarning,
        match=r"resumed with max_epochs=8 but the checkpoint's schedules were resolved for "
        r"4 epochs: keeping 4 for every epoch-derived schedule \(LR, DRW, DRS",
    ):
        trainer.fit(_ce_drw(dm), datamodule=dm, ckpt_path=tmp_path / "ckpt" / "epoch=1.ckpt")
    drw = next(cb for cb in trainer.callbacks if isinstance(cb, DeferredReweighting))
    assert drw.resolved_stages(trainer) == ((3, 0.9999),)  # round(0.8 * 4), not round(0.8 * 8) = 6
    assert probe.milestones == (3, 4)  # round(0.8 * 4), round(0.9 * 4)
    assert probe.beta == {2: 0.0, 3: 1.0, 4: 1.0, 5: 1.0, 6: 1.0, 7: 1.0}  # DRW on from epoch 3 with the LR drop
    assert probe.lr[2] > probe.lr[3] > probe.lr[4] == probe.lr[7]  # epochs past the horizon keep the final values
    # the horizon travels on: a checkpoint of the resumed run still says 4
    trainer.save_checkpoint(tmp_path / "resumed.ckpt")
    assert torch.load(tmp_path / "resumed.ckpt", map_location="cpu", weights_only=True)["schedule_horizon"] == 4


def test_a_fresh_run_resolves_every_schedule_against_its_own_max_epochs(tmp_path, recwarn):
    dm = LongTailDataModule("digits", imbalance_ratio=10, batch_size=64)
    probe = ScheduleProbe()
    trainer = _drw_trainer(tmp_path, 8, probe)
    trainer.fit(_ce_drw(dm), datamodule=dm)
    drw = next(cb for cb in trainer.callbacks if isinstance(cb, DeferredReweighting))
    assert drw.resolved_stages(trainer) == ((6, 0.9999),) and probe.milestones == (6, 7)
    assert [e for e, on in probe.beta.items() if on] == [6, 7]
    assert not [w for w in recwarn if "resumed with max_epochs" in str(w.message)]


def test_resume_with_the_same_max_epochs_does_not_warn(tmp_path, recwarn):
    dm = LongTailDataModule("digits", imbalance_ratio=10, batch_size=64)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1)
    _drw_trainer(tmp_path, 3, checkpoint).fit(_ce_drw(dm), datamodule=dm)
    _drw_trainer(tmp_path / "r", 3).fit(_ce_drw(dm), datamodule=dm, ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt")
    assert not [w for w in recwarn if "resumed with max_epochs" in str(w.message)]
