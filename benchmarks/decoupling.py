"""Second-stage and post-hoc methods on top of trained models: cRT, LWS, MARC, τ-normalisation and post-hoc logit
adjustment, each applied to the SAME stage-1 checkpoint (CE, LDAM-DRW) of every seed.

Protocol (no selection on the test set): the split has a balanced validation set carved from the images the
long-tailed profile left unused (``val_per_class``); stage 1 trains the default recipe for ``--epochs`` and its FINAL
model is kept; ``auto`` τ is chosen on the validation set; stage 2 trains ``--stage2-epochs`` with the official
recipe (SGD lr 0.2, momentum 0.9, wd 5e-4, cosine to 0, plain CE) on class-aware sampling, and its final model is
tested. Reported: mean ± std over seeds of the test metrics, and every seed's balanced accuracy.

    .venv/bin/python benchmarks/decoupling.py                            # digits, rho 50, 3 seeds, CE and LDAM-DRW
    .venv/bin/python benchmarks/decoupling.py --imbalance-ratio 50 --seeds 0 1 2 3 4 --json out.json
"""

from __future__ import annotations

import argparse
import json

import torch

from lt_lightning.benchmarking import Method, markdown_table, run_second_stages
from lt_lightning.callbacks import PostHocLogitAdjustment, TauNormalization
from lt_lightning.methods import LDAMDRW, LongTailClassifier

STAGE1 = {
    "CE": lambda backbone: Method(
        "CE", lambda counts, chans, _: (LongTailClassifier(counts, backbone=backbone, in_chans=chans), [])
    ),
    "LDAM-DRW": lambda backbone: Method(
        "LDAM-DRW", lambda counts, chans, _: (LDAMDRW(counts, backbone=backbone, in_chans=chans), [])
    ),
}
POSTHOC = {
    "τ-norm (auto)": lambda: TauNormalization(tau="auto"),
    "post-hoc LA (auto)": lambda: PostHocLogitAdjustment(tau="auto"),
}
# Each stage-2 mode with the official BatchNorm handling (statistics re-estimated on the balanced stream) and with
# stage 1's statistics kept (bn_mode="eval").
STAGE2 = {
    f"{name}{suffix}": {"mode": mode, "bn_mode": bn_mode}
    for name, mode in (("cRT", "crt"), ("LWS", "lws"), ("MARC", "marc"))
    for suffix, bn_mode in (("", "train"), (" (BN eval)", "eval"))
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--root", default="data")
    parser.add_argument("--imbalance-ratio", type=float, default=50.0)
    parser.add_argument("--val-per-class", type=int, default=20)
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--stage2-epochs", type=int, default=10)
    parser.add_argument("--stage2-sampler", default="class_balanced")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--stage1", nargs="+", default=list(STAGE1), choices=list(STAGE1))
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fastest for small models)")
    parser.add_argument("--json", help="also write the raw per-seed results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = {
        "dataset": args.dataset,
        "root": args.root,
        "imbalance_ratio": args.imbalance_ratio,
        "batch_size": args.batch_size,
        "val_per_class": args.val_per_class,
    }
    results: dict[str, list[dict[str, float]]] = {}
    for seed in args.seeds:  # seeds outer: machine-load drifts hit every method alike
        for stage1 in args.stage1:
            runs = run_second_stages(
                STAGE1[stage1](args.backbone),
                seed,
                args.epochs,
                data,
                POSTHOC,
                STAGE2,
                stage2_epochs=args.stage2_epochs,
                stage2_sampler=args.stage2_sampler,
                accelerator=args.accelerator,
            )
            for name, metrics in runs.items():
                results.setdefault(name, []).append({**metrics, "step_s": float("nan")})
    print(
        f"{args.dataset}-LT rho={args.imbalance_ratio:g}, {args.backbone}, stage 1 {args.epochs} epochs, stage 2 "
        f"{args.stage2_epochs} epochs ({args.stage2_sampler}), batch {args.batch_size}, val {args.val_per_class}/class,"
        f" seeds {args.seeds}: test accuracy (%) of the final models, mean ± std"
    )
    print(markdown_table(results))
    print("\nbalanced accuracy per seed (%):")
    for name, runs in results.items():
        print(f"  {name}: " + ", ".join(f"{100 * r['balanced_acc']:.1f}" for r in runs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
