"""``LongTailDataModule(data_on_device=True)``: same indices as the loader path, equal-in-distribution batched
augmentation, identical evaluation tensors, DDP shards, resume, the memory check, the fallbacks and the CLI.

Everything runs on the CPU (the device path is written for CUDA; on the CPU the "device" copy is a host tensor and
the free-memory check is skipped unless the query is patched). The DDP test runs both paths inside ONE ``ddp_spawn``
fit (a combined loader of the index loader and the image loader), so each rank compares its own shards directly.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torchvision.transforms import v2

from lt_lightning.callbacks import DeferredResampling
from lt_lightning.data import device_data
from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.device_augment import batched_recipe, random_crop_flip
from lt_lightning.data.device_data import IndexBatch
from lt_lightning.data.samplers import SAMPLERS
from lt_lightning.data.transforms import default_transforms
from tests.data.fake_data import write_cifar10, write_imagefolder
from tests.helpers import cpu_trainer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _pair(**kwargs) -> tuple[LongTailDataModule, LongTailDataModule]:
    return LongTailDataModule(**kwargs), LongTailDataModule(data_on_device=True, **kwargs)


def _epoch_batches(dm: LongTailDataModule, epoch: int) -> list[list[torch.Tensor]]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return [dm.on_after_batch_transfer(batch, 0) for batch in loader]


def _assert_same_batches(reference, device) -> None:
    assert len(reference) == len(device)
    for ref, dev in zip(reference, device, strict=True):
        assert len(ref) == len(dev)
        for a, b in zip(ref, dev, strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- same indices
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("seed", [0, 3])
def test_same_batches_as_the_loader_path_for_every_sampler(sampler, seed):
    """digits has no augmentation, so equal images and labels per batch mean equal indices, over 2 epochs."""
    common = dict(dataset="digits", sampler=sampler, sampler_seed=seed, batch_size=100, samples_per_class=3)
    reference, device = _pair(**common)
    assert isinstance(next(iter(device.train_dataloader())), IndexBatch)
    for epoch in (0, 1):
        _assert_same_batches(_epoch_batches(reference, epoch), _epoch_batches(device, epoch))


@pytest.mark.parametrize("sampler", ["instance", "class_aware_cycle", "progressive"])
def test_same_paired_bbn_streams(sampler):
    common = dict(dataset="digits", sampler=sampler, rebalancing_sampler="reversed", batch_size=128, drop_last=True)
    reference, device = _pair(**common)
    for epoch in (0, 1):
        ref, dev = _epoch_batches(reference, epoch), _epoch_batches(device, epoch)
        assert all(len(b) == 4 for b in dev)
        _assert_same_batches(ref, dev)


class LabelRecorder(L.LightningModule):
    """Records every training batch's labels and image sums per epoch; with ``out_dir`` (DDP) it also compares the
    ``device`` and ``loader`` halves of a combined batch and writes ``rank{r}.json``. Module-level: picklable."""

    def __init__(self, out_dir: str | None = None, in_features: int = 64):
        super().__init__()
        self.out_dir = out_dir
        self.layer = nn.Linear(in_features, 10)
        self.labels: dict[int, list[int]] = defaultdict(list)
        self.report = {"batches": 0, "equal": 0, "labels": defaultdict(list)}

    def training_step(self, batch, batch_idx):
        if isinstance(batch, dict):  # the DDP test: both paths in one batch
            dev, ref = batch["device"], batch["loader"]
            self.report["batches"] += 1
            self.report["equal"] += int(all(torch.equal(a, b) for a, b in zip(dev, ref, strict=True)))
            self.report["labels"][self.current_epoch] += dev[1].tolist() + dev[3].tolist()
            batch = dev
        x, y = batch[0], batch[1]
        self.labels[self.current_epoch].extend(y.tolist())
        return nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

    def on_train_end(self):
        if self.out_dir is not None:
            (Path(self.out_dir) / f"rank{self.global_rank}.json").write_text(json.dumps(self.report))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_drs_switch_reaches_the_device_path(tmp_path):
    """DeferredResampling swaps the sampler inside the index loader exactly as inside the image loader."""
    runs = []
    for on_device in (False, True):
        module = LabelRecorder()
        dm = LongTailDataModule("digits", batch_size=64, data_on_device=on_device)
        cpu_trainer(tmp_path, max_epochs=2, callbacks=[DeferredResampling(start_epoch=1)], limit_val_batches=0).fit(
            module, datamodule=dm
        )
        runs.append(dict(module.labels))
    assert runs[0] == runs[1]
    assert np.bincount(runs[1][1], minlength=10).min() > 30  # balanced after the switch (the tail has 13 images)


# ---------------------------------------------------------------------------------------------- augmentation
def test_crop_offsets_and_flip_rate_match_random_crop_and_flip():
    """1e5 draws of padding 4 on a 16x16 image whose pixel value encodes its position (16 * row + col): the centre
    pixels are never padding, so they reveal (top, left) and the flip. Every one of the 9 x 9 offsets within 3 sigma
    of 1/81, the flip rate within 3 sigma of 0.5, and each output pixel equals torchvision's crop of that draw."""
    image = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    generator = torch.Generator().manual_seed(0)
    n, chunk = 100_000, 20_000
    counts, flips = torch.zeros(9, 9, dtype=torch.long), 0
    for _ in range(n // chunk):
        out = random_crop_flip(image.expand(chunk, -1, -1, -1), 4, generator)
        a, b = out[:, 0, 8, 7].long(), out[:, 0, 8, 8].long()
        flipped = (b % 16) < (a % 16)
        top, left = b // 16 - 4, torch.maximum(a % 16, b % 16) - 4
        counts += torch.bincount(top * 9 + left, minlength=81).view(9, 9)
        flips += int(flipped.sum())
        # the whole output of the first draws equals torchvision's pad + crop (+ flip) with the decoded parameters
        padded = v2.functional.pad(image[0], [4, 4, 4, 4])
        for k in range(3):
            expected = v2.functional.crop(padded, int(top[k]), int(left[k]), 16, 16)
            expected = v2.functional.horizontal_flip(expected) if flipped[k] else expected
            assert torch.equal(out[k], expected)
    p = 1 / 81
    sigma = (n * p * (1 - p)) ** 0.5
    assert (counts - n * p).abs().max() < 3 * sigma, counts
    assert abs(flips - n / 2) < 3 * (n / 4) ** 0.5


def test_batched_cifar_augmentation_has_the_per_sample_pixel_means():
    """The default CIFAR train transform per sample (torchvision) vs its batched recipe: per-pixel means over 2000
    draws of each of 2 images agree within 5 standard errors, and the mean squared z-score is about 1."""
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    train, _ = default_transforms("cifar10", mean, std, None)
    recipe = batched_recipe(train)
    assert recipe.crop == ((32, 32), 4) and recipe.flip_p == 0.5 and recipe.mean == list(mean)
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    draws = 2000
    torch.manual_seed(0)
    per_sample = torch.stack([torch.stack([train(img) for _ in range(draws)]) for img in images], 1)
    batched = recipe(images.repeat(draws, 1, 1, 1), torch.Generator().manual_seed(0)).view(draws, 2, 3, 32, 32)
    se = ((per_sample.var(0) + batched.var(0)) / draws).sqrt().clamp_min(1e-6)
    z = (per_sample.mean(0) - batched.mean(0)) / se
    assert z.abs().max() < 5, z.abs().max()
    assert 0.7 < (z**2).mean() < 1.3, (z**2).mean()


# ---------------------------------------------------------------------------------------------- evaluation
@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root, n_per_class=12, n_test_per_class=3)
    return root


