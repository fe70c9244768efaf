"""DBN-Mix: dual-branch network with bilateral mixup and class-conditional temperatures (Baik, Yoon, Choi, Pattern
Recognition 147 (2024) 110107, arXiv 2207.02173), as the official code (soony1213/DBN-Mix) computes it.

A sibling of :class:`~lt_lightning.methods.BBN`: a shared trunk feeds two branches, each with its **own** linear
head (BBN has one shared classifier). The two streams of a batch ``(x, y, x_b, y_b)`` (``x`` instance-sampled,
``x_b`` class-balanced: ``LongTailDataModule(rebalancing_sampler="class_balanced")``) are mixed bilaterally
(``losses.py::mixup`` with ``use_experts``)::

    lam ~ Beta(beta, beta), lam <- max(lam, 1 - lam)          (so lam >= 1/2)
    perm = a random permutation of the first stream
    x_cb = lam x[perm] + (1 - lam) x_b,    t_cb = lam onehot(y[perm]) + (1 - lam) onehot(y_b)
    x_rb = (1 - lam) x[perm] + lam x_b,    t_rb = (1 - lam) onehot(y[perm]) + lam onehot(y_b)
    loss = loss_lambda * (L(z_cb(x_cb), t_cb) + L(z_rb(x_rb), t_rb))          (loss_lambda 0.5)

with ``L`` the class-temperature soft-target loss :class:`~lt_lightning.losses.ClassTemperatureMixLoss` (the
default ``loss``). At inference both branches see the same image, no temperature: ``z = (z_cb(x) + z_rb(x)) / 2``,
the trunk run once. No cumulative schedule. Cost: two trunk passes per step, about 2x CE (like BBN).

Where the branches split (``cut``): ``last_stage`` is the official network (``models/resnet_cifar.py``): the trunk is
conv1..layer2, branch cb is the backbone's whole ``layer3`` + its head, branch rb a freshly initialised twin of
``layer3`` (``rb_block``) + a second head (``linear_rb``); offered for the CIFAR ResNets only (it is built here from
:class:`~lt_lightning.models.CifarResNet`'s ``stem`` / ``layer1..3``). ``last_block`` uses the generic
:class:`~lt_lightning.models.Backbone` split BBN uses: trunk ``forward_trunk``, branch cb ``last_block``, branch rb
``make_branch()``; it works for every backbone with a split (``small_cnn``, timm families). ``auto`` (default) is
``last_stage`` for a CIFAR ResNet and ``last_block`` otherwise.

Randomness: ``lam`` and ``perm`` come from a NumPy generator seeded by ``(mixup_seed, global step)``, not from the
global RNG: a resumed run replays the same draws, and every DDP rank draws the same ``lam`` (one per optimizer step,
as the one-process reference draws one per batch; ``perm`` permutes each rank's own batch). Micro-batches of one
optimizer step (gradient accumulation) share a draw.

Training accuracy (``train/acc``) is logged on the cb branch's logits of ``x_cb`` against its dominant label
``y[perm]`` (``lam >= 1/2``); the reference logs ``(z_cb + z_rb) / 2`` against the unpermuted ``y``, which does
not match the permuted inputs.

The default optimisation is the official recipe (``config/cifar10/cifar10.py``, ``main.py``): SGD lr 0.1, momentum
0.9, **Nesterov**, weight decay 2e-4 on every parameter, batch 128, 200 epochs; the LR is set **per step**
(``warmup_step_schedule``): linear from 0 over the first 5 epochs, then x0.1 from 0-indexed epoch 160 and x0.01
from 180 (80 % / 90 % of ``max_epochs``). Pass ``optimizer`` / ``lr_scheduler`` to replace either (a given
scheduler is stepped per epoch, as everywhere else).

Example:
    >>> import torch
    >>> model = DBNMix(class_counts=(50, 20, 5), backbone="small_cnn", in_chans=1)
    >>> model.cut, model(torch.zeros(2, 1, 8, 8)).shape
    ('last_block', torch.Size([2, 3]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lt_lightning.functional.mixing import mixed_target_loss
from lt_lightning.methods.base import LongTailClassifier
from lt_lightning.models import Backbone, CifarResNet, make_head
from lt_lightning.models.heads import _kaiming_init
from lt_lightning.schedules import training_horizon

Cut = Literal["auto", "last_block", "last_stage"]
CUTS = ("auto", "last_block", "last_stage")

# config/cifar10/cifar10.py and config/cifar100/cifar100.py (identical optimisation).
OFFICIAL_LR = {"lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4, "nesterov": True}
OFFICIAL_WARMUP_EPOCHS = 5
OFFICIAL_MILESTONE_FRACTIONS = (0.8, 0.9)  # epochs 160 and 180 of 200
OFFICIAL_GAMMA = 0.1


class StepWarmupMultiStepLR(LambdaLR):
    """The reference's ``warmup_step_schedule``, stepped once per optimizer step: factor ``s / (w S)`` for step
    ``s < w S`` (linear from 0), then 1, ``gamma`` from epoch ``m0``, ``gamma^2`` from ``m1`` (``S`` steps/epoch).

    Example:
        >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = StepWarmupMultiStepLR(opt, steps_per_epoch=10, warmup_epochs=5, milestones=(160, 180))
        >>> [round(sched.factor(s), 3) for s in (0, 25, 50, 1599, 1600, 1800)]
        [0.0, 0.5, 1.0, 1.0, 0.1, 0.01]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        steps_per_epoch: int,
        warmup_epochs: int = OFFICIAL_WARMUP_EPOCHS,
        milestones: Sequence[int] = (160, 180),
        gamma: float = OFFICIAL_GAMMA,
    ) -> None:
        if not (isinstance(steps_per_epoch, int) and steps_per_epoch >= 1):
            raise ValueError(f"steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}")
        self.steps_per_epoch = steps_per_epoch
        self.warmup_epochs = warmup_epochs
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = gamma
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        warmup = self.warmup_epochs * self.steps_per_epoch
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return self.gamma ** sum(step >= m * self.steps_per_epoch for m in self.milestones)

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)


