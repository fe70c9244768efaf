"""The ``lt-lightning`` command line (LightningCLI in subclass mode).

``lt-lightning fit`` with no arguments trains the embedded default: scikit-learn's 8x8 digits made long-tailed
(exponential, rho = 10), a small CNN, on the CPU, ending with the per-class report. Any module, datamodule,
backbone or loss is chosen by class path (short names of this package resolve: ``--model LongTailClassifier``)::

    lt-lightning fit --config examples/cifar10_lt_ldam.yaml
    lt-lightning fit --data.init_args.imbalance_ratio 50 --trainer.max_epochs 20
    lt-lightning fit --print_config

``class_counts``, ``class_names`` and ``in_chans`` flow from the datamodule into the model (linked on
instantiation), so a config never repeats them. A ``PerClassAccuracy`` callback is always attached (configure it
under ``per_class:``), and a ``PredictionWriter`` (``predictions:``) writes ``predict``'s ``predictions.csv``.
``fit`` keeps ``checkpoints/last.ckpt`` beside the best checkpoint unless ``save_last`` is set otherwise.

``validate``, ``test`` and ``predict`` with ``--ckpt_path`` need nothing else: the method and its arguments come
from the checkpoint, and so does the data (the training run's datamodule), unless ``--data.path`` names new images
(an :class:`~lt_lightning.data.InferenceDataModule`, prepared with the preprocessing the checkpoint recorded)::

    lt-lightning test --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt
    lt-lightning predict --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt --data.path my_images/

A configuration error (a bad value, a missing file) ends the console script with one line naming the option and
what it accepts, not a traceback.
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

import lt_lightning.methods  # noqa: F401  (registers the method subclasses so short names resolve)
from lt_lightning.callbacks import DivergenceError, PerClassAccuracy, PredictionWriter
from lt_lightning.checkpoints import read_checkpoint
from lt_lightning.cli_errors import ConfigError, config_error
from lt_lightning.data import InferenceDataModule

# The embedded default: small enough to train on 2 CPU cores in well under two minutes.
TRAINER_DEFAULTS = {"max_epochs": 30, "accelerator": "cpu", "devices": 1, "log_every_n_steps": 5}


class LongTailCLI(LightningCLI):
    """LightningCLI with the datamodule -> model links and the per-class report."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in ("class_counts", "class_names", "in_chans"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.add_lightning_class_args(PerClassAccuracy, "per_class")
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        # ``args`` is always the (rewritten) command line here, so Lightning's warning about passing both ``args``
        # and command-line arguments would fire on every run of the console script.
        self.config = parser.parse_object(args) if isinstance(args, dict) else parser.parse_args(args)

    def _parse_ckpt_path(self) -> None:
        """Lightning restores the model's class and arguments from ``ckpt_path``; an ``InferenceDataModule`` reads
        its preprocessing and classes from the same file."""
        super()._parse_ckpt_path()
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        data = self.config[subcommand].get("data") if subcommand else None
        if ckpt_path and getattr(data, "class_path", None) == INFERENCE_DATA and data.init_args.checkpoint is None:
            data.init_args.checkpoint = str(ckpt_path)

    def before_instantiate_classes(self) -> None:
        # The GPU trainer overlays append a TQDMProgressBar (refresh_rate 50); Lightning refuses a progress-bar
        # callback together with enable_progress_bar=False, so a run that turns the bar off drops that entry.
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
        trainer = config.get("trainer")
        if trainer is None or trainer.get("enable_progress_bar") is not False or not trainer.get("callbacks"):
            return
        trainer.callbacks = [cb for cb in trainer.callbacks if not _is_progress_bar(cb)]

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError, FileNotFoundError, OSError) as err:
            raise config_error(err, self.config.get(str(self.subcommand), self.config)) from err

    def _before_inference(self) -> None:
        # Lightning restores the checkpoint callback's state too and warns that its old directory differs: noise
        # for a run that writes no checkpoint.
        warnings.filterwarnings("ignore", message="The dirpath has changed from")
        if self.subcommand == "predict":
            return
        if isinstance(self.datamodule, InferenceDataModule) and not self.datamodule.labelled:
            raise ConfigError(
                f"--data.path: {self.subcommand} needs labelled images (one sub-folder per class, named after the "
                f"model's classes); {str(self.datamodule.path)!r} has none. Use predict for unlabelled images"
            )

    before_validate = before_test = before_predict = _before_inference

    def before_fit(self) -> None:
        # Keep ``last.ckpt`` (the README's resume / test example) unless the user decided otherwise. Not under
        # fast_dev_run, which disables checkpointing: Lightning 2.6's ModelCheckpoint.on_train_end would still write
        # last.ckpt with save_last=True (430 MB with optimizer states for the reference NuisanceMUNIT).
        if self.trainer.fast_dev_run:
            return
        for callback in self.trainer.checkpoint_callbacks:
            if getattr(callback, "save_last", False) is None:
                callback.save_last = True


def _is_progress_bar(callback: Any) -> bool:
    """Whether a ``trainer.callbacks`` entry (``class_path`` + ``init_args``, or an instance) is a progress bar."""
    from lightning.pytorch.callbacks.progress import ProgressBar

    if isinstance(callback, ProgressBar):
        return True
    class_path = getattr(callback, "class_path", None)
    if not isinstance(class_path, str) or "." not in class_path:
        return False
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, ProgressBar)


