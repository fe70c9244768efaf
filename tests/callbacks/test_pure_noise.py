"""OPeN (PureNoiseOversampling): replacement rates, noise moments, seeding, schedule, every method, DDP, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.callbacks import DeferredResampling, PureNoiseOversampling
from lt_lightning.callbacks.pure_noise import noise_probabilities, pure_noise
from lt_lightning.data import LongTailDataModule
from lt_lightning.methods import BBN, LongTailClassifier, SAMClassifier
from lt_lightning.models.dar_bn import DARBatchNorm2d, _DARMixin, has_dar_bn
from tests.helpers import cpu_trainer

COUNTS = (1000, 500, 100, 10)
DIGITS = dict(dataset="digits", batch_size=32)


def prepared(tmp_path, **kwargs) -> PureNoiseOversampling:
    """A callback set up for a foreign module (explicit counts and statistics, no DAR-BN)."""
    args = dict(class_counts=COUNTS, mean=[0.5], std=[0.25], dar_bn=False, **kwargs)
    callback = PureNoiseOversampling(**args)
    callback.setup(cpu_trainer(tmp_path), L.LightningModule(), "fit")
    return callback


def batch(n, label_of=lambda i: i % len(COUNTS)):
    x = torch.full((n, 1, 2, 2), 7.0)  # a value no normalised noise image takes
    return [x, torch.tensor([label_of(i) for i in range(n)])]


# ---------------------------------------------------------------------------------------------------- the draws
def test_per_class_replacement_rate_is_delta_times_one_minus_n_over_n_max_within_three_sigma(tmp_path):
    callback = prepared(tmp_path, delta=0.5)
    n = 100_000
    data = batch(n)
    (mask,) = callback.replace(data, seed=3)
    expected = noise_probabilities(COUNTS, 0.5)
    assert expected.tolist() == [0.0, 0.25, 0.45, 0.495]
    for c, p in enumerate(expected):
        rows = data[1] == c
        rate, m = mask[rows].float().mean().item(), int(rows.sum())
        assert abs(rate - p) <= 3 * math.sqrt(p * (1 - p) / m) + 1e-12, (c, rate, p)
    assert not mask[data[1] == 0].any()  # the head class is never replaced
    assert torch.equal(mask, (data[0] != 7.0).flatten(1).all(1))  # the mask marks exactly the replaced images


def test_labels_are_kept_and_only_masked_images_change(tmp_path):
    callback = prepared(tmp_path, delta=1.0)
    data = batch(64)
    labels = data[1].clone()
    (mask,) = callback.replace(data, seed=0)
    assert torch.equal(data[1], labels)
    assert mask.any() and (data[0][~mask] == 7.0).all()


def test_noise_moments_before_clamping_and_the_clamped_range():
    gen = torch.Generator().manual_seed(0)
    raw = pure_noise(20_000, (3, 4, 4), [0.2, 0.5, 0.8], [0.1, 0.3, 0.05], gen, clamp=False)
    n = raw.numel() // 3
    for c, (mu, sigma) in enumerate(zip([0.2, 0.5, 0.8], [0.1, 0.3, 0.05], strict=True)):
        values = raw[:, c].double()
        assert abs(values.mean().item() - mu) < 4 * sigma / math.sqrt(n)
        assert abs(values.std().item() - sigma) < 4 * sigma / math.sqrt(2 * n)
    clamped = pure_noise(1000, (3, 4, 4), [0.2, 0.5, 0.8], [0.1, 0.3, 0.05], torch.Generator().manual_seed(0))
    assert clamped.min() >= 0 and clamped.max() <= 1 and (clamped == 1).any()
    assert torch.equal(clamped, raw[:1000].clamp(0, 1))


@pytest.mark.parametrize("space", ["pixel", "normalized"])
def test_noise_space_pixel_is_normalised_like_the_inputs_and_normalized_is_the_reproductions_raw_noise(tmp_path, space):
    callback = prepared(tmp_path, delta=1.0, noise_space=space)
    data = batch(4000, lambda i: 3)
    (mask,) = callback.replace(data, seed=1)
    noise = data[0][mask]
    pixels = noise * 0.25 + 0.5 if space == "pixel" else noise
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert abs(pixels.mean().item() - 0.5) < 0.01  # N(0.5, 0.25) clamped symmetrically keeps its mean
    if space == "pixel":
        assert abs(noise.mean().item()) < 0.04 and abs(noise.std().item() - 0.95) < 0.05  # ~ N(0, 1) truncated


def test_same_seed_step_rank_same_mask_and_different_otherwise(tmp_path):
    from lt_lightning.callbacks.git import step_seed

    callback = prepared(tmp_path, delta=1.0)
    masks = {}
    for key in ((0, 5, 0), (0, 5, 0), (0, 5, 1), (0, 6, 0), (1, 5, 0)):
        data = batch(256)
        masks.setdefault(key, []).append(callback.replace(data, step_seed(*key))[0])
    assert torch.equal(*masks[(0, 5, 0)])
    others = [masks[k][0] for k in ((0, 5, 1), (0, 6, 0), (1, 5, 0))]
    assert all(not torch.equal(masks[(0, 5, 0)][0], o) for o in others)


# ---------------------------------------------------------------------------------------------------- in a run
class Recorder(L.LightningModule):
    """Conv + BN + linear; records each training batch and the callback's mask, writes them per rank."""

    def __init__(self, out_dir: str | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 2))
        self.batches: list[torch.Tensor] = []
        self.masks: list[list[bool] | None] = []
        self.out_dir = out_dir

    def training_step(self, batch, batch_idx):
        x, y = batch
        self.batches.append(x.clone())
        callback = next(c for c in self.trainer.callbacks if isinstance(c, PureNoiseOversampling))
        self.masks.append(None if callback.noise_mask is None else callback.noise_mask.tolist())
        return nn.functional.cross_entropy(self.net(x), y)

    def on_train_end(self):
        if self.out_dir is not None:
            Path(self.out_dir, f"rank{self.global_rank}.json").write_text(json.dumps(self.masks))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader(n=32, batch_size=8):
    x = torch.linspace(0, 1, n * 4).view(n, 1, 2, 2)
    return DataLoader(TensorDataset(x, torch.ones(n, dtype=torch.long)), batch_size=batch_size)


