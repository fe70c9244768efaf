"""Samplers under real 2-process CPU DDP (gloo, ddp_spawn): each rank gets a disjoint shard of ONE draw, and the
draw changes with the epoch. Lightning wraps our sampler in its DistributedSamplerWrapper
(``use_distributed_sampler=True``, the default)."""

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.data.samplers import SAMPLERS, create_sampler
from tests.helpers import cpu_trainer

TARGETS = np.repeat(np.arange(4), [40, 20, 10, 2])


class IndexRecorder(L.LightningModule):
    """Trains nothing useful: writes the sample indices each rank sees per epoch to ``out_dir``."""

    def __init__(self, out_dir: str):
        super().__init__()
        self.out_dir = out_dir
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[int] = []

    def training_step(self, batch, batch_idx):
        self.seen.extend(batch[0].tolist())
        return self.layer(batch[0].float().unsqueeze(1)).sum() * 0.0

    def on_train_epoch_end(self):
        path = Path(self.out_dir) / f"rank{self.global_rank}_epoch{self.current_epoch}.json"
        path.write_text(json.dumps(self.seen))
        self.seen = []

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class SamplerData(L.LightningDataModule):
    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def train_dataloader(self):
        dataset = TensorDataset(torch.arange(len(TARGETS)))
        return DataLoader(dataset, batch_size=8, sampler=create_sampler(self.name, TARGETS, seed=11))


@pytest.mark.ddp
@pytest.mark.parametrize("name", ["instance", "class_balanced"])
def test_two_ranks_get_disjoint_shards_of_one_draw(tmp_path, name):
    assert name in SAMPLERS
    trainer = cpu_trainer(tmp_path, devices=2, strategy="ddp_spawn", max_epochs=2)
    trainer.fit(IndexRecorder(str(tmp_path)), datamodule=SamplerData(name))
    reference = create_sampler(name, TARGETS, seed=11)
    draws = []
    for epoch in range(2):
        shards = [json.loads((tmp_path / f"rank{r}_epoch{epoch}.json").read_text()) for r in range(2)]
        reference.set_epoch(epoch)
        expected = sorted(reference)
        # 72 draws split 36 + 36: no padding needed; the two shards are disjoint positions of the same list.
        assert len(shards[0]) == len(shards[1]) == len(TARGETS) // 2
        assert sorted(shards[0] + shards[1]) == expected
        draws.append(expected)
    if name == "instance":
        assert draws[0] == draws[1] == list(range(len(TARGETS)))  # a permutation each epoch
        assert not set(shards[0]) & set(shards[1])
    else:
        assert draws[0] != draws[1]  # a new draw each epoch
