"""DivergenceGuard: an exploding loss or non-finite weights stop the run, and no broken checkpoint is written."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lt_lightning.callbacks import DivergenceError, DivergenceGuard
from lt_lightning.callbacks.divergence import first_non_finite
from lt_lightning.cli import main
from lt_lightning.data import LongTailDataModule
from lt_lightning.methods import LongTailClassifier

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}


def _finite_everywhere(path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


def test_lr_1000_on_the_digits_default_stops_with_one_line_and_leaves_no_broken_checkpoint(tmp_path, capsys):
    """The issue's reproduction: before, this exited 0 after 5 epochs with running_var = inf in the checkpoint."""
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--model.init_args.optimizer=torch.optim.SGD",
                "--model.init_args.optimizer.lr=1000",
                "--trainer.max_epochs=5",
                f"--trainer.default_root_dir={tmp_path}",
                "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false",
            ]
        )
    assert exit_info.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("lt-lightning: error: training diverged at epoch 0, global step ")
    assert "learning rate 200" in last  # the LR in force (warm-up: 1000 / 5), then what to try
    assert "gradient_clip_val" in last and "divergence_factor: null" in last
    assert all(_finite_everywhere(p) for p in tmp_path.rglob("*.ckpt"))


class _BreakBatchNorm(Callback):
    """Sets a BatchNorm running_var to +inf after the first step (what a diverged run leaves behind)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bn = next(m for m in pl_module.modules() if isinstance(m, torch.nn.BatchNorm2d))
        bn.running_var.fill_(float("inf"))


def test_non_finite_buffer_stops_before_the_checkpoint_is_written(tmp_path):
    data = LongTailDataModule(batch_size=32, num_workers=0)
    data.setup("fit")
    model = LongTailClassifier(data.class_counts, in_chans=1)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=2, limit_val_batches=1, callbacks=[_BreakBatchNorm(), checkpoint], **QUIET
    )
    with pytest.raises(DivergenceError, match=r"non-finite values in backbone\..*running_var"):
        trainer.fit(model, datamodule=data)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_on_save_checkpoint_refuses_non_finite_parameters():
    guard = DivergenceGuard()
    module = torch.nn.Linear(2, 2)
    trainer = type("T", (), {"current_epoch": 3, "global_step": 7, "optimizers": []})()
    guard.on_save_checkpoint(trainer, module, {})  # finite: nothing happens
    with torch.no_grad():
        module.weight[0, 0] = float("nan")
    with pytest.raises(DivergenceError, match="epoch 3, global step 7: non-finite values in weight; the checkpoint"):
        guard.on_save_checkpoint(trainer, module, {})


def test_first_non_finite_allows_a_minus_inf_log_domain_buffer():
    module = torch.nn.BatchNorm1d(3)
    module.register_buffer("log_u", torch.tensor(float("-inf")))  # ABSGD's "nothing accumulated yet"
    assert first_non_finite(module) is None
    module.running_mean[1] = float("nan")
    assert first_non_finite(module) == "running_mean"


def test_threshold_floor_and_state_round_trip():
    guard = DivergenceGuard(factor=100)
    assert guard.threshold(2.5) == 250.0 and guard.threshold(0.001) == 100.0  # floor: max(L0, 1)
    guard.first_loss = 2.5
    fresh = DivergenceGuard(factor=100)
    fresh.load_state_dict(guard.state_dict())  # a resumed run compares against the same start
    assert fresh.first_loss == 2.5


@pytest.mark.parametrize("bad", [0.5, 1, float("inf"), "big", True])
def test_bad_factor_names_the_argument(bad):
    with pytest.raises(ValueError, match=r"divergence_factor must be a finite number > 1 .* got"):
        LongTailClassifier((5, 2), divergence_factor=bad)
    with pytest.raises(ValueError, match="factor must be"):
        DivergenceGuard(factor=bad)


def test_module_brings_one_guard_unless_disabled_or_present():
    assert [type(c) for c in LongTailClassifier((5, 2)).configure_callbacks()] == [DivergenceGuard]
    assert LongTailClassifier((5, 2), divergence_factor=None).configure_callbacks() == []
    model = LongTailClassifier((5, 2), divergence_factor=50)
    assert model.configure_callbacks()[0].factor == 50.0
    trainer = L.Trainer(callbacks=[DivergenceGuard(10)], **QUIET)
    model.trainer = trainer
    assert model.configure_callbacks() == []  # the user's own guard is kept, not doubled or replaced


def test_a_healthy_run_is_not_stopped(tmp_path):
    data = LongTailDataModule(batch_size=32, num_workers=0)
    data.setup("fit")
    model = LongTailClassifier(data.class_counts, in_chans=1)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=1, default_root_dir=tmp_path, **QUIET)
    trainer.fit(model, datamodule=data)
    guard = next(c for c in trainer.callbacks if isinstance(c, DivergenceGuard))
    # the start is the first step's cross-entropy, near log(10) for an untrained 10-class model
    assert trainer.state.finished and 1.0 < guard.first_loss < 5.0
