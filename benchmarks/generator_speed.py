"""GIT generator cost: images/s of the MUNIT generators, and NuisanceMUNIT under Lightning vs a plain PyTorch loop.

1. Generation (what the GIT callback pays per batch): ``MUNITGenerator(x, generator=rng)`` under ``torch.no_grad()``
   in eval mode, batches of ``--batch`` images, for the ``tiny`` (8x8x1), ``small`` (28x28x1) and ``reference``
   (28x28x1 and 32x32x3) configurations; median images/s over ``--repeats`` timed batches after one warm-up.
2. Training (the ``tiny`` config, one domain, batch 32 split into two halves): one iteration = a discriminator step
   and a generator step. The plain loop calls the same module maths (``discriminator_loss``, ``generator_losses``)
   with two hand-made Adam optimisers and StepLR schedulers; the Lightning run is ``Trainer.fit`` of the module.
   A step is the interval between two iteration starts; loops alternate ``--train-repeats`` times; reported: the
   ratio of median step times (target <= 1.10, as the classifier throughput benchmark).

    .venv/bin/python benchmarks/generator_speed.py [--batch 64] [--repeats 5] [--steps 30] [--train-repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.benchmarking import QUIET_TRAINER
from lt_lightning.generators import MUNITGenerator, munit_config
from lt_lightning.methods import NuisanceMUNIT

CASES = [("tiny", 1, 8), ("small", 1, 28), ("reference", 1, 28), ("reference", 3, 32)]
TRAIN_BATCH = 32


def generation_rate(config: str, chans: int, side: int, batch: int, repeats: int) -> tuple[int, float]:
    """(parameters, median images/s) of one configuration."""
    torch.manual_seed(0)
    gen = MUNITGenerator(chans, side, **munit_config(config)["generator"]).eval()
    x = torch.rand(batch, chans, side, side)
    rng = torch.Generator().manual_seed(0)
    times = []
    with torch.no_grad():
        for i in range(repeats + 1):
            start = time.perf_counter()
            gen(x, generator=rng)
            if i:
                times.append(time.perf_counter() - start)
    return sum(p.numel() for p in gen.parameters()), batch / statistics.median(times)


def make_loader(steps: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(TRAIN_BATCH * steps, 1, 8, 8, generator=g)
    return DataLoader(TensorDataset(x, torch.zeros(len(x), dtype=torch.long)), batch_size=TRAIN_BATCH, shuffle=True)


def make_module() -> NuisanceMUNIT:
    torch.manual_seed(0)
    return NuisanceMUNIT(
        config="tiny", image_size=8, two_domains=False, mean=[0.0], std=[1.0], export_path=None,
        sample_every_n_iterations=0,
    )  # fmt: skip


def intervals(starts: list[float], warmup: int) -> list[float]:
    return [b - a for a, b in zip(starts[warmup:], starts[warmup + 1 :], strict=False)]


def plain_loop(steps: int, warmup: int) -> list[float]:
    m = make_module()
    hp = m.hparams
    kw = {"lr": hp.lr, "betas": tuple(hp.betas), "weight_decay": hp.weight_decay}
    opt_g = torch.optim.Adam(m.generator_a.parameters(), **kw)
    opt_d = torch.optim.Adam(m.dis_a.parameters(), **kw)
    sch_g = torch.optim.lr_scheduler.StepLR(opt_g, hp.lr_step_iterations, hp.lr_gamma)
    sch_d = torch.optim.lr_scheduler.StepLR(opt_d, hp.lr_step_iterations, hp.lr_gamma)
    m._mean, m._std = [0.0], [1.0]
    m.train()
    starts = []
    for x, _ in make_loader(steps + warmup):
        starts.append(time.perf_counter())
        x_a, x_b = m.split_domains(m.to_unit_range(x))
        n = len(x_a)
        s_a, s_b = torch.randn(n, 8, 1, 1), torch.randn(n, 8, 1, 1)
        loss_d = m.discriminator_loss(x_a, x_b, s_a, s_b)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        s_a, s_b = torch.randn(n, 8, 1, 1), torch.randn(n, 8, 1, 1)
        loss_g = m.generator_losses(x_a, x_b, s_a, s_b)["loss_g"]
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        sch_g.step()
        sch_d.step()
    starts.append(time.perf_counter())
    return intervals(starts, warmup)


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        self.starts.append(time.perf_counter())


def lightning_loop(steps: int, warmup: int) -> list[float]:
    timer = StepTimer()
    trainer = L.Trainer(
        max_steps=2 * (steps + warmup), accelerator="cpu", callbacks=[timer], log_every_n_steps=50, **QUIET_TRAINER
    )
    trainer.fit(make_module(), make_loader(steps + warmup))
    return intervals(timer.starts, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--train-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"## Generation, batch {args.batch}, CPU, {args.threads} thread(s)\n")
    print("| config | input | generator params | images/s | ms per 64 images |")
    print("|---|---|---:|---:|---:|")
    for config, chans, side in CASES:
        params, rate = generation_rate(config, chans, side, args.batch, args.repeats)
        print(f"| {config} | {side}x{side}x{chans} | {params:,} | {rate:,.0f} | {64 / rate * 1000:.1f} |")

    plain, lightning = [], []
    ratios = []
    for _ in range(args.train_repeats):
        p = plain_loop(args.steps, args.warmup)
        q = lightning_loop(args.steps, args.warmup)
        plain += p
        lightning += q
        ratios.append(statistics.median(q) / statistics.median(p))
    mp, ml = statistics.median(plain), statistics.median(lightning)
    print(f"\n## Training, tiny config, batch {TRAIN_BATCH} (one iteration = D step + G step)\n")
    print("| loop | s/iteration (median) | images/s |")
    print("|---|---:|---:|")
    print(f"| plain PyTorch | {mp:.4f} | {TRAIN_BATCH / mp:,.0f} |")
    print(f"| NuisanceMUNIT + Trainer | {ml:.4f} | {TRAIN_BATCH / ml:,.0f} |")
    print(f"\nratio Lightning / plain: {ml / mp:.3f}; per repeat {', '.join(f'{r:.3f}' for r in ratios)}")


if __name__ == "__main__":
    main()
