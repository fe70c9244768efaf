"""Tests for the ``ExpectedKLDivergence`` callback on hand-made models whose eKLD is computed by hand.

The held-out set has two 1x2x2 images per class: class 0 images have no zero pixel (the background nuisance leaves
them unchanged), class 1 images have two zero pixels out of four. The model's logits are ``[0, a * mean(x / 255)]``,
so under a background level ``b`` the second logit of a class-1 image rises by ``a * 2b / (4 * 255)``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from lt_lightning.callbacks import ExpectedKLDivergence
from lt_lightning.data.nuisance import BackgroundNuisance, RotationNuisance
from tests.helpers import cpu_trainer

A = 4.0
LEVEL = 50  # BackgroundNuisance(low=50, high=51) always draws 50


class Images(torch.utils.data.Dataset):
    """Items ``(uint8 (1, 2, 2) image, label)``."""

    def __init__(self, images: list[list[int]], labels: list[int]) -> None:
        self.images = torch.tensor(images, dtype=torch.uint8).view(-1, 1, 2, 2)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


HELD_OUT = Images([[255, 255, 255, 255], [200, 200, 200, 200], [0, 0, 255, 255], [0, 255, 0, 255]], [0, 0, 1, 1])


def scaled(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255.0


class MeanIntensity(L.LightningModule):
    """Logits ``[0, a * mean(x)]`` over 2 classes (``a`` a parameter, so DDP has something to wrap)."""

    def __init__(self, a: float = A, num_classes: int = 2) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1)
        logits = torch.zeros(len(x), self.num_classes)
        logits[:, 1] = self.a * m
        return logits

    def test_step(self, batch, batch_idx):
        return None

    def test_dataloader(self):
        return torch.utils.data.DataLoader(HELD_OUT, batch_size=2)


class IgnoresInput(MeanIntensity):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[0.3, -1.2]]).expand(len(x), 2) * self.a


def kl(p_logits: list[float], q_logits: list[float]) -> float:
    zp = sum(math.exp(v) for v in p_logits)
    zq = sum(math.exp(v) for v in q_logits)
    p = [math.exp(v) / zp for v in p_logits]
    q = [math.exp(v) / zq for v in q_logits]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def run_test(tmp_path, model, callback, **trainer_kwargs):
    trainer = cpu_trainer(tmp_path, callbacks=[callback], **trainer_kwargs)
    return trainer.test(model, verbose=False)[0], trainer


def background_callback(**kwargs) -> ExpectedKLDivergence:
    options = dict(
        nuisance=BackgroundNuisance(low=LEVEL, high=LEVEL + 1),
        images_per_class=3,
        transforms_per_image=5,
        dataset=HELD_OUT,
        preprocess=scaled,
        class_counts=(150, 10),
        class_names=("full", "half"),
    )
    return ExpectedKLDivergence(**{**options, **kwargs})


def test_model_ignoring_its_input_has_zero_ekld_for_every_class(tmp_path):
    cb = background_callback(nuisance="rotation", transforms_per_image=7)
    logged, _ = run_test(tmp_path, IgnoresInput(), cb)
    assert logged["test/ekld/class_full"] == 0.0 and logged["test/ekld/class_half"] == 0.0
    assert logged["test/ekld/consistency"] == 1.0
    assert [r["pairs"] for r in cb.results["test"]] == [3 * 7, 3 * 7]


def test_non_invariant_model_has_the_hand_computed_ekld_in_the_right_direction(tmp_path):
    cb = background_callback()
    logged, _ = run_test(tmp_path, MeanIntensity(), cb)
    # class 0: no zero pixel, T(x) = x -> 0. class 1: both images have mean 0.5 and two zero pixels.
    original = [0.0, A * 0.5]
    transformed = [0.0, A * (2 * LEVEL / 255 + 2) / 4]
    expected = kl(original, transformed)
    assert logged["test/ekld/class_full"] == 0.0
    assert logged["test/ekld/class_half"] == pytest.approx(expected, rel=1e-4)
    assert expected == pytest.approx(0.0073091, abs=1e-6)  # 0.1192 ln(0.1192/0.0838) + 0.8808 ln(0.8808/0.9162)
    assert kl(transformed, original) != pytest.approx(expected, rel=1e-3)  # the reverse direction differs
    # shot groups from the training counts (150 -> many, 10 -> few); the mean skips nothing here
    assert logged["test/ekld/many"] == 0.0 and logged["test/ekld/few"] == pytest.approx(expected, rel=1e-4)
    assert math.isnan(logged["test/ekld/medium"])
    assert logged["test/ekld/mean"] == pytest.approx(expected / 2, rel=1e-4)
    assert logged["test/ekld/consistency"] == 1.0  # argmax stays class 1 for class-1 images and for class 0


def test_same_image_on_both_sides_not_another_image_of_the_class(tmp_path):
    # Class 0 holds two different images with no zero pixel: T(x) = x, so pairing an image with ITSELF gives 0,
    # while GIT's released helper (x_i against T(x_j), j a permutation) would give KL(p(x_0) || p(x_1)) > 0.
    cb = background_callback(images_per_class=2, transforms_per_image=3)
    run_test(tmp_path, MeanIntensity(), cb)
    assert cb.results["test"][0]["ekld"] == 0.0
    assert kl([0.0, A * 1.0], [0.0, A * 200 / 255]) == pytest.approx(0.008819, abs=1e-6)


def test_consistency_counts_argmax_flips(tmp_path):
    # a = -4: class-1 images move from logit -2 to about -2.39 -> argmax stays 0; with a shifted model that sits at
    # the boundary the transform flips it. Logits [0, a*m - 2 * a * 0.5 + tiny]: m = 0.5 -> +0.01, T -> negative.
    class Boundary(MeanIntensity):
        def forward(self, x):
            logits = torch.zeros(len(x), 2)
            logits[:, 1] = 0.01 - self.a * (x.flatten(1).mean(1) - 0.5)
            return logits

    cb = background_callback()
    logged, _ = run_test(tmp_path, Boundary(), cb)
    rows = cb.results["test"]
    assert rows[1]["consistency"] == 0.0  # every class-1 pair flips from class 1 to class 0
    assert rows[0]["consistency"] == 1.0
    assert logged["test/ekld/consistency"] == 0.5


def test_missing_class_is_reported_and_nan(tmp_path):
    only_class_0 = Images([[255, 255, 255, 255], [0, 0, 255, 255]], [0, 0])
    cb = background_callback(dataset=only_class_0)
    with pytest.warns(UserWarning, match=r"no image of class\(es\) \['half'\]"):
        logged, _ = run_test(tmp_path, MeanIntensity(), cb)
    assert math.isnan(logged["test/ekld/class_half"]) and cb.results["test"][1]["pairs"] == 0
    assert logged["test/ekld/class_full"] > 0  # its second image has zero pixels
    assert logged["test/ekld/mean"] == logged["test/ekld/class_full"]  # the NaN class is skipped, not counted as 0
    with (tmp_path / "ekld_test.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[1]["ekld"] == "" and rows[1]["pairs"] == "0"


def test_images_cycle_when_a_class_is_short_and_draws_are_seeded(tmp_path):
    cb = background_callback(nuisance=BackgroundNuisance(), images_per_class=5, transforms_per_image=4, seed=3)
    run_test(tmp_path, MeanIntensity(), cb)
    plan = cb._plans[("test", 5, 4)]
    assert plan.classes.tolist() == [0] * 5 + [1] * 5 and plan.params.shape == (40,)
    first = cb.results["test"][1]["ekld"]
    again = background_callback(nuisance=BackgroundNuisance(), images_per_class=5, transforms_per_image=4, seed=3)
    run_test(tmp_path, MeanIntensity(), again)
    assert again.results["test"][1]["ekld"] == first
    other = background_callback(nuisance=BackgroundNuisance(), images_per_class=5, transforms_per_image=4, seed=4)
    run_test(tmp_path, MeanIntensity(), other)
    assert other.results["test"][1]["ekld"] != first


def test_ekld_matches_a_direct_computation_over_the_plan(tmp_path):
    """Random draws: the callback's per-class value equals the mean of hand-written KLs over its own plan."""
    cb = background_callback(nuisance=BackgroundNuisance(), images_per_class=2, transforms_per_image=6, batch_size=5)
    run_test(tmp_path, MeanIntensity(), cb)
    plan = cb._plans[("test", 2, 6)]
    kls = {0: [], 1: []}
    for slot in range(len(plan.classes)):
        image = plan.images[slot].flatten().tolist()
        mean = sum(image) / 4 / 255
        for k in range(6):
            level = int(plan.params[slot * 6 + k])
            shifted = sum(level if v == 0 else v for v in image) / 4 / 255
            kls[int(plan.classes[slot])].append(kl([0.0, A * mean], [0.0, A * shifted]))
    for c in (0, 1):
        assert cb.results["test"][c]["ekld"] == pytest.approx(sum(kls[c]) / len(kls[c]), rel=1e-4)
    assert cb.results["test"][1]["ekld"] > 0


