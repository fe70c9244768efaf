"""``GenerativeInvarianceTransfer``: which slots change and when, the class gates, seeding and resume, DDP, every
method, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.callbacks import DeferredResampling, GenerativeInvarianceTransfer
from lt_lightning.callbacks.git import class_gate_probabilities, step_seed
from lt_lightning.data import LongTailDataModule
from lt_lightning.methods import ABSGD, BBN, LDAMDRW, LongTailClassifier, SAMClassifier
from tests.helpers import cpu_trainer

MARK = 0.25  # the constant image the marking generator returns


def marking_generator(images: torch.Tensor) -> torch.Tensor:
    """A generator whose output is recognisable: every pixel MARK (inputs are normalised with mean 0, std 1)."""
    return torch.full_like(images, MARK)


class Recorder(L.LightningModule):
    """Records, per training step, which batch slots hold the marked image, and the labels it received."""

    def __init__(self, out_dir: str | None = None):
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)
        self.marked: list[list[int]] = []
        self.labels: list[list[int]] = []
        self.eval_marked = 0
        self.out_dir = out_dir

    def _marked(self, x):
        return [i for i in range(len(x)) if bool((x[i] == MARK).all())]

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.marked.append(self._marked(x))
        self.labels.append(y.tolist())
        return self.layer(x.flatten(1)).sum() * 0.0

    def validation_step(self, batch, batch_idx):
        self.eval_marked += len(self._marked(batch[0]))

    def on_train_end(self):
        if self.out_dir is not None:
            Path(self.out_dir, f"rank{self.global_rank}.json").write_text(json.dumps(self.marked))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def loader(n=20, batch_size=8):
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return DataLoader(TensorDataset(x, torch.arange(n) % 3), batch_size=batch_size)


def git(**kwargs):
    return GenerativeInvarianceTransfer(marking_generator, mean=[0.0], std=[1.0], **kwargs)


# ---------------------------------------------------------------------------------------------------- gates
def test_linear_gate_matches_the_reference_formula_on_cifar10_lt():
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # CIFAR-10-LT rho 100
    q = class_gate_probabilities(counts, "linear", 500)
    # (500 - n_c) / (500 - 50), clipped: 0 for the five head classes
    assert q[:5].tolist() == [0.0] * 5
    np.testing.assert_allclose(q[5:], [0.251111, 0.595556, 0.802222, 0.926667, 1.0], atol=1e-6)
    assert class_gate_probabilities(counts, "hard", 500).tolist() == [0.0] * 5 + [1.0] * 5
    assert class_gate_probabilities(counts, "none", None).tolist() == [1.0] * 10
    # K at the smallest class: the reference divides by zero; here nothing is augmented
    assert class_gate_probabilities(counts, "linear", 50).tolist() == [0.0] * 10


def test_linear_gate_rates_are_within_three_sigma():
    callback = git(fraction=1.0, class_gate="linear", class_size_threshold=100, start_epoch=0)
    q = torch.tensor([0.2, 0.7, 1.0])
    draws, hits = 2000, torch.zeros(3)
    for step in range(draws // 20):
        x = torch.zeros(60, 1, 2, 2)
        y = torch.arange(60) % 3
        callback.augment([x, y], q, step_seed(0, step, 0))
        hits += torch.stack([(x[y == c] == MARK).flatten(1).all(1).sum() for c in range(3)]).float()
    rate = hits / draws
    sigma = torch.sqrt(q * (1 - q) / draws)
    assert ((rate - q).abs() <= 3 * sigma + 1e-9).all(), (rate, q)


# ---------------------------------------------------------------------------------------------------- slots and timing
def test_exactly_the_last_floor_fraction_slots_change_from_the_start_epoch(tmp_path):
    model = Recorder()
    trainer = cpu_trainer(tmp_path, max_epochs=3, callbacks=[git(fraction=0.3, start_epoch=1)], num_sanity_val_steps=0)
    trainer.fit(model, loader(), loader())
    per_epoch = [model.marked[i * 3 : (i + 1) * 3] for i in range(3)]  # 20 images / 8: batches of 8, 8, 4
    assert per_epoch[0] == [[], [], []]  # before start_epoch nothing changes
    for epoch in (1, 2):
        # floor(0.3 * 8) = 2 and floor(0.3 * 4) = 1: the LAST slots of each batch
        assert per_epoch[epoch] == [[6, 7], [6, 7], [3]]
    assert model.labels[3:6] == model.labels[:3]  # labels are kept
    assert model.eval_marked == 0  # validation never touched
    assert trainer.callback_metrics["git/generated"] == 5


def test_default_start_is_one_epoch_after_deferred_resampling(tmp_path):
    dm = LongTailDataModule("digits", batch_size=64)
    callback = GenerativeInvarianceTransfer("rotation")
    trainer = cpu_trainer(
        tmp_path,
        max_epochs=3,
        limit_train_batches=1,
        limit_val_batches=0,
        callbacks=[DeferredResampling(start_epoch=1), callback],
    )
    trainer.fit(LongTailClassifier(dm.class_counts, in_chans=1), datamodule=dm)
    assert callback.start_epoch == 2
    assert GenerativeInvarianceTransfer("rotation", mean=[0.0], std=[1.0]).start_epoch is None


def test_default_start_is_zero_without_a_deferred_switch(tmp_path):
    callback = git()
    cpu_trainer(tmp_path, max_epochs=1, callbacks=[callback], limit_val_batches=0).fit(Recorder(), loader())
    assert callback.start_epoch == 0


# ---------------------------------------------------------------------------------------------------- seeding
def test_same_step_same_draws_and_resume_replays_them(tmp_path):
    def run(ckpt_path=None, epochs=2):
        seen = []

        class Keep(LongTailClassifier):
            def training_step(self, batch, batch_idx):
                seen.append(batch[0].clone())
                return super().training_step(batch, batch_idx)

        dm = LongTailDataModule("digits", batch_size=64)
        model = Keep(dm.class_counts, in_chans=1)
        trainer = cpu_trainer(
            tmp_path,
            max_epochs=epochs,
            limit_train_batches=2,
            limit_val_batches=0,
            enable_checkpointing=True,
            callbacks=[GenerativeInvarianceTransfer("rotation", start_epoch=0)],
        )
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return seen, trainer

    full, _ = run()
    first, trainer = run(epochs=1)
    ckpt = tmp_path / "one.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed, _ = run(ckpt_path=ckpt)
    assert len(full) == 4 and len(first) == 2 and len(resumed) == 2
    for a, b in zip(full[2:], resumed, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(full[0], full[2])


# ---------------------------------------------------------------------------------------------------- DDP
@pytest.mark.ddp
def test_two_ranks_each_replace_floor_fraction_of_their_local_batch(tmp_path):
    trainer = cpu_trainer(tmp_path, devices=2, strategy="ddp_spawn", callbacks=[git(fraction=0.5, start_epoch=0)])
    trainer.fit(Recorder(str(tmp_path)), loader(n=24, batch_size=6))  # 12 per rank: batches of 6, 6
    for rank in range(2):
        marked = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert marked == [[3, 4, 5], [3, 4, 5]]


# ---------------------------------------------------------------------------------------------------- every method
DIGITS = dict(dataset="digits", batch_size=32)


@pytest.mark.parametrize(
    ("make", "data"),
    [
        (lambda c: LongTailClassifier(c, in_chans=1), DIGITS),
        (lambda c: LDAMDRW(c, backbone="small_cnn", in_chans=1, drw_start_epoch=0), DIGITS),
        (lambda c: SAMClassifier(c, in_chans=1, rho=0.05), DIGITS),
        (lambda c: ABSGD(c, in_chans=1, switch_epoch=0), DIGITS),
        (lambda c: BBN(c, in_chans=1), {**DIGITS, "rebalancing_sampler": "reversed"}),
    ],
    ids=["ce", "ldam_drw", "sam", "absgd", "bbn"],
)
def test_fast_dev_run_with_every_method(tmp_path, make, data):
    dm = LongTailDataModule(**data)
    callback = GenerativeInvarianceTransfer("rotation", start_epoch=0)
    trainer = L.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(make(dm.class_counts), datamodule=dm)
    streams = 2 if "rebalancing_sampler" in data else 1
    assert trainer.callback_metrics["git/generated"] == 16 * streams


def test_sam_both_passes_see_the_one_augmented_batch(tmp_path):
    seen = []

    class Spy(SAMClassifier):
        def forward(self, x):
            if self.training:
                seen.append(x.detach().clone())
            return super().forward(x)

    dm = LongTailDataModule(**DIGITS)
    trainer = cpu_trainer(
        tmp_path, max_steps=1, limit_val_batches=0, callbacks=[GenerativeInvarianceTransfer("rotation", start_epoch=0)]
    )
    trainer.fit(Spy(dm.class_counts, in_chans=1), datamodule=dm)
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])
    assert not torch.equal(seen[0][16:], next(iter(dm.train_dataloader()))[0][16:])


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"fraction": 1.5}, ValueError, r"fraction must be a number in \[0, 1\], got 1.5"),
        ({"fraction": "half"}, ValueError, "fraction must be a number"),
        ({"class_gate": "soft"}, ValueError, "class_gate must be one of"),
        ({"class_gate": "hard"}, ValueError, "needs class_size_threshold"),
        ({"class_size_threshold": 0}, ValueError, "class_size_threshold must be an integer >= 1"),
        ({"streams": "second"}, ValueError, "streams must be one of"),
        ({"start_epoch": -1}, ValueError, "start_epoch must be None or an integer >= 0"),
        ({"generator": "no/such/file.pt"}, ValueError, "generator must be a nuisance name"),
        ({"generator": 3}, TypeError, "generator must be a name, a path or a callable"),
        ({"mean": [0.5], "std": None}, ValueError, "give both mean and std"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    args = {"generator": "rotation", **kwargs}
    with pytest.raises(error, match=message):
        GenerativeInvarianceTransfer(**args)


def test_threshold_at_the_smallest_class_warns_nothing_is_augmented(tmp_path):
    dm = LongTailDataModule(**DIGITS)
    callback = GenerativeInvarianceTransfer(
        "rotation", class_gate="linear", class_size_threshold=min(dm.class_counts), mean=[0.0], std=[1.0]
    )
    with pytest.warns(UserWarning, match="nothing is augmented"):
        callback.setup(cpu_trainer(tmp_path), LongTailClassifier(dm.class_counts, in_chans=1), "fit")


def test_a_generator_of_the_wrong_shape_or_non_finite_output_fails_at_the_first_batch(tmp_path):
    for bad, message in (
        (lambda x: x[:, :, :1], "must return images of the input's shape"),
        (lambda x: x * float("nan"), "non-finite"),
    ):
        callback = GenerativeInvarianceTransfer(bad, mean=[0.0], std=[1.0], start_epoch=0)
        with pytest.raises(RuntimeError, match=message):
            cpu_trainer(tmp_path, limit_val_batches=0, callbacks=[callback]).fit(Recorder(), loader())


def test_too_small_a_batch_warns_once(tmp_path):
    callback = git(fraction=0.1, start_epoch=0)
    with pytest.warns(UserWarning, match=r"floor\(0.1 \* 8\) = 0"):
        cpu_trainer(tmp_path, limit_val_batches=0, callbacks=[callback]).fit(Recorder(), loader())
    assert math.floor(0.1 * 8) == 0


def test_background_oracle_on_static_nuisance_data_warns(tmp_path):
    dm = LongTailDataModule("digits", batch_size=32, nuisance="background")
    callback = GenerativeInvarianceTransfer("background")
    trainer = cpu_trainer(tmp_path)
    trainer.strategy.connect(LongTailClassifier(dm.class_counts, in_chans=1))
    trainer._data_connector.attach_datamodule(trainer.lightning_module, datamodule=dm)
    with pytest.warns(UserWarning, match="nuisance_mode: oracle"):
        callback.setup(trainer, trainer.lightning_module, "fit")
