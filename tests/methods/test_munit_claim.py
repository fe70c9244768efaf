"""Slow claim (issue 13, shared/research/git.md §6e.6(ii)): a small learned generator trained on Digits-BG-LT
produces diverse backgrounds while keeping labels.

The ``tiny`` 8x8 NuisanceMUNIT (the preset examples/digits_bg_lt_munit.yaml, shortened) is trained on the 191-image
long-tailed training split (class-balanced, no labels). On the 400 held-out test images (the same digits with their
own background, never seen in training), 20 random styles each:

- background level of a generated image = its mean over the pixels that are 0 in the CLEAN digit (0-255 scale);
  its std across the 20 styles, averaged over images, must be >= 10 (real data: b ~ U{0..99}, std 28.9);
- labels kept = share of generated images that a fixed judge (logistic regression fitted on real Digits-BG images:
  the 1,397 clean digits of the pool outside the test set, 5 fresh backgrounds each; 95.8 % on the real held-out
  images) assigns their source label, >= 85 %.

Measured: see benchmarks/README.md (GIT generator).
"""

from __future__ import annotations

import time

import lightning as L
import numpy as np
import pytest
import torch

from lt_lightning.data import LongTailDataModule
from lt_lightning.data.nuisance import BackgroundNuisance
from lt_lightning.methods import NuisanceMUNIT

DATA = {
    "dataset": "digits",
    "profile": "zipf",
    "zipf_exponent": 2.0,
    "zipf_min": 5,
    "class_order": "label",
    "subset_seed": 0,
    "val_per_class": 20,
    "sampler": "class_balanced",
    "batch_size": 32,
}


def raw_images(dataset) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 (N, C, H, W) images before any transform, and labels."""
    return torch.stack([dataset.image(i) for i in range(len(dataset))]), np.asarray(dataset.targets)


def fit_judge(seed: int = 0, draws: int = 5):
    """Logistic regression on real Digits-BG images: every digit of the pool outside the test set (1,397, clean)
    with ``draws`` fresh backgrounds each."""
    from sklearn.linear_model import LogisticRegression

    x, y = raw_images(LongTailDataModule("digits", profile="none").train_set)
    g = torch.Generator().manual_seed(seed)
    bg = BackgroundNuisance()
    xs = torch.cat([bg.apply(x, bg.sample_params(g, len(x))) for _ in range(draws)])
    judge = LogisticRegression(max_iter=3000, C=0.1)
    judge.fit(xs.flatten(1).float().numpy() / 255, np.tile(y, draws))
    return judge


def evaluate(generator, styles: int = 20, seed: int = 0) -> dict[str, float]:
    """Background spread across styles and label retention on the held-out test images."""
    clean_x, labels = raw_images(LongTailDataModule(**DATA).test_set)
    bg_x, bg_labels = raw_images(LongTailDataModule(**DATA, nuisance="background").test_set)
    assert np.array_equal(labels, bg_labels)
    mask = (clean_x == 0).all(dim=1, keepdim=True).float()
    x = bg_x.float() / 255
    g = torch.Generator().manual_seed(seed)
    judge = fit_judge()
    levels, kept = [], []
    generator = generator.eval()
    with torch.no_grad():
        for _ in range(styles):
            out = generator(x, generator=g) * 255
            levels.append((out * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp_min(1))
            kept.append(judge.predict(out.flatten(1).numpy() / 255) == labels)
    levels = torch.stack(levels)  # (styles, N)
    real_acc = float((judge.predict(x.flatten(1).numpy()) == labels).mean())
    return {
        "background_std": float(levels.std(dim=0).mean()),
        "background_mean": float(levels.mean()),
        "labels_kept": float(np.mean(kept)),
        "judge_real_acc": real_acc,
    }


def train(max_steps: int = 2000, seed: int = 0) -> tuple[NuisanceMUNIT, float]:
    L.seed_everything(seed, verbose=False)
    dm = LongTailDataModule(**DATA, nuisance="background")
    module = NuisanceMUNIT(
        config="tiny", in_chans=1, two_domains=False, lr=5e-4, sample_every_n_iterations=0, export=False
    )
    trainer = L.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return module, time.perf_counter() - start


@pytest.mark.slow
def test_tiny_generator_learns_diverse_backgrounds_and_keeps_labels():
    module, seconds = train()
    result = evaluate(module.generator_a)
    print(f"\nDigits-BG-LT tiny NuisanceMUNIT, {module.iteration} iterations in {seconds:.0f} s: {result}")
    assert result["background_std"] >= 10, result
    assert result["labels_kept"] >= 0.85, result
