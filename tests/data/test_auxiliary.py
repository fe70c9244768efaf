"""The auxiliary (OOD) stream of ``LongTailDataModule``: batch shapes, the held-out-class pool, seeded noise pools,
determinism per (seed, epoch), DDP sharding, and the one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from lt_lightning.callbacks.deferred import find_long_tail_sampler
from lt_lightning.data import LongTailDataModule
from lt_lightning.data.auxiliary import NOISES, AuxPairedSampler, aux_counts, synthetic_noise
from lt_lightning.data.datasets import load_dataset, select_classes
from lt_lightning.data.samplers import ClassBalancedSampler, InstanceSampler
from tests.data.fake_data import write_cifar10, write_imagefolder, write_npz

TARGETS = np.repeat(np.arange(4), [40, 20, 10, 2])
ID_CLASSES = [0, 1, 2, 3, 4, 5, 6]


def open_set_dm(**kwargs) -> LongTailDataModule:
    options = dict(classes=ID_CLASSES, aux_dataset="digits", batch_size=32, aux_batch_size=128)
    return LongTailDataModule("digits", **{**options, **kwargs})


def test_digits_open_set_split_and_batch_shapes():
    dm = open_set_dm()
    pool = load_dataset("digits")
    assert dm.num_classes == 7 and dm.class_names == tuple("0123456")
    assert set(dm.train_set.targets.tolist()) == set(range(7))
    assert len(dm.test_set) == 7 * 40 and set(dm.test_set.targets.tolist()) == set(range(7))
    # The aux pool is every training-pool image of digits 7, 8 and 9, and none of 0-6.
    held_out = np.flatnonzero(pool.train.targets >= 7)
    assert len(dm.aux_set) == len(held_out)
    np.testing.assert_array_equal(dm.aux_set.images, pool.train.images[held_out])
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == -(-sum(dm.class_counts) // 32)
    x, y, x_aux = batches[0]
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,) and y.dtype == torch.int64
    assert x_aux.shape == (128, 1, 8, 8) and x_aux.dtype == torch.float32
    last = batches[-1]
    assert len(last[2]) == 4 * len(last[0])  # a short last batch carries aux in proportion
    assert sum(len(b[0]) for b in batches) == sum(dm.class_counts)


def test_aux_images_share_the_training_transform():
    dm = open_set_dm()
    for i in (0, 5):
        torch.testing.assert_close(dm.aux_set[i][0], dm.train_transform(dm.aux_set.image(i)), rtol=0, atol=0)
    assert dm.aux_set.transform is dm.train_transform


def test_select_classes_relabels_in_ascending_order():
    sub = select_classes(load_dataset("digits"), [9, 7])
    assert sub.class_names == ("7", "9") and sub.num_classes == 2
    assert np.bincount(sub.test.targets).tolist() == [40, 40]
    with pytest.raises(ValueError, match=r"classes must be distinct labels in \[0, 10\), got \[1, 1\]"):
        select_classes(load_dataset("digits"), [1, 1])
    with pytest.raises(ValueError, match=r"classes must be distinct labels in \[0, 10\), got \[3, 10\]"):
        LongTailDataModule("digits", classes=[3, 10])


def test_aux_counts_fill_every_full_batch_exactly():
    for batch, aux in ((32, 128), (128, 512), (5, 7), (4, 1), (3, 3)):
        counts = aux_counts(10 * batch + 2, batch, aux)
        assert counts[: 10 * batch].reshape(10, batch).sum(axis=1).tolist() == [aux] * 10
        assert counts.max() - counts.min() <= -(-aux // batch)


def test_aux_stream_is_a_function_of_seed_and_epoch_and_cycles_the_pool():
    def draw(seed, epoch, first_seed=0):
        sampler = AuxPairedSampler(InstanceSampler(TARGETS, seed=first_seed), 50, 8, 4, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert draw(3, 0) == draw(3, 0)
    assert draw(3, 1) == draw(3, 1) != draw(3, 0)
    assert [b for _, b in draw(3, 0)] != [b for _, b in draw(4, 0)]
    # The ID stream is the wrapped sampler's own draw, untouched.
    assert [i for i, _ in draw(3, 1, first_seed=5)] == list(_at_epoch(InstanceSampler(TARGETS, seed=5), 1))
    # 72 items x 2 aux = 144 draws from a pool of 50: two whole permutations, then 44 of a third.
    flat = [j for _, block in draw(3, 0) for j in block]
    assert len(flat) == 144
    assert sorted(flat[:50]) == sorted(flat[50:100]) == list(range(50))
    assert len(set(flat[100:])) == 44


def _at_epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shards_reassemble_the_single_process_draw(world_size):
    """Lightning's ``DistributedSamplerWrapper`` shards the (index, aux block) items: the interleaved rank shards are
    the single-process list, so no aux image is used twice in one step; with A a multiple of B every rank batch
    holds exactly A aux images."""
    targets = TARGETS[:66]  # 66 items: divisible by 2 and 3, no padding

    def build():
        return AuxPairedSampler(ClassBalancedSampler(targets, seed=9), 40, 12, 3, seed=2)

    for epoch in (0, 1):
        reference = _at_epoch(build(), epoch)
        shards = []
        for rank in range(world_size):
            wrapper = DistributedSamplerWrapper(build(), num_replicas=world_size, rank=rank, shuffle=False)
            wrapper.set_epoch(epoch)
            shards.append(list(wrapper))
        merged = [None] * len(reference)
        for rank, shard in enumerate(shards):
            merged[rank::world_size] = shard
        assert merged == reference
        for shard in shards:
            per_batch = [sum(len(b) for _, b in shard[k : k + 3]) for k in range(0, len(shard), 3)]
            assert per_batch == [12 if k + 3 <= len(shard) else 4 * (len(shard) - k) for k in range(0, len(shard), 3)]


def test_datamodule_seeds_the_aux_stream_apart_from_the_id_streams():
    dm, same = open_set_dm(sampler_seed=4), open_set_dm(sampler_seed=4)
    a, b = dm.train_dataloader().sampler, same.train_dataloader().sampler
    assert isinstance(a, AuxPairedSampler) and list(a) == list(b)
    assert a.seed == 4 + 2_000_003 and a.first.seed == 4
    # DeferredResampling switches the ID stream through the wrapper.
    assert find_long_tail_sampler(dm.train_dataloader()).__class__ is InstanceSampler


@pytest.mark.parametrize("kind", NOISES)
def test_noise_pools_are_seeded_and_shaped_like_the_training_images(kind):
    a, b = synthetic_noise(kind, 64, (8, 8, 3), seed=1), synthetic_noise(kind, 64, (8, 8, 3), seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (64, 8, 8, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, synthetic_noise(kind, 64, (8, 8, 3), seed=2))
    values = a.astype(float) / 255
    if kind == "rademacher":
        assert set(np.unique(a).tolist()) == {0, 255} and abs(values.mean() - 0.5) < 0.02
    elif kind == "gaussian":
        # (clip(N(0, 0.25)) + 1) / 2: mean 0.5, sd just under 0.25 (clipping at 2 sd)
        assert abs(values.mean() - 0.5) < 0.01 and 0.22 < values.std() < 0.25
    else:  # blurred Bernoulli(0.7), thresholded at 0.75: zeros or values >= 0.75
        nonzero = values[values > 0]
        assert nonzero.min() >= 0.75 - 1 / 255 and 0.2 < (values > 0).mean() < 0.9
    dm = LongTailDataModule("digits", aux_dataset=kind, aux_size=100, batch_size=16, aux_batch_size=48)
    x, y, x_aux = next(iter(dm.train_dataloader()))
    assert len(dm.aux_set) == 100 and x_aux.shape == (48, 1, 8, 8)


def test_npz_and_imagefolder_pools(tmp_path):
    write_npz(tmp_path / "grey.npz", shape=(8, 8), num_classes=2, n_per_class=10)
    dm = LongTailDataModule("digits", aux_dataset="npz", aux_root=tmp_path / "grey.npz", batch_size=8)
    x, _, x_aux = next(iter(dm.train_dataloader()))
    assert len(dm.aux_set) == 20 and x_aux.shape == (32, 1, 8, 8)  # default: 4 x batch_size
    write_npz(tmp_path / "rgb.npz", shape=(32, 32, 3), num_classes=2, n_per_class=3)
    write_imagefolder(tmp_path / "folder", n_per_class=2, size=(20, 24))
    # CIFAR-shaped pools next to a fake CIFAR-10; the folder's 20 x 24 images are resized to 32 x 32.
    write_cifar10(tmp_path / "cifar", n_per_class=20)
    for name, root, size in (("npz", tmp_path / "rgb.npz", 6), ("imagefolder", tmp_path / "folder", 6)):
        dm = LongTailDataModule("cifar10", root=tmp_path / "cifar", aux_dataset=name, aux_root=root, batch_size=4)
        _, _, x_aux = next(iter(dm.train_dataloader()))
        assert len(dm.aux_set) == size and x_aux.shape == (16, 3, 32, 32)


def test_bad_aux_arguments_fail_in_one_line(tmp_path):
    def fails(match, **kwargs):
        with pytest.raises(ValueError, match=match) as info:
            LongTailDataModule("digits", **kwargs)
        assert "\n" not in str(info.value)

    fails(
        r"aux_dataset must be one of \[.*'blobs'.*'digits'.*'gaussian'.*'npz'.*\] or None, got 'tinyimages'",
        aux_dataset="tinyimages",
    )
    fails(r"aux_batch_size must be an integer >= 1, got 0", aux_dataset="gaussian", aux_batch_size=0)
    fails(r"aux_batch_size=64 needs an aux_dataset", aux_batch_size=64)
    fails(r"aux_classes=\[7\] needs an aux_dataset", aux_classes=[7])
    fails(
        r"aux_dataset='blobs' and rebalancing_sampler='reversed' cannot be combined",
        aux_dataset="blobs",
        rebalancing_sampler="reversed",
    )
    fails(r"aux_size=5 sizes a synthetic pool", aux_dataset="digits", aux_classes=[9], aux_size=5)
    fails(
        r"classes=\[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] leaves no held-out class",
        classes=list(range(10)),
        aux_dataset="digits",
    )
    write_npz(tmp_path / "rgb.npz", shape=(6, 6, 3))
    fails(
        r"aux_dataset='npz' at '.*rgb.npz' has images of shape \(3, 6, 6\) \(C, H, W\), the training images "
        r"\(1, 8, 8\)",
        aux_dataset="npz",
        aux_root=tmp_path / "rgb.npz",
    )
    write_npz(tmp_path / "big.npz", shape=(9, 9))
    fails(
        r"shape \(1, 9, 9\) \(C, H, W\), the training images \(1, 8, 8\)",
        aux_dataset="npz",
        aux_root=tmp_path / "big.npz",
    )


@pytest.mark.parametrize(
    ("world_size", "batch_size", "aux_batch_size"), [(2, 4, 2), (2, 128, 64), (4, 8, 20), (3, 5, 7)]
)
def test_every_rank_batch_holds_exactly_the_aux_batch_size_when_not_a_multiple(world_size, batch_size, aux_batch_size):
    """A not a multiple of B: the counts follow each item's position in its RANK's batch (world_size given), so a full
    batch of every rank carries exactly A aux images (with the global position rank 0 could get 0 and rank 1 2A)."""
    targets = np.arange(world_size * batch_size * 3) % 5
    sampler = AuxPairedSampler(
        ClassBalancedSampler(targets, seed=1), 50, aux_batch_size, batch_size, seed=3, world_size=world_size
    )
    for rank in range(world_size):
        wrapper = DistributedSamplerWrapper(sampler, num_replicas=world_size, rank=rank, shuffle=False)
        shard = list(wrapper)
        per_batch = [sum(len(b) for _, b in shard[k : k + batch_size]) for k in range(0, len(shard), batch_size)]
        assert per_batch == [aux_batch_size] * 3, (rank, per_batch)