# The classes used when the command line and its config files name none (the embedded default). They are added as
# arguments rather than parser defaults: a parser default would be expanded with the base class's init_args, and
# jsonargparse carries those over when a config then names a subclass, so `--model LDAMDRW` would silently train
# with the base class's `loss: ce` instead of LDAMDRW's own `ldam`.
DEFAULT_CLASSES = {"model": "lt_lightning.methods.LongTailClassifier", "data": "lt_lightning.data.LongTailDataModule"}
SUBCOMMANDS = ("fit", "validate", "test", "predict")
INFERENCE_DATA = "lt_lightning.data.InferenceDataModule"
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "null")  # values Lightning resolves itself


def _config_named_groups(path: str) -> set[str]:
    """The groups whose class a config file names: ``model: LDAMDRW`` or ``model: {class_path: ...}``.

    A group given only as ``init_args`` (``model: {init_args: {loss: ...}}``) names no class: the default class is
    still inserted before the file, so those arguments apply to it.
    """
    try:
        with open(path) as f:
            content = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return set()  # not a readable YAML file: the parser will report it
    if not isinstance(content, dict):
        return set()
    return {
        key
        for key, value in content.items()
        if isinstance(value, str) or (isinstance(value, dict) and "class_path" in value)
    }


def _option(args: list[str], name: str) -> str | None:
    """The value of ``--name value`` / ``--name=value`` in ``args`` (the last one), else None."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(f"{name}="):
            value = arg.split("=", 1)[1]
    return value


def named_groups(args: list[str]) -> set[str]:
    """The groups (``model``, ``data``) whose class an argument or a ``--config`` file names."""
    named: set[str] = set()
    for i, arg in enumerate(args):
        for group in DEFAULT_CLASSES:
            if arg == f"--{group}" or arg.startswith((f"--{group}=", f"--{group}.class_path")):
                named.add(group)
        if arg in ("-c", "--config") and i + 1 < len(args):
            named |= _config_named_groups(args[i + 1])
        elif arg.startswith("--config="):
            named |= _config_named_groups(arg.split("=", 1)[1])
    return named


def with_default_classes(args: list[str]) -> list[str]:
    """``args`` with ``--model=<class>`` / ``--data=<class>`` inserted after the subcommand when neither an argument
    nor a ``--config`` file names that group.

    The classes are the embedded default's, except for ``validate`` / ``test`` / ``predict`` with an existing
    ``--ckpt_path``: then the checkpoint's own module class, and for the data an ``InferenceDataModule`` when
    ``--data.path`` (or ``--data.init_args.path``) names new images, else the training run's datamodule with the
    arguments the checkpoint recorded (later ``--data.init_args.*`` arguments still override them, e.g. ``root``).

    Example:
        >>> with_default_classes(["fit", "--model=LDAMDRW"])
        ['fit', '--data=lt_lightning.data.LongTailDataModule', '--model=LDAMDRW']
    """
    position = next((i for i, a in enumerate(args) if a in SUBCOMMANDS), None)
    if position is None:
        return args
    named = named_groups(args)
    classes = dict(DEFAULT_CLASSES)
    ckpt_path = _option(args, "--ckpt_path")
    if ckpt_path and ckpt_path not in LIGHTNING_CKPT_NAMES and not Path(ckpt_path).is_file():
        raise ConfigError(f"--ckpt_path: {ckpt_path!r} does not exist or is not a file")
    if args[position] != "fit" and ckpt_path and Path(ckpt_path).is_file():
        checkpoint = read_checkpoint(ckpt_path)
        classes["model"] = (checkpoint.get("hyper_parameters") or {}).get("_class_path", classes["model"])
        if any(a.startswith(("--data.path", "--data.init_args.path")) for a in args):
            classes["data"] = INFERENCE_DATA
        else:
            classes["data"] = _recorded_datamodule(checkpoint) or classes["data"]
    extra = [f"--{group}={cls}" for group, cls in classes.items() if group not in named]
    return [*args[: position + 1], *extra, *args[position + 1 :]]


def _recorded_datamodule(checkpoint: dict[str, Any]) -> str | None:
    """The training run's datamodule as a JSON ``{class_path, init_args}`` argument value, if the checkpoint has it."""
    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", None)
    return None if class_path is None else json.dumps({"class_path": class_path, "init_args": hparams})


def build_cli(args: ArgsType = None, run: bool = True) -> LongTailCLI:
    """Parse ``args`` (default: the command line), instantiate, and run the subcommand when ``run`` is true."""
    args = with_default_classes(list(sys.argv[1:] if args is None else args))
    return LongTailCLI(
        # Any LightningModule (every lt_lightning method, the generator trainers, a user's own); the default
        # (LongTailClassifier) is added above.
        model_class=L.LightningModule,
        # Any LightningDataModule (``InferenceDataModule`` for new images, a user's own); the default is added above.
        datamodule_class=L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


def main(args: ArgsType = None) -> None:
    """Entry point of the ``lt-lightning`` console script; tests call ``main(["fit", ...])``.

    A :class:`~lt_lightning.cli_errors.ConfigError` (a bad value or a missing file met while the classes are built)
    ends the program with its one-line message on stderr and exit status 2, as a parse error does; a
    :class:`~lt_lightning.callbacks.DivergenceError` (training diverged) with its message and exit status 1.
    """
    try:
        build_cli(args)
    except ConfigError as err:
        sys.stderr.write(f"lt-lightning: error: {err}\n")
        raise SystemExit(2) from None
    except DivergenceError as err:
        # The message already says where (epoch, step, lr) and what to try; a traceback would only bury it.
        sys.stderr.write(f"lt-lightning: error: {err}\n")
        raise SystemExit(1) from None


if __name__ == "__main__":  # pragma: no cover
    main()
