"""ABSGD in real (CPU) Lightning fits on digits: the two-stage lambda schedule, one forward per step, exact resume of
``u``, composition with CE / focal / LDAM and DRW, bad arguments, and a 2-process ``ddp_spawn`` fit."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lt_lightning.callbacks import DeferredReweighting
from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.functional.losses import ldam_loss
from lt_lightning.functional.weights import effective_number_weights
from lt_lightning.losses import CrossEntropyLoss, FocalLoss, LDAMLoss
from lt_lightning.methods import ABSGD
from lt_lightning.models import NormedLinear
from tests.helpers import cpu_trainer

COUNTS = (50, 20, 5)


def digits() -> LongTailDataModule:
    return LongTailDataModule("digits", batch_size=64)


def make_trainer(tmp_path, max_epochs: int, callbacks=(), **kw) -> L.Trainer:
    no_validation = {"num_sanity_val_steps": 0, "limit_val_batches": 0}
    return cpu_trainer(tmp_path, **{"max_epochs": max_epochs, "callbacks": list(callbacks), **no_validation, **kw})


class Probe(Callback):
    """Per training batch: lambda in force, backbone forward calls, the batch's logits and labels, ``log u`` and the
    attention weights after the step; per epoch: ``log u`` and the loss's class weights."""

    def __init__(self):
        self.lam: dict[int, list[float]] = defaultdict(list)
        self.forwards: list[int] = []
        self.batches: dict[int, list[dict]] = defaultdict(list)
        self.epoch_log_u: dict[int, torch.Tensor] = {}
        self._calls = 0

    def on_fit_start(self, trainer, pl_module):
        pl_module.backbone.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self._calls += 1
        self._logits = output.detach().clone()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lam[trainer.current_epoch].append(pl_module.attention.lam)
        self._calls = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.forwards.append(self._calls)
        self.batches[trainer.current_epoch].append(
            {
                "logits": self._logits,
                "y": batch[1].clone(),
                "log_u": pl_module.attention.log_u.clone(),
                "weights": pl_module.attention.last_weights.clone(),
                "class_weight": pl_module.criterion.class_weight.clone(),
            }
        )

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_log_u[trainer.current_epoch] = pl_module.attention.log_u.clone()


def read_epoch_metrics(log_dir: Path) -> dict[int, dict[str, float]]:
    rows: dict[int, dict[str, float]] = defaultdict(dict)
    with open(log_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])].update({k: float(v) for k, v in row.items() if v and k != "epoch"})
    return rows


# ---------------------------------------------------------------------------------------------- construction
def test_defaults_and_per_sample_loss():
    model = ABSGD(COUNTS, backbone="small_cnn", in_chans=1)
    assert model.criterion.reduction == "none"
    assert (model.hparams.lam, model.hparams.init_lam, model.hparams.switch_epoch) == (5.0, 200.0, None)
    attention = model.attention
    assert (attention.lam, attention.gamma, attention.alpha, attention.plain_threshold) == (200.0, 0.1, 0.5, 200.0)
    assert attention.is_plain and attention.log_u.item() == -math.inf
    assert "attention.log_u" in model.state_dict()
    assert model.criterion(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])).shape == (4,)


