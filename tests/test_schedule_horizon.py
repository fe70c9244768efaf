"""One rule for every epoch-derived schedule on resume: all keep the checkpoint's horizon (issue 12, item 3).

Before, a run resumed with a larger max_epochs kept the checkpoint's LR milestones but re-resolved the DRW switch
from the new max_epochs, so DRW was off for epochs it should have been on.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lt_lightning.callbacks import DeferredResampling, DeferredReweighting
from lt_lightning.data import LongTailDataModule
from lt_lightning.losses import CrossEntropyLoss
from lt_lightning.methods import LDAMDRW
from lt_lightning.schedules import training_horizon

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False, "num_sanity_val_steps": 0}
LIMITS = {"limit_train_batches": 2, "limit_val_batches": 1}


@pytest.fixture(scope="module")
def digits():
    data = LongTailDataModule(batch_size=16, num_workers=0)
    data.setup("fit")
    return data


def _model(data):
    return LDAMDRW(data.class_counts, backbone="small_cnn", in_chans=1)


def _drw(trainer) -> DeferredReweighting:
    return next(c for c in trainer.callbacks if isinstance(c, DeferredReweighting))


def test_resume_with_more_epochs_keeps_the_drw_switch_and_the_lr_milestones(digits, tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    first = L.Trainer(max_epochs=4, callbacks=[checkpoint], **LIMITS, **QUIET)
    first.fit(_model(digits), datamodule=digits)
    assert _drw(first).start_epoch == 3  # round(0.8 * 4)
    assert first.lr_scheduler_configs[0].scheduler.milestones == (3, 4)  # x0.01 at 80 % and 90 % of 4

    resumed = L.Trainer(max_epochs=8, **LIMITS, **QUIET)
    with pytest.warns(UserWarning, match=r"resumed with max_epochs=8, but the checkpoint's schedules were resolved"):
        resumed.fit(_model(digits), datamodule=digits, ckpt_path=tmp_path / "epoch=1.ckpt")
    assert training_horizon(resumed) == 4
    assert _drw(resumed).start_epoch == 3  # not round(0.8 * 8) = 6
    assert resumed.lr_scheduler_configs[0].scheduler.milestones == (3, 4)
    # the DRW weights really are on from epoch 3 in the resumed run (weights of the last epoch run, epoch 7)
    weights = resumed.lightning_module.criterion.class_weight
    assert not torch.allclose(weights, torch.ones_like(weights))

    fresh = L.Trainer(max_epochs=8, limit_train_batches=1, limit_val_batches=0, **QUIET)
    fresh.fit(_model(digits), datamodule=digits)
    assert _drw(fresh).start_epoch == 6 and fresh.lr_scheduler_configs[0].scheduler.milestones == (6, 7)


class _Plain(L.LightningModule):
    """A foreign module: no schedule_horizon of its own; the drop-in callbacks keep theirs."""

    def __init__(self, class_counts) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        self.loss_module = CrossEntropyLoss(class_counts)

    def training_step(self, batch, batch_idx):
        return self.loss_module(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_drop_in_callbacks_keep_their_horizon_in_a_foreign_module(digits, tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    callbacks = [DeferredReweighting(), DeferredResampling()]
    first = L.Trainer(max_epochs=5, callbacks=[*callbacks, checkpoint], **LIMITS, **QUIET)
    first.fit(_Plain(digits.class_counts), datamodule=digits)
    assert callbacks[0].start_epoch == callbacks[1].start_epoch == 4

    again = [DeferredReweighting(), DeferredResampling()]
    resumed = L.Trainer(max_epochs=10, callbacks=again, **LIMITS, **QUIET)
    with pytest.warns(UserWarning, match=r"resumed with max_epochs=10, but the checkpoint's schedules were resolved"):
        resumed.fit(_Plain(digits.class_counts), datamodule=digits, ckpt_path=tmp_path / "epoch=1.ckpt")
    assert again[0].start_epoch == again[1].start_epoch == 4  # not 8
