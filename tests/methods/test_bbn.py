"""BBN (METHODS.md §4): the official ResNet-32 split, the mixed logits and loss by hand, equal-weight inference,
the alpha schedule through fit and resume, the CLI, 2-process CPU DDP, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.paired import PairedDataset
from lt_lightning.methods import BBN
from lt_lightning.models import Backbone
from lt_lightning.models.cifar_resnet import BasicBlock, resnet32
from lt_lightning.schedules import bbn_alpha

COUNTS = (50, 20, 5)
QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def small_bbn(counts=COUNTS, **kwargs) -> BBN:
    torch.manual_seed(0)
    return BBN(counts, backbone="small_cnn", in_chans=1, backbone_kwargs={"width": 8}, **kwargs)


# ----------------------------------------------------------------- structure
def test_resnet32_split_is_the_official_cifar_network():
    model = BBN(tuple(range(100, 0, -10)), backbone="resnet32")  # 10 classes
    net = model.backbone
    assert len(net.layer3) == 5
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        # Trunk: stem, layer1, layer2 and the first 4 blocks of layer3 (BBN resnet_cifar.py:162, num_blocks[2]-1).
        by_hand = net.layer2(net.layer1(net.stem(x)))
        for block in list(net.layer3)[:4]:
            by_hand = block(by_hand)
        trunk = net.forward_trunk(x)
    assert trunk.shape == (2, 64, 8, 8) and torch.equal(trunk, by_hand)
    for branch in (net.last_block, model.rb_branch):  # cb_block and rb_block: BasicBlock 64 -> 64, stride 1
        assert isinstance(branch, BasicBlock)
        assert (branch.in_planes, branch.planes, branch.stride) == (64, 64, 1)
        assert isinstance(branch.shortcut, nn.Identity)
    assert net.last_block is net.layer3[4]
    assert isinstance(model.classifier, nn.Linear) and model.classifier.bias is not None
    assert (model.classifier.in_features, model.classifier.out_features) == (128, 10)
    assert sum(p.numel() for p in net.head.parameters()) == 0  # the backbone's own head is gone

    n_params = sum(p.numel() for p in model.parameters())
    resnet32_features = 464154 - (64 * 10 + 10)  # resnet32(10 classes) without its Linear(64, 10)
    basic_block = 2 * (64 * 64 * 9) + 2 * (2 * 64)  # two bias-free 3x3 convs + two BatchNorms (weight, bias)
    assert sum(p.numel() for p in resnet32(num_classes=10).parameters()) == 464154
    assert n_params == resnet32_features + basic_block + (128 * 10 + 10) == 538778


def test_rebalancing_branch_shares_no_parameters_with_the_backbone():
    model = BBN(COUNTS, backbone="resnet32", in_chans=1)
    backbone_ptrs = {p.data_ptr() for p in model.backbone.parameters()}
    branch_params = list(model.rb_branch.parameters())
    assert branch_params and not backbone_ptrs & {p.data_ptr() for p in branch_params}
    assert not any(p is q for p in branch_params for q in model.backbone.parameters())
    # A fresh initialisation, not a copy of the conventional branch.
    assert not torch.equal(model.rb_branch.conv1.weight, model.backbone.last_block.conv1.weight)
    with torch.no_grad():
        model.rb_branch.conv1.weight.add_(1.0)
    assert not torch.equal(model.rb_branch.conv1.weight, model.backbone.last_block.conv1.weight)


# ----------------------------------------------------------------- the maths, by hand
def features_by_hand(model: BBN, x: torch.Tensor, branch: nn.Module) -> torch.Tensor:
    return model.backbone.forward_pool(branch(model.backbone.forward_trunk(x)))


def test_mixed_logits_equal_the_official_formula():
    model = small_bbn().eval()
    g = torch.Generator().manual_seed(1)
    x_c, x_r = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    alpha = 0.7
    with torch.no_grad():
        f_c = features_by_hand(model, x_c, model.backbone.last_block)
        f_r = features_by_hand(model, x_r, model.rb_branch)
        assert f_c.shape == f_r.shape == (4, 16)
        W, b = model.classifier.weight, model.classifier.bias
        z = (2 * torch.cat([alpha * f_c, (1 - alpha) * f_r], 1)) @ W.T + b
        torch.testing.assert_close(model.mixed_logits(x_c, x_r, alpha), z)
        # Same thing split per branch: 2 alpha W_c f_c + 2 (1 - alpha) W_r f_r + b, one shared bias.
        W_c, W_r = W[:, :16], W[:, 16:]
        torch.testing.assert_close(z, 2 * alpha * f_c @ W_c.T + 2 * (1 - alpha) * f_r @ W_r.T + b)
        # alpha = 1: the re-balancing image does not matter; alpha = 0: the conventional one does not.
        other = torch.randn(4, 1, 8, 8, generator=g)
        torch.testing.assert_close(model.mixed_logits(x_c, x_r, 1.0), model.mixed_logits(x_c, other, 1.0))
        torch.testing.assert_close(model.mixed_logits(x_c, x_r, 0.0), model.mixed_logits(other, x_r, 0.0))


def test_inference_weights_both_branches_equally():
    model = small_bbn().eval()
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        f_c = features_by_hand(model, x, model.backbone.last_block)
        f_r = features_by_hand(model, x, model.rb_branch)
        expected = model.classifier(torch.cat([f_c, f_r], 1))
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model.predict_logits(x), expected)
        torch.testing.assert_close(model.mixed_logits(x, x, alpha=0.5), expected)  # 2 * 0.5 = 1
        assert not torch.allclose(model.mixed_logits(x, x, alpha=0.9), expected)


def attach_trainer(model: BBN, max_epochs: int, epoch: int) -> L.Trainer:
    trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False, **QUIET)
    model.trainer = trainer
    trainer.fit_loop.epoch_progress.current.completed = epoch  # what trainer.current_epoch reads
    assert model.current_epoch == epoch
    return trainer


@pytest.mark.parametrize(("alpha_form", "expected_alpha"), [("code", 1 - (99 / 200) ** 2), ("paper", 0.75)])
def test_training_loss_is_the_alpha_weighted_sum_of_two_ce(alpha_form, expected_alpha):
    model = small_bbn(alpha_form=alpha_form).eval()
    attach_trainer(model, max_epochs=200, epoch=99)  # T = 100 (1-indexed)
    assert model.alpha() == pytest.approx(expected_alpha)
    g = torch.Generator().manual_seed(3)
    x_c, x_r = torch.randn(6, 1, 8, 8, generator=g), torch.randn(6, 1, 8, 8, generator=g)
    y_c, y_r = torch.tensor([0, 0, 0, 1, 1, 2]), torch.tensor([2, 2, 1, 1, 0, 2])
    loss, logits, target = model.training_loss((x_c, y_c, x_r, y_r))
    with torch.no_grad():
        f_c = features_by_hand(model, x_c, model.backbone.last_block)
        f_r = features_by_hand(model, x_r, model.rb_branch)
        a = expected_alpha
        z = model.classifier(2 * torch.cat([a * f_c, (1 - a) * f_r], 1))
        expected = a * F.cross_entropy(z, y_c) + (1 - a) * F.cross_entropy(z, y_r)
    torch.testing.assert_close(logits.detach(), z)
    torch.testing.assert_close(loss.detach(), expected)
    assert target is y_c  # training accuracy is measured against the conventional labels
    # Every parameter gets a gradient from one step (nothing unused: what DDP needs without find_unused).
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------- bad input
class Unsplittable(Backbone):
    def __init__(self, num_classes: int, in_chans: int):
        super().__init__()
        self.num_features, self.num_classes = 4, num_classes
        self.body = nn.Sequential(nn.Conv2d(in_chans, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, num_classes)

    def forward_features(self, x):
        return self.body(x)


def test_backbone_without_split_is_a_type_error(monkeypatch):
    def create(name, num_classes, in_chans, head, **kwargs):
        return Unsplittable(num_classes, in_chans)

    monkeypatch.setattr("lt_lightning.methods.base.create_backbone", create)
    with pytest.raises(TypeError, match="forward_trunk / last_block / make_branch") as info:
        BBN(COUNTS, backbone="my_net", in_chans=1)
    assert "'my_net'" in str(info.value) and "Unsplittable" in str(info.value)


def test_unknown_alpha_form_is_rejected():
    with pytest.raises(ValueError, match=r"alpha_form must be one of \['code', 'paper'\], got 'nope'"):
        small_bbn(alpha_form="nope")


# A tiny split of the embedded digits: 118 images, counts 30 ... 3.
TINY_DIGITS = {"dataset": "digits", "imbalance_ratio": 10, "head_size": 30, "batch_size": 16}


@pytest.fixture(scope="module")
def digits():
    return LongTailDataModule(**TINY_DIGITS, rebalancing_sampler="reversed")


@pytest.mark.parametrize("max_epochs", [1, -1])
def test_max_epochs_below_two_fails_at_fit(digits, tmp_path, max_epochs):
    trainer = L.Trainer(max_epochs=max_epochs, default_root_dir=tmp_path, logger=False, **QUIET)
    with pytest.raises(ValueError, match=f"needs max_epochs >= 2, got {max_epochs}"):
        trainer.fit(small_bbn(digits.class_counts), datamodule=digits)


def test_datamodule_without_the_reversed_stream_fails_at_fit(tmp_path):
    dm = LongTailDataModule(**TINY_DIGITS)
    trainer = L.Trainer(max_epochs=2, default_root_dir=tmp_path, logger=False, **QUIET)
    # At setup, before any batch is drawn (the batch check would also name rebalancing_sampler).
    with pytest.raises(ValueError, match="BBN needs the re-balancing stream: set the datamodule's rebalancing_sampler"):
        trainer.fit(small_bbn(dm.class_counts), datamodule=dm)


def test_plain_batches_from_a_foreign_loader_are_rejected(tmp_path):
    model = small_bbn()
    with pytest.raises(ValueError, match=r"\(x_c, y_c, x_r, y_r\) from two samplers, got a batch of 2 elements"):
        model.training_loss((torch.zeros(2, 1, 8, 8), torch.tensor([0, 1])))
    with pytest.raises(ValueError, match=r"\(x_c, y_c, x_r, y_r\).*got a batch of dict"):
        model.training_loss({"x": torch.zeros(2, 1, 8, 8)})
    loader = DataLoader(TensorDataset(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])), batch_size=2)
    trainer = L.Trainer(max_epochs=2, default_root_dir=tmp_path, logger=False, **QUIET)
    with pytest.raises(ValueError, match=r"\(x_c, y_c, x_r, y_r\)"):
        trainer.fit(model, train_dataloaders=loader)


# ----------------------------------------------------------------- training: alpha per epoch, resume, CLI
def logged_alpha(metrics_csv: Path) -> dict[int, float]:
    with metrics_csv.open() as f:
        return {int(row["epoch"]): float(row["bbn/alpha"]) for row in csv.DictReader(f) if row.get("bbn/alpha")}


def test_alpha_is_logged_per_epoch_and_resume_keeps_the_schedule(digits, tmp_path):
    limits = {"limit_train_batches": 2, "limit_val_batches": 1, "num_sanity_val_steps": 0, **QUIET}
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    first = L.Trainer(
        max_epochs=3, default_root_dir=tmp_path, logger=CSVLogger(tmp_path, name="a"), callbacks=[checkpoints], **limits
    )
    first.fit(small_bbn(digits.class_counts), datamodule=digits)
    alphas = logged_alpha(Path(first.logger.log_dir) / "metrics.csv")
    assert alphas == pytest.approx({0: 1.0, 1: 1 - (1 / 3) ** 2, 2: 1 - (2 / 3) ** 2})
    assert alphas == pytest.approx({e: bbn_alpha(e, 3) for e in range(3)})
    assert first.callback_metrics["bbn/alpha"] == pytest.approx(bbn_alpha(2, 3))
    restored = BBN.load_from_checkpoint(tmp_path / "ckpt" / "epoch=2.ckpt")
    assert restored.hparams.alpha_form == "code" and restored.class_counts == digits.class_counts
    for name, value in first.lightning_module.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value), name

    resumed = L.Trainer(max_epochs=4, default_root_dir=tmp_path, logger=CSVLogger(tmp_path, name="b"), **limits)
    with pytest.warns(UserWarning, match=r"resumed with max_epochs=4 .* resolved for 3 epochs: keeping 3"):
        resumed.fit(small_bbn(digits.class_counts), datamodule=digits, ckpt_path=tmp_path / "ckpt" / "epoch=1.ckpt")
    alphas = logged_alpha(Path(resumed.logger.log_dir) / "metrics.csv")
    # Epochs 0 and 1 were done; the resumed run keeps the checkpoint's horizon (3 epochs, as the LR schedule does):
    # alpha of epoch 2 as before, and epoch 3, past the horizon, keeps alpha's final value.
    assert alphas == pytest.approx({2: bbn_alpha(2, 3), 3: bbn_alpha(2, 3)})
    assert alphas == pytest.approx({2: 1 - (2 / 3) ** 2, 3: 1 - (2 / 3) ** 2})


def test_cli_fit_on_the_digits_default(tmp_path):
    # Imported here: the ddp_spawn workers import this module, and the CLI stack would slow their start.
    from lt_lightning.cli import build_cli

    common = [
        "fit",
        "--model=BBN",
        "--model.init_args.backbone=small_cnn",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=2",
    ]
    csv_logger = ["--trainer.logger=CSVLogger", f"--trainer.logger.init_args.save_dir={tmp_path}"]
    cli = build_cli([*common, *csv_logger, "--data.init_args.rebalancing_sampler=reversed", "--trainer.max_epochs=2"])
    assert isinstance(cli.model, BBN) and cli.trainer.state.finished
    assert cli.model.class_counts == cli.datamodule.class_counts  # linked from the datamodule
    metrics = cli.trainer.callback_metrics
    assert metrics["bbn/alpha"] == pytest.approx(bbn_alpha(1, 2)) == 0.75
    assert logged_alpha(Path(cli.trainer.log_dir) / "metrics.csv") == pytest.approx({0: 1.0, 1: 0.75})
    assert 0.0 <= metrics["val/balanced_acc"] <= 1.0 and torch.isfinite(metrics["train/loss_epoch"])

    with pytest.raises(ValueError, match="re-balancing stream: set the datamodule's rebalancing_sampler='reversed'"):
        build_cli([*common, "--trainer.max_epochs=2"])


# ----------------------------------------------------------------- DDP (2 CPU processes, gloo)
class IndexedPairs(PairedDataset):
    """``(x_i, y_i, x_j, y_j, i, j)``: BBN reads the first four, the recorder the indices."""

    def __getitem__(self, pair):
        return (*super().__getitem__(pair), pair[0], pair[1])


class IndexedDigits(LongTailDataModule):
    def train_dataloader(self):
        loader = super().train_dataloader()
        return DataLoader(IndexedPairs(self.train_set), batch_size=self.batch_size, sampler=loader.sampler)


class PairRecorder(Callback):
    """Writes each rank's ``(i, j)`` pairs per epoch to a file (attributes set in spawned workers are lost)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.pairs: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.pairs.extend(zip(batch[4].tolist(), batch[5].tolist(), strict=True))

    def on_train_epoch_end(self, trainer, pl_module):
        path = Path(self.out_dir) / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.json"
        path.write_text(json.dumps(self.pairs))
        self.pairs = []


