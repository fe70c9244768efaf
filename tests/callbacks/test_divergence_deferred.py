"""DivergenceGuard's deferred mode (``check_every_n_steps``): on accelerators the loss is read every N steps, not every
step, and the error still names the first bad step. Tested on the CPU with an explicit interval."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from torch.utils.data import DataLoader, TensorDataset

import lt_lightning.callbacks.divergence as divergence
import lt_lightning.methods.base as base
from lt_lightning.callbacks import DivergenceError, DivergenceGuard
from lt_lightning.callbacks.divergence import NonFiniteLossRecord
from lt_lightning.methods import LongTailClassifier
from tests.helpers import cpu_trainer

COUNTS = (50, 20, 5)


def loader(batches: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    n = 8 * batches
    return DataLoader(TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.arange(n) % 3), batch_size=8)


class NaNAtBatch(LongTailClassifier):
    """The training loss turns NaN at one batch index (epoch 0); ``check_finite`` behaves as on an accelerator."""

    def __init__(self, *args, bad_batch: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.bad_batch = bad_batch

    def training_loss(self, batch):
        loss, logits, target = super().training_loss(batch)
        bad = self.current_epoch == 0 and self.global_step == self.bad_batch
        return (loss * float("nan") if bad else loss), logits, target


@pytest.fixture
def as_on_an_accelerator(monkeypatch):
    """check_finite records on the device instead of raising at once (what it does on a GPU)."""
    monkeypatch.setattr(base, "host_reads_are_free", lambda tensor: False)


@pytest.fixture
def reads(monkeypatch):
    """How many tensors each host read of the guard took (each read is one device synchronisation)."""
    seen: list[int] = []
    real = divergence.read_values

    def counting(tensors):
        seen.append(len(tensors))
        return real(tensors)

    monkeypatch.setattr(divergence, "read_values", counting)
    return seen


@pytest.mark.parametrize(
    ("every", "batches", "found_at"),
    [(4, 6, 4), (50, 3, 3)],  # at the 4th step's check; at the epoch end, before the 50th step is reached
)
def test_a_nan_is_reported_at_the_check_naming_the_first_bad_step(
    tmp_path, as_on_an_accelerator, reads, every, batches, found_at
):
    guard = DivergenceGuard(check_every_n_steps=every)
    model = NaNAtBatch(COUNTS, in_chans=1, divergence_factor=None, bad_batch=1)
    with pytest.raises(DivergenceError) as caught:
        cpu_trainer(tmp_path, callbacks=[guard]).fit(model, loader(batches))
    message = str(caught.value)
    # The loss of the step run at global_step 1 is seen after its optimizer step, i.e. at global step 2 (the
    # every-step guard's convention); the check itself ran later. 0.02: the first warm-up epoch of lr 0.1.
    assert "training diverged at epoch 0, global step 2 (learning rate 0.02): the training loss is nan" in message
    assert f"(found by the check at global step {found_at})" in message
    # One host read for the pending steps' losses and the module's non-finite record (2 tensors), none in between.
    assert reads == [found_at + 2]


def test_no_host_read_and_no_collective_between_checks():
    class NoHostRead(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func in (torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__bool__):
                raise AssertionError(f"host read: {func.__name__}")
            return super().__torch_function__(func, types, args, kwargs or {})

    def reduce(decision, all=True):
        raise AssertionError("collective")

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    trainer = SimpleNamespace(
        strategy=SimpleNamespace(reduce_boolean_decision=reduce), optimizers=[optimizer], current_epoch=0, global_step=0
    )
    guard = DivergenceGuard(check_every_n_steps=4)
    for step in range(1, 4):
        trainer.global_step = step
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(2.0).as_subclass(NoHostRead)}, None, step)
    assert len(guard._pending) == 3 and guard.first_losses == []
    trainer.global_step = 4
    with pytest.raises(AssertionError, match="host read: tolist"):  # the check, and only the check, reads
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(2.0).as_subclass(NoHostRead)}, None, 4)


def test_every_step_on_cpu_every_50_on_an_accelerator_by_default():
    cpu, gpu = DivergenceGuard(), DivergenceGuard()
    cpu.setup(SimpleNamespace(accelerator=CPUAccelerator()), None, "fit")
    gpu.setup(SimpleNamespace(accelerator=CUDAAccelerator()), None, "fit")
    assert (cpu.interval, gpu.interval) == (1, 50)
    explicit = DivergenceGuard(check_every_n_steps=7)
    explicit.setup(SimpleNamespace(accelerator=CPUAccelerator()), None, "fit")
    assert explicit.interval == 7
    model = LongTailClassifier(COUNTS, in_chans=1, divergence_check_every_n_steps=3)
    assert model.configure_callbacks()[0].check_every_n_steps == 3


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "50"])
def test_check_every_n_steps_validation_names_the_argument(bad):
    with pytest.raises(ValueError, match=r"check_every_n_steps must be an integer >= 1 or None"):
        DivergenceGuard(check_every_n_steps=bad)
    with pytest.raises(ValueError, match=r"check_every_n_steps must be an integer >= 1 or None"):
        LongTailClassifier(COUNTS, in_chans=1, divergence_check_every_n_steps=bad)


def test_pending_losses_complete_the_reference_in_the_saved_state():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    trainer = SimpleNamespace(optimizers=[optimizer], current_epoch=0, global_step=0)
    guard = DivergenceGuard(check_every_n_steps=10, reference_steps=2)
    for value in (3.0, 2.0, 1.0):
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(value)}, None, 0)
    assert guard.first_losses == [] and guard.state_dict() == {"first_losses": [3.0, 2.0]}


def test_the_device_side_record_keeps_the_first_non_finite_loss():
    record = NonFiniteLossRecord()
    assert not record.pending and record.read() is None
    record.record(torch.tensor(1.0), epoch=0, global_step=3, batch_idx=3)
    record.record(torch.tensor(float("nan")), epoch=1, global_step=7, batch_idx=2, detail=" (SAM pass 2)")
    record.record(torch.tensor(float("inf")), epoch=1, global_step=8, batch_idx=3)
    assert record.pending
    assert record.read() == "epoch 1, global step 7, batch 2 (SAM pass 2)"
    assert not record.pending and record.read() is None


def test_without_a_guard_a_recorded_nan_is_raised_at_the_end_of_training(tmp_path, as_on_an_accelerator):
    model = NaNAtBatch(COUNTS, in_chans=1, divergence_factor=None, bad_batch=1)
    with pytest.raises(FloatingPointError, match=r"non-finite training loss at epoch 0, global step 1, batch 1: lower"):
        cpu_trainer(tmp_path).fit(model, loader(3))


def test_on_cpu_check_finite_still_raises_at_once(tmp_path):
    model = NaNAtBatch(COUNTS, in_chans=1, bad_batch=1)
    with pytest.raises(FloatingPointError, match=r"non-finite training loss nan at epoch 0, global step 1, batch 1"):
        cpu_trainer(tmp_path, callbacks=[DivergenceGuard(check_every_n_steps=4)]).fit(model, loader(6))
