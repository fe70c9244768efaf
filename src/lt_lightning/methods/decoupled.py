"""``ClassifierRetraining``: stage 2 of decoupled learning on ANY trained model — cRT, LWS and MARC.

Stage 1 learns the representation with any method (CE, LDAM-DRW, BBN, SAM, ABSGD, or a foreign LightningModule);
stage 2 freezes it and trains only a new or re-scaled last layer, usually on a class-balanced stream:

==========  ========================================================  ==================  ========================
mode        logits on the frozen features ``f``                       trained             source
==========  ========================================================  ==================  ========================
``crt``     ``W' f + b'``, a freshly initialised head                 C·D + C (linear)    Kang et al. 2020 (cRT)
``lws``     ``s_c (w_c · f + b_c)``, ``s = 1`` at start               C                   Kang et al. 2020 (LWS)
``marc``    ``ω_c (w_c · f + b_c) + β_c ||w_c||``, ω = 1, β = 0       2C                  Wang et al. 2022 (MARC)
==========  ========================================================  ==================  ========================

``f`` and the trained head come from the stage-1 module's ``classifier_features`` / ``classifier_head`` hooks (see
:mod:`lt_lightning.classifier_parts`). The stage-1 module is rebuilt from its checkpoint alone (its class path and
hyper-parameters are in the file), kept as a frozen submodule (no gradient; every parameter bit-identical after fit)
and recorded in this module's hyper-parameters (``stage1``), so a stage-2 checkpoint reloads without the stage-1 file.

**BatchNorm in stage 2** (``bn_mode``): the official code leaves the frozen backbone in ``train()`` mode, so its
BatchNorm running statistics are re-estimated on the class-balanced stream during cRT and LWS (confirmed by the MiSLAS
authors, MiSLAS#2). ``bn_mode="train"`` (default) does the same; ``"eval"`` keeps the stage-1 statistics (and turns
the backbone's dropout off), so the whole stage-1 state is bit-identical after fit.

Default recipe: the official ImageNet-LT one (classifier-balancing ``cls_crt.yaml`` / ``cls_lws.yaml``): plain CE,
SGD lr 0.2, momentum 0.9, weight decay 5e-4, cosine to 0 over ``max_epochs`` (10 epochs cRT, 5 LWS), on class-aware
sampling (``data.init_args.sampler: class_aware_cycle`` or ``class_balanced``); a warning when the datamodule samples
``instance`` (then stage 2 is plain fine-tuning of the last layer). MARC's stage-2 recipe is not in a reference we
could read; it uses the LWS one. Presets: ``examples/*_crt.yaml``, ``*_lws.yaml``, ``*_marc.yaml``.

New few-parameter methods on a frozen model (optimal-transport re-weighting, guided adversarial examples) subclass
this module and override :meth:`ClassifierRetraining.configure_stage2_head` (the trainable head on the frozen
features) and, if their loss differs, ``training_loss`` — batches may carry more than ``(x, y)``.

Example:
    >>> import tempfile, torch, lightning as L
    >>> from lt_lightning.methods import LongTailClassifier
    >>> stage1 = LongTailClassifier(class_counts=(50, 20, 5), in_chans=1)
    >>> path = tempfile.mkdtemp() + "/stage1.ckpt"
    >>> trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    >>> trainer.strategy.connect(stage1); trainer.save_checkpoint(path)
    >>> lws = ClassifierRetraining(path, mode="lws").eval()
    >>> x = torch.randn(4, 1, 8, 8)
    >>> torch.equal(lws.predict_logits(x), stage1.eval()(x)), lws.num_trainable_parameters()
    (True, 3)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lt_lightning.checkpoints import build_module, load_trained_module
from lt_lightning.classifier_parts import classifier_parts
from lt_lightning.methods.base import LongTailClassifier
from lt_lightning.models import Backbone
from lt_lightning.models.calibration_heads import LearnableWeightScaling, MarginCalibration
from lt_lightning.models.heads import make_head
from lt_lightning.schedules import training_horizon

MODES = ("crt", "lws", "marc")
BN_MODES = ("train", "eval")
# classifier-balancing config/ImageNet_LT/cls_crt.yaml and cls_lws.yaml (SGD; cosine to 0 over the stage's epochs).
OFFICIAL_SGD = {"lr": 0.2, "momentum": 0.9, "weight_decay": 5e-4}


class FrozenFeatureNetwork(Backbone):
    """A :class:`Backbone` whose features are a frozen trained module's ``classifier_features`` and whose head is the
    stage-2 head; ``bn_mode`` decides whether the frozen part follows ``train()`` (BatchNorm statistics re-estimated)
    or stays in ``eval()``."""

    def __init__(self, stage1: nn.Module, head: nn.Module, num_features: int | None, bn_mode: str) -> None:
        super().__init__()
        self.stage1 = stage1.requires_grad_(False)
        self.head = head
        self.num_features = num_features
        self.num_classes = int(head.out_features)
        self.bn_mode = bn_mode
        # Lightning 2.x keeps each submodule's train/eval mode at the start of fit (it does not call train()), and
        # the stage-1 module arrives in eval mode: set the mode bn_mode asks for now.
        self.train(True)

    def forward_features(self, x: Tensor) -> Tensor:
        # No gradient reaches the frozen part (nor is its graph kept); BatchNorm statistics still update in train().
        with torch.no_grad():
            features = getattr(self.stage1, "classifier_features", None)  # direct: no head is built per step
            return features(x) if callable(features) else classifier_parts(self.stage1).features(x)

    def train(self, mode: bool = True) -> FrozenFeatureNetwork:
        super().train(mode)
        if self.bn_mode == "eval":
            self.stage1.eval()
        return self


class ClassifierRetraining(LongTailClassifier):
    """Stage 2 on a frozen stage-1 model: cRT (new head), LWS (per-class scales) or MARC (per-class ω, β).

    Args:
        checkpoint: the stage-1 checkpoint (any lt_lightning method; a foreign LightningModule with ``stage1_class``).
        class_counts: training images per class (linked from the datamodule by the CLI); default: the stage-1
            checkpoint's. Its length must equal the stage-1 model's number of classes.
        mode: ``crt``, ``lws`` or ``marc`` (see the module docstring).
        stage1_class: the stage-1 LightningModule's class path, for checkpoints that record none (not written by
            lt_lightning nor by the LightningCLI); overrides the recorded one.
        bn_mode: ``train`` (the official code: BatchNorm statistics re-estimated on the stage-2 stream) or ``eval``.
        head: the new head of cRT, ``linear`` or ``cosine`` (LDAM's NormedLinear; pair it with ``loss: ldam``).
            A cosine stage-1 head is replaced by a linear one unless ``cosine`` is asked for. Ignored by LWS / MARC,
            which keep the stage-1 head.
        loss: the stage-2 loss (a name of ``lt_lightning.losses.LOSSES`` or a loss config); plain CE officially.
        loss_kwargs: keyword arguments of a loss given by name.
        optimizer: ``params -> Optimizer`` over the trainable stage-2 parameters; default SGD lr 0.2, momentum 0.9,
            weight decay 5e-4.
        lr_scheduler: ``optimizer -> LRScheduler`` stepped per epoch; default cosine annealing to 0 over
            ``max_epochs``.
        class_names: names for reports (linked from the datamodule); default: the stage-1 checkpoint's.
        in_chans: input channels (linked from the datamodule); must match the stage-1 model's.
        divergence_factor: see :class:`LongTailClassifier`.
        stage1: filled in automatically (the stage-1 class path and hyper-parameters, so a stage-2 checkpoint
            rebuilds without the stage-1 file); leave it unset.
        divergence_check_every_n_steps: see :class:`LongTailClassifier`.
        channels_last: see :class:`LongTailClassifier` (converts the frozen stage-1 model too).
        compile_backbone: see :class:`LongTailClassifier` (compiles the frozen features and the new head).
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        class_counts: Sequence[int] | None = None,
        mode: Literal["crt", "lws", "marc"] = "crt",
        stage1_class: str | None = None,
        bn_mode: Literal["train", "eval"] = "train",
        head: Literal["linear", "cosine"] = "linear",
        loss: Any = "ce",
        loss_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        class_names: Sequence[str] | None = None,
        in_chans: int | None = None,
        divergence_factor: float | None = 1e3,
        stage1: dict[str, Any] | None = None,
        divergence_check_every_n_steps: int | None = None,
        channels_last: bool = False,
        compile_backbone: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {list(BN_MODES)}, got {bn_mode!r}")
        if head not in ("linear", "cosine"):
            raise ValueError(f"head must be one of ['linear', 'cosine'] (the new head of cRT), got {head!r}")
        # A str in the hyper-parameters (saved from this frame's locals), so checkpoints stay weights_only-loadable.
        checkpoint = None if checkpoint is None else str(checkpoint)
        trained, record = _stage1_module(checkpoint, stage1_class, stage1)
        counts = getattr(trained, "class_counts", None)
        num_classes = _stage1_num_classes(trained)
        if class_counts is None:
            if counts is None:
                raise ValueError(
                    f"class_counts is required: the stage-1 model {type(trained).__name__} records none (give the "
                    "training images per class, e.g. from LongTailDataModule.class_counts)"
                )
            class_counts = counts
        if len(class_counts) != num_classes:
            raise ValueError(
                f"checkpoint {checkpoint!r} is a {num_classes}-class model but the datamodule has "
                f"{len(class_counts)} classes (class_counts); stage 2 needs the stage-1 training classes"
            )
        stage1_chans = (record["hyper_parameters"] or {}).get("in_chans")
        if in_chans is not None and stage1_chans is not None and int(in_chans) != int(stage1_chans):
            raise ValueError(
                f"in_chans is {in_chans} (from the datamodule) but the stage-1 model of {checkpoint!r} takes "
                f"{stage1_chans}-channel images"
            )
        if class_names is None:
            class_names = getattr(trained, "class_names", None)
        # nn.Module refuses submodules before its __init__ ran: park the trained module in a tuple until
        # configure_backbone (called by LongTailClassifier.__init__) takes it.
        self._stage1_pending = (trained,)
        super().__init__(
            class_counts,
            backbone=record["class_path"],
            in_chans=int(in_chans if in_chans is not None else (stage1_chans or 3)),
            head=head,
            loss=loss,
            loss_kwargs=loss_kwargs,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            class_names=class_names,
            divergence_factor=divergence_factor,
            divergence_check_every_n_steps=divergence_check_every_n_steps,
            channels_last=channels_last,
            compile_backbone=compile_backbone,
        )
        self.hparams["stage1"] = record
        self.preprocessing = getattr(trained, "preprocessing", None)

    # ----------------------------------------------------------------- the network
    def configure_backbone(self) -> Backbone:
        (trained,) = self.__dict__.pop("_stage1_pending")
        frozen_head = classifier_parts(trained).head
        num_features = getattr(frozen_head, "in_features", None)
        head = self.configure_stage2_head(frozen_head, num_features)
        return FrozenFeatureNetwork(trained, head, num_features, self.hparams.bn_mode)

    def configure_stage2_head(self, frozen_head: nn.Module, num_features: int | None) -> nn.Module:
        """The trainable head on the frozen features: a new head (cRT), or the frozen one wrapped (LWS, MARC).
        Override to add a few-parameter method; only the returned module's trainable parameters are optimised."""
        mode = self.hparams.mode
        if mode == "lws":
            return LearnableWeightScaling(frozen_head)
        if mode == "marc":
            return MarginCalibration(frozen_head)
        if not isinstance(num_features, int):
            raise TypeError(
                f"cRT needs the feature size: the stage-1 head {type(frozen_head).__name__} has no integer in_features"
            )
        return make_head(self.hparams.head, num_features, self.num_classes)

    def head_kind(self) -> str:
        return self.hparams.head

    @property
    def stage1(self) -> nn.Module:
        """The frozen stage-1 module."""
        return self.backbone.stage1

    def num_trainable_parameters(self) -> int:
        """How many numbers stage 2 trains (cRT C·D + C, LWS C, MARC 2C)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ----------------------------------------------------------------- the official recipe by default
    def build_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is not None:
            return super().build_optimizer()
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], **OFFICIAL_SGD)

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        if self.scheduler_factory is not None:
            return super().build_lr_scheduler(optimizer)
        horizon = training_horizon(self.trainer) if self._trainer is not None else None
        if horizon is None or horizon < 1:
            raise ValueError(f"ClassifierRetraining's cosine schedule needs max_epochs >= 1, got {horizon!r}")
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=horizon, eta_min=0.0)

    def setup(self, stage: str) -> None:
        if stage != "fit" or self._trainer is None:
            return
        if self.hparams.bn_mode == "eval":
            # The frozen stage-1 modules are in eval mode on purpose; Lightning would warn that they are. The filter
            # is undone in teardown, so other runs of the process keep the warning.
            self._saved_warning_filters = list(warnings.filters)
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
        sampler = getattr(self.trainer.datamodule, "sampler_name", None)
        if sampler == "instance":
            warnings.warn(
                f"ClassifierRetraining (mode {self.hparams.mode!r}) trains on the datamodule's 'instance' sampler: "
                "the decoupling recipes re-train the classifier on a class-balanced stream; set "
                "data.init_args.sampler: class_aware_cycle (the official one) or class_balanced",
                UserWarning,
                stacklevel=2,
            )

    def teardown(self, stage: str) -> None:
        saved = self.__dict__.pop("_saved_warning_filters", None)
        if saved is not None:
            warnings.filters[:] = saved


def _stage1_module(
    checkpoint: str | None, stage1_class: str | None, stage1: dict[str, Any] | None
) -> tuple[nn.Module, dict[str, Any]]:
    """The stage-1 module and its record ``{"class_path", "hyper_parameters"}``: rebuilt from ``stage1`` (a stage-2
    checkpoint being restored: the weights follow in its state dict), else loaded from ``checkpoint``."""
    if stage1 is not None:
        record = {"class_path": stage1["class_path"], "hyper_parameters": dict(stage1.get("hyper_parameters") or {})}
        return build_module(record["class_path"], record["hyper_parameters"], "stage1_class").eval(), record
    if checkpoint is None:
        raise ValueError(
            "checkpoint is required: the stage-1 checkpoint to re-train the classifier of (YAML: "
            "model.init_args.checkpoint: lightning_logs/version_0/checkpoints/last.ckpt)"
        )
    trained = load_trained_module(checkpoint, stage1_class, argument="checkpoint")
    hparams = {k: v for k, v in dict(getattr(trained, "hparams", {}) or {}).items() if not k.startswith("_")}
    class_path = stage1_class or f"{type(trained).__module__}.{type(trained).__qualname__}"
    return trained, {"class_path": class_path, "hyper_parameters": hparams}


def _stage1_num_classes(trained: nn.Module) -> int:
    head = classifier_parts(trained).head
    out_features = getattr(head, "out_features", None)
    if not isinstance(out_features, int):
        raise TypeError(f"the stage-1 head {type(head).__name__} has no integer out_features (the number of classes)")
    return out_features


__all__ = ["ClassifierRetraining", "FrozenFeatureNetwork"]
