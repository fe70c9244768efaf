"""SAMClassifier in Lightning: one optimizer step / log per batch, rho and LR schedules across resume, precision,
refusals (accumulation, GradScaler), composition with LDAM-DRW and VS, and 2 CPU DDP processes.

CPU caveat (LIGHTNING_NOTES D.12): ``precision="16-mixed"`` silently becomes ``bf16-mixed`` on CPU, so the
GradScaler refusal is tested with an explicit scaler plugin and with a stub trainer, not on a GPU.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.callbacks import DeferredReweighting
from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.functional.weights import effective_number_weights
from lt_lightning.losses import LDAMLoss, VSLoss
from lt_lightning.methods import SAMClassifier
from lt_lightning.models import NormedLinear
from lt_lightning.optim import SAM
from tests.helpers import cpu_trainer

COUNTS = (50, 20, 5)
TINY = {"backbone": "small_cnn", "backbone_kwargs": {"width": 8}, "in_chans": 1}  # fast on 2 cores


class RecordingSAM(SAMClassifier):
    """Counts ``training_loss`` calls (2 per batch under SAM) and records every ``self.log``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.losses: list[float] = []
        self.logged: list[tuple[int, str, float]] = []

    def training_loss(self, batch):
        loss, logits, target = super().training_loss(batch)
        self.losses.append(float(loss.detach()))
        return loss, logits, target

    def log(self, name, value, *args, **kwargs):
        self.logged.append((self.current_epoch, name, float(value)))
        return super().log(name, value, *args, **kwargs)

    def values(self, name):
        return [v for _, n, v in self.logged if n == name]


class RhoLrProbe(Callback):
    """rho of the SAM optimizer and the base optimizer's lr at every training batch, per epoch."""

    def __init__(self):
        self.seen: dict[int, list[tuple[float, float]]] = defaultdict(list)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        sam = pl_module.sam_optimizer()
        self.seen[trainer.current_epoch].append((sam.rho, sam.base_optimizer.param_groups[0]["lr"]))


