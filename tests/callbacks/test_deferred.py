"""DeferredReweighting (DRW) and DeferredResampling (DRS) inside real CPU ``lightning.Trainer`` runs.

Checked: the switch happens at exactly the configured 0-indexed epoch, the weights / draws are the reference ones,
runs resumed from checkpoints before and after the switch reproduce an uninterrupted run, the switch really changes
what the loader draws (LIGHTNING_NOTES D.13, kaidic/LDAM-DRW#7), also under 2-process CPU DDP, and bad input fails
with a message that names what is wrong.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.callbacks import DeferredResampling, DeferredReweighting
from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.samplers import InstanceSampler
from lt_lightning.functional.weights import effective_number_weights
from lt_lightning.losses import CrossEntropyLoss
from tests.helpers import cpu_trainer

CIFAR10_LT_100 = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)
# METHODS.md §3.2: CB weights of CIFAR-10-LT rho = 100 with beta = 0.9999, normalised to sum to 10.
CB_REFERENCE = torch.tensor([0.0506, 0.0769, 0.1211, 0.1950, 0.3188, 0.5246, 0.8683, 1.4426, 2.4092, 3.9927])
DIGITS_COUNTS = (134, 103, 80, 62, 48, 37, 28, 22, 17, 13)  # digits, exponential profile, rho = 10: 544 images


# ---------------------------------------------------------------------------------------------- helpers
class ForeignModule(L.LightningModule):
    """A user's own module: nothing from lt_lightning but the loss, held as ``criterion``."""

    def __init__(self, counts=CIFAR10_LT_100, criterion: nn.Module | None = None):
        super().__init__()
        self.layer = nn.Linear(4, len(counts))
        self.criterion = CrossEntropyLoss(counts) if criterion is None else criterion

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.criterion(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class WeightProbe(Callback):
    """Records the loss's class weights at every training batch, by epoch."""

    def __init__(self, loss_attr: str = "criterion"):
        self.loss_attr = loss_attr
        self.seen: dict[int, list[torch.Tensor]] = defaultdict(list)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        loss = getattr(pl_module, self.loss_attr)
        self.seen[trainer.current_epoch].append(loss.class_weight.detach().clone())

    def per_epoch(self) -> dict[int, torch.Tensor]:
        """One weight vector per epoch, after checking that every batch of the epoch saw the same one."""
        out = {}
        for epoch, weights in self.seen.items():
            assert all(torch.equal(w, weights[0]) for w in weights), f"weights changed inside epoch {epoch}"
            out[epoch] = weights[0]
        return out


def tiny_loader(n: int = 40, num_classes: int = 10) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    dataset = TensorDataset(torch.randn(n, 4, generator=g), torch.arange(n) % num_classes)
    return DataLoader(dataset, batch_size=10)  # 4 batches per epoch


def make_trainer(tmp_path, max_epochs: int, callbacks, **kw) -> L.Trainer:
    no_validation = {"num_sanity_val_steps": 0, "limit_val_batches": 0}
    return cpu_trainer(tmp_path, **{"max_epochs": max_epochs, "callbacks": callbacks, **no_validation, **kw})


# ---------------------------------------------------------------------------------------------- DRW
def test_drw_switches_at_the_configured_epoch_on_a_foreign_module(tmp_path):
    probe = WeightProbe()
    trainer = make_trainer(
        tmp_path, 4, [DeferredReweighting(start_epoch=2, beta=0.9999), probe], logger=CSVLogger(tmp_path, name="csv")
    )
    trainer.fit(ForeignModule(), tiny_loader())

    weights = probe.per_epoch()
    assert sorted(weights) == [0, 1, 2, 3] and all(len(probe.seen[e]) == 4 for e in weights)
    assert torch.equal(weights[0], torch.ones(10)) and torch.equal(weights[1], torch.ones(10))
    expected = effective_number_weights(CIFAR10_LT_100, 0.9999)
    for epoch in (2, 3):
        assert torch.equal(weights[epoch], expected)
        torch.testing.assert_close(weights[epoch], CB_REFERENCE, atol=1e-4, rtol=0)

    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("drw/beta")]
    beta_by_epoch = {int(r["epoch"]): float(r["drw/beta"]) for r in rows}
    assert beta_by_epoch == {0: 0.0, 1: 0.0, 2: pytest.approx(0.9999), 3: pytest.approx(0.9999)}


