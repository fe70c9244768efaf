"""Nuisance long-tailed helpers: seeded per-split generators, materialising raw images, freezing a nuisance."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from lt_lightning.data.base import ArrayDataset, ImageFileDataset
from lt_lightning.data.nuisance import BackgroundNuisance, DilationErosionNuisance, RotationNuisance
from lt_lightning.data.nuisance_lt import (
    NUISANCE_STREAMS,
    array_dataset,
    freeze_nuisance,
    materialise,
    nuisance_generator,
)


def grey_pool(n: int = 6, side: int = 9, seed: int = 0) -> ArrayDataset:
    """Random grey images, about a third of the pixels 0 (background), labels 0, 1, 2, 0, ..."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
    images[rng.random(images.shape) < 0.35] = 0
    return ArrayDataset(images, np.arange(n) % 3)


# --- nuisance_generator ----------------------------------------------------------------------------------------


def test_generator_streams_reproducible_and_distinct():
    draws = {s: torch.rand(5, generator=nuisance_generator(7, s)) for s in ("train", "val", "test")}
    for stream, values in draws.items():
        torch.testing.assert_close(torch.rand(5, generator=nuisance_generator(7, stream)), values, rtol=0, atol=0)
    assert not torch.equal(draws["train"], draws["val"])
    assert not torch.equal(draws["train"], draws["test"])
    assert not torch.equal(draws["val"], draws["test"])
    assert not torch.equal(draws["train"], torch.rand(5, generator=nuisance_generator(8, "train")))


def test_generator_seed_is_seedsequence_of_seed_and_stream_and_not_the_subset_stream():
    seed = 3
    expected = np.random.SeedSequence([seed, NUISANCE_STREAMS["val"]]).generate_state(1, dtype=np.uint64)[0]
    assert nuisance_generator(seed, "val").initial_seed() == int(expected)
    # [seed, 0] would equal default_rng(seed)'s SeedSequence(seed) (the subset), [seed, 1] is flip_labels'.
    taken = {int(np.random.SeedSequence(e).generate_state(1, dtype=np.uint64)[0]) for e in (seed, [seed, 1])}
    assert {nuisance_generator(seed, s).initial_seed() for s in NUISANCE_STREAMS}.isdisjoint(taken)


@pytest.mark.parametrize(
    ("seed", "stream", "match"),
    [
        (-1, "train", r"seed must be an integer >= 0, got -1"),
        (True, "train", r"seed must be an integer >= 0, got True"),
        (0, "training", r"stream must be one of \['test', 'train', 'val'\], got 'training'"),
    ],
)
def test_generator_bad_input(seed, stream, match):
    with pytest.raises(ValueError, match=match):
        nuisance_generator(seed, stream)


# --- materialise -----------------------------------------------------------------------------------------------


def test_materialise_array_dataset_layout_and_copy():
    pool = ArrayDataset(np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3), [0, 1])
    out = materialise(pool)
    assert out.shape == (2, 3, 3, 4) and out.dtype == torch.uint8
    assert torch.equal(out[1], pool.image(1))
    out.zero_()  # a copy: the pool is untouched
    assert pool.images.max() == 2 * 3 * 4 * 3 - 1


def test_materialise_resize_path_matches_per_image_resize():
    pool = grey_pool(n=3, side=9)
    out = materialise(pool, side=5)
    assert out.shape == (3, 1, 5, 5) and out.dtype == torch.uint8
    for i in range(3):
        assert torch.equal(out[i], TF.resize(pool.image(i), [5, 5], antialias=True))