@pytest.mark.parametrize("case", ["cifar10", "digits_resized", "digits_val"])
def test_eval_batches_equal_the_loader_path(case, cifar_root):
    kwargs = {
        "cifar10": dict(dataset="cifar10", root=cifar_root, imbalance_ratio=2),
        "digits_resized": dict(dataset="digits", image_size=12),  # a Resize prepared once on the host
        "digits_val": dict(dataset="digits", val_per_class=3),
    }[case]
    reference, device = _pair(eval_batch_size=16, **kwargs)
    for name in ("val_dataloader", "test_dataloader", "predict_dataloader"):
        ref = list(getattr(reference, name)())
        dev = [device.on_after_batch_transfer(b, 0) for b in getattr(device, name)()]
        assert len(ref) == len(dev)
        for (x_ref, y_ref), (x_dev, y_dev) in zip(ref, dev, strict=True):
            torch.testing.assert_close(x_dev, x_ref, rtol=1e-6, atol=1e-6)
            assert torch.equal(y_dev, y_ref)


# ---------------------------------------------------------------------------------------------- DDP
class BothPaths(LongTailDataModule):
    """Training batches of both paths at once: ``{"device": [x, y, x_r, y_r], "loader": [x, y, x_r, y_r]}``.
    Lightning wraps both samplers for DDP in the same way, so each rank can compare its two shards."""

    def __init__(self, **kwargs):
        super().__init__(data_on_device=True, **kwargs)
        self.twin = LongTailDataModule(**kwargs)

    def train_dataloader(self):
        self.twin.trainer = self.trainer  # the twin shards its sampler for this trainer's ranks too
        return {"device": super().train_dataloader(), "loader": self.twin.train_dataloader()}

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if isinstance(batch, dict):
            return {key: super(BothPaths, self).on_after_batch_transfer(b, dataloader_idx) for key, b in batch.items()}
        return super().on_after_batch_transfer(batch, dataloader_idx)


