"""``LongTailDataModule``: a reproducible long-tailed split of a real dataset, with its samplers.

The split is built in ``__init__`` so that ``class_counts`` (the one source of truth every loss, sampler and
callback reads) exists before the model is built: the CLI links it into the model with
``link_arguments(..., apply_on="instantiate")`` and plain Python passes ``dm.class_counts``.

Which profile applies when none is given depends on the pool (:func:`auto_profile`): the balanced benchmark pools
(``BALANCED_POOLS``) are cut with an exponential profile at ``imbalance_ratio``; user-supplied or already imbalanced
pools (``imagefolder``, ``npz``, ``k49``, ``gtsrb``) arrive whole (``profile="none"``). An explicit ``profile`` always
wins. Every ``trainer.fit`` / ``validate`` / ``test`` prints the split it uses (rank 0).

Example:
    >>> dm = LongTailDataModule("digits", imbalance_ratio=10)
    >>> dm.class_counts, dm.profile, dm.profile_auto
    ((134, 103, 80, 62, 48, 37, 28, 22, 17, 13), 'exponential', True)
    >>> dm.num_classes, len(dm.test_set)
    (10, 400)

A nuisance long-tailed instance (K49-ROT-LT style: each training image rotated once, when the split is built):

    >>> dm = LongTailDataModule("digits", profile="zipf", nuisance="rotation", subset_seed=3)
    >>> dm.class_counts[:3], dm.nuisance.__class__.__name__, dm.train_set.nuisance_params.shape
    ((134, 33, 14), 'RotationNuisance', torch.Size([219]))
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.utils.data import DataLoader, Sampler
from torchvision.transforms import v2

from lt_lightning.data.auxiliary import (
    AUX_SEED_OFFSET,
    DEFAULT_NOISE_SIZE,
    NOISES,
    AuxDataset,
    AuxPairedSampler,
    collate_aux,
    synthetic_noise,
)
from lt_lightning.data.base import ArrayDataset
from lt_lightning.data.datasets import DATASETS, LabeledImages, check_class_list, load_dataset, select_classes
from lt_lightning.data.device_data import DeviceData, IndexBatch, IndexDataset, plan_device_data
from lt_lightning.data.nuisance import NUISANCES, Nuisance, create_nuisance
from lt_lightning.data.nuisance_lt import array_dataset, freeze_nuisance, materialise, nuisance_generator
from lt_lightning.data.paired import PairedDataset, PairedSampler
from lt_lightning.data.samplers import (
    SAMPLERS,
    ClassAwareCycleSampler,
    InversePowerSampler,
    LongTailSampler,
    ProgressiveSampler,
    create_sampler,
)
from lt_lightning.data.subsets import flip_labels, long_tail_indices
from lt_lightning.data.transforms import LARGE_IMAGE_SIDE, default_transforms, eval_resize_side, is_resized_crop
from lt_lightning.profiles import PROFILES, make_class_counts
from lt_lightning.schedules import training_horizon

log = logging.getLogger(__name__)

# Pools that are balanced benchmarks: without an explicit profile they are cut exponentially (the CIFAR-LT recipe).
# Every other pool (a user's own folder or npz, K49, GTSRB) is already imbalanced or is the user's data: kept whole.
BALANCED_POOLS = frozenset({"digits", "mnist", "fashion_mnist", "kmnist", "cifar10", "cifar100"})
# Default evaluation batch with data_on_device (at least the training batch).
ON_DEVICE_EVAL_BATCH = 1024
# Above this many classes the printed split shows the head and tail classes only.
_REPORT_ALL_CLASSES = 20


def auto_profile(dataset: str) -> str:
    """The profile used when none is given: ``exponential`` for a balanced benchmark pool, else ``none``.

    Example:
        >>> auto_profile("cifar10"), auto_profile("imagefolder")
        ('exponential', 'none')
    """
    return "exponential" if dataset in BALANCED_POOLS else "none"


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class LongTailDataModule(L.LightningDataModule):
    """Long-tailed training split + balanced test (and optional validation) sets of a named dataset.

    Args:
        dataset: base dataset name (``digits`` — embedded, no download —, ``mnist``, ``fashion_mnist``, ``kmnist``,
            ``cifar10``, ``cifar100``, ``gtsrb``, ``k49``, ``imagefolder``, ``npz``).
        root: directory holding the dataset files (a file path for ``npz``).
        download: fetch missing files with torchvision's downloader (needs network).
        profile: ``exponential``, ``step``, ``zipf`` or ``none`` (natural distribution: every image kept). Default
            None: chosen by :func:`auto_profile` — ``exponential`` for the balanced benchmark pools (digits, mnist,
            fashion_mnist, kmnist, cifar10, cifar100), ``none`` for user-supplied or already imbalanced pools
            (imagefolder, npz, k49, gtsrb). The chosen name is stored in ``profile`` and ``hparams.profile``.
        imbalance_ratio: rho = n_max / n_min >= 1 (``exponential`` and ``step``).
        head_size: images in the largest class; default: the most every class can supply without reuse.
        zipf_exponent: Zipf exponent ``a`` > 0 (``zipf``).
        zipf_min: smallest class size (``zipf``).
        class_order: ``label`` (label 0 is the head) or ``random`` (seeded by ``subset_seed``).
        fill_short_classes: reuse images (cyclically) for classes shorter than their target (K49-LT recipe).
        subset_seed: seed of which images are kept; independent of the training seed.
        val_per_class: balanced validation images per class, taken from the images the profile left unused.
            0 (default) validates on the dataset's own validation list when it ships one (ImageNet-LT, Places-LT,
            iNaturalist 2018: its val list, which is also its test set), else on the test set, as the reference code
            does. Which one is used is in ``val_source`` (``pool``, ``given`` or ``test``) and the split report.
        batch_size: training batch size; ``eval_batch_size`` defaults to it (with ``data_on_device``: to
            ``max(batch_size, 1024)``, evaluation batches carrying no gradient).
        num_workers: DataLoader workers. With workers, every loader keeps them between epochs
            (``persistent_workers``), evaluation loaders included; batches are read into pinned memory
            (``pin_memory``) when the trainer runs on CUDA, never on the CPU. ``data_on_device`` loaders have no
            workers; on CUDA their index batches are pinned and copied without blocking.
        sampler: ``instance`` (plain shuffle), ``class_balanced``, ``square_root``, ``reversed``, ``progressive``
            (fully balanced at epoch ``trainer.max_epochs - 1``; ``ProgressiveSampler``'s default without a trainer),
            ``class_aware_cycle`` (the official classifier-balancing ``ClassAwareSampler``: a shuffled cycle of the
            classes, ``samples_per_class`` consecutive draws from each visited class's own shuffled cycle).
        sampler_seed: base seed of the sampler (epoch ``e`` draws with ``sampler_seed + e``).
        samples_per_class: ``k`` of ``class_aware_cycle`` (draws per visited class, the official
            ``num_samples_cls``; default 4), for ``sampler`` and ``rebalancing_sampler``; unused by other samplers.
        sampler_alpha: ``alpha`` of ``inverse_power`` (per-sample weight ``n_y^-alpha``: CMO's foreground stream;
            1, the default, is class-balanced), for ``sampler`` and ``rebalancing_sampler``; unused by other samplers.
        label_noise: fraction of training labels replaced by another class, uniformly and seeded by ``subset_seed``
            (noisy-label studies, e.g. ABSGD with lambda < 0). ``class_counts`` then counts the noisy labels, which
            are what the model and the losses see; validation and test labels stay clean.
        nuisance: a nuisance transform of ``NUISANCES`` (``rotation``, ``background``, ``dilation``) that makes
            K49-ROT/BG/DIL-LT-style invariance datasets (METHODS §1.2). Pools are first resized to the side the
            model sees (``image_size``; 32 for datasets of varying size; else native), then the nuisance is
            applied to the training, validation and test images. Default None: no nuisance.
        nuisance_kwargs: keyword arguments of the nuisance's constructor (e.g. ``{"high": 50}``); needs
            ``nuisance``.
        nuisance_mode: ``static`` (the released datasets): each training image, every reused copy included, is
            transformed ONCE when the split is built, with draws seeded by ``subset_seed`` (stream ``train``), so
            one ``subset_seed`` is one of the 30 instances (with ``class_order="random"`` the class order changes
            too; the sizes never do). ``oracle``: training images stay clean and the nuisance is drawn anew at
            every read (global torch RNG, which Lightning seeds per worker), in front of the training transform.
            In both modes the validation split is frozen once (stream ``val`` of ``subset_seed``) and the test set
            once with seed 0 (stream ``test``): the SAME transformed test set for every instance and mode, like the
            reference's one test file per nuisance dataset, so all runs are evaluated on identical data.
            Transformed sets are held in memory as arrays (with the draws in their ``nuisance_params``).
        rebalancing_sampler: a second training stream (BBN: ``reversed``). When set, training batches are
            ``(x, y, x_r, y_r)``: the first pair drawn by ``sampler``, the second by this one (seeded independently).
        drop_last: drop the last, incomplete training batch of each epoch (the official BBN loader does,
            ``main/train.py``: a tiny last batch makes noisy BatchNorm statistics). Default False.
        image_size: resize images to this square side (default: native size; 32 for datasets of varying size). For
            the split-list benchmarks (``imagenet_lt``, ``places_lt``, ``inat2018``, ``split_lists``) it is the crop
            side of their recipe (default 224): RandomResizedCrop for training, shorter-edge resize to
            ``side * 256 / 224`` and centre crop for evaluation.
        train_transform: replaces the default training transform (receives a uint8 CHW tensor).
        eval_transform: replaces the default validation / test transform.
        classes: keep only these labels of the pool (training, validation and test), relabelled 0..K-1 in ascending
            order, before the profile is applied (open-set studies: ``[0, 1, 2, 3, 4, 5, 6]`` of digits). Default
            None: every class. Names and normalisation of the pool are kept.
        aux_dataset: an auxiliary, unlabelled image stream (Open-Sampling, :mod:`lt_lightning.data.auxiliary`):
            training batches become ``(x, y, x_aux)``. A name of ``DATASETS`` (its training split; e.g. ``npz`` or
            ``imagefolder`` with ``aux_root``) or synthetic noise ``gaussian``, ``rademacher``, ``blobs`` (seeded by
            ``subset_seed``, of the training images' shape). When it is ``dataset`` itself at the same root, the
            pool defaults to the classes NOT in ``classes`` (digits 0-6 in training, 7-9 as OOD). Aux images go
            through ``train_transform`` (the ID normalisation); pools of varying image size are resized to the
            training images' side. Needs images of the training images' shape (checked here). Not combinable with
            ``rebalancing_sampler``. Under DDP the aux stream is sharded with the ID stream; the epoch is the ID
            loader's and the aux pool cycles. Default None.
        aux_root: where ``aux_dataset`` is read (a directory, or an ``.npz`` path); default ``root``.
        aux_classes: labels of ``aux_dataset`` kept in the aux pool (default: all; see ``aux_dataset``).
        aux_batch_size: aux images per training batch of ``batch_size`` ID images (Open-Sampling: 512 per 128);
            default ``4 * batch_size``.
        aux_size: images in a synthetic noise pool (default 10 000); only with a noise ``aux_dataset``.
        dataset_kwargs: options of the dataset's loader besides ``root`` and ``download``
            (``lt_lightning.data.datasets.dataset_options(name)``), e.g. ``{"train_list": ..., "test_list": ...}``
            for ``split_lists``. Default None.
        data_on_device: keep each split's uint8 images on the training device and serve batches by index
            (:mod:`lt_lightning.data.device_data`): the loaders yield index batches drawn by the same samplers (DDP
            sharding, DRS, resume unchanged, ``num_workers`` unused), and ``on_after_batch_transfer`` gathers and
            augments them there in one batched op (crop + flip, normalise; evaluation: normalise only), equal in
            distribution to the per-sample transforms. Needs an in-memory dataset (ValueError for image files) and
            ``trainer.fit(..., datamodule=dm)`` (the hook runs only then). Where a transform cannot run batched
            (``nuisance_mode="oracle"``, ``aux_dataset``, a custom transform other than resize / RandomCrop / flip /
            ToDtype / Normalize) that part keeps the normal loader path, with one warning naming the reason.
            Default False.
    """

    def __init__(
        self,
        dataset: str = "digits",
        root: str | Path = "data",
        download: bool = False,
        profile: Literal["exponential", "step", "zipf", "none"] | None = None,
        imbalance_ratio: float = 10.0,
        head_size: int | None = None,
        zipf_exponent: float = 2.0,
        zipf_min: int = 5,
        class_order: Literal["label", "random"] = "label",
        fill_short_classes: bool = False,
        subset_seed: int = 0,
        val_per_class: int = 0,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        sampler: str = "instance",
        sampler_seed: int = 0,
        samples_per_class: int = 4,
        sampler_alpha: float = 1.0,
        rebalancing_sampler: str | None = None,
        drop_last: bool = False,
        label_noise: float = 0.0,
        nuisance: str | None = None,
        nuisance_kwargs: dict | None = None,
        nuisance_mode: Literal["static", "oracle"] = "static",
        image_size: int | None = None,
        train_transform: Callable | None = None,
        eval_transform: Callable | None = None,
        classes: list[int] | None = None,
        aux_dataset: str | None = None,
        aux_root: str | Path | None = None,
        aux_classes: list[int] | None = None,
        aux_batch_size: int | None = None,
        aux_size: int | None = None,
        dataset_kwargs: dict | None = None,
        data_on_device: bool = False,
    ) -> None:
        super().__init__()
        # Validate names and numbers where they enter, before any file is read.
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        if profile is not None and profile not in PROFILES:
            raise ValueError(f"profile must be one of {sorted(PROFILES)} or None (automatic), got {profile!r}")
        # Resolved here and written into hparams below: checkpoints and logged hparams.yaml record the profile
        # actually used, and reloading them rebuilds the same split.
        self.profile_auto: bool = profile is None
        profile = auto_profile(dataset) if profile is None else profile
        self.profile: str = profile
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
        if rebalancing_sampler is not None and rebalancing_sampler not in SAMPLERS:
            raise ValueError(
                f"rebalancing_sampler must be one of {sorted(SAMPLERS)} or None, got {rebalancing_sampler!r}"
            )
        self.rebalancing_sampler = rebalancing_sampler
        self._check_aux_args(aux_dataset, aux_root, aux_classes, aux_batch_size, aux_size, rebalancing_sampler)
        if not isinstance(drop_last, bool):
            raise TypeError(f"drop_last must be a bool, got {drop_last!r}")
        if not isinstance(data_on_device, bool):
            raise TypeError(f"data_on_device must be a bool, got {data_on_device!r}")
        self.drop_last = drop_last
        if isinstance(label_noise, bool) or not (isinstance(label_noise, int | float) and 0 <= label_noise < 1):
            raise ValueError(f"label_noise must be in [0, 1), got {label_noise!r}")
        if nuisance is not None and nuisance not in NUISANCES:
            raise ValueError(f"nuisance must be one of {sorted(NUISANCES)} or None, got {nuisance!r}")
        if nuisance_kwargs is not None and nuisance is None:
            raise ValueError(f"nuisance_kwargs needs a nuisance (one of {sorted(NUISANCES)}), got {nuisance_kwargs!r}")
        if nuisance_kwargs is not None and not isinstance(nuisance_kwargs, dict):
            raise TypeError(f"nuisance_kwargs must be a dict or None, got {type(nuisance_kwargs).__name__}")
        if nuisance_mode not in ("static", "oracle"):
            raise ValueError(f"nuisance_mode must be one of ['oracle', 'static'], got {nuisance_mode!r}")
        # Built here so bad kwargs fail before any file is read.
        self.nuisance: Nuisance | None = (
            None if nuisance is None else create_nuisance(nuisance, **(nuisance_kwargs or {}))
        )
        self.batch_size = _check_int("batch_size", batch_size, 1)
        # Evaluation holds no gradients: with the data on the device, default to large evaluation batches.
        default_eval = max(self.batch_size, ON_DEVICE_EVAL_BATCH) if data_on_device is True else self.batch_size
        self.eval_batch_size = (
            default_eval if eval_batch_size is None else _check_int("eval_batch_size", eval_batch_size, 1)
        )
        self.num_workers = _check_int("num_workers", num_workers, 0)
        self.sampler_name = sampler
        self.sampler_seed = _check_int("sampler_seed", sampler_seed, 0)
        self.samples_per_class = _check_int("samples_per_class", samples_per_class, 1)
        InversePowerSampler(np.zeros(1, dtype=np.int64), alpha=sampler_alpha)  # validates it, with its own message
        self.sampler_alpha = float(sampler_alpha)
        if head_size is not None:
            _check_int("head_size", head_size, 1)
        if image_size is not None:
            _check_int("image_size", image_size, 1)
        _check_int("val_per_class", val_per_class, 0)
        if profile in ("exponential", "step") and not (
            isinstance(imbalance_ratio, int | float | np.integer | np.floating)
            and np.isfinite(imbalance_ratio)
            and imbalance_ratio >= 1
        ):
            raise ValueError(f"imbalance_ratio must be a finite number >= 1 (n_max / n_min), got {imbalance_ratio!r}")
        if profile == "zipf" and not (
            isinstance(zipf_exponent, int | float | np.integer | np.floating) and zipf_exponent > 0
        ):
            raise ValueError(f"zipf_exponent must be a number > 0, got {zipf_exponent!r}")
        self.save_hyperparameters(ignore=["train_transform", "eval_transform"])
        # Under LightningCLI save_hyperparameters stores the config as given (profile None): record the one used.
        self.hparams["profile"] = profile

        if dataset_kwargs is not None and not isinstance(dataset_kwargs, dict):
            raise TypeError(f"dataset_kwargs must be a dict or None, got {type(dataset_kwargs).__name__}")
        base = load_dataset(dataset, root, download=download, **(dataset_kwargs or {}))
        self.dataset_note: str | None = base.note
        pool_classes = base.num_classes
        if classes is not None:
            base = select_classes(base, classes)
        available = _check_pool(dataset, root, base)
        if val_per_class >= available.min():
            raise ValueError(
                f"val_per_class must be < {int(available.min())} (the smallest class of the {dataset} training "
                f"pool, class {base.class_names[int(available.argmin())]!r}) to leave training images, got "
                f"{val_per_class}"
            )
        self.pool_counts: tuple[int, ...] = tuple(int(a) for a in available)
        if head_size is None and profile != "none":
            head_size = int(available.min()) - val_per_class
        counts = make_class_counts(
            profile,
            available,
            imbalance_ratio=imbalance_ratio,
            head_size=head_size,
            zipf_exponent=zipf_exponent,
            zipf_min=zipf_min,
            class_order=class_order,
            seed=subset_seed,
        )
        if profile == "none" and val_per_class:
            counts = tuple(int(c) - val_per_class for c in counts)
        train_idx, val_idx = long_tail_indices(
            base.train.targets, counts, subset_seed, val_per_class=val_per_class, fill_short_classes=fill_short_classes
        )
        # Which images of the pool (``load_dataset(dataset).train``) the training split holds, in its order.
        self.train_indices: np.ndarray = train_idx

        # The side the model sees (None: native); nuisances act at this resolution.
        self._side: int | None = image_size or _fixed_size(dataset, base)
        default_train, default_eval = default_transforms(dataset, base.mean, base.std, self._side)
        # ``is None``, not ``or``: a user transform may be falsy (an empty nn.Sequential has len 0).
        self.train_transform = default_train if train_transform is None else train_transform
        self.eval_transform = default_eval if eval_transform is None else eval_transform
        # Recorded in model checkpoints (``preprocessing``); unknown when the user brings an eval_transform.
        self._normalisation = None if eval_transform is not None else (list(base.mean), list(base.std))
        self.class_counts: tuple[int, ...] = tuple(int(c) for c in counts)
        self.class_names: tuple[str, ...] = tuple(base.class_names)
        self.num_classes: int = base.num_classes
        self.in_chans: int = base.channels
        # Clean held-out images (no transform) for invariance_set; without a nuisance the served sets are clean.
        self._clean_val = self._clean_test = None
        if self.nuisance is not None:
            self._clean_test = base.test.subset(np.arange(len(base.test)), transform=None)
        if self.nuisance is not None and nuisance_mode == "oracle":
            # Fresh draws at every read, before augmentation; _with_nuisance resizes the clean images beforehand.
            self.train_transform = v2.Compose([self.nuisance, self.train_transform])
        self.train_set: LabeledImages = self._with_nuisance(
            base.train.subset(train_idx, transform=self.train_transform),
            "train" if nuisance_mode == "static" else None,
            subset_seed,
        )
        if label_noise:
            self.train_set.targets = flip_labels(self.train_set.targets, base.num_classes, label_noise, subset_seed)
            self.class_counts = tuple(int(c) for c in np.bincount(self.train_set.targets, minlength=base.num_classes))
        self.test_set: LabeledImages = self._with_nuisance(
            base.test.subset(np.arange(len(base.test)), transform=self.eval_transform), "test", 0
        )
        # The validation split: held out of the pool when val_per_class > 0 (an explicit request wins), else the
        # dataset's own validation list when it ships one (ImageNet-LT, Places-LT), else the test set.
        self.val_source: str = "pool" if val_per_class else ("given" if base.val is not None else "test")
        if self.val_source == "pool":
            val_raw = base.train.subset(val_idx, transform=None)
        elif self.val_source == "given":
            val_raw = base.val.subset(np.arange(len(base.val)), transform=None)
        if self.nuisance is not None and self.val_source != "test":
            self._clean_val = val_raw
        self.val_set: LabeledImages = (
            self.test_set
            if self.val_source == "test"
            else self._with_nuisance(val_raw.subset(np.arange(len(val_raw)), self.eval_transform), "val", subset_seed)
        )
        self.aux_set: LabeledImages | None = None
        self.aux_batch_size: int | None = None
        if aux_dataset is not None:
            self.aux_batch_size = 4 * self.batch_size if aux_batch_size is None else int(aux_batch_size)
            self.aux_set = self._build_aux(
                aux_dataset, root if aux_root is None else aux_root, root, classes, pool_classes, aux_classes, aux_size
            )
        self._device_data: DeviceData | None = self._plan_device_data(train_transform) if data_on_device else None
        log.info(self.summary())

    def _plan_device_data(self, user_train_transform) -> DeviceData:
        """The splits served from the device (``data_on_device``); one warning names what stays on the loader path."""
        reasons = {}
        if self.nuisance is not None and self.hparams.nuisance_mode == "oracle":
            reasons["train"] = "nuisance_mode='oracle' draws the nuisance per sample in the training transform"
        elif self.aux_set is not None:
            reasons["train"] = f"aux_dataset={self.hparams.aux_dataset!r} adds an aux stream (x, y, x_aux)"
        splits = {"train": self.train_set, "val": self.val_set, "test": self.test_set}
        transforms = {"train": self.train_transform, "eval": self.eval_transform}
        data, warning = plan_device_data(self.hparams.dataset, splits, transforms, reasons)
        if warning is not None:
            rank_zero_warn(warning)
        return data

    @staticmethod
    def _check_aux_args(aux_dataset, aux_root, aux_classes, aux_batch_size, aux_size, rebalancing_sampler) -> None:
        accepted = sorted([*DATASETS, *NOISES])
        if aux_dataset is not None and aux_dataset not in accepted:
            raise ValueError(f"aux_dataset must be one of {accepted} or None, got {aux_dataset!r}")
        if aux_batch_size is not None:
            _check_int("aux_batch_size", aux_batch_size, 1)
        if aux_size is not None:
            _check_int("aux_size", aux_size, 1)
        if aux_dataset is None:
            given = {"aux_root": aux_root, "aux_classes": aux_classes, "aux_batch_size": aux_batch_size}
            given["aux_size"] = aux_size
            for name, value in given.items():
                if value is not None:
                    raise ValueError(f"{name}={value!r} needs an aux_dataset (one of {accepted})")
            return
        if rebalancing_sampler is not None:
            raise ValueError(
                f"aux_dataset={aux_dataset!r} and rebalancing_sampler={rebalancing_sampler!r} cannot be combined: "
                "training batches carry either a second ID stream (x, y, x_r, y_r) or an aux stream (x, y, x_aux)"
            )
        if aux_dataset in NOISES and (aux_classes is not None or aux_root is not None):
            raise ValueError(f"aux_dataset={aux_dataset!r} is synthetic noise: it takes no aux_root or aux_classes")
        if aux_size is not None and aux_dataset not in NOISES:
            raise ValueError(f"aux_size={aux_size!r} sizes a synthetic pool ({list(NOISES)}), not {aux_dataset!r}")

    def _build_aux(self, name, aux_root, root, classes, pool_classes, aux_classes, aux_size) -> LabeledImages:
        """The aux pool with the training transform, its images checked against the training images' shape."""
        id_raw = tuple(self.train_set.image(0).shape)  # (C, H, W) before the transform
        # Without a side to resize to (``_side`` None) the training transform keeps the native size: the aux images
        # must have it too (pools of varying size are resized to it).
        native = self._side is None
        transform = self.train_transform
        if name in NOISES:
            channels, height, width = id_raw
            seed = self.hparams.subset_seed
            images = synthetic_noise(name, aux_size or DEFAULT_NOISE_SIZE, (height, width, channels), seed)
            pool: LabeledImages = ArrayDataset(images, np.zeros(len(images), dtype=np.int64))
        else:
            aux_base = load_dataset(name, aux_root, download=self.hparams.download)
            same = name == self.hparams.dataset and Path(aux_root).expanduser() == Path(root).expanduser()
            if aux_classes is None and same and classes is not None:
                aux_classes = sorted(set(range(pool_classes)) - set(check_class_list(classes, pool_classes)))
                if not aux_classes:
                    raise ValueError(f"aux_dataset={name!r}: classes={classes!r} leaves no held-out class for the pool")
            if aux_classes is not None:
                aux_base = select_classes(aux_base, aux_classes, "aux_classes")
            pool = aux_base.train
            if aux_base.image_size is None and native:
                transform = v2.Compose([v2.Resize(id_raw[1:], antialias=True), transform])
        aux_raw = tuple(pool.image(0).shape)
        pool = pool.subset(np.arange(len(pool)), transform=transform)
        mismatch = aux_raw[0] != id_raw[0] or (native and transform is self.train_transform and aux_raw != id_raw)
        if not mismatch:
            try:
                mismatch = tuple(pool[0][0].shape) != tuple(self.train_set[0][0].shape)
            except (RuntimeError, ValueError, TypeError):
                mismatch = True
        if mismatch:
            where = "" if name in NOISES or name == "digits" else f" at {str(aux_root)!r}"
            raise ValueError(
                f"aux_dataset={name!r}{where} has images of shape {aux_raw} (C, H, W), the training images "
                f"{id_raw}: the aux pool needs the same channels and size"
            )
        self._aux_shape = tuple(pool[0][0].shape)
        return pool

    def setup(self, stage: str) -> None:
        # Once per trainer.fit / validate / test (Lightning calls setup once per entry point), on rank 0 only, on
        # stdout: the user sees what was trained on without configuring logging.
        if stage in ("fit", "validate", "test"):
            _print_rank_zero(self.split_report())
        model = self.trainer.lightning_module if self.trainer is not None else None
        if self._device_data is not None and model is not None:
            _check_transfer_hook(model)

    def split_report(self) -> str:
        """The split in a few lines: dataset, profile (and whether it was chosen automatically), images kept out of
        the pool, images per class (head and tail only above 20 classes), validation and test sizes.

        Example:
            >>> print(LongTailDataModule("digits", val_per_class=4).split_report())
            LongTailDataModule: digits, profile exponential (automatic: balanced benchmark pool, imbalance_ratio 10)
              kept 527 of 1397 training-pool images (ratio 10.0)
              train per class: 0:130 1:100 2:77 3:60 4:46 5:36 6:28 7:21 8:16 9:13
              val 40 (4 per class, from the pool), test 400
        """
        hp, counts = self.hparams, self.class_counts
        if not self.profile_auto:
            how = "(given)"
        elif self.profile == "none":
            how = "(automatic: user-supplied or imbalanced pool, every image kept; set profile to re-cut it)"
        else:
            how = f"(automatic: balanced benchmark pool, imbalance_ratio {hp.imbalance_ratio:g})"
        ratio = max(counts) / min(counts)
        pairs = [f"{name}:{c}" for name, c in zip(self.class_names, counts, strict=True)]
        if len(counts) <= _REPORT_ALL_CLASSES:
            per_class = f"  train per class: {' '.join(pairs)}"
        else:
            ranked = [pairs[i] for i in sorted(range(len(counts)), key=lambda i: -counts[i])]
            per_class = (
                f"  train per class ({len(counts)} classes, largest first): {' '.join(ranked[:5])} ... "
                f"{' '.join(ranked[-5:])}; full table: datamodule.class_counts (train_count in per_class_*.csv)"
            )
        val = {
            "test": f"val {len(self.val_set)} (= test)",
            "pool": f"val {len(self.val_set)} ({hp.val_per_class} per class, from the pool)",
            "given": f"val {len(self.val_set)} (the dataset's validation list)",
        }[self.val_source]
        return "\n".join(
            [
                f"LongTailDataModule: {hp.dataset}, profile {self.profile} {how}",
                f"  kept {sum(counts)} of {sum(self.pool_counts)} training-pool images (ratio {ratio:.1f})",
                per_class,
                f"  {val}, test {len(self.test_set)}",
                *([f"  note: {self.dataset_note}"] if self.dataset_note else []),
            ]
        )

    def _with_nuisance(self, dataset: LabeledImages, stream: str | None, seed: int) -> LabeledImages:
        """``dataset`` as it should be served: unchanged without a nuisance; frozen with draws of ``stream``;
        for ``stream=None`` (oracle training images) clean but resized to the model's side when one applies."""
        if self.nuisance is None:
            return dataset
        if stream is None:
            if self._side is None:
                return dataset
            return array_dataset(materialise(dataset, self._side), dataset)
        return freeze_nuisance(dataset, self.nuisance, nuisance_generator(seed, stream), side=self._side)

    def eval_view(self, split: str = "train") -> LabeledImages:
        """Split ``train``, ``val`` or ``test`` with the deterministic ``eval_transform`` (no augmentation).

        Used by curvature diagnostics (:class:`~lt_lightning.callbacks.ClassHessianSpectrum`), which need the
        training images as the model sees them at evaluation. Same items and labels (label noise included) in the
        same order as the split; a static nuisance stays applied, an oracle one (drawn in the train transform) does
        not. Returns a new dataset at each call.

        Example:
            >>> dm = LongTailDataModule("digits")
            >>> view = dm.eval_view("train")
            >>> len(view) == len(dm.train_set), view.transform is dm.eval_transform
            (True, True)
        """
        sources = {"train": self.train_set, "val": self.val_set, "test": self.test_set}
        if split not in sources:
            raise ValueError(f"split must be one of {sorted(sources)}, got {split!r}")
        source = sources[split]
        return source.subset(np.arange(len(source)), transform=self.eval_transform)

    def invariance_set(self, stage: str = "fit") -> LabeledImages:
        """The held-out images WITHOUT the nuisance and without transform (raw uint8 CHW), for invariance metrics.

        The eKLD callback applies its own nuisance draws to these images, then ``eval_transform``. For ``fit`` and
        ``validate``: the validation split (from the pool or the dataset's list), else the test set; for ``test``:
        the test set. Same images in the same order as ``val_set`` / ``test_set``, before the nuisance; resized to the
        model's side (an :class:`ArrayDataset`) when one applies (``image_size``, or datasets of varying size).
        Works with and without ``nuisance``; returns a new dataset at each call.

        Example:
            >>> dm = LongTailDataModule("digits", nuisance="background")
            >>> clean = dm.invariance_set("test")
            >>> clean.transform is None, len(clean) == len(dm.test_set), clean.image(0).dtype
            (True, True, torch.uint8)
        """
        if stage in ("fit", "validate"):
            use_val = self.val_source != "test"
        elif stage == "test":
            use_val = False
        else:
            raise ValueError(f"stage must be one of ['fit', 'test', 'validate'], got {stage!r}")
        if self.nuisance is not None:
            source = self._clean_val if use_val else self._clean_test
        else:
            source = self.val_set if use_val else self.test_set
        clean = source.subset(np.arange(len(source)), transform=None)
        if self._side is None:
            return clean
        return array_dataset(materialise(clean, self._side), clean)

    def summary(self) -> str:
        """One line describing the built split."""
        counts = self.class_counts
        hp = self.hparams
        return (
            f"{hp.dataset}-LT ({hp.profile}): {self.num_classes} classes, {sum(counts)} training images, "
            f"head {max(counts)}, tail {min(counts)}, ratio {max(counts) / min(counts):.1f}, "
            f"val {len(self.val_set)}{' (= test)' if self.val_set is self.test_set else ''}, test {len(self.test_set)}"
            + ("" if self.nuisance is None else f", nuisance {hp.nuisance} ({hp.nuisance_mode})")
        )

    @property
    def preprocessing(self) -> dict | None:
        """How raw uint8 images become model inputs, in plain types (stored in model checkpoints): ``mean`` and
        ``std`` on the [0, 1] scale, ``image_size`` (square side, None = native), ``in_chans``, ``dataset``. None
        when a custom ``eval_transform`` was given (it cannot be described this way).

        Example:
            >>> prep = LongTailDataModule("digits").preprocessing
            >>> prep["image_size"], prep["in_chans"], prep["dataset"]
            (8, 1, 'digits')
        """
        if self._normalisation is None:
            return None
        mean, std = self._normalisation
        side = self._side or int(self.test_set.image(0).shape[-1])
        dataset = self.hparams.dataset
        prep = {"mean": mean, "std": std, "image_size": side, "in_chans": self.in_chans, "dataset": dataset}
        if is_resized_crop(dataset):
            prep["eval_resize"] = eval_resize_side(side)  # shorter edge, then the image_size centre crop
        return prep

    @property
    def train_targets(self) -> np.ndarray:
        """Labels of the training subset (what samplers draw from)."""
        return self.train_set.targets

    def build_sampler(self, name: str | None = None, seed_offset: int = 0) -> LongTailSampler:
        """A fresh training sampler by name (default: the configured one), seeded ``sampler_seed + seed_offset``."""
        name = self.sampler_name if name is None else name
        kwargs = {}
        if SAMPLERS.get(name) is ProgressiveSampler:
            # Balanced at the last epoch (T = max_epochs - 1, of the checkpoint's horizon on resume); without a
            # trainer, or for endless training (max_epochs None / -1), keep the sampler's own default T.
            max_epochs = training_horizon(self.trainer) if self.trainer is not None else None
            if max_epochs is not None and max_epochs >= 1:
                kwargs["total_epochs"] = max(int(max_epochs) - 1, 1)
        if SAMPLERS.get(name) is ClassAwareCycleSampler:
            kwargs["samples_per_class"] = self.samples_per_class
        if SAMPLERS.get(name) is InversePowerSampler:
            kwargs["alpha"] = self.sampler_alpha
        seed = self.sampler_seed + seed_offset
        return create_sampler(name, self.train_targets, seed=seed, num_classes=self.num_classes, **kwargs)

    def train_dataloader(self) -> DataLoader:
        dataset, sampler, collate = self.train_set, self.build_sampler(), None
        if self.aux_set is not None:
            aux_seed = self.sampler_seed + AUX_SEED_OFFSET
            dataset = AuxDataset(self.train_set, self.aux_set, self._aux_shape)
            world = self.trainer.world_size if self.trainer is not None else 1
            sampler = AuxPairedSampler(
                sampler, len(self.aux_set), self.aux_batch_size, self.batch_size, aux_seed, world_size=world
            )
            collate = collate_aux
        if self.rebalancing_sampler is not None:
            # The second stream draws with seed + 1_000_003 + e, never one of the first stream's seeds (seed + e).
            second = self.build_sampler(self.rebalancing_sampler, seed_offset=1_000_003)
            dataset, sampler = PairedDataset(self.train_set), PairedSampler(sampler, second)
        num_workers, pin_memory = self.num_workers, self._pin_memory()
        if self._device_data is not None and "train" in self._device_data.splits:
            # Same sampler, index batches: on_after_batch_transfer gathers and augments the images on the device.
            index_set = IndexDataset(len(self.train_set), "train", pin_memory=self._pin_memory())
            dataset, collate, num_workers, pin_memory = index_set, index_set.collate, 0, False
        if self.drop_last and len(sampler) < self.batch_size:
            raise ValueError(
                f"drop_last=True with batch_size={self.batch_size} leaves no training batch: the sampler draws "
                f"{len(sampler)} samples per epoch; lower batch_size or set drop_last=False"
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=self._shard(sampler),
            drop_last=self.drop_last,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            pin_memory=pin_memory,
            collate_fn=collate,
        )

    def _pin_memory(self) -> bool:
        """Pinned host memory (faster, asynchronous host-to-GPU copies) only when the trainer runs on CUDA."""
        return self.trainer is not None and isinstance(getattr(self.trainer, "accelerator", None), CUDAAccelerator)

    def _shard(self, sampler: Sampler) -> Sampler:
        """Under DDP, this rank's stride ``global[r::W]`` of the one seeded global draw.

        Lightning would wrap the sampler itself, but for a training loader its ``DistributedSamplerWrapper`` gets
        ``shuffle=True`` and permutes the positions of the list (with ``PL_GLOBAL_SEED + epoch``) before striding
        (LIGHTNING_NOTES D.1). Installing the wrapper here with ``shuffle=False`` (Lightning leaves a
        ``DistributedSampler`` alone) keeps the order the samplers define: the W shards interleave back to the
        single-process list, so the union of the ranks' step-t batches is the single-process step-t batch of
        ``W x batch_size`` (class-aware cycles, BBN pairs and the aux spread of ``aux_counts`` stay as designed).
        """
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1 or not trainer._accelerator_connector.use_distributed_sampler:
            return sampler
        return DistributedSamplerWrapper(
            sampler, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
        )

    def _eval_loader(self, dataset: LabeledImages, split: str = "test") -> DataLoader:
        if self._device_data is not None and split in self._device_data.splits:
            index_set = IndexDataset(len(dataset), split, pin_memory=self._pin_memory())
            return DataLoader(index_set, batch_size=self.eval_batch_size, shuffle=False, collate_fn=index_set.collate)
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self._pin_memory(),
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.val_set, "val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set, "test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_set, "test")

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """With ``data_on_device``: an index batch (now on the device) -> ``[x, y]`` / ``[x, y, x_r, y_r]``, gathered
        from the device copy of its split and transformed there (:mod:`lt_lightning.data.device_data`). Any other
        batch passes through."""
        if not isinstance(batch, IndexBatch) or self._device_data is None:
            return batch
        trainer = self.trainer
        epoch, rank = (trainer.current_epoch, trainer.global_rank) if trainer is not None else (0, 0)
        out = self._device_data.batch(batch, epoch, rank)
        # The loader path's float batches go through the precision plugin's convert_input before the transfer.
        return trainer.precision_plugin.convert_input(out) if trainer is not None else out

    def teardown(self, stage: str) -> None:
        if self._device_data is not None:
            self._device_data.clear()  # free the device copies between trainer.fit / test calls


@rank_zero_only
def _print_rank_zero(text: str) -> None:
    print(text, flush=True)


def _check_pool(dataset: str, root: str | Path, base) -> np.ndarray:
    """Training images per class of the pool, refusing what no profile can train on: fewer than 2 classes, or a
    class with no training image (labels must be 0..K-1, each present in the training set)."""
    where = "" if dataset == "digits" else f" at {str(root)!r}"
    if base.num_classes < 2:
        raise ValueError(
            f"dataset {dataset!r}{where} has {base.num_classes} class {list(base.class_names)}: classification needs "
            "at least 2 classes"
        )
    available = np.bincount(base.train.targets, minlength=base.num_classes)
    empty = np.flatnonzero(available == 0)
    if len(empty):
        test_only = sorted(set(empty.tolist()) & set(np.unique(base.test.targets).tolist()))
        only = f"; {test_only} appear only in the test set" if test_only else ""
        names = [base.class_names[c] for c in empty]
        how = (
            "relabel y_train / y_test to 0..K-1 (K = len(class_names) when given, else 1 + the largest label)"
            if dataset == "npz"
            else "every class needs at least one training image"
        )
        raise ValueError(
            f"dataset {dataset!r}{where}: classes {empty.tolist()} (names {names}) have no training image{only}; "
            f"labels must be contiguous 0..{base.num_classes - 1}, each present in the training set: {how}"
        )
    return available


def _fixed_size(dataset: str, base) -> int | None:
    # Datasets of varying image size need a resize to batch: 224 for the large split-list benchmarks (their
    # RandomResizedCrop recipe), else 32, which matches the CIFAR-style backbones.
    if base.image_size:
        return None
    return LARGE_IMAGE_SIDE if is_resized_crop(dataset) else 32


def _check_transfer_hook(model: L.LightningModule) -> None:
    """data_on_device needs the datamodule's ``on_after_batch_transfer``: Lightning calls a module's own instead."""
    if is_overridden("on_after_batch_transfer", model, parent=L.LightningModule):
        raise ValueError(
            f"data_on_device=True: {type(model).__name__} overrides on_after_batch_transfer, so Lightning calls it "
            "instead of the datamodule's, which turns the index batches into images; set data_on_device=False, or "
            "move that code to the module's training_step"
        )