@pytest.fixture
def mixed_files(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i, (h, w) in enumerate(((4, 6), (5, 5))):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return ImageFileDataset(paths, [0, 1])


def test_materialise_mixed_shapes_needs_image_size(mixed_files):
    with pytest.raises(ValueError, match=r"images differ in shape .*\(3, 4, 6\), \(3, 5, 5\).*set image_size"):
        materialise(mixed_files)
    out = materialise(mixed_files, side=3)
    assert out.shape == (2, 3, 3, 3)
    assert torch.equal(out[0], TF.resize(mixed_files.image(0), [3, 3], antialias=True))


def test_materialise_bad_input():
    with pytest.raises(ValueError, match=r"side must be an integer >= 1 or None, got 0"):
        materialise(grey_pool(), side=0)
    with pytest.raises(ValueError, match=r"dataset is empty"):
        materialise(grey_pool().subset([]))


# --- freeze_nuisance -------------------------------------------------------------------------------------------


def test_freeze_applies_each_items_own_draw_once():
    pool = grey_pool()
    rot = RotationNuisance()
    frozen = freeze_nuisance(pool, rot, nuisance_generator(0, "train"))
    expected_params = rot.sample_params(nuisance_generator(0, "train"), len(pool))
    torch.testing.assert_close(frozen.nuisance_params, expected_params, rtol=0, atol=0)
    expected = rot.apply(materialise(pool), expected_params)
    assert frozen.images.shape == (6, 9, 9) and frozen.images.dtype == np.uint8
    np.testing.assert_array_equal(frozen.images, expected[:, 0].numpy())
    np.testing.assert_array_equal(frozen.targets, pool.targets)
    # Frozen: reading an item twice gives the same pixels, unlike the nuisance called on the fly.
    assert torch.equal(frozen[2][0], frozen[2][0])
    assert not np.array_equal(frozen.images, pool.images)


def test_freeze_reproducible_per_seed():
    pool, dil = grey_pool(n=40), DilationErosionNuisance()
    a = freeze_nuisance(pool, dil, nuisance_generator(0, "train"))
    b = freeze_nuisance(pool, dil, nuisance_generator(0, "train"))
    c = freeze_nuisance(pool, dil, nuisance_generator(1, "train"))
    np.testing.assert_array_equal(a.images, b.images)
    assert torch.equal(a.nuisance_params, b.nuisance_params)
    assert not torch.equal(a.nuisance_params, c.nuisance_params)
    assert not np.array_equal(a.images, c.images)


def test_freeze_params_independent_of_chunk_size():
    pool, rot = grey_pool(n=7), RotationNuisance()
    whole = freeze_nuisance(pool, rot, nuisance_generator(4, "val"))
    chunked = freeze_nuisance(pool, rot, nuisance_generator(4, "val"), chunk_size=3)
    assert torch.equal(whole.nuisance_params, chunked.nuisance_params)
    np.testing.assert_array_equal(whole.images, chunked.images)


def test_freeze_reused_indices_get_their_own_draws():
    image = np.zeros((1, 7, 7), np.uint8)
    image[0, 1, 2:5] = 255  # an asymmetric bar: any rotation other than 0 moves it
    reused = ArrayDataset(image, [4]).subset([0, 0, 0])
    frozen = freeze_nuisance(reused, RotationNuisance(), nuisance_generator(0, "train"))
    angles = frozen.nuisance_params.tolist()
    assert len(set(angles)) == 3
    assert frozen.targets.tolist() == [4, 4, 4]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert not np.array_equal(frozen.images[i], frozen.images[j])


def test_freeze_background_sets_each_images_zeros_to_its_level():
    pool = grey_pool(n=8)
    frozen = freeze_nuisance(pool, BackgroundNuisance(), nuisance_generator(2, "test"))
    levels = frozen.nuisance_params.tolist()
    assert all(0 <= b < 100 for b in levels) and len(set(levels)) > 1
    for i, level in enumerate(levels):
        zero = pool.images[i] == 0
        assert zero.sum() > 0
        assert (frozen.images[i][zero] == level).all()
        np.testing.assert_array_equal(frozen.images[i][~zero], pool.images[i][~zero])


def test_freeze_colour_layout_resize_and_transform_kept():
    rng = np.random.default_rng(5)
    pool = ArrayDataset(rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8), [0, 1, 2], transform=torch.neg)
    dil = DilationErosionNuisance()
    frozen = freeze_nuisance(pool, dil, nuisance_generator(0, "train"), side=4)
    assert frozen.images.shape == (3, 4, 4, 3) and frozen.transform is torch.neg
    expected = dil.apply(materialise(pool, side=4), frozen.nuisance_params)
    np.testing.assert_array_equal(frozen.images, expected.permute(0, 2, 3, 1).numpy())


def test_freeze_bad_input():
    pool = grey_pool()
    with pytest.raises(TypeError, match=r"nuisance must be a .*Nuisance, got builtin_function_or_method"):
        freeze_nuisance(pool, torch.neg, nuisance_generator(0, "train"))
    with pytest.raises(TypeError, match=r"generator must be a torch.Generator, got int"):
        freeze_nuisance(pool, RotationNuisance(), 0)
    with pytest.raises(ValueError, match=r"chunk_size must be an integer >= 1, got 0"):
        freeze_nuisance(pool, RotationNuisance(), nuisance_generator(0, "train"), chunk_size=0)


def test_array_dataset_checks_shape():
    with pytest.raises(ValueError, match=r"images must be uint8 \(N, C, H, W\) with N = 6, got torch.uint8 \(2, 1"):
        array_dataset(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), grey_pool())
