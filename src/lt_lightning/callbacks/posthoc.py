"""Post-hoc callbacks: ``TauNormalization`` and ``PostHocLogitAdjustment`` change a trained model's logits at
inference, without any training.

==========================  ==============================================  =========================================
callback                    logits                                          source
==========================  ==============================================  =========================================
``TauNormalization``        ``f · (w_c / ||w_c||^τ)`` (``+ b_c`` if kept)   Kang et al. 2020, ``tau_norm.py``
``PostHocLogitAdjustment``  ``z_c - log(π_c^τ + 1e-12)``                    Menon et al. 2021, google-research
==========================  ==============================================  =========================================

Both act during ``trainer.validate`` (not the validation inside ``fit``), ``trainer.test`` and
``trainer.predict``: for the duration of the stage they replace the module's ``predict_logits`` (every
lt_lightning method), else its ``forward`` (any other LightningModule), so the module's own metrics, a
:class:`~lt_lightning.callbacks.PerClassAccuracy` and ``predict``'s probabilities all see the adjusted logits.
Use one of them at a time.

``tau="auto"`` chooses τ on the datamodule's validation split (never the test set) at the start of the stage: one
pass caches the features (τ-norm) or the logits (logit adjustment), every grid point is then a matmul or a
subtraction, and the per-class correct counts are summed over DDP ranks, so every rank picks the same τ: the one of
highest balanced accuracy, the smallest on a tie. The table goes to ``tau_sweep.csv`` (columns ``tau, many,
medium, few, all``: balanced accuracy over each shot group's classes and over all classes).

Example:
    >>> import torch
    >>> from torch import nn
    >>> import lightning as L
    >>> class Tiny(L.LightningModule):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(2, 2, bias=False)
    ...         self.fc.weight.data = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    ...     def forward(self, x):
    ...         return self.fc(x)
    ...     def predict_step(self, batch, batch_idx):
    ...         return self(batch[0]).argmax(dim=1)
    >>> loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor([[1.0, 1.1]])))
    >>> trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
    ...                     callbacks=[TauNormalization(tau=1.0)])
    >>> trainer.predict(Tiny(), loader)  # unadjusted: 2.0 > 1.1, class 0; τ = 1: 1.0 < 1.1, class 1
    [tensor([1])]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor, nn
from torch.utils.data import DataLoader
from typing_extensions import override

from lt_lightning.callbacks.plotting import write_tau_sweep_csv
from lt_lightning.classifier_parts import classifier_parts, head_weight
from lt_lightning.cli_errors import ConfigError
from lt_lightning.functional.metrics import shot_accuracy, shot_groups
from lt_lightning.functional.posthoc import (
    DEFAULT_TAU_GRID,
    adjust_logits,
    balanced_accuracies,
    best_tau_index,
    check_tau,
    check_tau_grid,
    priors_from_counts,
    sweep_correct_counts,
    tau_normalized_logits,
)
from lt_lightning.losses import LogitAdjustedLoss
from lt_lightning.models.heads import NormedLinear

# The stages the callbacks act in, with the prefix of their logged keys (as the module's own metrics: val/, test/).
STAGE_PREFIX = {"validate": "val", "test": "test", "predict": "predict"}
# Loss names that already train with the prior in the logits: adjusting their logits post hoc adjusts twice.
PRIOR_ADJUSTED_LOSSES = frozenset({"logit_adjusted", "balanced_softmax"})
NO_VALIDATION_SPLIT_HINT = (
    "tau='auto' needs a validation split separate from the test set to choose tau ({reason}): give the datamodule "
    "one (LongTailDataModule(val_per_class=20); CLI: --data.init_args.val_per_class 20), or pass a number for tau "
    "(e.g. tau=1.0)"
)


def check_tau_argument(tau: object) -> float | str:
    """``"auto"`` or a finite τ >= 0 (as a float); anything else is a ValueError naming the value.

    Example:
        >>> check_tau_argument("auto"), check_tau_argument(1)
        ('auto', 1.0)
    """
    if isinstance(tau, str):
        if tau != "auto":
            raise ValueError(f"tau must be 'auto' or a finite number >= 0, got {tau!r}")
        return tau
    return check_tau(tau)


def check_priors(priors: object) -> Tensor:
    """Explicit class priors: a non-empty sequence of finite numbers > 0, normalised to sum 1 (float64).

    Example:
        >>> check_priors([3, 1]).tolist()
        [0.75, 0.25]
    """
    if isinstance(priors, str) or not isinstance(priors, Sequence | Tensor) or len(priors) == 0:
        raise ValueError(f"priors must be 'train_counts' or a non-empty sequence of numbers > 0, got {priors!r}")
    values = torch.as_tensor([float(p) for p in priors], dtype=torch.float64)
    if not bool(torch.isfinite(values).all()) or bool((values <= 0).any()):
        raise ValueError(f"priors must all be finite numbers > 0, got {values.tolist()}")
    return values / values.sum()


def sweep_rows(grid: Sequence[float], correct: Tensor, support: Tensor, groups: Sequence[str] | None) -> list[dict]:
    """One row per τ: ``tau``, balanced accuracy over the ``many`` / ``medium`` / ``few`` classes (NaN for an empty
    group or without ``groups``) and over ``all`` classes with support.

    Example:
        >>> rows = sweep_rows([0.0, 1.0], torch.tensor([[2, 0], [1, 1]]), torch.tensor([2, 2]), ("many", "few"))
        >>> [(r["tau"], r["many"], r["few"], r["all"]) for r in rows]
        [(0.0, 1.0, 0.0, 0.5), (1.0, 0.5, 0.5, 0.5)]
    """
    balanced = balanced_accuracies(correct, support).tolist()
    per_class = correct.double() / support.double().where(support > 0, torch.tensor(math.nan, dtype=torch.float64))
    rows = []
    for i, tau in enumerate(grid):
        shots = shot_accuracy(per_class[i], groups) if groups is not None else {}
        rows.append({"tau": float(tau), **{g: shots.get(g, math.nan) for g in ("many", "medium", "few")}})
        rows[-1]["all"] = balanced[i]
    return rows


class _TauCallback(Callback):
    """What both post-hoc callbacks share: τ validation, the stage patch, the ``"auto"`` sweep and its report.

    A subclass names itself (``key``, the logged ``{stage}/{key}/...``) and implements :meth:`_prepare` (read the
    model once per stage), :meth:`_cache_batch` (what the sweep keeps of a validation batch), :meth:`_cached_logits`
    (the logits of the cache at a τ) and :meth:`_adjusted` (the patched inference function).
    """

    key = "posthoc"

    def __init__(
        self,
        tau: float | Literal["auto"] = 1.0,
        grid: Sequence[float] = DEFAULT_TAU_GRID,
        sweep_file: str = "tau_sweep.csv",
        output_dir: str | Path | None = None,
    ) -> None:
        self.tau = check_tau_argument(tau)
        self.grid = check_tau_grid(grid)
        if not isinstance(sweep_file, str) or not sweep_file:
            raise ValueError(f"sweep_file must be a non-empty file name, got {sweep_file!r}")
        self.sweep_file = sweep_file
        self.output_dir = Path(output_dir) if output_dir is not None else None
        # A fixed τ is "chosen" from the start; "auto" chooses at the first stage (or restores from a checkpoint).
        self.best_tau: float | None = None if self.tau == "auto" else self.tau
        self.sweep: list[dict] = []
        self._restore: tuple[nn.Module, str, bool, Any] | None = None

    # ------------------------------------------------------------------ subclass interface
    def _prepare(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """Read what the stage needs from the model; False leaves the logits unchanged (nothing to adjust)."""
        raise NotImplementedError

    def _cache_batch(self, pl_module: L.LightningModule, x: Any) -> Tensor:
        raise NotImplementedError

    def _cached_logits(self, cache: Tensor, tau: float) -> Tensor:
        raise NotImplementedError

    def _adjusted(self, original: Callable, tau: float) -> Callable:
        raise NotImplementedError

    # ------------------------------------------------------------------ stage hooks
    @override
    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "validate":  # not the validation loop inside fit: that one must see the raw model
            self._start("validate", trainer, pl_module)

    @override
    def on_test_start(self, trainer, pl_module) -> None:
        self._start("test", trainer, pl_module)

    @override
    def on_predict_start(self, trainer, pl_module) -> None:
        self._start("predict", trainer, pl_module)

    @override
    def on_validation_end(self, trainer, pl_module) -> None:
        self._unpatch()

    @override
    def on_test_end(self, trainer, pl_module) -> None:
        self._unpatch()

    @override
    def on_predict_end(self, trainer, pl_module) -> None:
        self._unpatch()

    @override
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._unpatch()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"best_tau": self.best_tau}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A number given by the user wins over a τ chosen in an earlier run.
        if self.tau == "auto" and state_dict.get("best_tau") is not None:
            self.best_tau = float(state_dict["best_tau"])

    def _start(self, stage: str, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._unpatch()  # a stage that ended by an exception the hooks did not see
        if not self._prepare(trainer, pl_module):
            return
        balanced = None
        if self.tau == "auto":
            balanced = self._choose_tau(trainer, pl_module)
        self._log_choice(stage, trainer, pl_module, balanced)
        self._patch(pl_module)

    # ------------------------------------------------------------------ the patch
    def _patch(self, pl_module: L.LightningModule) -> None:
        """Replace the instance attribute ``predict_logits`` (else ``forward``) until the stage ends."""
        name = "predict_logits" if callable(getattr(pl_module, "predict_logits", None)) else "forward"
        original = getattr(pl_module, name)
        had_own = name in vars(pl_module)
        self._restore = (pl_module, name, had_own, vars(pl_module).get(name))
        setattr(pl_module, name, self._adjusted(original, float(self.best_tau)))

    def _unpatch(self) -> None:
        if self._restore is None:
            return
        module, name, had_own, previous = self._restore
        self._restore = None
        if had_own:
            setattr(module, name, previous)
        else:
            delattr(module, name)  # the class's method shows through again

    # ------------------------------------------------------------------ "auto"
    def _choose_tau(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float | None:
        """Sweep the grid on the validation split; returns the chosen τ's balanced accuracy (None when an earlier
        choice is reused because there is no validation split)."""
        loader, reason = validation_loader(trainer)
        if loader is None:
            if self.best_tau is not None:
                rank_zero_info(f"{type(self).__name__}: no validation split ({reason}); reusing tau={self.best_tau:g}")
                return None
            # A ConfigError (a ValueError): the console script prints it as one line, not a traceback.
            raise ConfigError(NO_VALIDATION_SPLIT_HINT.format(reason=reason))
        cache, target = self._validation_cache(trainer, pl_module, loader)
        num_classes = self._num_classes()
        if cache is None:  # more ranks than validation samples: this rank adds nothing, but joins the reduce
            correct = torch.zeros(len(self.grid), num_classes, dtype=torch.long)
            support = torch.zeros(num_classes, dtype=torch.long)
        else:
            logits_at = lambda t: self._cached_logits(cache, t)  # noqa: E731
            correct, support = sweep_correct_counts(logits_at, self.grid, target, num_classes)
        correct, support = (_sum_over_ranks(trainer, pl_module, t) for t in (correct, support))
        index = best_tau_index(correct, support)
        self.best_tau = self.grid[index]
        self.sweep = sweep_rows(self.grid, correct, support, _groups(trainer, pl_module, num_classes))
        out_dir = self._out_dir(trainer)  # on every rank: trainer.log_dir broadcasts under DDP
        if trainer.is_global_zero:
            write_tau_sweep_csv(out_dir / self.sweep_file, self.sweep)
        return self.sweep[index]["all"]

    def _num_classes(self) -> int:
        raise NotImplementedError

    def _validation_cache(self, trainer: L.Trainer, pl_module: L.LightningModule, loader: DataLoader):
        """This rank's shard of the validation split through :meth:`_cache_batch`, in eval mode, without gradients
        (the module's previous mode is restored)."""
        batch_size = loader.batch_size
        if batch_size is None:  # a loader built on a batch_sampler: use the size of its batches
            batch_size = len(next(iter(loader.batch_sampler), [None]))
        shard = DataLoader(
            loader.dataset,
            batch_size=max(int(batch_size), 1),
            # Each rank takes every world_size-th index without padding: the summed counts are exact.
            sampler=list(range(trainer.global_rank, len(loader.dataset), trainer.world_size)),
            collate_fn=loader.collate_fn,
            num_workers=loader.num_workers,
        )
        was_training = pl_module.training
        pl_module.eval()
        values, targets = [], []
        try:
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                for batch in shard:
                    # Through the transfer hooks, as Lightning moves batches (data_on_device turns indices into images).
                    batch = trainer.strategy.batch_to_device(batch, pl_module.device)
                    values.append(self._cache_batch(pl_module, batch[0]).float())
                    targets.append(batch[1])
        finally:
            pl_module.train(was_training)
        if not values:
            return None, None
        return torch.cat(values), torch.cat(targets)

    # ------------------------------------------------------------------ report
    def _log_choice(self, stage: str, trainer, pl_module, balanced: float | None) -> None:
        prefix = f"{STAGE_PREFIX[stage]}/{self.key}"
        metrics = {f"{prefix}/best_tau": float(self.best_tau)}
        if balanced is not None:
            metrics[f"{prefix}/balanced_acc"] = float(balanced)
        if stage == "predict":  # self.log is not allowed in on_predict_start: write to the loggers directly
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.log_metrics(metrics, step=trainer.global_step)
        else:
            pl_module.log_dict(metrics, sync_dist=False)  # identical on every rank already
        on_val = f", validation balanced accuracy {balanced:.4f}" if balanced is not None else ""
        rank_zero_info(f"{type(self).__name__}: {stage} with tau={self.best_tau:g}{on_val}")

    def _out_dir(self, trainer) -> Path:
        """The report directory. Call it on EVERY rank (see ``PerClassAccuracy._out_dir``)."""
        return self.output_dir or Path(trainer.log_dir or trainer.default_root_dir)


class TauNormalization(_TauCallback):
    """τ-normalised classifier (Kang et al., ICLR 2020): ``logits_c = f · (w_c / ||w_c||^τ)`` (``+ b_c`` only with
    ``keep_bias``) from the model's features ``f`` and head weight ``W`` (:func:`~lt_lightning.classifier_parts.
    classifier_parts`). τ = 0 is the plain head (without its bias unless kept), τ = 1 gives unit-norm class rows.

    Args:
        tau: a number >= 0, or ``"auto"``: chosen on the validation split over ``grid``.
        grid: the τ values ``"auto"`` tries, strictly increasing (default 0, 0.1, ..., 2 as ``tau_norm.py``).
        keep_bias: add the head's bias (BagofTricks keeps it; the official ``tau_norm.py`` drops it, the default).
        sweep_file: the CSV ``"auto"`` writes (one row per τ).
        output_dir: where it goes; default: the trainer's log directory.

    Attributes: ``best_tau`` (the τ in use; kept in checkpoints) and ``sweep`` (the last ``"auto"`` table, one dict
    per τ with the CSV's columns).

    For LDAM's cosine head (``NormedLinear``) the rows already have unit norm: τ-normalisation is the identity, the
    callback warns once and leaves the logits unchanged.

    Example:
        >>> TauNormalization(tau="auto", grid=[0.0, 0.5, 1.0]).grid
        (0.0, 0.5, 1.0)
    """

    key = "tau_norm"

    def __init__(
        self,
        tau: float | Literal["auto"] = 1.0,
        grid: Sequence[float] = DEFAULT_TAU_GRID,
        keep_bias: bool = False,
        sweep_file: str = "tau_sweep.csv",
        output_dir: str | Path | None = None,
    ) -> None:
        super().__init__(tau, grid, sweep_file, output_dir)
        if not isinstance(keep_bias, bool):
            raise ValueError(f"keep_bias must be True or False, got {keep_bias!r}")
        self.keep_bias = keep_bias
        self._warned_cosine = False

    def _prepare(self, trainer, pl_module) -> bool:
        parts = classifier_parts(pl_module)
        if isinstance(parts.head, NormedLinear):
            if not self._warned_cosine:
                warnings.warn(
                    "TauNormalization: the model's head is LDAM's cosine head (NormedLinear), whose class rows already "
                    "have unit norm: tau-normalisation is the identity, the logits are left unchanged",
                    UserWarning,
                    stacklevel=2,
                )
                self._warned_cosine = True
            return False
        head_weight(parts.head)  # a head whose logits are not W f + b (LWS, MARC) is refused now, not mid-stage
        self._features = parts.features
        self._head = parts.head
        # The module's own hooks give the features directly; a foreign model's come from running it (see _adjusted).
        self._has_hooks = callable(getattr(pl_module, "classifier_features", None)) and callable(
            getattr(pl_module, "classifier_head", None)
        )
        return True

    def _logits(self, features: Tensor, tau: float) -> Tensor:
        weight, bias = head_weight(self._head)
        weight = weight.detach().to(features.dtype)
        bias = bias.detach().to(features.dtype) if self.keep_bias and bias is not None else None
        return tau_normalized_logits(features, weight, tau, bias)

    def _cache_batch(self, pl_module, x) -> Tensor:
        return self._features(x)

    def _cached_logits(self, cache: Tensor, tau: float) -> Tensor:
        return self._logits(cache, tau)

    def _num_classes(self) -> int:
        return head_weight(self._head)[0].shape[0]

    def _adjusted(self, original: Callable, tau: float) -> Callable:
        if self._has_hooks:
            return lambda x, *args, **kwargs: self._logits(self._features(x), tau)

        # A foreign model: run its own forward once with the head's output swapped for the τ-normalised logits of
        # the head's input (its features). classifier_parts' feature capture would call the patched forward again.
        def forward(*args, **kwargs):
            handle = self._head.register_forward_hook(lambda _, inputs, __: self._logits(inputs[0], tau))
            try:
                return original(*args, **kwargs)
            finally:
                handle.remove()

        return forward


class PostHocLogitAdjustment(_TauCallback):
    """Post-hoc logit adjustment (Menon et al., ICLR 2021): ``logits_c = z_c - log(π_c^τ + 1e-12)`` on the module's
    own inference logits ``z``, with the training priors ``π``. τ = 0 is the identity; τ = 1 is Bayes-optimal for
    the balanced error when ``softmax(z)`` is the training posterior.

    Args:
        tau: a number >= 0, or ``"auto"``: chosen on the validation split over ``grid``.
        grid: the τ values ``"auto"`` tries, strictly increasing (default 0, 0.1, ..., 2).
        priors: ``"train_counts"`` (the ``class_counts`` the module was trained with, else the datamodule's), or
            the class priors themselves (C numbers > 0, normalised to sum 1).
        sweep_file: the CSV ``"auto"`` writes (one row per τ).
        output_dir: where it goes; default: the trainer's log directory.

    Attributes: ``best_tau``, ``sweep`` and ``priors`` (float64, sum 1; from the counts once a stage has started).

    Warns when the module's loss already puts the prior into training (logit-adjusted loss, balanced softmax):
    adjusting its logits again adjusts twice.

    Example:
        >>> PostHocLogitAdjustment(priors=[9, 1]).priors.tolist()
        [0.9, 0.1]
    """

    key = "logit_adjustment"

    def __init__(
        self,
        tau: float | Literal["auto"] = 1.0,
        grid: Sequence[float] = DEFAULT_TAU_GRID,
        priors: Literal["train_counts"] | Sequence[float] = "train_counts",
        sweep_file: str = "tau_sweep.csv",
        output_dir: str | Path | None = None,
    ) -> None:
        super().__init__(tau, grid, sweep_file, output_dir)
        given = not (isinstance(priors, str) and priors == "train_counts")
        self.priors: Tensor | None = check_priors(priors) if given else None
        self._given_priors = self.priors is not None

    def _prepare(self, trainer, pl_module) -> bool:
        if not self._given_priors:
            counts = _class_counts(trainer, pl_module, module_first=True)
            if counts is None:
                raise ValueError(
                    "PostHocLogitAdjustment(priors='train_counts') needs class counts: give the datamodule or the "
                    "module a `class_counts` attribute (training images per class), or pass priors=[...]"
                )
            self.priors = priors_from_counts(counts)
        if _adjusts_for_prior(pl_module):
            rank_zero_warn(
                "PostHocLogitAdjustment: the module's loss already adjusts for the class prior (logit-adjusted loss / "
                "balanced softmax); adjusting its logits post hoc as well is adjusting twice"
            )
        if type(pl_module).__name__ == "ClassifierRetraining" and not self._given_priors:
            rank_zero_warn(
                "PostHocLogitAdjustment on a ClassifierRetraining model: its last layer was re-trained on the stage-2 "
                "stream (class-balanced by the recipes), so subtracting the long-tailed training prior may adjust "
                "twice; compare with tau=0 (tau='auto' includes it) or pass the stage-2 stream's priors"
            )
        # The unadjusted logits, for the sweep: the module's inference function before the patch.
        self._raw = pl_module.predict_logits if callable(getattr(pl_module, "predict_logits", None)) else pl_module
        return True

    def _shifted(self, logits: Tensor, tau: float) -> Tensor:
        if logits.ndim != 2 or logits.shape[1] != len(self.priors):
            raise ValueError(
                f"priors has {len(self.priors)} classes but the model's logits have shape {tuple(logits.shape)}: "
                "pass one prior per class"
            )
        return adjust_logits(logits, self.priors, tau)

    def _cache_batch(self, pl_module, x) -> Tensor:
        return self._raw(x)

    def _cached_logits(self, cache: Tensor, tau: float) -> Tensor:
        return self._shifted(cache, tau)

    def _num_classes(self) -> int:
        return len(self.priors)

    def _adjusted(self, original: Callable, tau: float) -> Callable:
        return lambda *args, **kwargs: self._shifted(original(*args, **kwargs), tau)


# ---------------------------------------------------------------------------------------------- helpers
def validation_loader(trainer: L.Trainer) -> tuple[DataLoader | None, str]:
    """The datamodule's validation loader, or None and why there is no usable validation split."""
    from lt_lightning.data.datamodule import LongTailDataModule  # the data stack is heavy: only when needed

    datamodule = trainer.datamodule
    if datamodule is None:
        return None, "the trainer has no datamodule"
    if not is_overridden("val_dataloader", datamodule, L.LightningDataModule):
        return None, f"{type(datamodule).__name__} has no val_dataloader"
    if isinstance(datamodule, LongTailDataModule) and datamodule.val_set is datamodule.test_set:
        return None, "the LongTailDataModule's val_per_class is 0: it validates on the test set"
    loader = datamodule.val_dataloader()
    if isinstance(loader, Mapping):
        loader = next(iter(loader.values()), None)
    elif isinstance(loader, Sequence):
        loader = loader[0] if loader else None
    if not isinstance(loader, DataLoader):
        return None, f"val_dataloader() returned {type(loader).__name__}, not a DataLoader"
    return loader, ""


def _sum_over_ranks(trainer: L.Trainer, pl_module: L.LightningModule, counts: Tensor) -> Tensor:
    # On the module's device (NCCL reduces CUDA tensors only); integer sums: exact and equal on every rank.
    return trainer.strategy.reduce(counts.to(pl_module.device), reduce_op="sum").cpu()


def _class_counts(
    trainer: L.Trainer, pl_module: L.LightningModule, module_first: bool = False
) -> tuple[int, ...] | None:
    # The priors are the ones the model was TRAINED with (module first): a datamodule rebuilt for testing may differ,
    # e.g. with a validation split carved out afterwards; shot groups follow the data being evaluated.
    sources = (pl_module, trainer.datamodule) if module_first else (trainer.datamodule, pl_module)
    for source in sources:
        counts = getattr(source, "class_counts", None) if source is not None else None
        if counts is not None:
            return tuple(int(c) for c in counts)
    return None


def _groups(trainer: L.Trainer, pl_module: L.LightningModule, num_classes: int) -> tuple[str, ...] | None:
    counts = _class_counts(trainer, pl_module)
    return shot_groups(counts) if counts is not None and len(counts) == num_classes else None


def _adjusts_for_prior(pl_module: L.LightningModule) -> bool:
    hparams = getattr(pl_module, "hparams", None) or {}
    loss = hparams.get("loss") if isinstance(hparams, Mapping) else None
    return (isinstance(loss, str) and loss in PRIOR_ADJUSTED_LOSSES) or isinstance(
        getattr(pl_module, "criterion", None), LogitAdjustedLoss
    )
