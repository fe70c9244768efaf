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
        # Subclass mode needs a class when the user names none: the base classes, i.e. the embedded default.
        parser.set_defaults(
            {
                "model": {"class_path": "lt_lightning.methods.LongTailClassifier"},
                "data": {"class_path": "lt_lightning.data.LongTailDataModule"},
            }
        )


def build_cli(args: ArgsType = None, run: bool = True) -> LongTailCLI:
    """Parse ``args`` (default: the command line), instantiate, and run the subcommand when ``run`` is true."""
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