@pytest.mark.ddp
def test_two_cpu_ranks_train_and_shard_the_pairs(tmp_path):
    dm = IndexedDigits(**TINY_DIGITS, rebalancing_sampler="reversed")  # 118 pairs: 4 steps of <= 16 per rank
    model = small_bbn(dm.class_counts)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        callbacks=[PairRecorder(str(tmp_path))],
        **QUIET,
    )
    trainer.fit(model, datamodule=dm)  # DDP without find_unused_parameters: an unused parameter would fail here
    assert trainer.state.finished
    assert trainer.callback_metrics["bbn/alpha"] == pytest.approx(bbn_alpha(1, 2))
    # Weights come back from rank 0: both branches and the shared classifier were trained.
    after = model.state_dict()
    for name in ("rb_branch.0.weight", "backbone.blocks.4.0.weight", "classifier.weight", "classifier.bias"):
        assert not torch.equal(before[name], after[name]), name

    reference = dm.train_dataloader().sampler
    draws = []
    for epoch in range(2):
        shards = [[tuple(p) for p in json.loads((tmp_path / f"rank{r}_epoch{epoch}.json").read_text())] for r in (0, 1)]
        reference.set_epoch(epoch)
        expected = list(reference)
        assert len(shards[0]) == len(shards[1]) == len(expected) // 2 == 59  # no padding
        assert sorted(shards[0] + shards[1]) == sorted(expected)
        draws.append(sorted(expected))
    assert draws[0] != draws[1]  # a new epoch redraws on both ranks alike
