"""Per-group eKLD and balanced accuracy of the Digits-ROT-LT presets (CE, CE-DRS, CE-DRS + oracle GIT), averaged
over seeds.

Each preset is run through the CLI exactly as a user would (``lt-lightning fit --config ...``) with the seed as both
the training seed and the instance (``subset_seed``), single-threaded; the ``ExpectedKLDivergence`` callback's
after-training rows are grouped many / medium / few by training class size.

A GIT preset with a learned generator (``digits_bg_lt_ce_drs_git``) needs step 1 first: ``--generator-preset
digits_bg_lt_munit`` trains that NuisanceMUNIT preset for each seed (same seed and instance) in the run's own
working directory, where it writes the ``generators/<dataset>.pt`` the GIT preset then loads.

    .venv/bin/python benchmarks/invariance.py [--presets digits_rot_lt_ce ...] [--seeds 0 1 2]
    .venv/bin/python benchmarks/invariance.py --presets digits_bg_lt_ce_drs digits_bg_lt_ce_drs_git \
        --generator-preset digits_bg_lt_munit
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import torch

from lt_lightning.callbacks import ExpectedKLDivergence, PerClassAccuracy
from lt_lightning.cli import build_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
GROUPS = ("many", "medium", "few")


def fit(preset: str, seed: int, root: str):
    return build_cli(
        [
            "fit",
            f"--config={EXAMPLES / preset}.yaml",
            f"--seed_everything={seed}",
            f"--data.init_args.subset_seed={seed}",
            f"--trainer.default_root_dir={root}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.enable_checkpointing=false",
        ]
    )


def run(preset: str, seed: int, root: str, generator_preset: str | None = None) -> dict[str, float]:
    os.chdir(root)  # generators/<dataset>.pt: written by step 1 and read by step 2 relative to the working directory
    if generator_preset and "git" in preset:
        fit(generator_preset, seed, root)
    cli = fit(preset, seed, root)
    ekld = next(c for c in cli.trainer.callbacks if isinstance(c, ExpectedKLDivergence)).results["fit"]
    report = next(c for c in cli.trainer.callbacks if isinstance(c, PerClassAccuracy))
    out = {g: statistics.fmean(r["ekld"] for r in ekld if r["shot"] == g) for g in GROUPS}
    return out | {"balanced_acc": report.last_summary["balanced_acc"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--presets", nargs="+", default=["digits_rot_lt_ce", "digits_rot_lt_ce_drs", "digits_rot_lt_ce_drs_git_oracle"]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--generator-preset", default=None, help="NuisanceMUNIT preset to train first, per seed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    keys = (*GROUPS, "balanced_acc")
    print("| preset | eKLD many | eKLD medium | eKLD few | balanced val acc |")
    print("|---|---|---|---|---|")
    for preset in args.presets:
        runs = [run(preset, seed, tempfile.mkdtemp(prefix="lt_inv_"), args.generator_preset) for seed in args.seeds]
        cells = []
        for key in keys:
            values = [r[key] for r in runs]
            mean, std = statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{mean:.3f} ± {std:.3f}")
        print(f"| {preset} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