def open_(**kwargs):
    return PureNoiseOversampling(class_counts=(100, 1), mean=[0.5], std=[0.25], seed=7, **kwargs)


def test_before_start_epoch_the_batch_is_bit_identical_and_no_mask(tmp_path):
    model = Recorder()
    trainer = cpu_trainer(tmp_path, max_epochs=2, limit_val_batches=0, callbacks=[open_(delta=1.0, start_epoch=1)])
    trainer.fit(model, loader())
    originals = [b[0] for b in loader()]
    for seen, original in zip(model.batches[:4], originals, strict=True):
        assert torch.equal(seen, original)
    assert model.masks[:4] == [None] * 4
    assert all(m is not None and any(m) for m in model.masks[4:])
    assert isinstance(model.net[1], DARBatchNorm2d)  # converted in setup
    assert trainer.callback_metrics["open/noise"] > 0


def test_default_start_is_the_deferred_resampling_switch_else_eighty_percent_of_the_horizon(tmp_path):
    dm = LongTailDataModule(**DIGITS)
    callback = PureNoiseOversampling()
    trainer = cpu_trainer(
        tmp_path, max_epochs=3, limit_train_batches=1, limit_val_batches=0, callbacks=[DeferredResampling(1), callback]
    )
    trainer.fit(LongTailClassifier(dm.class_counts, in_chans=1), datamodule=dm)
    assert callback.start_epoch == 1
    alone = PureNoiseOversampling()
    trainer = cpu_trainer(tmp_path, max_epochs=5, limit_train_batches=1, limit_val_batches=0, callbacks=[alone])
    trainer.fit(LongTailClassifier(dm.class_counts, in_chans=1), datamodule=dm)
    assert alone.start_epoch == 4


