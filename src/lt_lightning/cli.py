"""The ``lt-lightning`` command line (LightningCLI in subclass mode).

``lt-lightning fit`` with no arguments trains the embedded default: scikit-learn's 8x8 digits made long-tailed
(exponential, rho = 10), a small CNN, on the CPU, ending with the per-class report. Any module, datamodule,
backbone or loss is chosen by class path (short names of this package resolve: ``--model LongTailClassifier``)::

    lt-lightning fit --config examples/cifar10_lt_ldam.yaml
    lt-lightning fit --data.init_args.imbalance_ratio 50 --trainer.max_epochs 20
    lt-lightning fit --print_config

``class_counts``, ``class_names`` and ``in_chans`` flow from the datamodule into the model (linked on
instantiation), so a config never repeats them. A ``PerClassAccuracy`` callback is always attached (configure it
under ``per_class:``).
"""

from __future__ import annotations

import sys

import yaml
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

import lt_lightning.methods  # noqa: F401  (registers the method subclasses so short names resolve)
from lt_lightning.callbacks import PerClassAccuracy
from lt_lightning.data import LongTailDataModule
from lt_lightning.methods import LongTailClassifier

# The embedded default: small enough to train on 2 CPU cores in well under two minutes.
TRAINER_DEFAULTS = {"max_epochs": 30, "accelerator": "cpu", "devices": 1, "log_every_n_steps": 5}


class LongTailCLI(LightningCLI):
    """LightningCLI with the datamodule -> model links and the per-class report."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in ("class_counts", "class_names", "in_chans"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        parser.add_lightning_class_args(PerClassAccuracy, "per_class")


# The classes used when the command line and its config files name none (the embedded default). They are added as
# arguments rather than parser defaults: a parser default would be expanded with the base class's init_args, and
# jsonargparse carries those over when a config then names a subclass, so `--model LDAMDRW` would silently train
# with the base class's `loss: ce` instead of LDAMDRW's own `ldam`.
DEFAULT_CLASSES = {"model": "lt_lightning.methods.LongTailClassifier", "data": "lt_lightning.data.LongTailDataModule"}
SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _config_keys(path: str) -> set[str]:
    try:
        with open(path) as f:
            content = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return set()  # not a readable YAML file: the parser will report it
    return set(content) if isinstance(content, dict) else set()


def with_default_classes(args: list[str]) -> list[str]:
    """``args`` with ``--model=<base class>`` / ``--data=<base class>`` inserted after the subcommand when neither
    an argument nor a ``--config`` file names that group.

    Example:
        >>> with_default_classes(["fit", "--model=LDAMDRW"])
        ['fit', '--data=lt_lightning.data.LongTailDataModule', '--model=LDAMDRW']
    """
    position = next((i for i, a in enumerate(args) if a in SUBCOMMANDS), None)
    if position is None:
        return args
    named: set[str] = set()
    for i, arg in enumerate(args):
        for group in DEFAULT_CLASSES:
            if arg == f"--{group}" or arg.startswith((f"--{group}=", f"--{group}.class_path")):
                named.add(group)
        if arg in ("-c", "--config") and i + 1 < len(args):
            named |= _config_keys(args[i + 1])
        elif arg.startswith("--config="):
            named |= _config_keys(arg.split("=", 1)[1])
    extra = [f"--{group}={cls}" for group, cls in DEFAULT_CLASSES.items() if group not in named]
    return [*args[: position + 1], *extra, *args[position + 1 :]]


def build_cli(args: ArgsType = None, run: bool = True) -> LongTailCLI:
    """Parse ``args`` (default: the command line), instantiate, and run the subcommand when ``run`` is true."""
    args = with_default_classes(list(sys.argv[1:] if args is None else args))
    return LongTailCLI(
        model_class=LongTailClassifier,
        datamodule_class=LongTailDataModule,
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
    """Entry point of the ``lt-lightning`` console script; tests call ``main(["fit", ...])``."""
    build_cli(args)


if __name__ == "__main__":  # pragma: no cover
    main()
