"""CMO (issue 15, item 2) against exact answers: the pasted region, λ = 1 - area, the two-target loss for every
loss and ABSGD's per-sample path, bit-identity to the base method when nothing is mixed, the foreground sampler's class
frequencies, the same box on every DDP rank, and each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from scipy import stats

from lt_lightning.callbacks import CMO, DeferredReweighting
from lt_lightning.data import LongTailDataModule
from lt_lightning.data.samplers import InversePowerSampler
from lt_lightning.functional.mixing import BatchMix, box_lambda, cutmix_box, paste_box, random_cutmix_box
from lt_lightning.methods import ABSGD, BBN, DBNMix, LongTailClassifier
from tests.helpers import cpu_trainer

SMALL = {"backbone": "small_cnn", "backbone_kwargs": {"width": 8}, "in_chans": 1}


def digits(**kwargs) -> LongTailDataModule:
    return LongTailDataModule("digits", imbalance_ratio=10, batch_size=64, **kwargs)


def paired() -> LongTailDataModule:
    return digits(rebalancing_sampler="inverse_power")


# ----------------------------------------------------------------- the box
def test_box_is_the_references_rand_bbox():
    # W = H = 32, lam = 0.75: cut 16 x 16 around (10, 30): rows 2..18, columns 22..38 clipped to 32.
    assert cutmix_box(32, 32, 0.75, (10, 30)) == (2, 18, 22, 32)
    assert box_lambda((2, 18, 22, 32), 32, 32) == 1 - 16 * 10 / 1024
    assert cutmix_box(8, 8, 1.0, (4, 4)) == (4, 4, 4, 4)  # lam = 1: an empty box, nothing pasted
    for seed in range(50):
        box, lam = random_cutmix_box(8, 8, torch.Generator().manual_seed(seed))
        assert 0.0 <= lam <= 1.0 and lam == box_lambda(box, 8, 8)


def test_pasted_region_is_the_foreground_and_the_rest_the_background():
    bg, fg = torch.zeros(3, 2, 8, 8), torch.arange(3 * 2 * 64, dtype=torch.float32).reshape(3, 2, 8, 8) + 1
    box = (1, 5, 2, 8)
    original = bg.clone()
    paste_box(bg, fg, box)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[1:5, 2:8] = True
    assert torch.equal(bg[:, :, inside], fg[:, :, inside])
    assert torch.equal(bg[:, :, ~inside], original[:, :, ~inside])


# ----------------------------------------------------------------- the two-target loss
@pytest.mark.parametrize("loss", ["ce", "ldam", "balanced_softmax", "focal"])
def test_criterion_on_is_the_lambda_weighted_two_target_loss(loss):
    torch.manual_seed(0)
    model = LongTailClassifier((50, 20, 5), loss=loss, **SMALL)
    logits, y1, y2 = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([2, 2, 1, 1, 0, 0])
    plain = model.criterion_on(logits, y1)
    assert torch.equal(plain, model.criterion(logits, y1))
    model.batch_mix = BatchMix(second_target=y2, lam=0.3)
    expected = 0.3 * model.criterion(logits, y1) + 0.7 * model.criterion(logits, y2)
    assert torch.equal(model.criterion_on(logits, y1), expected)


def test_absgd_mixes_per_sample_before_its_attention():
    model = ABSGD((50, 20, 5), loss="ce", **SMALL)
    logits, y1, y2 = torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.tensor([2, 2, 1, 1])
    model.batch_mix = BatchMix(second_target=y2, lam=0.25)
    per_sample = model.criterion_on(logits, y1)
    expected = 0.25 * F.cross_entropy(logits, y1, reduction="none") + 0.75 * F.cross_entropy(
        logits, y2, reduction="none"
    )
    torch.testing.assert_close(per_sample, expected, rtol=0, atol=1e-6)
    assert per_sample.shape == (4,)


# ----------------------------------------------------------------- the callback in a run
class Recorder(LongTailClassifier):
    """Keeps each training step's inputs, targets and mix (and writes the mixes to ``out_dir`` per rank)."""

    def __init__(self, *args, out_dir: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.out_dir = out_dir
        self.steps: list[dict] = []

    def training_loss(self, batch):
        mix = self.batch_mix
        self.steps.append(
            {
                "x": batch[0].detach().clone(),
                "x_fg": batch[2].detach().clone(),
                "lam": None if mix is None else mix.lam,
                "y_fg": None if mix is None else mix.second_target.clone(),
                "loss_by_hand": None
                if mix is None
                else float(
                    mix.lam * self.criterion(self(batch[0]), batch[1])
                    + (1 - mix.lam) * self.criterion(self(batch[0]), mix.second_target)
                ),
            }
        )
        loss, logits, target = super().training_loss(batch)
        self.steps[-1]["loss"] = float(loss)
        return loss, logits, target

    def on_train_epoch_end(self):
        if self.out_dir is not None:
            lams = [s["lam"] for s in self.steps]
            (Path(self.out_dir) / f"rank{self.global_rank}.json").write_text(json.dumps(lams))


class BeforeCMO(Callback):
    """Listed before CMO: keeps each step's inputs as the loader gave them."""

    def __init__(self):
        self.original: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.original.append(batch[0].detach().clone())


def test_mixed_steps_train_on_the_two_target_loss_with_the_pasted_batch(tmp_path):
    torch.manual_seed(0)
    model = Recorder(paired().class_counts, **SMALL)
    cmo, before = CMO(prob=0.5, start_data_aug=0, end_data_aug=0, seed=7), BeforeCMO()
    cpu_trainer(tmp_path, max_epochs=2, callbacks=[before, cmo], num_sanity_val_steps=0, limit_val_batches=0).fit(
        model, datamodule=paired()
    )
    first_epoch = len(model.steps) // 2
    assert all(s["lam"] is None for s in model.steps[:first_epoch])  # epoch 0 is not > start_data_aug = 0
    mixed = [i for i, s in enumerate(model.steps) if s["lam"] is not None]
    assert 0 < len(mixed) == cmo.mixed_batches < len(model.steps) - first_epoch
    for step in mixed:
        seen = model.steps[step]
        assert seen["loss"] == pytest.approx(seen["loss_by_hand"], rel=1e-6)
        # The box of this step, from the documented seeding: (seed, global step), a draw r < prob, then the box.
        generator = torch.Generator().manual_seed(cmo._step_seed(step))
        assert float(torch.rand((), generator=generator, dtype=torch.float64)) < 0.5
        box, lam = random_cutmix_box(8, 8, generator)
        assert seen["lam"] == lam == 1 - (box[1] - box[0]) * (box[3] - box[2]) / 64
        expected = before.original[step].clone()
        paste_box(expected, seen["x_fg"], box)
        assert torch.equal(seen["x"], expected)


def _fit_weights(tmp_path, callbacks, max_epochs=3):
    torch.manual_seed(0)
    model = LongTailClassifier(paired().class_counts, **SMALL)
    trainer = cpu_trainer(
        tmp_path, max_epochs=max_epochs, callbacks=callbacks, num_sanity_val_steps=0, limit_val_batches=0
    )
    trainer.fit(model, datamodule=paired())
    return model.state_dict()


def test_no_mixing_is_bit_identical_to_the_base_method(tmp_path):
    base = _fit_weights(tmp_path / "base", [DeferredReweighting(start_epoch=2)])
    for name, cmo in {
        "p0": CMO(prob=0.0, start_data_aug=0, end_data_aug=0),
        "window": CMO(prob=1.0, start_data_aug=5),
    }.items():
        again = _fit_weights(tmp_path / name, [DeferredReweighting(start_epoch=2), cmo])
        assert all(torch.equal(base[k], again[k]) for k in base), name
        assert cmo.mixed_batches == 0
    mixed = _fit_weights(
        tmp_path / "mixed", [DeferredReweighting(start_epoch=2), CMO(prob=1.0, start_data_aug=0, end_data_aug=0)]
    )
    assert not all(torch.equal(base[k], mixed[k]) for k in base)


# ----------------------------------------------------------------- the foreground sampler
@pytest.mark.parametrize("alpha", [1.0, 0.0, 0.5])
def test_foreground_class_frequencies(alpha):
    counts = np.array([400, 100, 25, 5])
    targets = np.repeat(np.arange(4), counts)
    drawn = np.bincount(
        np.array(list(InversePowerSampler(targets, seed=0, num_samples=100_000, alpha=alpha))), minlength=len(targets)
    )
    per_class = np.bincount(targets, weights=drawn, minlength=4)
    expected = counts ** (1 - alpha) / (counts ** (1 - alpha)).sum() * 100_000
    assert stats.chisquare(per_class, expected).pvalue > 1e-3
    if alpha == 1.0:
        assert np.allclose(expected, 25_000)


# ----------------------------------------------------------------- bad input
def test_bad_input(tmp_path):
    for kwargs, message in [
        ({"prob": 1.5}, r"prob must be a number in \[0, 1\]"),
        ({"start_data_aug": -1}, "start_data_aug must be an integer >= 0, got -1"),
        ({"end_data_aug": 2.5}, "end_data_aug must be an integer >= 0, got 2.5"),
    ]:
        with pytest.raises(ValueError, match=message):
            CMO(**kwargs)
    with pytest.raises(ValueError, match="sampler_alpha must be a finite number >= 0"):
        LongTailDataModule("digits", sampler_alpha=-0.5)
    model = LongTailClassifier(digits().class_counts, **SMALL)
    with pytest.raises(ValueError, match="CMO needs the foreground stream: set data.init_args.rebalancing_sampler"):
        cpu_trainer(tmp_path, fast_dev_run=True, callbacks=[CMO()]).fit(model, datamodule=digits())
    bbn = BBN(paired().class_counts, **SMALL)
    with pytest.raises(TypeError, match="CMO cannot be combined with BBN"):
        cpu_trainer(tmp_path, fast_dev_run=True, callbacks=[CMO()]).fit(bbn, datamodule=paired())
    dbn_mix = DBNMix(paired().class_counts, **SMALL)
    with pytest.raises(TypeError, match="CMO cannot be combined with BBN or DBN-Mix"):
        cpu_trainer(tmp_path, fast_dev_run=True, callbacks=[CMO()]).fit(dbn_mix, datamodule=paired())


@pytest.mark.ddp
def test_every_ddp_rank_pastes_the_same_box(tmp_path):
    model = Recorder(paired().class_counts, out_dir=str(tmp_path), **SMALL)
    trainer = cpu_trainer(
        tmp_path,
        devices=2,
        strategy="ddp_spawn",
        max_epochs=2,
        callbacks=[CMO(prob=0.5, start_data_aug=0, end_data_aug=0)],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=paired())
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and any(lam is not None for lam in ranks[0])