def bilateral_mixup(
    x: Tensor, y: Tensor, x_b: Tensor, y_b: Tensor, lam: float, perm: Tensor, num_classes: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_cb, t_cb, x_rb, t_rb)`` of the reference's ``mixup`` with ``use_experts`` (see the module docstring).

    Example:
        >>> x, xb = torch.ones(2, 1), torch.zeros(2, 1)
        >>> x_cb, t_cb, x_rb, t_rb = bilateral_mixup(x, torch.tensor([0, 0]), xb, torch.tensor([1, 1]), 0.75,
        ...                                          torch.tensor([1, 0]), 2)
        >>> x_cb[:, 0].tolist(), t_rb[0].tolist()
        ([0.75, 0.75], [0.25, 0.75])
    """
    x_p, t_p, t_b = x[perm], F.one_hot(y[perm], num_classes).to(x.dtype), F.one_hot(y_b, num_classes).to(x.dtype)
    x_cb = lam * x_p + (1 - lam) * x_b
    x_rb = (1 - lam) * x_p + lam * x_b
    return x_cb, lam * t_p + (1 - lam) * t_b, x_rb, (1 - lam) * t_p + lam * t_b


def _check_real(name: str, value: object, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if positive and float(value) <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class DBNMix(LongTailClassifier):
    """Dual-branch network with bilateral mixup; a thin subclass of :class:`LongTailClassifier`.

    Args:
        class_counts: training images per class (linked from the datamodule by the CLI).
        backbone: ``resnet32`` (official), another CIFAR ResNet, or any backbone with the trunk/branch split BBN
            uses (``small_cnn``, a timm model of ``lt_lightning.models.timm_backbone.SPLIT_FAMILIES``).
        cut: ``auto`` (``last_stage`` for CIFAR ResNets, else ``last_block``), ``last_stage`` (official: the
            branches are whole ``layer3`` stages; CIFAR ResNets only) or ``last_block`` (the branches are one block).
        mixup_beta: ``beta`` of ``lam ~ Beta(beta, beta)``, > 0 (1 in the official scripts).
        loss_lambda: weight of each branch's loss, > 0 (0.5, the official default).
        mixup_seed: base seed of the mixup draws (see the module docstring).
        loss: the loss; default ``class_temperature_mix`` (:class:`~lt_lightning.losses.ClassTemperatureMixLoss`,
            ``loss_kwargs`` ``{epsilon: 0.6, eta: 3}`` for CIFAR-10, ``eta: 7`` for CIFAR-100 in the official
            scripts). A loss without soft-target support (``accepts_soft_targets``) is applied as
            ``lam L(z, y1) + (1 - lam) L(z, y2)``, which equals the soft-target loss for losses affine in the target.
        **kwargs: any other ``LongTailClassifier`` argument. ``optimizer`` / ``lr_scheduler`` left ``None`` give the
            official recipe (module docstring). DRW (the reference's ``--train-rule DRW``): add
            :class:`~lt_lightning.callbacks.DeferredReweighting`. ``channels_last`` / ``compile_backbone`` apply to
            both branches (``IMAGE_ENTRY_POINTS``).
    """

    # Training runs the two mixed batches through these two, inference through classifier_features.
    IMAGE_ENTRY_POINTS = ("cb_logits", "rb_logits", "classifier_features")

    def __init__(
        self,
        class_counts: Sequence[int],
        backbone: str = "resnet32",
        cut: Cut = "auto",
        mixup_beta: float = 1.0,
        loss_lambda: float = 0.5,
        mixup_seed: int = 0,
        loss: Any = "class_temperature_mix",
        **kwargs: Any,
    ) -> None:
        if cut not in CUTS:
            raise ValueError(f"cut must be one of {list(CUTS)}, got {cut!r}")
        _check_real("mixup_beta", mixup_beta)
        _check_real("loss_lambda", loss_lambda)
        if isinstance(mixup_seed, bool) or not isinstance(mixup_seed, int) or mixup_seed < 0:
            raise ValueError(f"mixup_seed must be an integer >= 0, got {mixup_seed!r}")
        self.cut = cut
        super().__init__(class_counts, backbone=backbone, loss=loss, **kwargs)

    def configure_backbone(self) -> Backbone:
        if self.head_kind() != "linear":
            raise ValueError(
                f"DBNMix needs linear heads (its inference head averages the two branches' heads); got head "
                f"{self.head_kind()!r}: set head='linear' or use a loss without a cosine head"
            )
        net = super().configure_backbone()
        name = self.hparams.backbone
        if self.cut == "auto":
            self.cut = "last_stage" if isinstance(net, CifarResNet) else "last_block"
        if self.cut == "last_stage":
            if not isinstance(net, CifarResNet):
                raise ValueError(
                    f"cut='last_stage' (the official split after layer2) needs a CIFAR ResNet (resnet20/32/44/56); "
                    f"backbone {name!r} ({type(net).__name__}) has no layer3 stage: use cut='last_block'"
                )
            rb = CifarResNet._make_layer(net.layer3[0].in_planes, net.num_features, len(net.layer3), stride=2)
            rb.apply(_kaiming_init)
            self.rb_branch: nn.Module = rb
        else:
            if not net.supports_split:
                raise TypeError(
                    f"DBNMix needs a backbone it can split into a trunk and two branches; {name!r} "
                    f"({type(net).__name__}) lacks forward_trunk / last_block / make_branch. Use resnet32, small_cnn, "
                    "a timm model of lt_lightning.models.timm_backbone.SPLIT_FAMILIES, or implement those three"
                )
            self.rb_branch = net.make_branch()
        self.rb_head = make_head("linear", net.num_features, self.num_classes)
        if isinstance(net, CifarResNet):
            self.rb_head.apply(_kaiming_init)  # the official _weights_init (Kaiming normal) covers linear_rb
        if getattr(self.criterion, "sigmoid_bias_init", False):
            nn.init.constant_(self.rb_head.bias, float(net.head.bias[0]))
        return net

    # ----------------------------------------------------------------- the two branches
    def trunk(self, x: Tensor) -> Tensor:
        """The shared part: conv1..layer2 (``last_stage``) or ``forward_trunk`` (``last_block``)."""
        net = self.backbone
        if self.cut == "last_stage":
            return net.layer2(net.layer1(net.stem(x)))
        return net.forward_trunk(x)

    def cb_block(self) -> nn.Module:
        """Branch cb's blocks: the backbone's own ``layer3`` (``last_stage``) or last block (``last_block``)."""
        return self.backbone.layer3 if self.cut == "last_stage" else self.backbone.last_block

    def cb_features(self, trunk: Tensor) -> Tensor:
        return self.backbone.forward_pool(self.cb_block()(trunk))

    def rb_features(self, trunk: Tensor) -> Tensor:
        return self.backbone.forward_pool(self.rb_branch(trunk))

    def cb_logits(self, x: Tensor) -> Tensor:
        """Branch cb on ``x`` (the reference's ``model(x, classifier_cb=True)``)."""
        return self.backbone.head(self.cb_features(self.trunk(x)))

    def rb_logits(self, x: Tensor) -> Tensor:
        """Branch rb on ``x`` (the reference's ``model(x, classifier_rb=True)``)."""
        return self.rb_head(self.rb_features(self.trunk(x)))

    def classifier_features(self, x: Tensor) -> Tensor:
        """``concat(f_cb(x), f_rb(x))`` (B, 2D), the trunk run once."""
        trunk = self.trunk(x)
        return torch.cat([self.cb_features(trunk), self.rb_features(trunk)], 1)

    def averaged_head(self) -> tuple[Tensor, Tensor]:
        """Weight ``[W_cb, W_rb] / 2`` (C, 2D) and bias ``(b_cb + b_rb) / 2`` of the one linear map over
        ``concat(f_cb, f_rb)`` equal to averaging the two heads' logits; computed from the current heads."""
        cb, rb = self.backbone.head, self.rb_head
        return torch.cat([cb.weight, rb.weight], 1) / 2, (cb.bias + rb.bias) / 2

    def classifier_head(self) -> nn.Linear:
        """A frozen ``nn.Linear(2D, C)`` holding :meth:`averaged_head`: ``classifier_head()(classifier_features(x))``
        is ``forward(x)`` bit for bit. Built on each call from the current heads (a read-only snapshot for stage-2
        and post-hoc methods; it is not trained)."""
        weight, bias = self.averaged_head()
        head = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
        return head.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        """Inference logits ``(z_cb(x) + z_rb(x)) / 2`` (the reference's ``validate``), no temperature; computed as
        the averaged head on ``concat(f_cb(x), f_rb(x))`` (the same up to float rounding, and exactly what
        :meth:`classifier_head` gives stage-2 methods)."""
        weight, bias = self.averaged_head()
        return F.linear(self.classifier_features(x), weight, bias)

    # ----------------------------------------------------------------- mixup and loss
    def mixup_draw(self, batch_size: int) -> tuple[float, Tensor]:
        """``(lam, perm)`` for the current global step: ``lam = max(l, 1 - l)``, ``l ~ Beta(beta, beta)``."""
        rng = np.random.default_rng(np.random.SeedSequence([int(self.hparams.mixup_seed), int(self.global_step)]))
        beta = float(self.hparams.mixup_beta)
        lam = float(rng.beta(beta, beta))
        return max(lam, 1.0 - lam), torch.from_numpy(rng.permutation(batch_size))

    def branch_loss(self, logits: Tensor, soft: Tensor, y1: Tensor, y2: Tensor, lam: float) -> Tensor:
        """The loss on a mixed target ``lam onehot(y1) + (1 - lam) onehot(y2)`` (= ``soft``)."""
        if getattr(self.criterion, "accepts_soft_targets", False):
            return self.criterion(logits, soft)
        return mixed_target_loss(self.criterion, logits, y1, y2, lam)

    def training_loss(self, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        if not isinstance(batch, list | tuple) or len(batch) < 4:
            got = f"{len(batch)} elements" if isinstance(batch, list | tuple) else type(batch).__name__
            raise ValueError(
                f"DBNMix expects training batches (x, y, x_b, y_b) from two samplers, got a batch of {got}; use "
                "LongTailDataModule(rebalancing_sampler='class_balanced') or a loader over lt_lightning.data."
                "PairedDataset"
            )
        x, y, x_b, y_b = batch[:4]
        lam, perm = self.mixup_draw(x.shape[0])
        if x.is_cuda:  # a plain copy from pageable memory would wait for the GPU's queue every step
            perm = perm.pin_memory().to(x.device, non_blocking=True)
        perm = perm.to(x.device)
        x_cb, t_cb, x_rb, t_rb = bilateral_mixup(x, y, x_b, y_b, lam, perm, self.num_classes)
        z_cb, z_rb = self.cb_logits(x_cb), self.rb_logits(x_rb)
        y_p = y[perm]
        loss_cb = self.branch_loss(z_cb, t_cb, y_p, y_b, lam)
        loss_rb = self.branch_loss(z_rb, t_rb, y_p, y_b, 1.0 - lam)
        loss = self.hparams.loss_lambda * (loss_cb + loss_rb)
        return loss, z_cb, y_p

    # ----------------------------------------------------------------- data check
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = self.trainer.datamodule
        if datamodule is not None and getattr(datamodule, "rebalancing_sampler", "unknown") is None:
            raise ValueError(
                "DBNMix needs the second (class-balanced) stream: set the datamodule's "
                "rebalancing_sampler='class_balanced' (YAML: data.init_args.rebalancing_sampler: class_balanced), "
                "so batches are (x, y, x_b, y_b)"
            )

    # ----------------------------------------------------------------- the official recipe by default
    def build_optimizer(self) -> torch.optim.Optimizer:
        """``optimizer`` when given, else the official Nesterov SGD over every parameter (BN and biases decayed)."""
        if self.optimizer_factory is not None:
            return super().build_optimizer()
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], **OFFICIAL_LR)

    def configure_optimizers(self) -> Any:
        """``lr_scheduler`` when given (per epoch), else the official per-step schedule (module docstring)."""
        if self.scheduler_factory is not None:
            return super().configure_optimizers()
        optimizer = self.build_optimizer()
        horizon = training_horizon(self.trainer) if self._trainer is not None else None
        if horizon is None or horizon < 1:
            raise ValueError(f"DBNMix's default LR schedule needs max_epochs >= 1, got {horizon!r}")
        total = self.trainer.estimated_stepping_batches
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else horizon
        steps_per_epoch = max(int(total) // max_epochs, 1) if math.isfinite(total) else 1
        milestones = tuple(round(f * horizon) for f in OFFICIAL_MILESTONE_FRACTIONS)
        scheduler = StepWarmupMultiStepLR(optimizer, steps_per_epoch, OFFICIAL_WARMUP_EPOCHS, milestones)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