@pytest.mark.parametrize(
    ("make", "data"),
    [
        (lambda c: LongTailClassifier(c, in_chans=1), DIGITS),
        (lambda c: SAMClassifier(c, in_chans=1, rho=0.05), DIGITS),
        (lambda c: BBN(c, in_chans=1), {**DIGITS, "rebalancing_sampler": "reversed"}),
    ],
    ids=["ce", "sam", "bbn"],
)
def test_fast_dev_run_on_digits_with_every_kind_of_step(tmp_path, make, data, monkeypatch):
    routed = []  # the sizes of the noise parts the DAR-BN layers normalised by their own statistics
    original = _DARMixin._noise_forward
    monkeypatch.setattr(_DARMixin, "_noise_forward", lambda self, x: routed.append(len(x)) or original(self, x))
    dm = LongTailDataModule(**data)
    callback = PureNoiseOversampling(start_epoch=0, delta=1.0)
    trainer = L.Trainer(
        fast_dev_run=True,
        accelerator="cpu",
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    model = make(dm.class_counts)
    trainer.fit(model, datamodule=dm)
    streams = 2 if "rebalancing_sampler" in data else 1
    assert len(callback.noise_masks) == streams and all(m.any() for m in callback.noise_masks)  # BBN: both streams
    assert trainer.callback_metrics["open/noise"] == sum(int(m.sum()) for m in callback.noise_masks)
    assert has_dar_bn(model)
    assert set(routed) == {int(m.sum()) for m in callback.noise_masks}  # every stream's noise went through DAR-BN
    # The converted model's checkpoint serves an unconverted one (predict / test).
    trainer.save_checkpoint(tmp_path / "open.ckpt")
    plain = type(model).load_from_checkpoint(tmp_path / "open.ckpt")
    assert not has_dar_bn(plain)
    x = next(iter(dm.val_dataloader()))[0]
    model.eval(), plain.eval()
    assert torch.equal(model(x), plain(x))


# ---------------------------------------------------------------------------------------------------- DDP
@pytest.mark.ddp
def test_two_ranks_draw_different_masks_and_a_rerun_draws_the_same(tmp_path):
    runs = []
    for run in range(2):
        out = tmp_path / f"run{run}"
        out.mkdir()
        trainer = cpu_trainer(
            out, devices=2, strategy="ddp_spawn", limit_val_batches=0, callbacks=[open_(delta=0.5, start_epoch=0)]
        )
        trainer.fit(Recorder(str(out)), loader(n=64, batch_size=16))  # 32 per rank: 2 batches of 16, all class 1
        runs.append([json.loads((out / f"rank{r}.json").read_text()) for r in range(2)])
    assert runs[0] == runs[1]  # reproducible
    rank0, rank1 = runs[0]
    assert len(rank0) == 2 and all(len(m) == 16 for m in rank0)
    assert rank0 != rank1  # the same labels, different draws: the rank is in the seed


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delta": 1.5}, r"delta must be a number in \[0, 1\], got 1.5"),
        ({"delta": -0.1}, r"delta must be a number in \[0, 1\], got -0.1"),
        ({"start_epoch": -1}, "start_epoch must be None or an integer >= 0 .*, got -1"),
        ({"start_fraction": 0}, r"start_fraction must be in \(0, 1\], got 0"),
        ({"noise_space": "both"}, "noise_space must be one of .*, got 'both'"),
        ({"streams": "second"}, "streams must be one of"),
        ({"mean": [0.5]}, "give both mean and std"),
        ({"mean": [0.5], "std": [0.0]}, "std must be positive"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PureNoiseOversampling(**kwargs)


def test_a_model_without_batchnorm_or_data_without_statistics_fails_in_setup(tmp_path):
    class NoBN(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 2)

    with pytest.raises(ValueError, match="NoBN has no BatchNorm layer"):
        open_().setup(cpu_trainer(tmp_path), NoBN(), "fit")
    open_(dar_bn=False).setup(cpu_trainer(tmp_path), NoBN(), "fit")  # fine without DAR-BN
    callback = PureNoiseOversampling(class_counts=(2, 1))
    with pytest.raises(ValueError, match="needs the data's per-channel mean and std.*preprocessing=None"):
        callback.setup(cpu_trainer(tmp_path), Recorder(), "fit")


def test_probabilities_match_the_reference_formula_on_cifar10_lt():
    counts = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    expected = (1 - np.asarray(counts) / 5000) / 3
    np.testing.assert_allclose(noise_probabilities(counts, 1 / 3), expected)


def test_refuses_dbn_mix_and_open_sampling_routing(tmp_path):
    from lt_lightning.methods import DBNMix, OpenSampling

    dm = LongTailDataModule(**DIGITS, rebalancing_sampler="class_balanced")
    dbn = DBNMix(dm.class_counts, backbone="small_cnn", in_chans=1)
    with pytest.raises(TypeError, match="cannot be combined with DBN-Mix"):
        cpu_trainer(tmp_path, fast_dev_run=True, callbacks=[PureNoiseOversampling(start_epoch=0)]).fit(dbn, dm)
    aux = LongTailDataModule(**DIGITS, classes=list(range(7)), aux_dataset="digits")
    model = OpenSampling(aux.class_counts, backbone="small_cnn", in_chans=1)
    with pytest.raises(ValueError, match=r"dar_bn=True\) cannot route Open-Sampling"):
        cpu_trainer(tmp_path, fast_dev_run=True, callbacks=[PureNoiseOversampling(start_epoch=0)]).fit(model, aux)


def test_sam_second_pass_over_a_paired_batch_gets_the_first_streams_mask(tmp_path):
    """SAM forwards only the first stream of a paired batch, twice: DAR-BN must route both passes with its mask."""
    seen = []

    class Spy(SAMClassifier):
        def training_loss(self, batch):
            from lt_lightning.models import dar_bn

            routing = dar_bn._ROUTING.get()
            seen.append(None if routing is None else len(routing.streams))
            return super().training_loss(batch)

    dm = LongTailDataModule(**DIGITS, rebalancing_sampler="class_balanced")
    model = Spy(dm.class_counts, backbone="small_cnn", in_chans=1)
    cpu_trainer(tmp_path, fast_dev_run=True, callbacks=[PureNoiseOversampling(start_epoch=0)]).fit(model, dm)
    assert seen == [1, 1]  # two passes of one step, both routed with the first stream's mask only