class NoReductionLoss(nn.Module):
    """A user loss built from the class counts without a ``reduction`` attribute."""

    def __init__(self, class_counts):
        super().__init__()

    def forward(self, logits, target):
        return nn.functional.cross_entropy(logits, target)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lam": 0.0}, r"lam \(lambda\) must be a finite non-zero number.*got 0.0"),
        ({"lam": float("nan")}, r"lam \(lambda\).*got nan"),
        ({"init_lam": 0}, r"lam \(lambda\).*got 0"),
        ({"gamma": 0.0}, r"gamma must be in \(0, 1\], got 0.0"),
        ({"gamma": 1.5}, r"gamma must be in \(0, 1\], got 1.5"),
        ({"alpha": 0.0}, r"alpha must be a finite number > 0, got 0.0"),
        ({"alpha": -0.5}, r"alpha must be a finite number > 0, got -0.5"),
        ({"switch_epoch": -1}, r"switch_epoch must be an integer >= 0 \(0-indexed\) or None, got -1"),
        ({"switch_epoch": 2.5}, r"switch_epoch must be an integer >= 0.*got 2.5"),
        ({"switch_epoch": True}, r"switch_epoch must be an integer >= 0.*got True"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ABSGD(COUNTS, backbone="small_cnn", in_chans=1, **kwargs)


def test_loss_without_reduction_attribute_is_a_type_error():
    with pytest.raises(TypeError, match=r"ABSGD needs per-sample losses: the loss NoReductionLoss has no `reduction`"):
        ABSGD(COUNTS, backbone="small_cnn", in_chans=1, loss=NoReductionLoss)


def test_lam_at_is_a_function_of_the_epoch():
    model = ABSGD(COUNTS, backbone="small_cnn", in_chans=1, lam=-3.0, init_lam=150.0, switch_epoch=7)
    assert [model.lam_at(e) for e in (0, 6, 7, 100)] == [150.0, 150.0, -3.0, -3.0]


# ---------------------------------------------------------------------------------------------- fits
def test_switch_at_default_epoch_one_forward_per_step_and_logging(tmp_path):
    max_epochs = 5
    switch = round(0.8 * max_epochs)  # 4
    probe = Probe()
    model = ABSGD(digits().class_counts, backbone="small_cnn", in_chans=1, lam=5.0)
    logger = CSVLogger(tmp_path, name="csv")
    make_trainer(tmp_path, max_epochs, [probe], limit_train_batches=2, logger=logger).fit(model, datamodule=digits())

    assert model.resolved_switch_epoch() == switch
    assert dict(probe.lam) == {e: [200.0, 200.0] if e < switch else [5.0, 5.0] for e in range(max_epochs)}
    assert probe.forwards == [1] * (2 * max_epochs)  # one forward (and so one backward) per training batch
    for epoch in range(switch):  # plain SGD: u untouched, uniform weights
        for rec in probe.batches[epoch]:
            assert rec["log_u"].item() == -math.inf
            assert torch.equal(rec["weights"], torch.full((64,), 1 / 64))
    first, second = probe.batches[switch]
    assert first["weights"].sum().item() == pytest.approx(1 / (0.1 * 0.5), rel=1e-5)  # u starts at 0
    assert math.isfinite(second["log_u"].item()) and second["log_u"] != first["log_u"]

    metrics = read_epoch_metrics(Path(logger.log_dir))
    assert [metrics[e]["absgd/lambda"] for e in range(max_epochs)] == [200.0] * switch + [5.0]
    for epoch in range(switch):
        assert metrics[epoch]["absgd/weight_sum"] == pytest.approx(1.0)
        assert metrics[epoch]["absgd/weight_max_over_mean"] == pytest.approx(1.0)
        assert metrics[epoch]["absgd/ess_fraction"] == pytest.approx(1.0)
    sums = [rec["weights"].sum().item() for rec in probe.batches[switch]]
    assert metrics[switch]["absgd/weight_sum"] == pytest.approx(sum(sums) / 2, rel=1e-5)
    assert metrics[switch]["absgd/weight_max_over_mean"] > 1.0
    assert metrics[switch]["absgd/ess_fraction"] < 1.0


def test_resume_after_the_switch_restores_u_exactly(tmp_path):
    def run(root, probe, **fit_kw):
        L.seed_everything(0, verbose=False)
        model = ABSGD(digits().class_counts, backbone="small_cnn", in_chans=1, lam=2.0, switch_epoch=1)
        callbacks = [probe]
        if not fit_kw:
            ckpt = ModelCheckpoint(dirpath=root / "ckpt", filename="{epoch}", save_top_k=-1, every_n_epochs=1)
            callbacks.append(ckpt)
        trainer = make_trainer(root, 3, callbacks, limit_train_batches=3, enable_checkpointing=not fit_kw)
        trainer.fit(model, datamodule=digits(), **fit_kw)
        return model

    full_probe = Probe()
    full = run(tmp_path / "full", full_probe)
    assert sorted(full_probe.epoch_log_u) == [0, 1, 2]
    assert full_probe.epoch_log_u[0].item() == -math.inf

    path = tmp_path / "full" / "ckpt" / "epoch=1.ckpt"
    state = torch.load(path, weights_only=False)["state_dict"]
    assert torch.equal(state["attention.log_u"], full_probe.epoch_log_u[1])
    assert math.isfinite(state["attention.log_u"].item())

    resumed_probe = Probe()
    resumed = run(tmp_path / "resumed", resumed_probe, ckpt_path=path)
    assert sorted(resumed_probe.epoch_log_u) == [2] and resumed_probe.lam[2] == [2.0] * 3
    assert resumed_probe.epoch_log_u[2] != full_probe.epoch_log_u[1]  # epoch 2 really moved u
    assert torch.equal(resumed_probe.epoch_log_u[2], full_probe.epoch_log_u[2])
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(("loss", "loss_type"), [("ce", CrossEntropyLoss), ("focal", FocalLoss), ("ldam", LDAMLoss)])
def test_composes_with_losses(tmp_path, loss, loss_type):
    probe = Probe()
    model = ABSGD(digits().class_counts, backbone="small_cnn", in_chans=1, loss=loss, lam=3.0, switch_epoch=0)
    assert type(model.criterion) is loss_type and model.criterion.reduction == "none"
    assert isinstance(model.backbone.head, NormedLinear) == (loss == "ldam")  # LDAM picks the cosine head
    before = [p.detach().clone() for p in model.parameters()]
    make_trainer(tmp_path, 1, [probe], limit_train_batches=1).fit(model, datamodule=digits())

    (rec,) = probe.batches[0]
    per_sample = model.criterion(rec["logits"], rec["y"]).double()
    assert per_sample.shape == (64,)
    expected = torch.exp(per_sample / 3.0 - rec["log_u"] - math.log(64))
    torch.testing.assert_close(rec["weights"].double(), expected, rtol=1e-5, atol=0)
    assert rec["weights"].sum().item() == pytest.approx(1 / (0.1 * 0.5), rel=1e-5)
    assert rec["weights"].max() > 1.5 * rec["weights"].min()  # really re-weighted
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # the step was taken


def test_deferred_reweighting_enters_the_per_sample_losses(tmp_path):
    dm = digits()
    probe = Probe()
    lam = 5.0
    model = ABSGD(dm.class_counts, backbone="small_cnn", in_chans=1, loss="ldam", lam=lam, switch_epoch=0)
    drw = DeferredReweighting(start_epoch=1)
    make_trainer(tmp_path, 2, [drw, probe], limit_train_batches=2).fit(model, datamodule=dm)

    cb_weights = effective_number_weights(dm.class_counts, 0.9999)
    assert cb_weights[-1] > 3 * cb_weights[0]
    margins = model.criterion.margins
    for epoch, class_weight in ((0, torch.ones(10)), (1, cb_weights)):
        for rec in probe.batches[epoch]:
            assert torch.equal(rec["class_weight"], class_weight)
            unweighted = ldam_loss(rec["logits"], rec["y"], margins, scale=30.0, reduction="none").double()
            weighted = class_weight.double()[rec["y"]] * unweighted  # w_y * l_i: the weights enter the exponent
            expected = torch.exp(weighted / lam - rec["log_u"] - math.log(64))
            torch.testing.assert_close(rec["weights"].double(), expected, rtol=1e-5, atol=0)
            if epoch == 1:
                without = torch.exp(unweighted / lam - rec["log_u"] - math.log(64))
                assert not torch.allclose(rec["weights"].double(), without, rtol=1e-2)


# ---------------------------------------------------------------------------------------------- DDP
class RankLogU(Callback):
    """Writes ``log u`` of each rank after each training epoch (ddp_spawn workers return nothing else)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def on_train_epoch_end(self, trainer, pl_module):
        torch.save(
            pl_module.attention.log_u, Path(self.out_dir) / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.pt"
        )


@pytest.mark.ddp
@pytest.mark.timeout(180)
def test_two_process_ddp_spawn_fit(tmp_path):
    model = ABSGD(digits().class_counts, backbone="small_cnn", in_chans=1, lam=5.0, switch_epoch=1)
    trainer = make_trainer(
        tmp_path,
        2,
        [RankLogU(str(tmp_path))],
        devices=2,
        strategy="ddp_spawn",
        limit_train_batches=2,
        limit_val_batches=1,
    )
    trainer.fit(model, datamodule=digits())
    assert trainer.state.finished

    log_u = {(r, e): torch.load(tmp_path / f"rank{r}_epoch{e}.pt") for r in range(2) for e in range(2)}
    assert log_u[0, 0].item() == log_u[1, 0].item() == -math.inf  # plain stage
    assert math.isfinite(log_u[0, 1].item())
    assert torch.equal(log_u[0, 1], log_u[1, 1])  # the all-gather keeps u identical on both ranks
    assert torch.equal(model.attention.log_u, log_u[0, 1])  # rank 0's buffers came back to the parent
    assert trainer.callback_metrics["absgd/lambda"].item() == 5.0
