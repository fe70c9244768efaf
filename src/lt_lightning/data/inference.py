"""``InferenceDataModule``: new images for a trained model, prepared as in training, without the training data.

A trained lt_lightning checkpoint records how raw images became inputs (mean / std, image size, channels; see
:mod:`lt_lightning.checkpoints`). This datamodule reads that record and serves any folder of images with the same
preprocessing, so ``predict`` (and ``test`` / ``validate`` on labelled folders) needs nothing but the checkpoint and
the new images::

    lt-lightning predict --ckpt_path run/checkpoints/last.ckpt --data.path my_images/

``path`` is one image file or a folder. A folder whose sub-folders are all named after the checkpoint's classes is
*labelled* (``<class>/<image>``: ``test`` and ``validate`` score it); any other folder is searched recursively and
its images are unlabelled (items are images alone: ``predict`` only).

Example:
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> folder = tempfile.mkdtemp()
    >>> Image.fromarray(np.zeros((8, 8), np.uint8)).save(f"{folder}/a.png")
    >>> dm = InferenceDataModule(folder, mean=[0.5], std=[0.25], image_size=8, in_chans=1, class_names=["x", "y"])
    >>> dm.setup("predict")
    >>> image = dm.predict_set[0]
    >>> image.shape, float(image[0, 0, 0]), dm.labelled
    (torch.Size([1, 8, 8]), -2.0, False)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from lt_lightning.checkpoints import METADATA_KEY, read_checkpoint
from lt_lightning.data.base import ImageFileDataset
from lt_lightning.data.readers import IMAGE_EXTENSIONS, list_images
from lt_lightning.data.transforms import eval_resize_side


class UnlabelledImages(ImageFileDataset):
    """Image files without labels: an item is the transformed image alone (``predict_step`` takes such batches)."""

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        image = self.image(i)
        return image if self.transform is None else self.transform(image)


class InferenceDataModule(L.LightningDataModule):
    """Images from disk, preprocessed as the checkpoint's training data was.

    Args:
        path: an image file, a folder of images (searched recursively), or a labelled folder ``<class>/<images>``.
        checkpoint: an lt_lightning checkpoint; its preprocessing and classes are used for every argument left
            None. The CLI fills it from ``--ckpt_path``.
        mean: per-channel mean on the [0, 1] scale (default: the checkpoint's).
        std: per-channel standard deviation on the [0, 1] scale (default: the checkpoint's).
        image_size: images are resized to this square side (default: the checkpoint's).
        in_chans: 1 (grey) or 3 (RGB) (default: the checkpoint's).
        class_names: the model's classes in label order (default: the checkpoint's).
        batch_size: images per batch.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        path: str | Path,
        checkpoint: str | Path | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        image_size: int | None = None,
        in_chans: int | None = None,
        class_names: Sequence[str] | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise FileNotFoundError(f"path {str(self.path)!r} does not exist (an image file or a folder of images)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
        self.batch_size, self.num_workers = batch_size, num_workers
        meta: dict[str, Any] = {}
        if checkpoint is not None:
            meta = read_checkpoint(checkpoint).get(METADATA_KEY) or {}
            if not meta:
                raise ValueError(
                    f"checkpoint {str(checkpoint)!r} was not written by an lt_lightning module (no "
                    f"'{METADATA_KEY}' entry): give mean, std, image_size, in_chans and class_names explicitly"
                )
        prep = meta.get("preprocessing") or {}
        self.mean = _pick("mean", mean, prep, checkpoint)
        self.std = _pick("std", std, prep, checkpoint)
        self.image_size = int(_pick("image_size", image_size, prep, checkpoint))
        self.in_chans = int(_pick("in_chans", in_chans, prep, checkpoint))
        names = class_names if class_names is not None else meta.get("class_names")
        if names is None:
            raise ValueError("class_names is needed: give it, or a checkpoint written by an lt_lightning module")
        self.class_names: tuple[str, ...] = tuple(str(n) for n in names)
        self.num_classes = len(self.class_names)
        counts = meta.get("class_counts")
        # Linked into the model by the CLI; the checkpoint's own counts so the rebuilt model matches its weights.
        self.class_counts: tuple[int, ...] = tuple(int(c) for c in counts) if counts else (1,) * self.num_classes
        if self.in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {self.in_chans}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans or min(self.std) <= 0:
            raise ValueError(
                f"mean and std need {self.in_chans} values each (std > 0), got mean={self.mean}, std={self.std}"
            )
        if self.image_size < 1:
            raise ValueError(f"image_size must be an integer >= 1, got {self.image_size}")
        # Checkpoints of the 224-px recipes record a shorter-edge resize followed by the centre crop; with another
        # image_size, the resize keeps the recipe's 256 / 224 ratio (never a square stretch of the whole image).
        eval_resize = prep.get("eval_resize")
        if eval_resize and image_size is not None:
            eval_resize = eval_resize_side(self.image_size)
        resize = (
            [v2.Resize(int(eval_resize), antialias=True), v2.CenterCrop(self.image_size)]
            if eval_resize
            else [v2.Resize((self.image_size, self.image_size), antialias=True)]
        )
        self.transform = v2.Compose(
            [
                *resize,
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.mean, self.std),
            ]
        )
        self.dataset = self._read()
        self.labelled = not isinstance(self.dataset, UnlabelledImages)

    def _read(self) -> ImageFileDataset:
        mode = "L" if self.in_chans == 1 else "RGB"
        if self.path.is_file():
            if self.path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise ValueError(
                    f"path {str(self.path)!r} is not an image file (accepted: {', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            return UnlabelledImages([self.path], [0], self.transform, mode)
        subdirs = sorted(d for d in self.path.iterdir() if d.is_dir() and not d.name.startswith("."))
        top_images = [p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        labelled = bool(subdirs) and not top_images and all(d.name in self.class_names for d in subdirs)
        paths, labels = [], []
        for d in subdirs if labelled else [self.path]:
            images = list_images(d)
            paths += images
            labels += [self.class_names.index(d.name) if labelled else 0] * len(images)
        if not paths:
            raise ValueError(
                f"path {str(self.path)!r} holds no image file ({', '.join(sorted(IMAGE_EXTENSIONS))}), "
                "searched recursively"
            )
        return (ImageFileDataset if labelled else UnlabelledImages)(paths, labels, self.transform, mode)

    def setup(self, stage: str) -> None:
        stage = getattr(stage, "value", stage)  # Lightning passes a str enum
        if stage in ("test", "validate") and not self.labelled:
            raise ValueError(
                f"{stage} needs labelled images: path {str(self.path)!r} must hold one sub-folder per class, named "
                f"after the model's classes {list(self.class_names)[:10]}{' ...' if self.num_classes > 10 else ''}; "
                "use predict for unlabelled images"
            )

    @property
    def predict_set(self) -> ImageFileDataset:
        return self.dataset

    def _loader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    def predict_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def summary(self) -> str:
        kind = "labelled" if self.labelled else "unlabelled"
        return (
            f"{len(self.dataset)} {kind} images from {self.path}: resized to {self.image_size}x{self.image_size}, "
            f"{self.in_chans} channel(s), normalised with mean {self.mean} and std {self.std}"
        )


def _pick(name: str, given: Any, preprocessing: dict[str, Any], checkpoint: Any) -> Any:
    """``given`` if set, else the checkpoint's value; a clear error when neither exists."""
    if given is not None:
        return [float(v) for v in given] if name in ("mean", "std") else given
    if preprocessing.get(name) is not None:
        value = preprocessing[name]
        return [float(v) for v in value] if name in ("mean", "std") else value
    where = (
        f"checkpoint {str(checkpoint)!r} does not record it (its training run used a custom eval_transform)"
        if checkpoint is not None
        else "no checkpoint was given"
    )
    raise ValueError(f"{name} is needed to prepare the images: {where}; pass {name} explicitly")
