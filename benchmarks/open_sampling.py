"""Open-Sampling: step-time cost against CE, and CE vs CE + Open-Sampling on the digits open-set split.

Cost: forward + backward + SGD step of ``LongTailClassifier`` (CE) and ``OpenSampling`` on the same random ID batch,
the latter with its aux batch, median over timed steps after warm-up; the ratio is what is reported (absolute
times on shared machines are noise). Two settings: the reference's (ResNet-32, 32x32x3, 128 ID + 512 OOD) and the
digits one (small CNN, 8x8x1, 32 ID + 128 OOD).

Accuracy: digits classes 0-6 (exponential rho 50), OOD pool = the training-pool images of digits 7-9, 30 epochs,
batch 32 (+ 128 OOD), small CNN, x0.1 LR drops at 80 % / 90 % (the setting of tests/methods/test_accuracy_claims.py),
final model on the balanced test set of digits 0-6; mean ± std and per seed.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/open_sampling.py               # both parts
    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/open_sampling.py --skip-accuracy
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

from lt_lightning.benchmarking import Method, compare, markdown_table
from lt_lightning.methods import LongTailClassifier, OpenSampling
from lt_lightning.optim import WarmupMultiStepLR

ID_CLASSES = list(range(7))
DATA = {"dataset": "digits", "imbalance_ratio": 50, "batch_size": 32, "classes": ID_CLASSES}
AUX = {"aux_dataset": "digits", "aux_batch_size": 128}
SCHEDULE = partial(WarmupMultiStepLR, gamma=0.1)


def ce(counts, in_chans, max_epochs):
    return LongTailClassifier(counts, backbone="small_cnn", in_chans=in_chans, loss="ce", lr_scheduler=SCHEDULE), []


def open_sampling(counts, in_chans, max_epochs):
    return OpenSampling(counts, backbone="small_cnn", in_chans=in_chans, loss="ce", lr_scheduler=SCHEDULE), []


METHODS = [Method("CE", ce), Method("CE+Open-Sampling", open_sampling, data=AUX)]


def step_time(model, batch, steps: int, warmup: int = 2) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        loss = model.training_loss(batch)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def cost(backbone: str, shape: tuple[int, int, int], batch: int, aux: int, classes: int, steps: int) -> dict:
    counts = [max(1, 500 // (c + 1)) for c in range(classes)]
    g = torch.Generator().manual_seed(0)
    x, x_aux = torch.randn(batch, *shape, generator=g), torch.randn(aux, *shape, generator=g)
    y = torch.randint(0, classes, (batch,), generator=g)
    torch.manual_seed(0)
    plain = LongTailClassifier(counts, backbone=backbone, in_chans=shape[0])
    torch.manual_seed(0)
    ours = OpenSampling(counts, backbone=backbone, in_chans=shape[0])
    t_ce = step_time(plain, (x, y), steps)
    t_os = step_time(ours, (x, y, x_aux), steps)
    return {"ce_s": t_ce, "os_s": t_os, "ratio": t_os / t_ce}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cifar-steps", type=int, default=5)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--aux", default="digits", help="OOD pool: digits (held-out 7-9), blobs, gaussian, ...")
    args = parser.parse_args()
    METHODS[1].data = {**AUX, "aux_dataset": args.aux}
    torch.set_num_threads(args.threads)
    if not args.skip_cost:
        settings = [
            ("ResNet-32, 32x32x3, 128 ID + 512 OOD", "resnet32", (3, 32, 32), 128, 512, 10, args.cifar_steps),
            ("ResNet-32, 32x32x3, 128 ID + 256 OOD", "resnet32", (3, 32, 32), 128, 256, 10, args.cifar_steps),
            ("small CNN, 8x8x1, 32 ID + 128 OOD (digits)", "small_cnn", (1, 8, 8), 32, 128, 7, 50),
        ]
        print("| setting | CE step (s) | Open-Sampling step (s) | ratio |\n|---|---|---|---|")
        for name, backbone, shape, batch, aux, classes, steps in settings:
            r = cost(backbone, shape, batch, aux, classes, steps)
            print(f"| {name} | {r['ce_s']:.4f} | {r['os_s']:.4f} | {r['ratio']:.2f} |", flush=True)
    if not args.skip_accuracy:
        results = compare(METHODS, args.seeds, args.epochs, DATA)
        print(markdown_table(results, baseline="CE"))
        for name, runs in results.items():
            per_seed = ", ".join(f"{100 * r['balanced_acc']:.1f}" for r in runs)
            values = [100 * r["balanced_acc"] for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"{name}: balanced acc {statistics.fmean(values):.2f} ± {std:.2f} (seeds {args.seeds}: {per_seed})")


if __name__ == "__main__":
    main()
