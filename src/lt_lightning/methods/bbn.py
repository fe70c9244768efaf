"""BBN: Bilateral-Branch Network with cumulative learning (Zhou et al., CVPR 2020), as the official code computes it.

A shared trunk (the backbone without its last block) feeds two branches, each one block: the conventional branch
(the backbone's own last block) sees uniformly sampled instances ``x_c``, the re-balancing branch (a fresh copy)
sees instances ``x_r`` drawn by the reversed sampler (``P(class i) ∝ n_max / n_i``). With ``alpha`` the cumulative
learning weight of the epoch (:func:`~lt_lightning.schedules.bbn_alpha`, official form by default)::

    f_mix = 2 * concat(alpha * f_c(x_c), (1 - alpha) * f_r(x_r))        (factor 2 and concat: the official code)
    z     = W f_mix + b                                                 (one classifier, one shared bias)
    loss  = alpha * CE(z, y_c) + (1 - alpha) * CE(z, y_r)

At inference both branches see the same image with equal weights: ``z = W concat(f_c(x), f_r(x)) + b`` (= alpha
0.5 in the training formula), with the shared trunk run once as the official network does. The two streams come
from one DataLoader: ``LongTailDataModule(..., rebalancing_sampler="reversed")`` yields batches
``(x_c, y_c, x_r, y_r)`` (``drop_last=True`` as the official loader).

The default optimisation is the official CIFAR recipe (``configs/cifar10.yaml``, ``lib/utils/utils.py``), scaled to
``max_epochs``: SGD lr 0.1, momentum 0.9, **Nesterov**, weight decay 2e-4 on every parameter; 5 warm-up epochs
from lr/3 (0.0467, 0.060, 0.0733, 0.0867, then 0.1: the reference steps its scheduler before each epoch); x0.01
at 0-indexed epochs ``round(0.6 T) - 1`` and ``round(0.8 T) - 1`` (119 and 159 of 200: the official 1-indexed
epochs 120 and 160). Pass ``optimizer`` / ``lr_scheduler`` to replace either (:func:`bbn_milestones`).

Example:
    >>> import torch
    >>> model = BBN(class_counts=(50, 20, 5), backbone="small_cnn", in_chans=1)
    >>> x = torch.zeros(2, 1, 8, 8)
    >>> model.predict_logits(x).shape, model.mixed_logits(x, x, alpha=0.5).shape
    (torch.Size([2, 3]), torch.Size([2, 3]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lt_lightning.methods.base import LongTailClassifier
from lt_lightning.models import Backbone
from lt_lightning.optim import WarmupMultiStepLR
from lt_lightning.schedules import bbn_alpha, training_horizon

# The official CIFAR recipe (configs/cifar10.yaml: 200 epochs, LR_STEP [120, 160], LR_FACTOR 0.01, WARM_EPOCH 5;
# lib/utils/utils.py: SGD with nesterov=True; lib/utils/lr_scheduler.py: warm-up factor from 1/3).
OFFICIAL_MILESTONE_FRACTIONS = (0.6, 0.8)
OFFICIAL_LR = {"lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4, "nesterov": True}
OFFICIAL_WARMUP = {"warmup_epochs": 5, "warmup_start_factor": 1 / 3, "gamma": 0.01}


def bbn_milestones(max_epochs: int) -> tuple[int, ...]:
    """0-indexed LR-drop epochs of the official recipe scaled to ``max_epochs``: ``round(f * T) - 1`` for f in
    (0.6, 0.8). The reference calls ``scheduler.step()`` before each 1-indexed epoch, so its drop at epoch 120
    (``bisect_right([120, 160], 120)``) is in force from the 120th epoch, 0-indexed 119.

    Example:
        >>> bbn_milestones(200), bbn_milestones(30)
        ((119, 159), (17, 23))
    """
    return tuple(max(round(f * max_epochs) - 1, 0) for f in OFFICIAL_MILESTONE_FRACTIONS)


class BBN(LongTailClassifier):
    """Bilateral-branch network; a thin subclass of :class:`LongTailClassifier`.

    Args:
        class_counts: training images per class (linked from the datamodule by the CLI).
        backbone: a backbone with a trunk/branch split (``forward_trunk``, ``last_block``, ``make_branch``):
            ``resnet32`` (official CIFAR: trunk = layer3 with 4 blocks, branches = one BasicBlock each), ``resnet20``,
            ``small_cnn``, or a timm model of a family in ``lt_lightning.models.timm_backbone.SPLIT_FAMILIES``
            (ResNet, RegNet, EfficientNet, ...: trunk = all but the last stage, branches = that stage and a twin).
        alpha_form: ``code`` (1 - ((T-1)/T_max)^2, the official combiner) or ``paper`` (1 - (T/T_max)^2).
        **kwargs: any other ``LongTailClassifier`` argument (optimizer, lr_scheduler, loss, ...). The loss is plain
            CE in the official runs. ``optimizer`` / ``lr_scheduler`` left ``None`` give the official recipe (see
            the module docstring), not the generic ``LongTailClassifier`` one. ``channels_last`` /
            ``compile_backbone`` apply to both branches (``IMAGE_ENTRY_POINTS``).
    """

    # Training runs the two streams through these two, inference through classifier_features (compile_backbone).
    IMAGE_ENTRY_POINTS = ("conventional_features", "rebalancing_features", "classifier_features")

    def __init__(
        self,
        class_counts: Sequence[int],
        backbone: str = "resnet32",
        alpha_form: Literal["code", "paper"] = "code",
        **kwargs: Any,
    ) -> None:
        if alpha_form not in ("code", "paper"):
            raise ValueError(f"alpha_form must be one of ['code', 'paper'], got {alpha_form!r}")
        super().__init__(class_counts, backbone=backbone, **kwargs)

    def configure_backbone(self) -> Backbone:
        net = super().configure_backbone()
        if not net.supports_split:
            raise TypeError(
                f"BBN needs a backbone it can split into a trunk and two branches; {self.hparams.backbone!r} "
                f"({type(net).__name__}) lacks forward_trunk / last_block / make_branch. Use resnet32, resnet20, "
                "resnet44, resnet56, small_cnn, a timm model of lt_lightning.models.timm_backbone.SPLIT_FAMILIES "
                "(e.g. resnet18, efficientnet_b0), or implement those three on your Backbone subclass"
            )
        # The backbone's own last block is the conventional branch; its head is replaced by BBN's classifier over
        # both branches (removing the unused head also keeps DDP free of unused parameters).
        net.head = nn.Identity()
        self.rb_branch = net.make_branch()
        self.classifier = nn.Linear(2 * net.num_features, self.num_classes, bias=True)
        return net

    # ----------------------------------------------------------------- the two branches
    def conventional_features(self, x: Tensor) -> Tensor:
        return self.backbone.forward_pool(self.backbone.last_block(self.backbone.forward_trunk(x)))

    def rebalancing_features(self, x: Tensor) -> Tensor:
        return self.backbone.forward_pool(self.rb_branch(self.backbone.forward_trunk(x)))

    def mixed_logits(self, x_c: Tensor, x_r: Tensor, alpha: float) -> Tensor:
        """Training logits: ``W 2 [alpha f_c(x_c), (1 - alpha) f_r(x_r)] + b`` (two trunk passes, one per stream)."""
        mixed = torch.cat([alpha * self.conventional_features(x_c), (1 - alpha) * self.rebalancing_features(x_r)], 1)
        return self.classifier(2 * mixed)

    def classifier_features(self, x: Tensor) -> Tensor:
        """Inference features ``concat(f_c(x), f_r(x))`` (B, 2D): both branches on the same image, equal weights (the
        official ``feature_flag`` path), with the trunk run once as in the official ``BBN_ResNet_Cifar.forward``."""
        trunk = self.backbone.forward_trunk(x)
        f_c = self.backbone.forward_pool(self.backbone.last_block(trunk))
        f_r = self.backbone.forward_pool(self.rb_branch(trunk))
        return torch.cat([f_c, f_r], 1)

    def classifier_head(self) -> nn.Module:
        """BBN's one classifier over both branches."""
        return self.classifier

    def forward(self, x: Tensor) -> Tensor:
        """Inference logits ``W concat(f_c(x), f_r(x)) + b`` (= alpha 0.5 in the training formula)."""
        return self.classifier(self.classifier_features(x))

    # ----------------------------------------------------------------- schedule, data check, loss
    def alpha(self, epoch: int | None = None) -> float:
        """Cumulative-learning weight at a 0-indexed epoch (default: the current one); pure in the epoch."""
        epoch = self.current_epoch if epoch is None else epoch
        return bbn_alpha(epoch, self._schedule_epochs(), self.hparams.alpha_form)

    def _schedule_epochs(self) -> int:
        # fast_dev_run forces max_epochs = 1; a smoke run only needs some valid schedule, so it gets a 2-epoch one.
        if self.trainer.fast_dev_run:
            return max(self.trainer.max_epochs or 2, 2)
        return training_horizon(self.trainer)  # a resumed run keeps its checkpoint's horizon

    # ----------------------------------------------------------------- the official recipe by default
    def build_optimizer(self) -> torch.optim.Optimizer:
        """``optimizer`` when given, else the official Nesterov SGD over every parameter (BN and biases decayed)."""
        if self.optimizer_factory is not None:
            return super().build_optimizer()
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], **OFFICIAL_LR)

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """``lr_scheduler`` when given, else the official warm-up + x0.01 at :func:`bbn_milestones` of the run."""
        if self.scheduler_factory is not None:
            return super().build_lr_scheduler(optimizer)
        max_epochs = self._schedule_epochs() if self._trainer is not None else None
        if max_epochs is None or max_epochs < 2:
            raise ValueError(f"BBN's default LR schedule needs max_epochs >= 2, got {max_epochs!r}")
        return WarmupMultiStepLR(optimizer, milestones=bbn_milestones(max_epochs), **OFFICIAL_WARMUP)

    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        max_epochs = self._schedule_epochs()
        if max_epochs is None or max_epochs <= 1:
            raise ValueError(f"BBN's cumulative learning needs max_epochs >= 2, got {max_epochs!r}")
        datamodule = self.trainer.datamodule
        if datamodule is not None and getattr(datamodule, "rebalancing_sampler", "unknown") is None:
            raise ValueError(
                "BBN needs the re-balancing stream: set the datamodule's rebalancing_sampler='reversed' "
                "(YAML: data.init_args.rebalancing_sampler: reversed), so batches are (x_c, y_c, x_r, y_r)"
            )

    def on_train_epoch_start(self) -> None:
        self.log("bbn/alpha", self.alpha(), on_epoch=True, on_step=False)

    def training_loss(self, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        if not isinstance(batch, list | tuple) or len(batch) < 4:
            got = f"{len(batch)} elements" if isinstance(batch, list | tuple) else type(batch).__name__
            raise ValueError(
                f"BBN expects training batches (x_c, y_c, x_r, y_r) from two samplers, got a batch of {got}; use "
                "LongTailDataModule(rebalancing_sampler='reversed') or a loader over lt_lightning.data.PairedDataset"
            )
        x_c, y_c, x_r, y_r = batch[:4]
        alpha = self.alpha()
        logits = self.mixed_logits(x_c, x_r, alpha)
        loss = alpha * self.criterion(logits, y_c) + (1 - alpha) * self.criterion(logits, y_r)
        return loss, logits, y_c