def test_fit_end_and_every_epoch_write_csv_scatter_and_history(tmp_path):
    class Tiny(MeanIntensity):
        def training_step(self, batch, batch_idx):
            return self(scaled(batch[0])).sum() * 0.0 + self.a * 0.0

        def train_dataloader(self):
            return torch.utils.data.DataLoader(HELD_OUT, batch_size=2)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    cb = background_callback(every_n_epochs=1, epoch_images_per_class=1, epoch_transforms_per_image=2)
    trainer = cpu_trainer(tmp_path, callbacks=[cb], max_epochs=2, logger=TensorBoardLogger(tmp_path, name="tb"))
    trainer.fit(Tiny())
    log_dir = Path(trainer.log_dir)
    for name in ("ekld_fit.csv", "ekld_fit.png", "ekld_history.csv"):
        assert (log_dir / name).is_file(), name
    with (log_dir / "ekld_history.csv").open() as f:
        history = list(csv.DictReader(f))
    assert [(r["epoch"], r["name"], r["pairs"]) for r in history] == [
        ("0", "full", "2"),
        ("0", "half", "2"),
        ("1", "full", "2"),
        ("1", "half", "2"),
    ]
    assert [r["pairs"] for r in cb.results["fit"]] == [15, 15]  # the full sample after training
    assert trainer.callback_metrics["val/ekld/class_half"] > 0
    assert sum(f.stat().st_size for f in log_dir.glob("events.out.tfevents.*")) > 10_000  # the scatter PNG


