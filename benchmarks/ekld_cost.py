"""Cost of one ``ExpectedKLDivergence`` run against one forward pass over its held-out images, measured in one run.

The callback forwards every selected image once and each of its ``T`` transforms once, so its floor is
``(1 + T)`` forward passes over the ``S`` selected images; the target is ``<= (1 + T) x 1.1`` of one such pass
(drawing and applying the nuisance, the KL and the per-class sums must cost under 10 % extra). Both are timed on
the same model, images, device and batch size (eval mode, no grad), alternating ``--repeats`` times; medians are
compared. Settings: ``digits`` (8x8, 10 classes, the Digits-ROT-LT preset's ResNet-20) and ``k49`` (random 28x28
images, 49 classes, ResNet-20 as the K49 presets), for each nuisance.

    .venv/bin/python benchmarks/ekld_cost.py [--images 40] [--transforms 100] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch

from lt_lightning.callbacks import ExpectedKLDivergence
from lt_lightning.data import LongTailDataModule
from lt_lightning.data.base import ArrayDataset
from lt_lightning.methods import LongTailClassifier


def digits_setting():
    dm = LongTailDataModule("digits", profile="zipf", val_per_class=20, nuisance="rotation")
    return dm.invariance_set("fit"), dm.eval_transform, dm.class_counts, 1


def k49_setting():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (49 * 30, 28, 28), generator=generator, dtype=torch.uint8)
    images[images < 128] = 0  # a dark background, as the K49 characters have
    labels = torch.arange(49).repeat_interleave(30)
    counts = tuple(max(int(4800 / r**2), 5) for r in range(1, 50))
    return ArrayDataset(images.numpy(), labels.numpy()), lambda x: (x.float() / 255 - 0.2) / 0.35, counts, 1


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(setting: str, nuisance: str, args) -> dict[str, float]:
    dataset, preprocess, counts, chans = digits_setting() if setting == "digits" else k49_setting()
    model = LongTailClassifier(counts, backbone="resnet20", in_chans=chans).to(args.device).eval()
    trainer = L.Trainer(accelerator=args.device, devices=1, logger=False, enable_progress_bar=False)
    callback = ExpectedKLDivergence(
        nuisance,
        images_per_class=args.images,
        transforms_per_image=args.transforms,
        dataset=dataset,
        preprocess=preprocess,
        class_counts=counts,
        batch_size=args.batch_size,
        at_fit_end=False,
        at_test=False,
    )
    callback.setup(trainer, model, "fit")

    def run_callback():
        callback.measure(trainer, model, "fit", args.images, args.transforms, prefix="bench")

    run_callback()  # builds (and caches) the plan: image loading is a one-off, not the per-run cost
    plan = callback._plans[("fit", args.images, args.transforms)]

    def forward_pass():
        with torch.no_grad():
            for chunk in plan.images.split(args.batch_size):
                model(preprocess(chunk.to(args.device)))

    every_pair = plan.images.repeat_interleave(1 + args.transforms, dim=0)

    def floor_pass():  # the (1 + T) S forwards alone, in the callback's batches: what no implementation can skip
        with torch.no_grad():
            for chunk in every_pair.split(args.batch_size):
                model(preprocess(chunk.to(args.device)))

    forward_pass()  # warm-up
    forward_times, floor_times, callback_times = [], [], []
    for _ in range(args.repeats):
        forward_times.append(time_once(forward_pass))
        floor_times.append(time_once(floor_pass))
        callback_times.append(time_once(run_callback))
    forward, floor, cost = (statistics.median(t) for t in (forward_times, floor_times, callback_times))
    return {
        "images": len(plan.classes),
        "forward_s": forward,
        "callback_s": cost,
        "ratio": cost / forward,
        "overhead": cost / floor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40, help="images per class")
    parser.add_argument("--transforms", type=int, default=100, help="transforms per image")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--settings", nargs="+", default=["digits", "k49"])
    parser.add_argument("--nuisances", nargs="+", default=["rotation", "background", "dilation"])
    args = parser.parse_args()
    target = (1 + args.transforms) * 1.1
    print(f"{args.images} images x {args.transforms} transforms per class, batch {args.batch_size}, {args.device}")
    columns = ["setting", "nuisance", "images S", "forward over S (s)", "callback (s)", "ratio", "target", ""]
    print("| " + " | ".join([*columns, "callback / (1+T)S forwards"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    for setting in args.settings:
        for nuisance in args.nuisances:
            r = measure(setting, nuisance, args)
            verdict = "met" if r["ratio"] <= target else "MISSED"
            print(
                f"| {setting} | {nuisance} | {r['images']} | {r['forward_s']:.4f} | {r['callback_s']:.2f} | "
                f"{r['ratio']:.1f} | <= {target:.1f} | {verdict} | {r['overhead']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