def test_drw_default_start_is_80_percent_of_max_epochs(tmp_path):
    callback, probe = DeferredReweighting(), WeightProbe()
    make_trainer(tmp_path, 5, [callback, probe]).fit(ForeignModule(), tiny_loader())
    assert callback.start_epoch == 4  # round(0.8 * 5)
    weights = probe.per_epoch()
    assert all(torch.equal(weights[e], torch.ones(10)) for e in range(4))
    torch.testing.assert_close(weights[4], CB_REFERENCE, atol=1e-4, rtol=0)


def test_drw_reused_callback_resolves_its_default_afresh(tmp_path):
    """One callback (as ``LDAMDRW.configure_callbacks`` returns) fitted twice: the switch follows each Trainer."""
    callback = DeferredReweighting()
    make_trainer(tmp_path, 5, [callback]).fit(ForeignModule(), tiny_loader())
    assert callback.start_epoch == 4
    probe = WeightProbe()
    make_trainer(tmp_path, 10, [callback, probe]).fit(ForeignModule(), tiny_loader())
    assert callback.start_epoch == 8  # not the 4 of the first fit
    weights = probe.per_epoch()
    assert torch.equal(weights[7], torch.ones(10)) and not torch.equal(weights[8], torch.ones(10))


class OtherLossName(ForeignModule):
    """The loss under a name DeferredReweighting does not look for by itself."""

    def __init__(self):
        super().__init__()
        self.my_loss = self.criterion
        del self.criterion

    def training_step(self, batch, batch_idx):
        return self.my_loss(self.layer(batch[0]), batch[1])


def test_drw_multi_stage_and_named_loss_attribute(tmp_path):
    probe = WeightProbe(loss_attr="my_loss")
    callback = DeferredReweighting(stages=[(1, 0.9), (2, 0.9999)], loss_attr="my_loss")
    make_trainer(tmp_path, 3, [callback, probe]).fit(OtherLossName(), tiny_loader())
    weights = probe.per_epoch()
    assert torch.equal(weights[0], torch.ones(10))
    assert torch.equal(weights[1], effective_number_weights(CIFAR10_LT_100, 0.9))
    assert torch.equal(weights[2], effective_number_weights(CIFAR10_LT_100, 0.9999))
    with pytest.raises(TypeError, match="my_loss|criterion"):  # not found without loss_attr
        make_trainer(tmp_path, 3, [DeferredReweighting(start_epoch=1)]).fit(OtherLossName(), tiny_loader())


