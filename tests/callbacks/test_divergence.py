"""DivergenceGuard: a diverging run stops with one clear error and never leaves a non-finite checkpoint (issue 12.1)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.callbacks import DivergenceError, DivergenceGuard
from lt_lightning.callbacks.divergence import divergence_message, non_finite_tensors
from lt_lightning.cli import build_cli, main
from lt_lightning.methods import LDAMDRW, LongTailClassifier
from tests.helpers import cpu_trainer

COUNTS = (50, 20, 5)
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
LR_1000 = ["--model.init_args.optimizer=torch.optim.SGD", "--model.init_args.optimizer.lr=1000"]


def tiny_loader(n=24, classes=3):
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % classes), batch_size=8)


def _checkpoints(root: Path) -> list[Path]:
    return sorted(root.rglob("*.ckpt"))


def _finite(path: Path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


# ----------------------------------------------------------------- regression: the digits default at lr 1000
def test_digits_default_at_lr_1000_stops_with_a_clear_error(tmp_path):
    with pytest.raises(DivergenceError) as caught:
        build_cli(["fit", f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=5", *QUIET, *LR_1000])
    message = str(caught.value)
    assert "training diverged at epoch 0, global step" in message
    assert "learning rate" in message and "times its start" in message
    assert "lower learning rate" in message and "gradient_clip_val" in message and "divergence_factor: null" in message
    assert all(_finite(path) for path in _checkpoints(tmp_path))


def test_non_finite_weights_stop_before_a_checkpoint_is_written(tmp_path):
    # The loss rule made unreachable: what remains is the BatchNorm running_var = inf of the checkpoint.
    with pytest.raises(DivergenceError, match=r"running_var") as caught:
        build_cli(
            ["fit", f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=5", *QUIET, *LR_1000]
            + ["--model.init_args.divergence_factor=1e300"]
        )
    assert "hold NaN or inf" in str(caught.value)
    assert all(_finite(path) for path in _checkpoints(tmp_path))  # the good epoch-0 checkpoints, if any, are kept


def test_console_script_prints_the_divergence_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["fit", f"--trainer.default_root_dir={tmp_path}", "--trainer.max_epochs=2", *QUIET, *LR_1000])
    assert caught.value.code == 1
    assert capsys.readouterr().err.strip().startswith("lt-lightning: error: training diverged at epoch")


def test_disabled_with_none_trains_on(tmp_path):
    model = LongTailClassifier(
        COUNTS, in_chans=1, divergence_factor=None, optimizer=lambda p: torch.optim.SGD(p, lr=1e4)
    )
    assert model.configure_callbacks() == []
    cpu_trainer(tmp_path, max_epochs=2).fit(model, tiny_loader(), tiny_loader())  # silent, as before


# ----------------------------------------------------------------- a normal run is not stopped
def test_a_normal_run_is_not_stopped_and_the_reference_is_kept(tmp_path):
    model = LongTailClassifier(COUNTS, in_chans=1)
    trainer = cpu_trainer(tmp_path, max_epochs=3)
    trainer.fit(model, tiny_loader(), tiny_loader())
    (guard,) = [cb for cb in trainer.callbacks if isinstance(cb, DivergenceGuard)]
    assert len(guard.first_losses) == 5 and guard.threshold() == pytest.approx(1e3 * max(min(guard.first_losses), 1))
    assert DivergenceGuard().load_state_dict(guard.state_dict()) is None


def test_subclasses_keep_the_guard():
    names = [type(cb).__name__ for cb in LDAMDRW(COUNTS, backbone="small_cnn", in_chans=1).configure_callbacks()]
    assert names == ["DeferredReweighting", "DivergenceGuard"]
    assert LDAMDRW(COUNTS, backbone="small_cnn", in_chans=1, divergence_factor=None).configure_callbacks()[1:] == []


# ----------------------------------------------------------------- the pieces
def test_loss_rule():
    guard = DivergenceGuard(factor=10.0, reference_steps=2)
    assert guard.observe(3.0) is None and guard.observe(2.0) is None and guard.observe(15.0) is None
    assert guard.first_losses == [3.0, 2.0]  # the reference is fixed after reference_steps
    assert "exceeds divergence_factor=10 times its start (2)" in guard.observe(21.0)
    assert guard.observe(float("nan")) == "the training loss is nan"
    small = DivergenceGuard(factor=10.0)
    small.observe(1e-4)  # a near-zero start is floored at 1: 0.5 is noise, not divergence
    assert small.observe(0.5) is None and small.observe(11.0) is not None


@pytest.mark.parametrize("bad", [1.0, 0.5, -3, float("inf"), float("nan"), "1e3", True])
def test_factor_validation_names_the_argument(bad):
    with pytest.raises(ValueError, match=r"divergence_factor must be a finite number > 1 .* or None .* got"):
        LongTailClassifier(COUNTS, in_chans=1, divergence_factor=bad)
    with pytest.raises(ValueError, match=r"factor must be a finite number > 1"):
        DivergenceGuard(factor=bad)
    with pytest.raises(ValueError, match=r"reference_steps must be an integer >= 1, got 0"):
        DivergenceGuard(reference_steps=0)


def test_non_finite_tensors_names_only_the_bad_floating_ones():
    named = [("a", torch.ones(3)), ("b", torch.tensor([1.0, float("inf")])), ("c", torch.tensor([1, 2]))]
    assert non_finite_tensors(named) == ["b"]
    assert non_finite_tensors([]) == []


def test_every_rank_follows_a_rank_that_diverged():
    # DDP: the decision is reduced with "any", so a rank that saw nothing still raises (and never hangs).
    seen = []

    def reduce(decision, all=True):
        seen.append((decision, all))
        return True

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(reduce_boolean_decision=reduce), optimizers=[optimizer], current_epoch=4, global_step=9
    )
    with pytest.raises(DivergenceError, match=r"epoch 4, global step 9 \(learning rate 0.5\): another process"):
        DivergenceGuard()._stop_if(trainer, None)
    assert seen == [(False, False)]
    assert "e.g. 0.05" in divergence_message(trainer, "x")


@pytest.mark.parametrize("weights_only", [False, True])
def test_a_non_finite_checkpoint_is_never_written(tmp_path, weights_only):
    model = LongTailClassifier(COUNTS, in_chans=1)
    trainer = cpu_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, tiny_loader())
    good = tmp_path / "good.ckpt"
    trainer.save_checkpoint(good, weights_only=weights_only)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var.fill_(float("inf"))
    expected = r"checkpoint about to be written hold NaN or inf \(backbone.*running_var\); it was not written"
    with pytest.raises(DivergenceError, match=expected):
        trainer.save_checkpoint(good, weights_only=weights_only)
    assert _finite(good)  # the good checkpoint was not overwritten


class InfByDesign(LongTailClassifier):
    """A buffer that is -inf on purpose from the start (as ABSGD's log u = -inf for u = 0)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("log_zero", torch.tensor(float("-inf")))


def test_buffers_non_finite_from_the_start_are_by_design_but_parameters_never(tmp_path):
    model = InfByDesign(COUNTS, in_chans=1)
    trainer = cpu_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, tiny_loader(), tiny_loader())  # not stopped
    trainer.save_checkpoint(tmp_path / "ok.ckpt")  # and its checkpoints are written
    assert (tmp_path / "ok.ckpt").exists()

    broken = InfByDesign(COUNTS, in_chans=1)
    with torch.no_grad():
        next(broken.parameters()).fill_(float("nan"))  # e.g. a run resumed from a broken checkpoint
    guard = DivergenceGuard()
    guard.on_train_start(trainer, broken)
    assert guard.exempt == {"log_zero"}
    with pytest.raises(DivergenceError, match=r"1 tensor\(s\) of the model hold NaN or inf \(backbone"):
        guard._check_weights(trainer, broken)


