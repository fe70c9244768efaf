"""Choose SAM's rho for LDAM-DRW + SAM on a validation split, then test the chosen value (no test-set selection).

Step 1 (selection): digits-LT rho 50 with ``val_per_class`` balanced validation images per class taken from the
images the profile leaves unused, selection seeds (10, 11, 12 by default: other splits and initialisations than the
test seeds); LDAM-DRW and LDAM-DRW + SAM for each candidate rho are trained and scored on the validation split
(balanced accuracy of the final model). The best mean wins; ties go to the smaller standard deviation.
Step 2 (test): the claim's setting (no validation split, seeds 0, 1, 2, test set): LDAM-DRW against LDAM-DRW + SAM
with the chosen rho. Everything single-threaded, 30 epochs, batch 32, LR x0.1 at 80 % / 90 % (as the slow tests).

    .venv/bin/python benchmarks/sam_rho.py                      # ~15 min on 2 CPU cores
    .venv/bin/python benchmarks/sam_rho.py --rhos 0.05 0.2 --selection-seeds 10
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from lt_lightning.benchmarking import Method, compare, summarise
from lt_lightning.callbacks import DeferredReweighting
from lt_lightning.methods import LDAMDRW, SAMClassifier
from lt_lightning.optim import WarmupMultiStepLR

SCHEDULE = partial(WarmupMultiStepLR, gamma=0.1)


def ldam_drw(counts, in_chans, max_epochs):
    return LDAMDRW(counts, backbone="small_cnn", in_chans=in_chans, lr_scheduler=SCHEDULE), []


def ldam_drw_sam(rho: float):
    def build(counts, in_chans, max_epochs):
        model = SAMClassifier(
            counts, backbone="small_cnn", in_chans=in_chans, loss="ldam", rho=rho, lr_scheduler=SCHEDULE
        )
        return model, [DeferredReweighting()]

    return build


def table(results) -> str:
    lines = ["| method | balanced acc (mean ± std) | per seed |", "|---|---|---|"]
    for name, runs in results.items():
        mean, std = summarise(runs)["balanced_acc"]
        seeds = ", ".join(f"{100 * r['balanced_acc']:.1f}" for r in runs)
        lines.append(f"| {name} | {100 * mean:.2f} ± {100 * std:.2f} | {seeds} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rhos", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.2, 0.5, 0.8])
    parser.add_argument("--selection-seeds", type=int, nargs="+", default=[10, 11, 12])
    parser.add_argument("--test-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--val-per-class", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = {"dataset": "digits", "imbalance_ratio": 50, "batch_size": 32}

    candidates = [Method("LDAM-DRW", ldam_drw)] + [Method(f"LDAM-DRW+SAM rho={r}", ldam_drw_sam(r)) for r in args.rhos]
    selection = compare(
        candidates, args.selection_seeds, args.epochs, {**data, "val_per_class": args.val_per_class}, eval_split="val"
    )
    print(f"## Selection on the validation split ({args.val_per_class}/class), seeds {args.selection_seeds}")
    print(table(selection))
    scores = {r: summarise(selection[f"LDAM-DRW+SAM rho={r}"])["balanced_acc"] for r in args.rhos}
    best = max(args.rhos, key=lambda r: (round(scores[r][0], 6), -scores[r][1]))
    print(f"chosen rho: {best}")

    test = compare(
        [Method("LDAM-DRW", ldam_drw), Method(f"LDAM-DRW+SAM rho={best}", ldam_drw_sam(best))],
        args.test_seeds,
        args.epochs,
        data,
    )
    print(f"## Test set, seeds {args.test_seeds}")
    print(table(test))
    margin = (
        summarise(test[f"LDAM-DRW+SAM rho={best}"])["balanced_acc"][0] - summarise(test["LDAM-DRW"])["balanced_acc"][0]
    )
    print(f"LDAM-DRW+SAM (rho {best}) - LDAM-DRW: {100 * margin:+.2f} points")


if __name__ == "__main__":
    main()
