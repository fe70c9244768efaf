"""GIT's measured claim on the embedded Digits-ROT-LT preset (``pytest -m slow``; a few minutes on 2 CPU cores).

CE-DRS with the oracle generator (the true rotation) from epoch 0 at least halves the few-shot eKLD of plain CE-DRS
and raises the balanced validation accuracy by >= 0.05, averaged over seeds 0, 1, 2 (training seed and instance).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from lt_lightning.callbacks import ExpectedKLDivergence, PerClassAccuracy
from lt_lightning.cli import build_cli

EXAMPLES = Path(__file__).parents[2] / "examples"
SEEDS = (0, 1, 2)


def run(preset: str, seed: int, root: Path) -> tuple[float, float]:
    cli = build_cli(
        [
            "fit",
            f"--config={EXAMPLES / preset}",
            f"--seed_everything={seed}",
            f"--data.init_args.subset_seed={seed}",
            f"--trainer.default_root_dir={root}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.enable_checkpointing=false",
        ]
    )
    rows = next(c for c in cli.trainer.callbacks if isinstance(c, ExpectedKLDivergence)).results["fit"]
    report = next(c for c in cli.trainer.callbacks if isinstance(c, PerClassAccuracy))
    return statistics.fmean(r["ekld"] for r in rows if r["shot"] == "few"), report.last_summary["balanced_acc"]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_oracle_git_halves_few_shot_ekld_and_raises_balanced_accuracy(tmp_path):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {
            preset: [run(preset, seed, tmp_path / f"{preset}{seed}") for seed in SEEDS]
            for preset in ("digits_rot_lt_ce_drs.yaml", "digits_rot_lt_ce_drs_git_oracle.yaml")
        }
    finally:
        torch.set_num_threads(previous)
    (base_few, base_acc), (git_few, git_acc) = (
        (statistics.fmean(r[0] for r in runs), statistics.fmean(r[1] for r in runs)) for runs in results.values()
    )
    print("few eKLD / balanced acc per seed", results)
    assert git_few <= 0.5 * base_few
    assert git_acc >= base_acc + 0.05