def tiny_loader(n=32, classes=3, batch_size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = torch.arange(n) % classes
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def make_trainer(tmp_path, **kw):
    return cpu_trainer(tmp_path, **{"num_sanity_val_steps": 0, "limit_val_batches": 0, **kw})


def flat_weights(model):
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny convolutions gain nothing from intra-op threads, and on a busy 2-core box they cost up to 6x.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return LongTailDataModule("digits", batch_size=128)


# ----------------------------------------------------------------------------------------------- construction
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rho": 0}, r"rho must be a finite number > 0, got 0"),
        ({"rho": -1.0}, r"rho must be a finite number > 0, got -1.0"),
        ({"rho": float("nan")}, r"rho must be a finite number > 0, got nan"),
        ({"rho_schedule": [(1, 0.05), (5, 0.1)]}, r"rho_schedule must start at epoch 0"),
        ({"rho_schedule": []}, r"rho_schedule must start at epoch 0"),
        ({"rho_schedule": [(0, 0.05), (5, 0.1), (5, 0.5)]}, r"rho_schedule epochs must increase strictly"),
        ({"rho_schedule": [(0, 0.05), (5, 0.1), (3, 0.5)]}, r"rho_schedule epochs must increase strictly"),
        ({"rho_schedule": [(0, 0.05), (5, -0.1)]}, r"rho must be a finite number > 0, got -0.1"),
        ({"rho_schedule": [(0, 0.05), (-2, 0.1)]}, r"rho_schedule epochs must be integers >= 0"),
        ({"rho_schedule": [(0, 0.05, 1)]}, r"rho_schedule must hold \(epoch, rho\) pairs"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SAMClassifier(COUNTS, in_chans=1, **kwargs)


def test_rho_schedule_and_optimizer():
    model = SAMClassifier(COUNTS, in_chans=1, rho=0.3, rho_schedule=[(0, 0.05), (5, 0.1), (60, 0.5)], adaptive=True)
    assert [model.rho_at(e) for e in (0, 4, 5, 59, 60, 89)] == [0.05, 0.05, 0.1, 0.1, 0.5, 0.5]  # schedule wins
    assert SAMClassifier(COUNTS, in_chans=1, rho=0.3).rho_at(100) == 0.3
    sam = model.configure_optimizers()["optimizer"]
    assert isinstance(sam, SAM) and sam.adaptive and sam.rho == 0.05
    base = sam.base_optimizer  # the CIFAR-LT recipe SGD inside
    assert type(base) is torch.optim.SGD and base.defaults["momentum"] == 0.9 and base.defaults["lr"] == 0.1


# ----------------------------------------------------------------------------------------------- one step per batch
def test_two_passes_but_one_step_and_one_log_per_batch(tmp_path, digits):
    torch.manual_seed(0)
    model = RecordingSAM(digits.class_counts, **TINY, rho=0.05)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = flat_weights(model)
    trainer = make_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=digits)

    n_batches = math.ceil(len(digits.train_set) / 128)  # 544 images: 5 batches
    assert n_batches == trainer.num_training_batches == 5
    assert len(model.losses) == 2 * n_batches  # at w and at w + e
    assert trainer.global_step == n_batches  # Lightning counted one optimizer step per batch
    logged = model.values("train/loss")
    assert len(logged) == n_batches and len(model.values("train/acc")) == n_batches
    assert logged == model.losses[0::2]  # the loss at w, not the perturbed one
    assert all(second > first for first, second in zip(model.losses[0::2], model.losses[1::2], strict=True))
    assert int(bn.num_batches_tracked) == 2 * n_batches  # BN statistics see both passes, as in the reference
    after = flat_weights(model)
    assert torch.isfinite(after).all() and not torch.equal(before, after)
    assert model.values("sam/rho") == [0.05]


# ----------------------------------------------------------------------------------------------- schedules + resume
@pytest.mark.parametrize("val_batches", [0, 1])
def test_rho_and_lr_per_epoch_survive_resume(tmp_path, val_batches):
    def run(root, ckpt_path=None):
        torch.manual_seed(0)
        model = RecordingSAM(COUNTS, **TINY, rho_schedule=[(0, 0.05), (2, 0.5)])
        probe = RhoLrProbe()
        checkpoints = ModelCheckpoint(dirpath=root, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
        trainer = make_trainer(
            root,
            max_epochs=10,
            limit_train_batches=1,
            limit_val_batches=val_batches,
            enable_checkpointing=True,
            callbacks=[probe, checkpoints],
        )
        loader = tiny_loader()
        trainer.fit(
            model, train_dataloaders=loader, val_dataloaders=loader if val_batches else None, ckpt_path=ckpt_path
        )
        return model, probe, trainer

    full, probe, trainer = run(tmp_path / "full")
    assert trainer.global_step == 10
    rho = {e: v[0][0] for e, v in probe.seen.items()}
    lr = {e: v[0][1] for e, v in probe.seen.items()}
    assert [rho[e] for e in range(4)] == [0.05, 0.05, 0.5, 0.5]
    assert all(rho[e] == 0.5 for e in range(2, 10))
    assert [v for e, n, v in full.logged if n == "sam/rho"] == [rho[e] for e in range(10)]
    assert [e for e, n, _ in full.logged if n == "sam/rho"] == list(range(10))
    # WarmupMultiStepLR defaults, max_epochs=10: 5 warm-up epochs to 0.1, x0.01 at epochs 8 and 9.
    expected_lr = [0.02, 0.04, 0.06, 0.08, 0.1, 0.1, 0.1, 0.1, 1e-3, 1e-5]
    assert [lr[e] for e in range(10)] == pytest.approx(expected_lr, rel=1e-9)

    ckpt = tmp_path / "full" / "epoch=1.ckpt"
    assert ckpt.exists()
    resumed, probe_resumed, trainer_resumed = run(tmp_path / "resumed", ckpt_path=ckpt)
    assert sorted(probe_resumed.seen) == list(range(2, 10))
    for epoch in range(2, 10):
        assert probe_resumed.seen[epoch] == probe.seen[epoch], epoch
    assert trainer_resumed.global_step == 10
    # Momentum, rho, lr and the data order all restored: the resumed run ends on the same weights.
    assert torch.equal(flat_weights(resumed), flat_weights(full))
    # The reloaded module rebuilds the same schedule from its hyper-parameters.
    reloaded = SAMClassifier.load_from_checkpoint(ckpt)
    assert [reloaded.rho_at(e) for e in range(4)] == [0.05, 0.05, 0.5, 0.5]


# ----------------------------------------------------------------------------------------------- precision / refusals
def test_bf16_mixed_trains(tmp_path):
    torch.manual_seed(0)
    model = RecordingSAM(COUNTS, **TINY, rho=0.1)
    before = flat_weights(model)
    trainer = make_trainer(tmp_path, precision="bf16-mixed", limit_train_batches=2)
    trainer.fit(model, train_dataloaders=tiny_loader())
    after = flat_weights(model)
    assert trainer.global_step == 2 and len(model.losses) == 4
    assert after.dtype == torch.float32 and torch.isfinite(after).all() and not torch.equal(before, after)


def test_gradient_accumulation_is_refused(tmp_path):
    # Lightning's manual-optimisation check fires before SAMClassifier.setup's own (tested below with a stub).
    model = SAMClassifier(COUNTS, **TINY)
    before = flat_weights(model)
    trainer = make_trainer(tmp_path, accumulate_grad_batches=2, limit_train_batches=2)
    with pytest.raises((MisconfigurationException, ValueError), match=r"accumulate_grad_batches=2"):
        trainer.fit(model, train_dataloaders=tiny_loader())
    assert torch.equal(flat_weights(model), before)


class StubTrainer:
    def __init__(self, accumulate_grad_batches=1, precision="32-true", scaler=None):
        self.accumulate_grad_batches = accumulate_grad_batches
        self.precision = precision
        self.precision_plugin = type("Plugin", (), {"scaler": scaler})()


def test_setup_refuses_accumulation_and_a_grad_scaler():
    model = SAMClassifier(COUNTS, **TINY)
    model._trainer = StubTrainer(accumulate_grad_batches=4)
    with pytest.raises(ValueError, match=r"SAM cannot accumulate gradients \(accumulate_grad_batches=4\)"):
        model.setup("fit")
    model._trainer = StubTrainer(precision="16-mixed", scaler=object())
    with pytest.raises(ValueError, match=r"precision='16-mixed' with a gradient scaler.*'bf16-mixed'"):
        model.setup("fit")
    model.setup("validate")  # only fitting steps the optimizer
    model._trainer = StubTrainer(precision="bf16-mixed")
    model.setup("fit")


def test_grad_scaler_plugin_is_refused_at_fit(tmp_path):
    # The GPU 16-mixed path, rebuilt on CPU: a MixedPrecision plugin that really carries a GradScaler.
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    model = SAMClassifier(COUNTS, **TINY)
    trainer = make_trainer(tmp_path, plugins=[plugin], limit_train_batches=1)
    with pytest.raises(ValueError, match="bf16-mixed"):
        trainer.fit(model, train_dataloaders=tiny_loader())


# ----------------------------------------------------------------------------------------------- composition
class WeightProbe(Callback):
    def __init__(self):
        self.seen: dict[int, list[torch.Tensor]] = defaultdict(list)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen[trainer.current_epoch].append(pl_module.criterion.class_weight.detach().clone())


def test_ldam_drw_with_sam(tmp_path, digits):
    torch.manual_seed(0)
    model = RecordingSAM(digits.class_counts, **TINY, loss="ldam", rho=0.8)
    assert isinstance(model.criterion, LDAMLoss) and isinstance(model.backbone.head, NormedLinear)
    probe = WeightProbe()
    trainer = make_trainer(
        tmp_path, max_epochs=2, limit_train_batches=2, callbacks=[DeferredReweighting(start_epoch=1), probe]
    )
    trainer.fit(model, datamodule=digits)
    assert sorted(probe.seen) == [0, 1] and all(len(v) == 2 for v in probe.seen.values())
    assert all(torch.equal(w, torch.ones(10)) for w in probe.seen[0])
    expected = effective_number_weights(digits.class_counts, 0.9999)
    assert all(torch.equal(w, expected) for w in probe.seen[1])
    assert trainer.global_step == 4 and len(model.losses) == 8
    assert all(math.isfinite(v) for v in model.losses)


@pytest.mark.parametrize(("loss", "loss_type"), [("ce", torch.nn.Module), ("vs", VSLoss)])
def test_ce_and_vs_with_sam_train_one_batch(tmp_path, loss, loss_type):
    torch.manual_seed(0)
    model = RecordingSAM(COUNTS, **TINY, loss=loss, rho=0.1)
    assert isinstance(model.criterion, loss_type)
    before = flat_weights(model)
    trainer = make_trainer(tmp_path, limit_train_batches=1)
    trainer.fit(model, train_dataloaders=tiny_loader())
    after = flat_weights(model)
    assert trainer.global_step == 1 and len(model.losses) == 2
    assert torch.isfinite(after).all() and not torch.equal(before, after)


# ----------------------------------------------------------------------------------------------- DDP
@pytest.mark.ddp
def test_two_cpu_ddp_processes(tmp_path):
    """ddp_spawn: only weights, state and callback_metrics come back to the parent (LIGHTNING_NOTES B.5)."""
    torch.manual_seed(0)
    model = SAMClassifier(COUNTS, **TINY, rho=0.1)
    before = flat_weights(model)
    loader = tiny_loader(n=32, batch_size=8)
    trainer = make_trainer(
        tmp_path,
        devices=2,
        strategy="ddp_spawn",
        limit_train_batches=2,
        limit_val_batches=1,
    )
    trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader)
    assert trainer.state.finished
    metrics = trainer.callback_metrics
    assert "train/loss_epoch" in metrics and torch.isfinite(metrics["train/loss_epoch"])
    assert float(metrics["sam/rho"]) == pytest.approx(0.1)
    after = flat_weights(model)  # copied back from rank 0
    assert torch.isfinite(after).all() and not torch.equal(before, after)