@pytest.mark.ddp
def test_ddp_shards_equal_the_loader_paths(tmp_path):
    common = dict(sampler="class_balanced", rebalancing_sampler="reversed", val_per_class=4, batch_size=50)
    dm = BothPaths(dataset="digits", **common)
    trainer = cpu_trainer(
        tmp_path, devices=2, strategy="ddp_spawn", max_epochs=2, num_sanity_val_steps=0, limit_val_batches=0
    )
    trainer.fit(LabelRecorder(str(tmp_path)), datamodule=dm)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for report in reports:
        assert report["batches"] == 2 * 6 and report["equal"] == report["batches"]  # 264 per rank: 6 batches of 50
    for epoch in ("0", "1"):
        shards = [r["labels"][epoch] for r in reports]
        assert len(shards[0]) == len(shards[1]) == 2 * 264  # two streams of 527 draws, padded to 528
    assert reports[0]["labels"]["0"] != reports[1]["labels"]["0"]


# ---------------------------------------------------------------------------------------------- resume
def _fit_cifar(tmp_path: Path, root: Path, ckpt_path=None, checkpoint_dir=None):
    L.seed_everything(0)
    dm = LongTailDataModule("cifar10", root=str(root), imbalance_ratio=2, batch_size=32, data_on_device=True)
    module = LabelRecorder(in_features=3 * 32 * 32)
    callbacks = []
    if checkpoint_dir is not None:
        callbacks.append(ModelCheckpoint(dirpath=checkpoint_dir, filename="{epoch}", save_top_k=-1))
    trainer = cpu_trainer(
        tmp_path, max_epochs=2, callbacks=callbacks, enable_checkpointing=bool(callbacks), limit_val_batches=0
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    return module


def test_resume_continues_identically(tmp_path, cifar_root, monkeypatch):
    """Augmentation draws are seeded per epoch and rank (from PL_GLOBAL_SEED), so resuming from the end of epoch 0
    gives epoch 1 the same indices, the same crops and flips and therefore the same final weights."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # restored afterwards; seed_everything sets it
    full = _fit_cifar(tmp_path / "a", cifar_root, checkpoint_dir=tmp_path / "ckpt")
    resumed = _fit_cifar(tmp_path / "b", cifar_root, ckpt_path=tmp_path / "ckpt" / "epoch=0.ckpt")
    assert sorted(resumed.labels) == [1] and resumed.labels[1] == full.labels[1]
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------- memory, fallbacks
def test_a_split_too_large_for_the_device_gets_a_clear_message(monkeypatch):
    dm = LongTailDataModule("digits", data_on_device=True)
    monkeypatch.setattr(device_data, "free_device_memory", lambda device: 20_000)
    with pytest.raises(MemoryError, match=r"the 'digits' train split|the digits train split") as err:
        dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    message = str(err.value)
    assert "0.0 MB as uint8" in message and "0.0 MB free" in message and "data_on_device=False" in message
    assert "\n" not in message


def _one_warning(recwarn, match: str) -> str:
    texts = [str(w.message) for w in recwarn if "data_on_device" in str(w.message)]
    assert len(texts) == 1, texts
    assert match in texts[0], texts[0]
    return texts[0]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        (dict(nuisance="rotation", nuisance_mode="oracle"), "nuisance_mode='oracle'"),
        (dict(train_transform=v2.Compose([v2.RandomRotation(10), v2.ToDtype(torch.float32, scale=True)])), "Rotat"),
        (dict(aux_dataset="gaussian", aux_size=32), "aux_dataset='gaussian'"),
    ],
)
def test_unbatchable_training_falls_back_with_one_warning(recwarn, kwargs, reason):
    dm = LongTailDataModule("digits", data_on_device=True, batch_size=32, **kwargs)
    assert "val/test batches stay on the device" in _one_warning(recwarn, reason)
    train = next(iter(dm.train_dataloader()))
    assert not isinstance(train, IndexBatch) and train[0].dtype == torch.float32
    assert dm.on_after_batch_transfer(train, 0) is train  # passes through
    assert isinstance(next(iter(dm.test_dataloader())), IndexBatch)  # evaluation stays on the device


def test_an_unbatchable_eval_transform_keeps_evaluation_on_the_loader_path(recwarn):
    blur = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.GaussianBlur(3)])
    dm = LongTailDataModule("digits", data_on_device=True, eval_transform=blur)
    text = _one_warning(recwarn, "evaluation batches (its eval_transform: GaussianBlur after ToDtype")
    assert "training batches stay on the device" in text
    assert isinstance(next(iter(dm.train_dataloader())), IndexBatch)
    assert not isinstance(next(iter(dm.val_dataloader())), IndexBatch)


def test_a_batchable_user_transform_stays_on_the_device(recwarn):
    transform = v2.Compose([v2.RandomCrop(8, padding=2), v2.ToDtype(torch.float32, scale=True)])
    dm = LongTailDataModule("digits", data_on_device=True, train_transform=transform)
    assert not [w for w in recwarn if "data_on_device" in str(w.message)]
    x, _ = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32


def test_file_backed_datasets_are_refused(tmp_path):
    write_imagefolder(tmp_path / "folder", n_per_class=3)
    with pytest.raises(ValueError, match=r"data_on_device=True needs an in-memory dataset.*'imagefolder'"):
        LongTailDataModule("imagefolder", root=tmp_path / "folder", data_on_device=True)
    with pytest.raises(TypeError, match="data_on_device must be a bool"):
        LongTailDataModule("digits", data_on_device="yes")


# ---------------------------------------------------------------------------------------------- CLI
# Every in-memory preset runs through the CLI with data_on_device in tests/test_cli.py
# (test_preset_fast_dev_run_with_data_on_device: four in the default run, all of them in the slow suite).


def test_posthoc_auto_tau_reads_the_device_validation_split(tmp_path):
    """TauNormalization(tau="auto") iterates the validation loader itself: through the transfer hooks it sees the same
    images on both paths, so it picks the same tau and reports the same test metrics."""
    from lt_lightning.callbacks import TauNormalization
    from lt_lightning.methods import LongTailClassifier

    reference, device = _pair(dataset="digits", val_per_class=5, batch_size=64, eval_batch_size=200)
    model = LongTailClassifier(reference.class_counts, in_chans=1)
    cpu_trainer(tmp_path, max_epochs=1, limit_val_batches=0).fit(model, datamodule=device)
    results = []
    for dm in (reference, device):
        callback = TauNormalization(tau="auto")
        metrics = cpu_trainer(tmp_path / str(len(results)), callbacks=[callback]).test(model, datamodule=dm)[0]
        results.append((callback.best_tau, metrics))
    assert results[0][0] == results[1][0]
    assert results[0][1] == pytest.approx(results[1][1], abs=1e-6)


def test_evaluation_batches_default_large_on_the_device():
    """Without ``eval_batch_size``, the device path evaluates in batches of max(batch_size, 1024); given, it wins;
    the loader path keeps the training batch size."""
    assert LongTailDataModule("digits", batch_size=64, data_on_device=True).eval_batch_size == 1024
    assert LongTailDataModule("digits", batch_size=2048, data_on_device=True).eval_batch_size == 2048
    assert LongTailDataModule("digits", batch_size=64, eval_batch_size=10, data_on_device=True).eval_batch_size == 10
    assert LongTailDataModule("digits", batch_size=64).eval_batch_size == 64


def test_pinned_index_batches_move_without_blocking():
    """Lightning passes ``non_blocking`` only to tensors; an IndexBatch of pinned indices (CUDA runs) asks for it
    itself, an unpinned one (CPU) does not."""

    class Indices:
        def __init__(self, pinned):
            self.pinned, self.calls = pinned, []

        def is_pinned(self):
            return self.pinned

        def to(self, *args, **kwargs):
            self.calls.append(kwargs)
            return self

    pinned, plain = Indices(True), Indices(False)
    IndexBatch(pinned, "train").to("cuda:0")
    IndexBatch(plain, "train").to("cpu")
    assert pinned.calls == [{"non_blocking": True}] and plain.calls == [{}]


def test_recipe_keeps_its_normalisation_on_the_device_and_out_of_pickles():
    import pickle

    recipe = batched_recipe(default_transforms("cifar10", (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), None)[1])
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    first = recipe(images)
    (mean, std) = recipe._on_device["cpu"]
    assert torch.equal(recipe(images), first) and recipe._on_device["cpu"][0] is mean
    assert pickle.loads(pickle.dumps(recipe))._on_device == {}


class OwnTransferHook(L.LightningModule):
    """A user's module with its own on_after_batch_transfer (Lightning then never calls the datamodule's)."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(64, 10)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        return batch

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0].flatten(1)).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_module_with_its_own_transfer_hook_is_refused_in_one_line(tmp_path):
    dm = LongTailDataModule("digits", data_on_device=True)
    with pytest.raises(ValueError, match=r"data_on_device=True: OwnTransferHook overrides on_after_batch_transfer"):
        cpu_trainer(tmp_path, max_epochs=1).fit(OwnTransferHook(), datamodule=dm)
