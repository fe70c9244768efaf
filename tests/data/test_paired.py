"""BBN's two sampling streams from one DataLoader: ``PairedSampler`` / ``PairedDataset`` and
``LongTailDataModule(rebalancing_sampler="reversed")`` (METHODS.md §4, "Samplers")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.data.paired import PairedDataset, PairedSampler
from lt_lightning.data.samplers import SAMPLERS, InstanceSampler, ReversedSampler
from tests.data.fake_data import write_cifar10

CIFAR10_LT_100 = (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50)
# METHODS.md §4: CIFAR-10-LT rho = 100 reversed-sampler class probabilities (w_i = N_max / N_i, normalised).
CIFAR10_LT_100_REVERSED = [0.0040, 0.0067, 0.0112, 0.0187, 0.0312, 0.0520, 0.0867, 0.1447, 0.2424, 0.4024]


def test_reversed_sampler_reproduces_the_published_cifar10_lt_probabilities():
    targets = np.repeat(np.arange(10), CIFAR10_LT_100)
    q = ReversedSampler(targets).class_probabilities()
    assert np.round(q, 4).tolist() == CIFAR10_LT_100_REVERSED
    assert q.sum() == pytest.approx(1.0)


def test_datamodule_second_stream_is_the_reversed_sampler_on_fake_cifar10(tmp_path):
    write_cifar10(tmp_path, n_per_class=100)
    dm = LongTailDataModule("cifar10", root=tmp_path, imbalance_ratio=100, rebalancing_sampler="reversed")
    # floor(100 * 0.01 ** (i / 9)): 100 per class available, rho = 100 -> a head of 100 and a tail of 1.
    assert dm.class_counts == (100, 59, 35, 21, 12, 7, 4, 2, 1, 1)
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, PairedSampler)
    assert isinstance(sampler.first, InstanceSampler) and isinstance(sampler.second, ReversedSampler)
    weights = np.array([100 / 100, 100 / 59, 100 / 35, 100 / 21, 100 / 12, 100 / 7, 100 / 4, 100 / 2, 100, 100])
    np.testing.assert_allclose(sampler.second.class_probabilities(), weights / weights.sum(), rtol=1e-12)
    np.testing.assert_allclose(sampler.first.class_probabilities(), np.array(dm.class_counts) / 242, rtol=1e-12)


@pytest.fixture(scope="module")
def digits_dm():
    return LongTailDataModule("digits", imbalance_ratio=10, batch_size=64, rebalancing_sampler="reversed")


def test_streams_follow_the_instance_and_reversed_distributions(digits_dm):
    dm = digits_dm
    counts = np.array(dm.class_counts)
    assert counts.tolist() == [134, 103, 80, 62, 48, 37, 28, 22, 17, 13]
    loader = dm.train_dataloader()
    epochs = 10
    hist_c, hist_r = np.zeros(10), np.zeros(10)
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        epoch_c = np.zeros(10)
        for x_c, y_c, x_r, y_r in loader:
            assert x_c.shape == x_r.shape == (len(y_c), 1, 8, 8) and len(y_c) == len(y_r)
            epoch_c += np.bincount(y_c.numpy(), minlength=10)
            hist_r += np.bincount(y_r.numpy(), minlength=10)
        # The conventional stream is a permutation of the training set: exactly the class counts every epoch.
        assert epoch_c.tolist() == counts.tolist()
        hist_c += epoch_c
    n = epochs * counts.sum()  # 5440 draws per stream
    np.testing.assert_allclose(hist_c / n, counts / counts.sum(), rtol=0, atol=1e-12)
    weights = counts.max() / counts
    expected_r = weights / weights.sum()  # 0.0259 (head) ... 0.2669 (tail)
    freq_r = hist_r / n
    # Multinomial frequencies: 4 standard deviations per class (sd <= 0.006 here).
    sd = np.sqrt(expected_r * (1 - expected_r) / n)
    assert np.all(np.abs(freq_r - expected_r) < 4 * sd), (freq_r.round(4), expected_r.round(4))
    # Reversed: the tail class is drawn far more often than the head one (10.3x expected), the opposite of stream 1.
    assert freq_r[-1] > 5 * freq_r[0] and hist_c[-1] < hist_c[0] / 5


def test_batches_carry_the_images_and_labels_of_the_drawn_pairs(digits_dm):
    dm = digits_dm
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(3)
    pairs = list(loader.sampler)  # the sampler is a pure function of the epoch: the loader draws the same list
    batch = next(iter(loader))
    first = pairs[: len(batch[1])]
    targets = torch.as_tensor(dm.train_targets)
    assert torch.equal(batch[1], targets[[i for i, _ in first]])
    assert torch.equal(batch[3], targets[[j for _, j in first]])
    for k in (0, 5, len(first) - 1):  # digits' transforms are deterministic: the images match exactly
        i, j = first[k]
        assert torch.equal(batch[0][k], dm.train_set[i][0]) and torch.equal(batch[2][k], dm.train_set[j][0])


def test_streams_are_independent_and_set_epoch_redraws(digits_dm):
    sampler = digits_dm.train_dataloader().sampler
    sampler.set_epoch(0)
    epoch0 = list(sampler)
    assert list(sampler) == epoch0  # same epoch, same draw
    assert len(epoch0) == len(sampler) == sum(digits_dm.class_counts)
    first0, second0 = [i for i, _ in epoch0], [j for _, j in epoch0]
    assert sorted(first0) == list(range(len(sampler)))  # stream 1: each sample exactly once
    assert first0 != second0
    assert np.mean(np.array(first0) == np.array(second0)) < 0.05  # not the same positions in both streams
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert [i for i, _ in epoch1] != first0 and [j for _, j in epoch1] != second0
    assert sampler.first.epoch == sampler.second.epoch == 1  # set_epoch reaches both streams
    sampler.set_epoch(0)
    assert list(sampler) == epoch0  # and going back reproduces the draw (resume)


def test_paired_sampler_zips_two_seeded_samplers():
    targets = np.array([0, 0, 0, 1, 1, 2])
    first, second = InstanceSampler(targets, seed=3), ReversedSampler(targets, seed=4)
    pairs = PairedSampler(first, second)
    first.set_epoch(0), second.set_epoch(0)
    assert list(pairs) == list(zip(list(first), list(second), strict=True))


def test_paired_sampler_rejects_mismatched_streams():
    targets = np.array([0, 0, 1])
    with pytest.raises(ValueError, match="same samples"):
        PairedSampler(InstanceSampler(targets), ReversedSampler(np.array([0, 1])))
    with pytest.raises(ValueError, match="as many samples per epoch, got 3 and 5"):
        PairedSampler(InstanceSampler(targets), ReversedSampler(targets, num_samples=5))


def test_paired_dataset_returns_both_samples():
    images = torch.arange(12.0).reshape(4, 3)
    labels = [2, 0, 1, 1]
    base = list(zip(images, labels, strict=True))
    paired = PairedDataset(base)
    assert len(paired) == 4
    x_i, y_i, x_j, y_j = paired[(1, 3)]
    assert torch.equal(x_i, images[1]) and y_i == 0 and torch.equal(x_j, images[3]) and y_j == 1


def test_unknown_rebalancing_sampler_lists_the_samplers():
    with pytest.raises(ValueError, match="rebalancing_sampler must be one of") as info:
        LongTailDataModule("digits", rebalancing_sampler="nope")
    message = str(info.value)
    assert "'nope'" in message and all(name in message for name in SAMPLERS)


def test_without_rebalancing_sampler_batches_are_plain_pairs():
    dm = LongTailDataModule("digits", imbalance_ratio=10, batch_size=64)
    batch = next(iter(dm.train_dataloader()))
    assert len(batch) == 2 and dm.rebalancing_sampler is None