def test_precision_context_and_device_follow_the_trainer(tmp_path):
    cb = background_callback()
    logged, _ = run_test(tmp_path, MeanIntensity(), cb, precision="bf16-mixed")
    assert logged["test/ekld/class_half"] == pytest.approx(kl([0.0, 2.0], [0.0, A * (2 * LEVEL / 255 + 2) / 4]), 0.05)


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"nuisance": "blur"}, r"nuisance must be one of \['background', 'dilation', 'rotation'\].*'blur'"),
        ({"transforms_per_image": 0}, r"transforms_per_image must be an integer >= 1, got 0"),
        ({"images_per_class": -1}, r"images_per_class must be an integer >= 1, got -1"),
        ({"every_n_epochs": -2}, r"every_n_epochs must be an integer >= 0, got -2"),
        ({"nuisance": RotationNuisance(), "nuisance_kwargs": {"low": 0}}, r"nuisance_kwargs needs a nuisance given"),
        ({"class_counts": (5, 0)}, r"class_counts must be a non-empty sequence of positive integers"),
    ],
)
def test_bad_arguments_raise(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        background_callback(**kwargs)


def test_images_of_an_unsupported_shape_raise_naming_the_shape(tmp_path):
    class Flat(Images):
        def __getitem__(self, i):
            return self.images[i].view(2, 2), self.labels[i]  # (H, W): no channel axis

    cb = background_callback(dataset=Flat([[255, 255, 255, 255]], [0]))
    with pytest.raises(ValueError, match=r"raw \(C, H, W\) uint8 or float.*shape \(2, 2\)"):
        run_test(tmp_path, MeanIntensity(), cb)


def test_without_a_nuisance_or_held_out_images_setup_explains(tmp_path):
    with pytest.raises(ValueError, match="needs a nuisance transform"):
        run_test(tmp_path, MeanIntensity(), background_callback(nuisance=None))
    with pytest.raises(ValueError, match="needs held-out images"):
        run_test(tmp_path, MeanIntensity(), background_callback(dataset=None))


# ---------------------------------------------------------------------------------------------------- DDP
class RandomLinear(MeanIntensity):
    """A fixed random linear classifier over 3 classes (deterministic weights, no training)."""

    def __init__(self) -> None:
        super().__init__(num_classes=3)
        self.linear = nn.Linear(4, 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.linspace(-3, 3, 12).view(3, 4))
            self.linear.bias.copy_(torch.tensor([0.5, -0.2, 0.1]))

    def forward(self, x):
        return self.linear(x.flatten(1)) * self.a


THREE_CLASSES = Images(
    [[0, 10, 200, 255], [255, 0, 0, 30], [90, 0, 180, 0], [0, 0, 0, 250], [128, 64, 0, 255], [7, 0, 99, 0]],
    [0, 0, 1, 1, 2, 2],
)


def _ddp_run(tmp_path: Path, **trainer_kwargs) -> tuple[dict[str, float], list[dict[str, str]]]:
    cb = ExpectedKLDivergence(
        "rotation",
        images_per_class=3,  # 3 slots per class, 9 in all: rank 0 gets 5, rank 1 gets 4 (uneven shards)
        transforms_per_image=7,
        dataset=THREE_CLASSES,
        preprocess=scaled,
        class_counts=(120, 40, 6),
        batch_size=4,
        output_dir=tmp_path,
    )
    trainer = cpu_trainer(tmp_path, callbacks=[cb], **trainer_kwargs)
    logged = trainer.test(RandomLinear(), verbose=False)[0]
    with (tmp_path / "ekld_test.csv").open() as f:
        return logged, list(csv.DictReader(f))


@pytest.mark.ddp
@pytest.mark.timeout(120)
def test_two_process_ddp_equals_single_process(tmp_path):
    single, single_rows = _ddp_run(tmp_path / "single")
    assert all(single[f"test/ekld/class_{c}"] > 0 for c in range(3))
    ddp, ddp_rows = _ddp_run(tmp_path / "ddp", devices=2, strategy="ddp_spawn")
    assert [r["pairs"] for r in ddp_rows] == [r["pairs"] for r in single_rows] == ["21", "21", "21"]
    assert ddp.keys() == single.keys()
    for key, value in single.items():
        assert ddp[key] == pytest.approx(value, rel=1e-6), key


def test_module_modes_are_restored_exactly(tmp_path):
    """A measurement puts the model in eval mode and restores each submodule's own mode (a frozen norm stays frozen)."""

    class WithFrozenNorm(MeanIntensity):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm1d(1)

    model = WithFrozenNorm()
    model.train()
    model.norm.eval()
    cb = background_callback()
    trainer = cpu_trainer(tmp_path, callbacks=[cb])
    cb.setup(trainer, model, "fit")
    rows, scalars = cb.measure(trainer, model, "fit", 1, 1, prefix="direct")
    assert (model.training, model.norm.training) == (True, False)  # not model.train(True): the norm stays in eval
    assert scalars["direct/ekld/class_half"] > 0 and rows[0]["pairs"] == 1


def test_without_a_logger_reports_go_under_default_root_dir_not_the_cwd(tmp_path, monkeypatch):
    cwd, root = tmp_path / "cwd", tmp_path / "root"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    run_test(root, MeanIntensity(), background_callback(), logger=False)
    assert {"ekld_test.csv", "ekld_test.png"} <= {p.name for p in root.iterdir()}
    assert list(cwd.iterdir()) == []