class RankOneDiverges(LongTailClassifier):
    """Only rank 1's loss explodes (from its third step on). Module-level: ddp_spawn pickles it."""

    def training_loss(self, batch):
        loss, logits, target = super().training_loss(batch)
        return (loss * 1e6 if self.global_rank == 1 and self.global_step >= 2 else loss), logits, target


class RecordingGuard(DivergenceGuard):
    """Writes each rank's error to ``rank{r}.txt``; rank 1 (the one that diverged) waits before dying, so that the
    spawn launcher does not kill rank 0 before it had the chance to raise on its own."""

    def __init__(self, out_dir: str):
        super().__init__()
        self.out_dir = out_dir

    def _stop_if(self, trainer, reason):
        try:
            super()._stop_if(trainer, reason)
        except DivergenceError as err:
            (Path(self.out_dir) / f"rank{trainer.global_rank}.txt").write_text(str(err))
            if trainer.global_rank == 1:
                time.sleep(3)
            raise


@pytest.mark.ddp
def test_under_two_process_ddp_every_rank_stops_together(tmp_path):
    # Rank 0 sees nothing wrong; the reduced decision makes it raise at the same step instead of waiting forever in
    # the next collective.
    trainer = cpu_trainer(
        tmp_path,
        devices=2,
        strategy="ddp_spawn",
        max_epochs=3,
        num_sanity_val_steps=0,
        callbacks=[RecordingGuard(str(tmp_path))],
    )
    with pytest.raises(Exception, match=r"DivergenceError: training diverged at epoch 0, global step 3"):
        trainer.fit(RankOneDiverges(COUNTS, in_chans=1, divergence_factor=None), tiny_loader(n=48))
    rank0, rank1 = ((tmp_path / f"rank{r}.txt").read_text() for r in range(2))
    assert "global step 3" in rank0 and "another process saw the divergence" in rank0
    assert "global step 3" in rank1 and "exceeds divergence_factor=1000" in rank1
