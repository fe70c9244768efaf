"""Class-wise Hessian spectrum on digits-LT (Saddle-LongTail's P1 / P2), and the callback's cost per HVP.

P1: the tail classes' lambda_min is more negative than the head's (raw, and scale-free |lambda_min| / lambda_max),
with a size-matched head control (the head class measured on a random subset of the tail's size) against a
sample-size artefact. P2: + SAM lowers the tail |lambda_min| against the same method on the same seed.

Protocol: digits ρ = 50 (seed = subset seed = training seed, so methods are paired by seed), SmallCNN (width 32),
30 epochs, batch 32, SGD 0.1 with 5 warm-up epochs and x0.1 at 80 % / 90 %. After fit, ``ClassHessianSpectrum``
on all training images of each class (eval mode, no augmentation), ``loss="auto"`` (CE for CE models; LDAM with
margins and s = 30 for LDAM models), 30 Lanczos steps, 10 trace probes. Head = the 3 largest classes, tail = the 3
smallest (means over them).

    .venv/bin/python benchmarks/hessian.py                         # 3 seeds x 4 methods, a few minutes single-threaded
    .venv/bin/python benchmarks/hessian.py --seeds 0 1 2 3 4 --cost
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
from torch.nn import functional as F

from lt_lightning.benchmarking import Method, run_method
from lt_lightning.callbacks import ClassHessianSpectrum, DeferredReweighting
from lt_lightning.data import LongTailDataModule
from lt_lightning.functional.hessian import class_subsets, hessian_spectrum, make_hvp
from lt_lightning.methods import LDAMDRW, SAMClassifier
from lt_lightning.methods.base import LongTailClassifier
from lt_lightning.optim import WarmupMultiStepLR

SCHEDULE = partial(WarmupMultiStepLR, gamma=0.1)
SETTINGS = dict(samples_per_class=None, lanczos_steps=30, trace_probes=10, log_per_class=False, save_density=False)


def method(name: str, loss: str, sam_rho: float | None, holder: dict) -> Method:
    def build(counts, in_chans, max_epochs):
        kwargs = dict(backbone="small_cnn", in_chans=in_chans, lr_scheduler=SCHEDULE)
        callbacks = []
        if sam_rho is None and loss == "ldam":
            model = LDAMDRW(counts, **kwargs)
        elif sam_rho is None:
            model = LongTailClassifier(counts, loss=loss, **kwargs)
        else:
            model = SAMClassifier(counts, loss=loss, rho=sam_rho, **kwargs)
            if loss == "ldam":
                callbacks.append(DeferredReweighting())
        cb = ClassHessianSpectrum(**SETTINGS)
        holder[name] = (model, cb)
        return model, [*callbacks, cb]

    return Method(name, build)


def head_control(model, seed: int, data: dict, size: int) -> float:
    """lambda_min of the largest class on a random subset of ``size`` images (the tail's), same loss and settings."""
    dm = LongTailDataModule(**{**data, "subset_seed": seed, "sampler_seed": seed})
    view = dm.eval_view("train")
    targets = torch.as_tensor(view.targets)
    head = max(range(dm.num_classes), key=lambda c: dm.class_counts[c])
    index = class_subsets(targets, dm.num_classes, size, torch.Generator().manual_seed(seed + 99))[head]
    x = torch.stack([view[i][0] for i in index.tolist()])
    y = targets[index]
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    criterion = model.criterion
    with torch.enable_grad():
        hvp = make_hvp(model, criterion, x, y, params)
        spectrum, _, _ = hessian_spectrum(
            hvp, sum(p.numel() for p in params), torch.Generator().manual_seed(seed), 30, 1, 0, dtype=hvp.dtype
        )
    return spectrum.lambda_min


def mean(values) -> float:
    return sum(values) / len(values)


def study(seeds: list[int], epochs: int) -> None:
    data = {"dataset": "digits", "imbalance_ratio": 50, "batch_size": 32}
    specs = [("CE", "ce", None), ("CE+SAM", "ce", 0.1), ("LDAM-DRW", "ldam", None), ("LDAM-DRW+SAM", "ldam", 0.2)]
    print(
        "| method | seed | λ_min head | λ_min tail | λ_max head | λ_max tail | neg_ratio head / tail "
        "| head@tail-size λ_min | tail λ_min err | bal. acc | few acc | s/class |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in seeds:
        for name, loss, rho in specs:
            holder: dict = {}
            result = run_method(method(name, loss, rho, holder), seed, epochs, data)
            model, cb = holder[name]
            rows = sorted(cb.results["fit"], key=lambda r: -r["train_count"])
            head, tail = rows[:3], rows[-3:]
            control = head_control(model, seed, data, min(r["samples"] for r in tail))
            cells = [
                mean([r["lambda_min"] for r in head]),
                mean([r["lambda_min"] for r in tail]),
                mean([r["lambda_max"] for r in head]),
                mean([r["lambda_max"] for r in tail]),
            ]
            ratio = f"{mean([r['neg_ratio'] for r in head]):.3f} / {mean([r['neg_ratio'] for r in tail]):.3f}"
            seconds = mean([r["seconds"] for r in rows])
            print(
                f"| {name} | {seed} | " + " | ".join(f"{v:.4g}" for v in cells) + f" | {ratio} | {control:.4g} | "
                f"{mean([r['lambda_min_err'] for r in tail]):.2g} | {result['balanced_acc']:.3f} | "
                f"{result['few_acc']:.3f} | {seconds:.2f} |",
                flush=True,
            )


def cost(images: int = 100, repeats: int = 3) -> None:
    """One HVP against one training step (forward + backward + SGD step) of ResNet-32 on ``images`` 32x32 images."""
    torch.manual_seed(0)
    model = LongTailClassifier([100] * 10, backbone="resnet32", in_chans=3)
    x, y = torch.randn(images, 3, 32, 32), torch.randint(0, 10, (images,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    step_times, hvp_times = [], []
    for _ in range(repeats):
        model.train()
        start = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        step_times.append(time.perf_counter() - start)
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    v = torch.randn(sum(p.numel() for p in params))
    for _ in range(repeats):
        hvp = make_hvp(model, F.cross_entropy, x, y, params, batch_size=images)
        start = time.perf_counter()
        hvp(v)  # the first call builds the gradient graph: the cost of a class's first HVP
        hvp_times.append(time.perf_counter() - start)
    step, hvp_s = statistics.median(step_times), statistics.median(hvp_times)
    print(
        f"ResNet-32, {images} images, {torch.get_num_threads()} thread(s): training step {step:.3f} s, "
        f"HVP {hvp_s:.3f} s, ratio {hvp_s / step:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cost", action="store_true", help="also time an HVP against a training step (ResNet-32)")
    parser.add_argument("--cost-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.cost or args.cost_only:
        cost()
    if not args.cost_only:
        study(args.seeds, args.epochs)


if __name__ == "__main__":
    main()
