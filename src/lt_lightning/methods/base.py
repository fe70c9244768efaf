"""``LongTailClassifier``: the LightningModule every long-tail method subclasses.

It owns the backbone, the loss, the optimizer, the LR schedule, the metrics and the logging. A method overrides
only what really differs, through two documented hooks:

- :meth:`LongTailClassifier.training_loss` — the loss on a training batch (BBN mixes two streams, ABSGD re-weights
  samples); it applies the loss through :meth:`criterion_on`, which trains on two targets while a batch-mixing
  callback (CMO) has mixed the batch;
- :meth:`LongTailClassifier.predict_logits` — the logits at inference (BBN weights its branches equally; post-hoc
  logit adjustment subtracts priors);

two that second-stage and post-hoc methods read, :meth:`classifier_features` / :meth:`classifier_head` (the
inference logits are ``classifier_head()(classifier_features(x))``), and, for wholesale replacement,
:meth:`configure_backbone` / :meth:`configure_loss`.

The default recipe is the CIFAR-LT one (METHODS.md §3.7): SGD momentum 0.9, weight decay 2e-4, lr 0.1, 5 warm-up
epochs, x0.01 at 80 % and again at 90 % of ``max_epochs``.

Example:
    >>> import torch
    >>> model = LongTailClassifier(class_counts=(50, 20, 5), in_chans=1)
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lt_lightning.callbacks.divergence import (
    DivergenceGuard,
    NonFiniteLossRecord,
    check_checkpoint_finite,
    check_divergence_factor,
)
from lt_lightning.checkpoints import checkpoint_metadata
from lt_lightning.functional.losses import sigmoid_bias_init
from lt_lightning.functional.mixing import BatchMix, mixed_target_loss
from lt_lightning.functional.weights import check_class_counts
from lt_lightning.losses import LOSSES, ClassCountLoss, check_loss_config, create_loss, loss_from_config
from lt_lightning.metrics import PerClassAccuracyMetric
from lt_lightning.models import Backbone, create_backbone
from lt_lightning.optim import WarmupMultiStepLR
from lt_lightning.schedules import training_horizon, warn_horizon_kept

LossCallable = Callable[[Sequence[int]], nn.Module]


class LongTailClassifier(L.LightningModule):
    """Backbone + class-count-aware loss + the CIFAR-LT optimisation recipe.

    Args:
        class_counts: training images per class in label order (from ``LongTailDataModule.class_counts``; the CLI
            links it). Stored in the hyper-parameters, so a checkpoint reloads without the data.
        backbone: a name of :data:`lt_lightning.models.BACKBONES` (``small_cnn``, ``resnet20``, ``resnet32``, ...)
            or any timm model name.
        backbone_kwargs: extra keyword arguments for the backbone factory.
        in_chans: input channels (linked from the datamodule by the CLI).
        head: ``linear``, ``cosine`` (the NormedLinear of LDAM) or ``auto``: cosine when the loss asks for it.
        loss: a name of :data:`lt_lightning.losses.LOSSES`, a callable ``class_counts -> nn.Module``, or a
            ``{"class_path": ..., "init_args": {...}}`` mapping of a loss class (in YAML: ``loss: {class_path:
            lt_lightning.losses.LDAMLoss, init_args: {max_margin: 0.3}}``); ``class_counts`` is filled in.
        loss_kwargs: keyword arguments for a loss given by name.
        optimizer: ``params -> Optimizer``; ``None`` is SGD(lr=0.1, momentum=0.9, weight_decay=2e-4).
        lr_scheduler: ``optimizer -> LRScheduler`` stepped per epoch; ``None`` is
            :class:`~lt_lightning.optim.WarmupMultiStepLR` with its defaults (5 warm-up epochs, x0.01 at 80 % and
            90 % of ``max_epochs``).
        class_names: names for reports (linked from the datamodule by the CLI).
        divergence_factor: stop training with a :class:`~lt_lightning.callbacks.DivergenceError` when the loss
            exceeds this many times its start, or a weight / checkpoint turns NaN or inf (a
            :class:`~lt_lightning.callbacks.DivergenceGuard` attached by ``configure_callbacks``); ``None``
            disables the check. On a GPU the guard reads the loss every 50 steps (no per-step synchronisation) and
            names the first bad step; see ``divergence_check_every_n_steps``.
        divergence_check_every_n_steps: how often the divergence guard reads the training loss on the host;
            ``None`` (default) is every step on the CPU and every 50 steps on an accelerator. Set 1 to stop at the
            very step on a GPU, at the cost of one device synchronisation per step.
        channels_last: convert the model's weights to the channels-last memory format and feed it channels-last
            images (default False). Faster convolutions on GPUs with tensor cores (Volta and newer), mostly with
            ``bf16-mixed`` / ``16-mixed``; a no-op for inputs that are not 4-D (B, C, H, W). Checkpoints are the same
            either way.
        compile_backbone: compile the image path (the backbone and, for two-branch methods, their branches) with
            ``torch.compile`` when training or evaluation starts (default False). The first steps take longer (the
            compilation, tens of seconds for a ResNet), later ones are faster on GPUs; worth it for long runs, not for
            smoke tests. State-dict keys are unchanged, so checkpoints load with or without it. Needs a working
            ``torch.compile`` (on the CPU a C++ compiler): if it is missing, the run stops with an error naming this
            argument.
    """

    #: The methods that take images and run the backbone: ``compile_backbone`` compiles them and ``channels_last``
    #: makes their 4-D inputs channels-last. Subclasses whose image path avoids ``forward`` (two-branch methods) name
    #: theirs; the listed methods must not call one another (each is compiled on its own).
    IMAGE_ENTRY_POINTS: tuple[str, ...] = ("forward", "classifier_features")

    def __init__(
        self,
        class_counts: Sequence[int],
        backbone: str = "small_cnn",
        backbone_kwargs: dict[str, Any] | None = None,
        in_chans: int = 3,
        head: Literal["auto", "linear", "cosine"] = "auto",
        loss: str | LossCallable = "ce",
        loss_kwargs: dict[str, Any] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        class_names: Sequence[str] | None = None,
        divergence_factor: float | None = 1e3,
        divergence_check_every_n_steps: int | None = None,
        channels_last: bool = False,
        compile_backbone: bool = False,
    ) -> None:
        super().__init__()
        check_divergence_factor(divergence_factor)
        for name, flag in (("channels_last", channels_last), ("compile_backbone", compile_backbone)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        # Checked here (where the argument enters) rather than when the guard is built in configure_callbacks.
        DivergenceGuard(check_every_n_steps=divergence_check_every_n_steps)
        self.class_counts = check_class_counts(class_counts)
        self.num_classes = len(self.class_counts)
        if head not in ("auto", "linear", "cosine"):
            raise ValueError(f"head must be one of ['auto', 'cosine', 'linear'], got {head!r}")
        if isinstance(loss, str) and loss not in LOSSES:
            raise ValueError(
                f"loss must be one of {sorted(LOSSES)} or a callable class_counts -> nn.Module, got {loss!r}"
            )
        if isinstance(loss, Mapping):
            check_loss_config(loss)
        if class_names is not None and len(class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(class_names)} entries but class_counts has {self.num_classes}")
        self.class_names = tuple(class_names) if class_names is not None else tuple(map(str, range(self.num_classes)))
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler

        # How raw images become inputs (mean / std, image size, channels), filled from the datamodule when a
        # checkpoint is written and restored with it, so new raw images can be prepared after the data is gone.
        self.preprocessing: dict[str, Any] | None = None
        # The max_epochs the epoch-derived schedules were resolved for, restored from a checkpoint on resume
        # (see lt_lightning.schedules.training_horizon); None in a fresh run.
        self.schedule_horizon: int | None = None

        # Set for one step by a batch-mixing callback (CMO): the batch's second targets and their weight.
        self.batch_mix: BatchMix | None = None
        # The first non-finite training loss on an accelerator, recorded without a host read (see check_finite).
        self.non_finite_loss = NonFiniteLossRecord()
        self._accelerated = False  # IMAGE_ENTRY_POINTS wrapped (configure_model runs once per trainer call)

        self.criterion = self.configure_loss()
        self.backbone = self.configure_backbone()
        self.val_metrics = PerClassAccuracyMetric(self.num_classes, self.class_counts)
        self.test_metrics = PerClassAccuracyMetric(self.num_classes, self.class_counts)

    # ----------------------------------------------------------------- building blocks (override to replace)
    def configure_loss(self) -> nn.Module:
        """Build the loss from ``hparams.loss``; a subclass may return any ``(logits, target) -> loss`` module."""
        loss = self.hparams.loss
        if isinstance(loss, str):
            return create_loss(loss, self.class_counts, **(self.hparams.loss_kwargs or {}))
        if isinstance(loss, Mapping):
            # ``{class_path, init_args}``: how the CLI records a loss outside the registry in the hyper-parameters
            # (and so in checkpoints); ``class_counts`` is filled in as for a callable.
            return loss_from_config(loss, self.class_counts)
        return loss(self.class_counts)

    def head_kind(self) -> str:
        """The head the backbone gets: ``hparams.head``, or for ``auto`` whatever the loss asks for."""
        if self.hparams.head != "auto":
            return self.hparams.head
        return "cosine" if getattr(self.criterion, "requires_normed_head", False) else "linear"

    def configure_backbone(self) -> Backbone:
        """Build the backbone (features + head) from ``hparams``."""
        net = create_backbone(
            self.hparams.backbone,
            num_classes=self.num_classes,
            in_chans=self.hparams.in_chans,
            head=self.head_kind(),
            **(self.hparams.backbone_kwargs or {}),
        )
        if getattr(self.criterion, "sigmoid_bias_init", False) and getattr(net.head, "bias", None) is not None:
            # CB sigmoid focal loss: start from the prior pi = 1/C (bias -log(C - 1)), as the reference does.
            nn.init.constant_(net.head.bias, sigmoid_bias_init(self.num_classes))
        return net

    # ----------------------------------------------------------------- GPU recipe: channels-last, torch.compile
    def configure_model(self) -> None:
        """Apply ``channels_last`` and ``compile_backbone`` (once, whatever the number of trainer calls)."""
        if self._accelerated or not (self.hparams.get("channels_last") or self.hparams.get("compile_backbone")):
            return
        if self.hparams.get("compile_backbone"):
            check_compile_available()
        if self.hparams.get("channels_last"):
            self.to(memory_format=torch.channels_last)  # 4-D weights only; the rest is left as it is
        for name in self.IMAGE_ENTRY_POINTS:
            fn = getattr(type(self), name)
            if self.hparams.get("compile_backbone"):
                fn = _compile_errors_named(torch.compile(fn), name)
            if self.hparams.get("channels_last"):
                fn = _channels_last_inputs(fn)
            # An instance attribute over the class's method, bound by partial rather than as a method: a deepcopy of
            # the module (EMA, SWA) then calls the copy, not this module. Not a parameter or buffer: the state-dict
            # keys stay the same (no ``_orig_mod.`` prefix), so checkpoints load with or without these options.
            self.__dict__[name] = functools.partial(fn, self)
        self._accelerated = True

    # ----------------------------------------------------------------- forward and the two override points
    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def predict_logits(self, x: Tensor) -> Tensor:
        """Logits used for validation, test and predict. Override for inference-time changes."""
        return self(x)

    # ----------------------------------------------------------------- the last-layer split (second-stage methods)
    def classifier_features(self, x: Tensor) -> Tensor:
        """Features ``(B, D)`` feeding the classifier at inference: ``classifier_head()(classifier_features(x))`` is
        ``forward(x)``. Second-stage and post-hoc methods (cRT, LWS, MARC, τ-normalisation) work on these; a method
        whose inference path differs overrides both hooks (BBN: both branches' features, its shared classifier)."""
        return self.backbone.forward_features(x)

    def classifier_head(self) -> nn.Module:
        """The module mapping :meth:`classifier_features` to logits (the backbone's head)."""
        return self.backbone.head

    def training_loss(self, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Loss on a training batch; returns ``(loss, logits, target)`` (logits and target feed the metrics)."""
        x, y = batch[0], batch[1]
        logits = self(x)
        return self.criterion_on(logits, y), logits, y

    def criterion_on(self, logits: Tensor, target: Tensor) -> Tensor:
        """The loss against the batch's targets: ``criterion(logits, target)``, or while a batch-mixing callback (CMO)
        has mixed this batch, ``lam * criterion(logits, target) + (1 - lam) * criterion(logits, second_target)``
        (:attr:`batch_mix`). Methods call this rather than ``criterion`` so that every mixing composes with them."""
        if self.batch_mix is None:
            return self.criterion(logits, target)
        mix = self.batch_mix
        return mixed_target_loss(self.criterion, logits, target, mix.second_target, mix.lam)

    # ----------------------------------------------------------------- Lightning steps
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, logits, target = self.training_loss(batch)
        self.check_finite(loss, batch_idx)
        self.log_training(loss, logits, target)
        return loss

    def check_finite(self, loss: Tensor, batch_idx: int, detail: str = "") -> None:
        """Stop on a NaN / inf loss, naming the epoch, step and batch (instead of training on garbage).

        On the CPU it raises at once. On an accelerator reading the loss would synchronise the device every step, so
        the first non-finite loss is recorded on the device (:attr:`non_finite_loss`) and reported at the divergence
        guard's next check, or, without a guard, before the next checkpoint is written and at the end of training."""
        if not host_reads_are_free(loss):
            self.non_finite_loss.record(loss, self.current_epoch, self.global_step, batch_idx, detail)
            return
        if not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"non-finite training loss {loss.item()} at epoch {self.current_epoch}, global step "
                f"{self.global_step}, batch {batch_idx}{detail}: lower the learning rate or check the inputs"
            )

    def raise_recorded_non_finite(self) -> None:
        """Raise the ``FloatingPointError`` of :meth:`check_finite` for a non-finite loss recorded on an accelerator
        (one host read; nothing when none was recorded)."""
        first_bad = self.non_finite_loss.read()
        if first_bad is not None:
            raise FloatingPointError(
                f"non-finite training loss at {first_bad}: lower the learning rate or check the inputs"
            )

    def log_training(self, loss: Tensor, logits: Tensor, target: Tensor) -> None:
        """Log ``train/loss`` (step and epoch) and ``train/acc`` (epoch) once per optimizer step."""
        accuracy = (logits.detach().argmax(dim=1) == target).float().mean()
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=len(target))
        self.log("train/acc", accuracy, on_step=False, on_epoch=True, batch_size=len(target))

    def _eval_step(self, batch: Any, metric: PerClassAccuracyMetric) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self.predict_logits(x)
        metric.update(logits, y)
        return logits

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._eval_step(batch, self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._eval_step(batch, self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        x = batch[0] if isinstance(batch, list | tuple) else batch
        return self.predict_logits(x).softmax(dim=1)

    def _log_eval(self, prefix: str, metric: PerClassAccuracyMetric) -> None:
        values = metric.compute()  # every rank computes: the sums are synced inside
        metric.reset()
        for key in ("acc", "balanced_acc"):
            value = float(values[key])
            if not math.isnan(value):
                self.log(f"{prefix}/{key}", value, prog_bar=key == "balanced_acc")

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_metrics)

    # ----------------------------------------------------------------- optimisation
    def build_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer over the trainable parameters: ``hparams``' callable, or the CIFAR-LT SGD by default.
        Subclasses wrap it here (SAM) so that the LR schedule attaches to the wrapper."""
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=2e-4)
        return self.optimizer_factory(params)

    def build_lr_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """The per-epoch LR schedule: the injected callable, or warm-up + x0.01 at 80 % / 90 % of ``max_epochs``
        (of the checkpoint's horizon on resume, like every epoch-derived schedule: see ``training_horizon``)."""
        scheduler = (
            WarmupMultiStepLR(optimizer) if self.scheduler_factory is None else self.scheduler_factory(optimizer)
        )
        if isinstance(scheduler, WarmupMultiStepLR) and scheduler.max_epochs is None and self._trainer is not None:
            scheduler.max_epochs = training_horizon(self.trainer)
        return scheduler

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer()
        scheduler = self.build_lr_scheduler(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ----------------------------------------------------------------- callbacks the method needs
    DIVERGENCE_HINT = "set the module's divergence_factor: null (CLI: --model.init_args.divergence_factor null)"

    def configure_callbacks(self) -> list[Callback]:
        """The divergence guard (unless ``divergence_factor`` is None). Subclasses add theirs with
        ``[own, *super().configure_callbacks()]``."""
        factor = self.hparams.get("divergence_factor", 1e3)
        if factor is None:
            return []
        every = self.hparams.get("divergence_check_every_n_steps")
        return [DivergenceGuard(factor, disable_hint=self.DIVERGENCE_HINT, check_every_n_steps=every)]

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record what rebuilding and using the model needs without its training data: the module's class path and
        the input preprocessing (``checkpoint["lt_lightning"]``; plain types, so ``weights_only`` loading works).

        A weights-only save skips the callbacks' ``on_save_checkpoint`` (where the guard refuses non-finite
        weights), so the module checks those itself: Lightning writes the file only after this hook returns."""
        weights_only = "callbacks" not in checkpoint
        guarded = self.hparams.get("divergence_factor", 1e3) is not None
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        guards = [cb for cb in self.trainer.callbacks if isinstance(cb, DivergenceGuard)] if fitting else []
        guard = guards[0] if guards else None
        if fitting and guard is None:
            self.raise_recorded_non_finite()  # a non-finite loss recorded on an accelerator (no guard reads it)
        if weights_only and guarded and fitting:
            if guard is not None:
                guard._check_pending(self.trainer, self)  # its own on_save_checkpoint is skipped for weights_only
            exempt = guard.exempt if guard is not None else ()
            check_checkpoint_finite(self.trainer, checkpoint, self.DIVERGENCE_HINT, exempt)
        if self.preprocessing is None and self._trainer is not None:
            self.preprocessing = getattr(self.trainer.datamodule, "preprocessing", None)
        checkpoint["lt_lightning"] = checkpoint_metadata(self)
        if self._trainer is not None:
            # What every epoch-derived schedule was resolved for, so that a resume keeps it (training_horizon).
            horizon = training_horizon(self.trainer)
            if horizon is not None and horizon >= 1:
                checkpoint["schedule_horizon"] = int(horizon)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the preprocessing and, when a Trainer resumes, the schedule horizon (one warning if the new
        ``max_epochs`` differs: every epoch-derived schedule keeps the checkpoint's horizon)."""
        self.preprocessing = checkpoint.get("lt_lightning", {}).get("preprocessing")
        horizon = checkpoint.get("schedule_horizon")
        if horizon is None:
            # Checkpoints written before the horizon was recorded: the LR scheduler's own max_epochs is what its
            # restored state keeps using, so the other schedules follow it.
            states = checkpoint.get("lr_schedulers") or [{}]
            horizon = states[0].get("max_epochs") if isinstance(states[0], dict) else None
        self.schedule_horizon = int(horizon) if horizon is not None else None
        if horizon is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            warn_horizon_kept(self.trainer.max_epochs, int(horizon))

    def on_train_end(self) -> None:
        self.raise_recorded_non_finite()  # what an accelerator run recorded since the last check (see check_finite)

    @property
    def loss_module(self) -> ClassCountLoss | nn.Module:
        """The loss in use (callbacks such as ``DeferredReweighting`` set its class weights)."""
        return self.criterion


def host_reads_are_free(tensor: Tensor) -> bool:
    """Whether reading ``tensor`` on the host costs nothing (a CPU tensor), rather than a device synchronisation."""
    return tensor.device.type == "cpu"


def check_compile_available() -> None:
    """Raise a ``RuntimeError`` naming ``compile_backbone`` when ``torch.compile`` cannot run here."""
    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        raise RuntimeError(
            "compile_backbone=True, but torch.compile is not supported on this Python / platform; set "
            "compile_backbone: false (CLI: --model.init_args.compile_backbone false)"
        )


def _compile_errors_named(compiled: Callable, name: str) -> Callable:
    """Re-raise a compiler failure (e.g. no C++ compiler for the CPU backend) as one error naming the option."""
    import torch._dynamo.exc

    @functools.wraps(compiled)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return compiled(*args, **kwargs)
        except torch._dynamo.exc.BackendCompilerFailed as err:
            raise RuntimeError(
                f"compile_backbone=True, but torch.compile failed to compile {name}: {err}. Install a working "
                "compiler toolchain (on the CPU: a C++ compiler) or set compile_backbone: false "
                "(CLI: --model.init_args.compile_backbone false)"
            ) from err

    return run


def _channels_last_inputs(fn: Callable) -> Callable:
    """``fn(self, x, ...)`` with a 4-D ``x`` made channels-last first (anything else passes unchanged)."""

    @functools.wraps(fn)
    def run(module: nn.Module, x: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(x, Tensor) and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return fn(module, x, *args, **kwargs)

    return run
