"""``InferenceDataModule``: new images prepared with a checkpoint's preprocessing, labelled or not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lt_lightning.data import InferenceDataModule

PREP = dict(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], image_size=4, in_chans=3, class_names=["cat", "dog"])


def _png(path, value: int, size=(6, 6), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if mode == "L" else (*size, 3)
    Image.fromarray(np.full(shape, value, np.uint8), mode=mode).save(path)
    return path


def test_unlabelled_folder_is_searched_recursively_and_normalised(tmp_path):
    _png(tmp_path / "b" / "deep" / "x.png", 255)
    _png(tmp_path / "a.png", 0)
    (tmp_path / "notes.txt").write_text("not an image")
    dm = InferenceDataModule(tmp_path, **PREP)
    assert not dm.labelled and [p.rsplit("/", 1)[-1] for p in dm.dataset.paths] == ["a.png", "x.png"]
    first, second = dm.predict_set[0], dm.predict_set[1]
    assert first.shape == (3, 4, 4)
    # (0 - 0.5) / 0.25 = -2 and (1 - 0.5) / 0.25 = 2
    torch.testing.assert_close(first, torch.full((3, 4, 4), -2.0))
    torch.testing.assert_close(second, torch.full((3, 4, 4), 2.0))
    batch = next(iter(dm.predict_dataloader()))
    assert isinstance(batch, torch.Tensor) and batch.shape == (2, 3, 4, 4)


def test_class_subfolders_make_a_labelled_set(tmp_path):
    _png(tmp_path / "dog" / "1.png", 10)
    _png(tmp_path / "cat" / "2.png", 20)
    _png(tmp_path / "cat" / "3.png", 30)
    dm = InferenceDataModule(tmp_path, **PREP)
    assert dm.labelled and dm.dataset.targets.tolist() == [0, 0, 1]
    dm.setup("test")  # accepted
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (3, 3, 4, 4) and y.tolist() == [0, 0, 1]


def test_grey_model_reads_colour_images_as_grey(tmp_path):
    _png(tmp_path / "c.png", 128)
    dm = InferenceDataModule(tmp_path, mean=[0.0], std=[1.0], image_size=2, in_chans=1, class_names=["a", "b"])
    assert dm.predict_set[0].shape == (1, 2, 2)


def test_one_image_file(tmp_path):
    dm = InferenceDataModule(_png(tmp_path / "one.png", 1), **PREP)
    assert len(dm.dataset) == 1 and not dm.labelled


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "message"),
    [
        (lambda p: p / "missing", {}, FileNotFoundError, "does not exist"),
        (lambda p: p, {}, ValueError, "holds no image file"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", {}, ValueError, "is not an image file"),
        (lambda p: _png(p / "a.png", 0), {"mean": None}, ValueError, "mean is needed.*no checkpoint was given"),
        (lambda p: _png(p / "a.png", 0), {"std": [0.1]}, ValueError, "mean and std need 3 values"),
        (lambda p: _png(p / "a.png", 0), {"in_chans": 2}, ValueError, "in_chans must be 1 or 3"),
        (lambda p: _png(p / "a.png", 0), {"class_names": None}, ValueError, "class_names is needed"),
        (lambda p: _png(p / "a.png", 0), {"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
    ],
)
def test_bad_input_is_named(tmp_path, make, kwargs, error, message):
    path = make(tmp_path)
    with pytest.raises(error, match=message):
        InferenceDataModule(path, **{**PREP, **kwargs})


def test_test_stage_refuses_unlabelled_images(tmp_path):
    dm = InferenceDataModule(_png(tmp_path / "a.png", 0), **PREP)
    with pytest.raises(ValueError, match="test needs labelled images"):
        dm.setup("test")


def test_a_checkpoint_without_lt_lightning_metadata_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="not written by an lt_lightning module"):
        InferenceDataModule(_png(tmp_path / "a.png", 0), checkpoint=tmp_path / "foreign.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        InferenceDataModule(_png(tmp_path / "a.png", 0), checkpoint=tmp_path / "junk.ckpt")


@pytest.mark.parametrize("image_size, side, resize", [(None, 224, 256), (112, 112, 128)])
def test_a_224_recipe_checkpoint_resizes_the_shorter_edge_then_centre_crops(tmp_path, image_size, side, resize):
    """An ImageNet-LT checkpoint records ``eval_resize`` 256: new images get Resize(256) + CenterCrop(224), as at
    validation, never a square stretch; an explicit image_size keeps the 256 / 224 ratio (112 -> 128 + crop 112)."""
    from torchvision.transforms import v2

    meta = {"preprocessing": {**PREP, "image_size": 224, "eval_resize": 256}, "class_names": ["cat", "dog"]}
    torch.save({"state_dict": {}, "lt_lightning": meta}, tmp_path / "lt.ckpt")
    _png(tmp_path / "img" / "wide.png", 128, size=(30, 60))  # 30 rows x 60 columns
    dm = InferenceDataModule(tmp_path / "img", checkpoint=tmp_path / "lt.ckpt", image_size=image_size)
    steps = dm.transform.transforms
    assert isinstance(steps[0], v2.Resize) and steps[0].size == [resize]
    assert isinstance(steps[1], v2.CenterCrop) and list(steps[1].size) == [side, side]
    assert dm.predict_set[0].shape == (3, side, side)
