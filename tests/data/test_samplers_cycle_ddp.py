"""``class_aware_cycle`` under real 2-process CPU DDP (gloo, ``ddp_spawn``): the shards that reach each rank's
DataLoader are the strides ``global[r::2]`` of the one single-process draw of the same seed and epoch, for two
epochs, and every aligned window of ``C * k`` draws of that global list holds each class exactly ``k`` times.

The same run carries a :class:`~lt_lightning.callbacks.ScaleLearningRate`, which must see world size 2."""

import json
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from torch import nn

from lt_lightning.callbacks import ScaleLearningRate
from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.samplers import ClassAwareCycleSampler
from tests.helpers import cpu_trainer

K, BATCH = 2, 32


class ShardRecorder(L.LightningModule):
    """Writes, per rank and epoch, the index shard of the loader's sampler, the labels of the batches that arrived
    and the learning rate in force (ddp_spawn workers hand nothing else back). Module-level: picklable."""

    def __init__(self, out_dir: str):
        super().__init__()
        self.out_dir = out_dir
        self.layer = nn.Linear(64, 10)
        self.record: dict = {}

    def on_train_epoch_start(self):
        sampler = self.trainer.train_dataloader.sampler  # set_epoch already called by the fit loop
        self.record = {
            "wrapper": type(sampler).__name__,
            "inner": type(getattr(sampler.dataset, "_sampler", None)).__name__,
            "shard": [int(i) for i in sampler],
            "labels": [],
            "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
        }

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        self.record["labels"].extend(y.tolist())
        return nn.functional.cross_entropy(self.layer(x.flatten(1)), y)

    def on_train_epoch_end(self):
        path = Path(self.out_dir) / f"rank{self.global_rank}_epoch{self.current_epoch}.json"
        path.write_text(json.dumps(self.record))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def cycle_dm() -> LongTailDataModule:
    return LongTailDataModule("digits", sampler="class_aware_cycle", samples_per_class=K, batch_size=BATCH)


@pytest.mark.ddp
def test_rank_shards_interleave_to_the_single_process_draw(tmp_path):
    lr_scaling = ScaleLearningRate(reference_batch_size=256)
    trainer = cpu_trainer(
        tmp_path, devices=2, strategy="ddp_spawn", max_epochs=2, limit_val_batches=0, num_sanity_val_steps=0
    )
    trainer.callbacks.append(lr_scaling)  # cpu_trainer's callbacks: none but Lightning's own
    trainer.fit(ShardRecorder(str(tmp_path)), datamodule=cycle_dm())

    dm = cycle_dm()
    targets, world, num_classes = dm.train_targets, 2, dm.num_classes
    reference = dm.build_sampler()
    assert type(reference) is ClassAwareCycleSampler and len(reference) == 544  # even: no DDP padding
    for epoch in range(2):
        records = [json.loads((tmp_path / f"rank{r}_epoch{epoch}.json").read_text()) for r in range(world)]
        reference.set_epoch(epoch)
        expected = np.asarray(list(reference))
        merged = np.empty(len(expected), dtype=np.int64)
        for rank, record in enumerate(records):
            assert record["wrapper"] == DistributedSamplerWrapper.__name__
            assert record["inner"] == ClassAwareCycleSampler.__name__
            assert len(record["shard"]) == len(expected) // world
            # The batches that arrived are those indices, in that order.
            assert record["labels"] == targets[record["shard"]].tolist()
            merged[rank::world] = record["shard"]
        assert merged.tolist() == expected.tolist()
        # Every aligned window of C * k draws of the global list holds each class exactly k times.
        window = num_classes * K
        full = len(expected) // window  # 544 = 27 * 20 + 4
        for labels in targets[expected[: full * window]].reshape(full, window):
            assert np.bincount(labels, minlength=num_classes).tolist() == [K] * num_classes
    first = [json.loads((tmp_path / f"rank0_epoch{e}.json").read_text())["shard"] for e in range(2)]
    assert first[0] != first[1]  # a new draw each epoch

    # ScaleLearningRate in the workers saw world size 2: 32 x 2 x 1 = 64 vs 256 -> lr 0.1 x 0.25 on both ranks.
    for epoch in range(2):
        for rank in range(world):
            lr = json.loads((tmp_path / f"rank{rank}_epoch{epoch}.json").read_text())["lr"]
            assert lr == pytest.approx(0.025, rel=1e-12)


@pytest.mark.parametrize("rank", [0, 1])
def test_datamodule_installs_an_unshuffled_wrapper_only_under_ddp(rank):
    """Without a process group: a stub trainer says world size 2. Lightning would wrap the training sampler with
    ``shuffle=True`` (positions permuted by ``PL_GLOBAL_SEED + epoch``); the datamodule installs the stride itself."""
    dm = cycle_dm()
    assert type(dm.train_dataloader().sampler) is ClassAwareCycleSampler  # no trainer: one process
    connector = SimpleNamespace(use_distributed_sampler=True)
    dm.trainer = SimpleNamespace(world_size=2, global_rank=rank, _accelerator_connector=connector)
    sampler = dm.train_dataloader().sampler
    assert type(sampler) is DistributedSamplerWrapper and not sampler.shuffle
    assert (sampler.num_replicas, sampler.rank) == (2, rank)
    sampler.set_epoch(1)
    reference = dm.build_sampler()
    reference.set_epoch(1)
    assert list(sampler) == list(reference)[rank::2]
    connector.use_distributed_sampler = False  # the user shards (or not) on their own
    assert type(dm.train_dataloader().sampler) is ClassAwareCycleSampler
    connector.use_distributed_sampler = True
    dm.trainer = SimpleNamespace(world_size=1, global_rank=0, _accelerator_connector=connector)
    assert type(dm.train_dataloader().sampler) is ClassAwareCycleSampler
