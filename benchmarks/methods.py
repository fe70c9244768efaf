"""Accuracy and step time of long-tail methods against plain CE, on the embedded default or any dataset.

Every method gets the same split, seeds (training seed = subset seed), epochs, batch size, backbone and the CIFAR-LT
optimisation recipe scaled to the run (SGD 0.1, momentum 0.9, wd 2e-4, 5 warm-up epochs, x0.01 at 80 % and 90 %);
the deferred stages start at 80 %. The FINAL model is tested (no model selection on the test set). Reported:
mean ± std over seeds of overall / balanced / many / medium / few / worst-class test accuracy, and the median
training-step time relative to CE measured in the same process.

    .venv/bin/python benchmarks/methods.py                                  # digits, rho 50, 3 seeds
    .venv/bin/python benchmarks/methods.py --dataset cifar10 --root data --imbalance-ratio 100 \\
        --backbone resnet32 --epochs 200 --batch-size 128 --seeds 0 1 2 --accelerator gpu
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import torch

from lt_lightning.benchmarking import Method, compare, markdown_table, sgd_recipe
from lt_lightning.callbacks import CMO, DeferredResampling, DeferredReweighting, PureNoiseOversampling
from lt_lightning.methods import ABSGD, BBN, LDAMDRW, DBNMix, LongTailClassifier, SAMClassifier
from lt_lightning.optim import WarmupMultiStepLR


def methods(backbone: str, lr_gamma: float = 0.01) -> dict[str, Method]:
    """The comparable methods by name; each factory gets (class_counts, in_chans, max_epochs). Every method uses
    the warm-up + multi-step LR schedule with drops of ``lr_gamma`` at 80 % and 90 % of the epochs, except ``BBN``:
    its default, the official BBN recipe (Nesterov SGD, 5 warm-up epochs from lr/3, x0.01 at 60 % / 80 %,
    drop_last), which ``lr_gamma`` does not change; ``BBN-generic`` is BBN and ``DBN-Mix`` is DBN-Mix on the shared
    recipe (not their official ones)."""
    schedule = partial(WarmupMultiStepLR, gamma=lr_gamma)

    def plain(loss: str, *callbacks_of):
        def build(counts, in_chans, max_epochs):
            model = LongTailClassifier(counts, backbone=backbone, in_chans=in_chans, loss=loss, lr_scheduler=schedule)
            return model, [make() for make in callbacks_of]

        return build

    def ldam_drw(counts, in_chans, max_epochs):
        return LDAMDRW(counts, backbone=backbone, in_chans=in_chans, lr_scheduler=schedule), []

    def ldam_drw_sam(counts, in_chans, max_epochs):
        model = SAMClassifier(counts, backbone=backbone, in_chans=in_chans, loss="ldam", rho=0.8, lr_scheduler=schedule)
        return model, [DeferredReweighting()]

    def absgd_drw(counts, in_chans, max_epochs):
        model = ABSGD(
            counts,
            backbone=backbone,
            in_chans=in_chans,
            loss="ce",
            lam=5.0,
            gamma=0.7,
            alpha=0.5,
            lr_scheduler=schedule,
        )
        return model, [DeferredReweighting()]

    def bbn(counts, in_chans, max_epochs):  # BBN's default = the official recipe (Nesterov, x0.01 at 60 % / 80 %)
        return BBN(counts, backbone=backbone, in_chans=in_chans), []

    def bbn_generic(counts, in_chans, max_epochs):  # BBN on the same recipe as every other method here
        return BBN(counts, backbone=backbone, in_chans=in_chans, lr_scheduler=schedule, optimizer=sgd_recipe()), []

    def dbn_mix(counts, in_chans, max_epochs):
        # DBN-Mix on the shared recipe (its default is the official one: Nesterov, per-step warm-up from 0, x0.1 at
        # 80 % / 90 %); class-temperature loss with the CIFAR-10 script's epsilon 0.6, eta 3; on small_cnn the
        # branches split at the last block (the official split after layer2 exists for the CIFAR ResNets only).
        model = DBNMix(counts, backbone=backbone, in_chans=in_chans, lr_scheduler=schedule, optimizer=sgd_recipe())
        return model, []

    return {
        "CE": Method("CE", plain("ce")),
        "LDAM": Method("LDAM", plain("ldam")),
        "CDT": Method("CDT", plain("cdt")),
        "CE-DRW": Method("CE-DRW", plain("ce", DeferredReweighting)),
        # CMO's foregrounds: the second stream, per-sample weight n^-1 (class-balanced), the reference's default.
        "CE+CMO": Method("CE+CMO", plain("ce", CMO), data={"rebalancing_sampler": "inverse_power"}),
        "CE-DRW+CMO": Method(
            "CE-DRW+CMO", plain("ce", DeferredReweighting, CMO), data={"rebalancing_sampler": "inverse_power"}
        ),
        "CDT-DRW": Method("CDT-DRW", plain("cdt", DeferredReweighting)),
        "MM-DRW": Method("MM-DRW", plain("mm", DeferredReweighting)),
        "CE-DRS": Method("CE-DRS", plain("ce", DeferredResampling)),
        # OPeN: CE-DRS plus pure-noise replacement (delta 1/3) and DAR-BN from the same switch epoch
        "OPeN": Method("OPeN", plain("ce", DeferredResampling, PureNoiseOversampling)),
        "LDAM-DRW": Method("LDAM-DRW", ldam_drw),
        "BBN": Method("BBN", bbn, data={"rebalancing_sampler": "reversed", "drop_last": True}),
        "BBN-generic": Method("BBN-generic", bbn_generic, data={"rebalancing_sampler": "reversed"}),
        "DBN-Mix": Method("DBN-Mix", dbn_mix, data={"rebalancing_sampler": "class_balanced"}),
        "LDAM-DRW+SAM": Method("LDAM-DRW+SAM", ldam_drw_sam),
        "ABSGD+DRW": Method("ABSGD+DRW", absgd_drw),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--root", default="data")
    parser.add_argument("--imbalance-ratio", type=float, default=50.0)
    parser.add_argument("--backbone", default="small_cnn")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["CE", "LDAM", "CE-DRW", "CE-DRS", "LDAM-DRW", "BBN"])
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--json", help="also write the raw per-seed results here")
    parser.add_argument("--lr-gamma", type=float, default=0.01, help="LR drop at 80 %% and 90 %% (0.01: CIFAR-LT)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: fastest for small models)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    available = methods(args.backbone, args.lr_gamma)
    unknown = sorted(set(args.methods) - set(available))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {sorted(available)}")
    data = {
        "dataset": args.dataset,
        "root": args.root,
        "imbalance_ratio": args.imbalance_ratio,
        "batch_size": args.batch_size,
    }
    results = compare([available[m] for m in args.methods], args.seeds, args.epochs, data, accelerator=args.accelerator)
    print(
        f"{args.dataset}-LT rho={args.imbalance_ratio:g}, {args.backbone}, {args.epochs} epochs, "
        f"batch {args.batch_size}, seeds {args.seeds}: test accuracy (%) of the final model, mean ± std"
    )
    print(markdown_table(results, baseline="CE" if "CE" in results else None))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
