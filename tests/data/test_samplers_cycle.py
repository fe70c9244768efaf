"""ClassAwareCycleSampler (``class_aware_cycle``, the official classifier-balancing ``ClassAwareSampler``): exact
per-cycle class counts, within-class cycles without repeats, seeding, absent classes, input errors, DDP shards
(Lightning's ``DistributedSamplerWrapper``, the one the trainer installs) and the datamodule wiring."""

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from lt_lightning.cli import build_cli
from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.samplers import SAMPLERS, ClassAwareCycleSampler, create_sampler

COUNTS = np.array([50, 23, 11, 5, 2, 1])
TARGETS = np.random.default_rng(0).permutation(np.repeat(np.arange(len(COUNTS)), COUNTS))  # 92 samples, mixed


def drawn(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return np.asarray(list(sampler))


@pytest.mark.parametrize("k", [1, 3, 4])
def test_every_class_cycle_window_holds_each_class_exactly_k_times(k):
    c = len(COUNTS)
    sampler = ClassAwareCycleSampler(TARGETS, seed=5, samples_per_class=k, num_samples=7 * c * k)
    labels = TARGETS[drawn(sampler)]
    for window in labels.reshape(7, c * k):
        assert np.bincount(window, minlength=c).tolist() == [k] * c
        # a visit is k consecutive draws of one class
        assert all(len(set(block)) == 1 for block in window.reshape(c, k).tolist())
    assert sampler.class_probabilities().tolist() == [1 / c] * c


def test_within_a_class_no_instance_repeats_before_all_were_drawn():
    sampler = ClassAwareCycleSampler(TARGETS, seed=1, num_samples=3000)
    picks = drawn(sampler, epoch=2)
    for c, n in enumerate(COUNTS):
        stream = picks[TARGETS[picks] == c]  # class c's draws, in order
        members = [i for i, t in enumerate(TARGETS.tolist()) if t == c]
        full = len(stream) // n
        assert full >= 2  # at least two complete cycles of every class
        for cycle in stream[: full * n].reshape(full, n):
            assert sorted(cycle.tolist()) == members  # each cycle is a permutation of the class
        assert len(set(stream[full * n :].tolist())) == len(stream) - full * n  # the partial last one: no repeat
    head = picks[TARGETS[picks] == 0]
    assert head[:50].tolist() != head[50:100].tolist()  # reshuffled between cycles


def test_draw_is_a_function_of_seed_and_epoch_only():
    a, b = ClassAwareCycleSampler(TARGETS, seed=3), ClassAwareCycleSampler(TARGETS, seed=3)
    torch.manual_seed(0)
    first = drawn(a)
    torch.manual_seed(1)  # the global RNG has no say
    assert first.tolist() == drawn(b).tolist()
    assert drawn(a, epoch=1).tolist() != first.tolist()
    assert drawn(a, epoch=0).tolist() == first.tolist()  # cycles restart each epoch: epoch 0 again is epoch 0
    assert drawn(ClassAwareCycleSampler(TARGETS, seed=4)).tolist() != first.tolist()
    assert len(first) == len(a) == len(TARGETS)  # the official epoch length: the dataset size


@pytest.mark.parametrize("num_samples", [1, 5, 13, 1000])
def test_num_samples_and_absent_classes(num_samples):
    targets = np.array([0, 0, 0, 3, 3, 5])  # classes 1, 2 and 4 absent; 6 and 7 beyond the labels
    sampler = ClassAwareCycleSampler(targets, seed=0, num_samples=num_samples, num_classes=8, samples_per_class=2)
    picks = drawn(sampler)
    assert len(picks) == len(sampler) == num_samples
    assert set(targets[picks]) <= {0, 3, 5}
    assert sampler.class_probabilities().tolist() == [1 / 3, 0, 0, 1 / 3, 0, 1 / 3, 0, 0]
    if num_samples == 1000:
        # 500 visits of 3 classes: 166 full cycles, then 2 visits of the shuffled last one
        assert sorted(np.bincount(targets[picks], minlength=8)[[0, 3, 5]].tolist()) == [332, 334, 334]


@pytest.mark.parametrize("bad", [0, -1, "4", 2.0, True, None])
def test_bad_samples_per_class(bad):
    with pytest.raises(ValueError, match=rf"samples_per_class must be an integer >= 1, got {bad!r}"):
        ClassAwareCycleSampler(TARGETS, samples_per_class=bad)
    with pytest.raises(ValueError, match=r"samples_per_class must be an integer >= 1"):
        create_sampler("class_aware_cycle", TARGETS, samples_per_class=bad)


def test_registered_and_exact_on_a_million_targets():
    assert SAMPLERS["class_aware_cycle"] is ClassAwareCycleSampler
    targets = np.random.default_rng(0).integers(0, 1000, 10**6)
    picks = ClassAwareCycleSampler(targets, seed=0)._draw()  # ~0.2 s on one core
    counts = np.bincount(targets[picks.numpy()], minlength=1000)
    assert len(picks) == 10**6 and set(counts.tolist()) == {1000}  # 250 full class cycles of k = 4


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shards_reassemble_the_single_process_draw(world_size):
    """Each rank's ``DistributedSamplerWrapper`` (no shuffle, as Lightning installs it) takes ``global[r::W]``: the
    interleaved shards are the one global list, and per-class counts summed over ranks are the global ones."""
    num_samples = 6 * 41  # divisible by 2 and 3: no padding
    for epoch in (0, 1):
        reference = drawn(ClassAwareCycleSampler(TARGETS, seed=9, num_samples=num_samples), epoch)
        shards = []
        for rank in range(world_size):
            inner = ClassAwareCycleSampler(TARGETS, seed=9, num_samples=num_samples)
            wrapper = DistributedSamplerWrapper(inner, num_replicas=world_size, rank=rank, shuffle=False)
            wrapper.set_epoch(epoch)  # forwarded to the inner sampler
            shards.append(np.asarray(list(wrapper)))
        assert [len(s) for s in shards] == [num_samples // world_size] * world_size
        merged = np.empty(num_samples, dtype=np.int64)
        for rank, shard in enumerate(shards):
            merged[rank::world_size] = shard
        assert merged.tolist() == reference.tolist()
        per_rank = sum(np.bincount(TARGETS[s], minlength=len(COUNTS)) for s in shards)
        assert per_rank.tolist() == np.bincount(TARGETS[reference], minlength=len(COUNTS)).tolist()


def test_datamodule_builds_it_with_its_samples_per_class():
    dm = LongTailDataModule("digits", sampler="class_aware_cycle", samples_per_class=2, sampler_seed=3)
    sampler = dm.train_dataloader().sampler
    assert type(sampler) is ClassAwareCycleSampler
    assert sampler.samples_per_class == 2 and sampler.seed == 3 and len(sampler) == 544
    assert dm.hparams.samples_per_class == 2
    labels = dm.train_set.targets[np.asarray(list(sampler))]
    # 272 visits of k = 2: 27 full cycles of the 10 classes, then 2 more visits.
    assert sorted(np.bincount(labels, minlength=10).tolist()) == [54] * 8 + [56] * 2
    default = LongTailDataModule("digits", sampler="class_aware_cycle")
    assert default.train_dataloader().sampler.samples_per_class == 4
    # BBN's second stream accepts the name too, with the same k.
    paired = LongTailDataModule("digits", rebalancing_sampler="class_aware_cycle", samples_per_class=3)
    second = paired.train_dataloader().sampler.second
    assert type(second) is ClassAwareCycleSampler and second.samples_per_class == 3


@pytest.mark.parametrize("bad", [0, "4"])
def test_datamodule_rejects_bad_samples_per_class(bad):
    with pytest.raises(ValueError, match=rf"samples_per_class must be an integer >= 1, got {bad!r}"):
        LongTailDataModule("digits", sampler="class_aware_cycle", samples_per_class=bad)


def test_yaml_config_selects_it(tmp_path):
    """``data.init_args.sampler: class_aware_cycle`` and ``data.init_args.samples_per_class`` from a YAML file."""
    config = tmp_path / "cycle.yaml"
    config.write_text("data:\n  init_args:\n    sampler: class_aware_cycle\n    samples_per_class: 3\n")
    cli = build_cli(
        ["fit", f"--config={config}", f"--trainer.default_root_dir={tmp_path}", "--trainer.fast_dev_run=true"]
        + ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    )
    sampler = cli.datamodule.train_dataloader().sampler
    assert type(sampler) is ClassAwareCycleSampler and sampler.samples_per_class == 3
    assert cli.trainer.state.finished