def test_drw_resume_before_and_after_the_switch(tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    full_probe = WeightProbe()
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    make_trainer(
        tmp_path, 4, [DeferredReweighting(start_epoch=2), full_probe, checkpoint], enable_checkpointing=True
    ).fit(ForeignModule(), tiny_loader())
    full = full_probe.per_epoch()
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [f"epoch={e}.ckpt" for e in range(4)]

    cb_weights = effective_number_weights(CIFAR10_LT_100, 0.9999)
    saved = {e: torch.load(ckpt_dir / f"epoch={e}.ckpt", weights_only=False) for e in (0, 2)}
    # The buffer travels in the state_dict: ones before the switch, the CB weights after it.
    assert torch.equal(saved[0]["state_dict"]["criterion.class_weight"], torch.ones(10))
    assert torch.equal(saved[2]["state_dict"]["criterion.class_weight"], cb_weights)

    for saved_epoch, resumed_epochs in ((0, [1, 2, 3]), (2, [3])):
        probe = WeightProbe()
        trainer = make_trainer(tmp_path / f"resume{saved_epoch}", 4, [DeferredReweighting(start_epoch=2), probe])
        trainer.fit(ForeignModule(), tiny_loader(), ckpt_path=ckpt_dir / f"epoch={saved_epoch}.ckpt")
        resumed = probe.per_epoch()
        assert sorted(resumed) == resumed_epochs
        for epoch in resumed_epochs:
            assert torch.equal(resumed[epoch], full[epoch]), f"resumed from epoch {saved_epoch}, epoch {epoch}"


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cls", [DeferredReweighting, DeferredResampling])
@pytest.mark.parametrize("start_epoch", [-1, 1.5, True])
def test_bad_start_epoch(cls, start_epoch):
    with pytest.raises(ValueError, match=r"start_epoch must be an integer >= 0"):
        cls(start_epoch=start_epoch)


@pytest.mark.parametrize("beta", [1.0, -0.5, 1.5])
def test_drw_bad_beta(beta):
    with pytest.raises(ValueError, match=rf"beta must be in \[0, 1\), got {beta}"):
        DeferredReweighting(start_epoch=2, beta=beta)


def test_drs_bad_sampler_name():
    with pytest.raises(ValueError, match="sampler must be one of .*'whatever'"):
        DeferredResampling(start_epoch=2, sampler="whatever")


def test_drw_switch_after_the_last_epoch_warns(tmp_path):
    probe = WeightProbe()
    with pytest.warns(UserWarning, match="never runs"):
        make_trainer(tmp_path, 2, [DeferredReweighting(start_epoch=2), probe]).fit(ForeignModule(), tiny_loader())
    assert all(torch.equal(w, torch.ones(10)) for w in probe.per_epoch().values())


def test_drs_switch_after_the_last_epoch_warns(tmp_path):
    targets = torch.arange(40) % 10
    loader = DataLoader(
        TensorDataset(torch.randn(40, 4), targets), batch_size=10, sampler=InstanceSampler(targets.numpy())
    )
    with pytest.warns(UserWarning, match="never runs"):
        make_trainer(tmp_path, 1, [DeferredResampling(start_epoch=3)]).fit(ForeignModule(), loader)


def test_drw_module_without_replaceable_weights(tmp_path):
    module = ForeignModule(criterion=nn.CrossEntropyLoss())  # torch's loss: no set_class_weight
    with pytest.raises(TypeError, match="set_class_weight"):
        make_trainer(tmp_path, 2, [DeferredReweighting(start_epoch=1)]).fit(module, tiny_loader())


def test_drs_needs_a_long_tail_sampler(tmp_path):
    loader = DataLoader(TensorDataset(torch.randn(40, 4), torch.arange(40) % 10), batch_size=10, shuffle=True)
    with pytest.raises(TypeError, match="LongTailSampler.*RandomSampler|RandomSampler.*LongTailSampler"):
        make_trainer(tmp_path, 2, [DeferredResampling(start_epoch=1)]).fit(ForeignModule(), loader)


# ---------------------------------------------------------------------------------------------- DRS
class LabelRecorder(L.LightningModule):
    """Records the labels of every training batch per epoch; with ``out_dir``, also writes them to
    ``rank{r}_epoch{e}.json`` (ddp_spawn workers return nothing else to the parent). Module-level: picklable."""

    def __init__(self, out_dir: str | None = None):
        super().__init__()
        self.out_dir = out_dir
        self.layer = nn.Linear(64, 10)
        self.labels: dict[int, list[int]] = defaultdict(list)

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        self.labels[self.current_epoch].extend(y.tolist())
        return nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

    def on_train_epoch_end(self):
        if self.out_dir is not None:
            path = Path(self.out_dir) / f"rank{self.global_rank}_epoch{self.current_epoch}.json"
            path.write_text(json.dumps(self.labels[self.current_epoch]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def histogram(labels) -> tuple[int, ...]:
    counts = Counter(labels)
    return tuple(counts[c] for c in range(10))


def assert_roughly_balanced(hist: tuple[int, ...]) -> None:
    # 544 draws, p = 1/10: mean 54.4, sd 7.0. [25, 90] is beyond 4 sd; the tail class had 13 before the switch.
    assert sum(hist) == 544
    assert all(25 <= h <= 90 for h in hist), hist
    assert hist[-1] >= 35, hist


def digits_dm() -> LongTailDataModule:
    return LongTailDataModule("digits", imbalance_ratio=10, batch_size=64)


def test_drs_changes_the_drawn_histogram_and_resumes_exactly(tmp_path):
    dm = digits_dm()
    assert dm.class_counts == DIGITS_COUNTS
    ckpt_dir = tmp_path / "ckpt"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    module = LabelRecorder()
    callbacks = [DeferredResampling(start_epoch=2, sampler="class_balanced"), checkpoint]
    make_trainer(tmp_path, 4, callbacks, enable_checkpointing=True).fit(module, datamodule=dm)

    labels = dict(module.labels)
    assert sorted(labels) == [0, 1, 2, 3]
    for epoch in (0, 1):  # the instance sampler is a permutation: exactly the training counts
        assert histogram(labels[epoch]) == DIGITS_COUNTS
    assert labels[0] != labels[1]  # but a different order each epoch
    for epoch in (2, 3):
        assert_roughly_balanced(histogram(labels[epoch]))
    assert labels[2] != labels[3]  # a fresh draw each epoch after the switch

    resumed = LabelRecorder()
    make_trainer(tmp_path / "resume", 4, [DeferredResampling(start_epoch=2, sampler="class_balanced")]).fit(
        resumed, datamodule=digits_dm(), ckpt_path=ckpt_dir / "epoch=2.ckpt"
    )
    assert sorted(resumed.labels) == [3]
    assert resumed.labels[3] == labels[3]


def test_drs_other_sampler_and_seed(tmp_path):
    """``sampler="reversed"`` favours the tail: the tail class is drawn more than the head class after the switch."""
    module = LabelRecorder()
    make_trainer(tmp_path, 2, [DeferredResampling(start_epoch=1, sampler="reversed", seed=5)]).fit(
        module, datamodule=digits_dm()
    )
    assert histogram(module.labels[0]) == DIGITS_COUNTS
    after = histogram(module.labels[1])
    # q_c proportional to 134 / n_c: head 1/sum, tail ~10.3/sum of ~44: ~12 vs ~127 expected draws.
    assert after[-1] > 80 and after[0] < 30, after


def test_drs_to_the_class_aware_cycle_sampler(tmp_path):
    """``sampler="class_aware_cycle"``: after the switch, 544 draws of k = 2 are 27 full cycles of the 10 classes
    and 2 more visits, so every class is drawn exactly 54 or 56 times."""
    module = LabelRecorder()
    drs = DeferredResampling(start_epoch=1, sampler="class_aware_cycle", samples_per_class=2)
    make_trainer(tmp_path, 2, [drs]).fit(module, datamodule=digits_dm())
    assert histogram(module.labels[0]) == DIGITS_COUNTS
    assert sorted(histogram(module.labels[1])) == [54] * 8 + [56] * 2
    with pytest.raises(ValueError, match=r"samples_per_class must be an integer >= 1, got '4'"):
        DeferredResampling(sampler="class_aware_cycle", samples_per_class="4")


def test_drs_survives_dataloader_reloads(tmp_path):
    """``reload_dataloaders_every_n_epochs`` builds a new loader and sampler: the switch must follow it."""
    module = LabelRecorder()
    make_trainer(tmp_path, 3, [DeferredResampling(start_epoch=1)], reload_dataloaders_every_n_epochs=1).fit(
        module, datamodule=digits_dm()
    )
    assert histogram(module.labels[0]) == DIGITS_COUNTS
    for epoch in (1, 2):
        assert_roughly_balanced(histogram(module.labels[epoch]))


@pytest.mark.ddp
def test_drs_under_two_process_ddp(tmp_path):
    trainer = cpu_trainer(
        tmp_path,
        devices=2,
        strategy="ddp_spawn",
        max_epochs=3,
        callbacks=[DeferredResampling(start_epoch=1, sampler="class_balanced")],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(LabelRecorder(str(tmp_path)), datamodule=digits_dm())

    unions = []
    for epoch in range(3):
        shards = [json.loads((tmp_path / f"rank{r}_epoch{epoch}.json").read_text()) for r in range(2)]
        assert len(shards[0]) == len(shards[1]) == 272  # 544 draws split evenly: no padding
        unions.append(shards[0] + shards[1])
    # Before the switch the two shards together are one permutation of the training set.
    assert histogram(unions[0]) == DIGITS_COUNTS
    for epoch in (1, 2):
        assert_roughly_balanced(histogram(unions[epoch]))
    assert sorted(unions[1]) != sorted(unions[2])


def test_drw_warns_on_an_unusual_beta_but_not_on_the_recipe_or_zero(recwarn):
    DeferredReweighting(start_epoch=2)
    DeferredReweighting(stages=[(2, 0.0), (3, 0.999)])
    assert not [w for w in recwarn if "usual range" in str(w.message)]
    with pytest.warns(UserWarning, match=r"DeferredReweighting: beta=0\.5 is outside the usual range \[0\.9, 1\)"):
        DeferredReweighting(start_epoch=2, beta=0.5)


def test_drw_on_a_foreign_module_resumes_with_its_checkpoints_horizon(tmp_path):
    # The module records no horizon: the callback's own state carries it (issue 12 item 3).
    ckpt_dir = tmp_path / "ckpt"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="{epoch}", save_top_k=-1)
    make_trainer(tmp_path, 5, [DeferredReweighting(), checkpoint], enable_checkpointing=True).fit(
        ForeignModule(), tiny_loader()
    )
    assert torch.load(ckpt_dir / "epoch=1.ckpt", weights_only=False)["callbacks"]["DeferredReweighting"] == {
        "horizon": 5
    }
    probe, drw = WeightProbe(), DeferredReweighting()
    with pytest.warns(UserWarning, match=r"resumed with max_epochs=10 but the checkpoint's schedules were resolved"):
        make_trainer(tmp_path / "r", 10, [drw, probe]).fit(
            ForeignModule(), tiny_loader(), ckpt_path=ckpt_dir / "epoch=1.ckpt"
        )
    assert drw.start_epoch == 4  # round(0.8 * 5), not round(0.8 * 10) = 8
    weighted = [e for e, w in probe.per_epoch().items() if not torch.equal(w, torch.ones(10))]
    assert weighted == list(range(4, 10))


def test_drs_resolves_its_default_start_from_the_checkpoints_horizon(tmp_path):
    dm = digits_dm()
    ckpt_dir = tmp_path / "ckpt"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="{epoch}", save_top_k=-1)
    make_trainer(tmp_path, 5, [DeferredResampling(), checkpoint], enable_checkpointing=True, limit_train_batches=1).fit(
        LabelRecorder(), datamodule=dm
    )
    drs = DeferredResampling()
    with pytest.warns(UserWarning, match=r"keeping 5 for every epoch-derived schedule"):
        make_trainer(tmp_path / "r", 10, [drs], limit_train_batches=1).fit(
            LabelRecorder(), datamodule=digits_dm(), ckpt_path=ckpt_dir / "epoch=1.ckpt"
        )
    assert drs.start_epoch == 4
