"""Tests for ``ClassHessianSpectrum`` (research/hessian.md §4 T5, T7, T8, T9).

Exact checks use float64 models and ``params="head"`` with ``lanczos_steps = d``, so that the Lanczos extremes are
the exact extreme eigenvalues of the explicit Hessian (``torch.autograd.functional.hessian`` of the eval-mode
function).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from lt_lightning.callbacks import ClassHessianSpectrum
from lt_lightning.data import LongTailDataModule
from lt_lightning.methods.base import LongTailClassifier
from tests.helpers import cpu_trainer

COUNTS = (12, 7, 3)


class Images(torch.utils.data.Dataset):
    """Random ``(1, 8, 8)`` images with ``COUNTS`` samples per class (a ``targets`` attribute, as the project's)."""

    def __init__(self, dtype: torch.dtype = torch.float64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.cat([torch.full((n,), c) for c, n in enumerate(COUNTS)])
        self.images = torch.randn(len(self.targets), 1, 8, 8, generator=g, dtype=dtype) + self.targets.view(-1, 1, 1, 1)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.images[i], int(self.targets[i])


def classifier(loss: str = "ce", width: int = 2, seed: int = 0) -> LongTailClassifier:
    """A float64 SmallCNN classifier whose BN running statistics are not the defaults (eval != train mode)."""
    torch.manual_seed(seed)
    model = LongTailClassifier(COUNTS, backbone_kwargs={"width": width}, in_chans=1, loss=loss).double()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 8, 8, dtype=torch.float64) * 2 + 1)
    return model


def measure(tmp_path, model, **kwargs) -> list[dict]:
    options = dict(dataset=Images(), samples_per_class=None, params="head", trace_probes=0, output_dir=tmp_path)
    cb = ClassHessianSpectrum(**{**options, **kwargs})
    trainer = cpu_trainer(tmp_path, callbacks=[cb])
    cb.setup(trainer, model, "fit")
    rows, _ = cb.measure(trainer, model, "direct", cb.samples_per_class, cb.lanczos_steps, cb.trace_probes)
    return rows


def head_hessian_extremes(model: LongTailClassifier, c: int, loss) -> tuple[float, float]:
    """Exact (lambda_min, lambda_max) of the class-``c`` mean loss w.r.t. the head, eval mode, all class images."""
    data = Images()
    x = data.images[data.targets == c]
    y = data.targets[data.targets == c]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    head = model.classifier_head()
    names = [n for n, _ in head.named_parameters()]
    shapes = [p.shape for _, p in head.named_parameters()]
    with torch.no_grad():
        features = model.classifier_features(x)
    flat0 = torch.cat([p.detach().reshape(-1) for p in head.parameters()])

    def f(flat):
        pieces, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            pieces[name] = flat[start : start + shape.numel()].view(shape)
            start += shape.numel()
        return loss(functional_call(head, pieces, (features,)), y)

    hessian = torch.autograd.functional.hessian(f, flat0)
    for m, training in modes:
        m.training = training
    eig = torch.linalg.eigvalsh((hessian + hessian.T) / 2)
    return float(eig.min()), float(eig.max())


def head_dim(model) -> int:
    return sum(p.numel() for p in model.classifier_head().parameters())


# ----------------------------------------------------------------------------------------------------- T5
def test_t5_eval_mode_head_hessian_and_state_untouched(tmp_path):
    model = classifier()
    model.backbone.head.eval()  # a submodule deliberately in eval: its own flag must come back, not model.train()
    flags = [m.training for m in model.modules()]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    rng = torch.get_rng_state()
    rows = measure(tmp_path, model, lanczos_steps=head_dim(model))
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())  # running stats, num_batches_tracked
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is never drawn from
    for c in range(len(COUNTS)):
        lam_min, lam_max = head_hessian_extremes(model, c, F.cross_entropy)
        assert rows[c]["samples"] == COUNTS[c]
        assert rows[c]["lambda_max"] == pytest.approx(lam_max, abs=1e-8)
        assert rows[c]["lambda_min"] == pytest.approx(lam_min, abs=1e-8)


def test_t5_all_params_runs_and_classes_subset(tmp_path):
    model = classifier()
    rows = measure(tmp_path, model, params="all", classes=2, lanczos_steps=6, trace_probes=2, samples_per_class=5)
    assert [r["measured"] for r in rows] == [True, False, True]  # head and tail of 3 classes
    assert rows[0]["samples"] == 5 and rows[2]["samples"] == 3 and rows[0]["hvps"] == 8
    assert rows[0]["lambda_min"] < 0 < rows[0]["lambda_max"]  # a non-convex net: a saddle direction


def test_long_runs_warn_with_an_estimate(tmp_path, monkeypatch):
    monkeypatch.setattr("lt_lightning.callbacks.hessian.WARN_SECONDS", 0.0)
    with pytest.warns(UserWarning, match=r"about \d+ min for 2 classes x 4 HVPs"):
        rows = measure(tmp_path, classifier(), classes=[0, 2], lanczos_steps=3, trace_probes=1)
    assert [r["measured"] for r in rows] == [True, False, True]


# ----------------------------------------------------------------------------------------------------- T9
def test_t9_auto_uses_ldam_margins_and_drw_weights_cancel(tmp_path):
    model = classifier("ldam")
    d = head_dim(model)
    criterion = model.criterion
    auto = measure(tmp_path, model, lanczos_steps=d)
    lam_min, lam_max = head_hessian_extremes(model, 2, criterion)
    ce_min, ce_max = head_hessian_extremes(model, 2, F.cross_entropy)
    assert auto[2]["lambda_max"] == pytest.approx(lam_max, rel=1e-8)
    assert auto[2]["lambda_max"] != pytest.approx(ce_max, rel=1e-3)  # LDAM (s = 30), not CE
    criterion.set_class_weight([0.2, 1.0, 7.5])  # DRW: per-class weights cancel in a one-class mean
    criterion.reduction = "none"  # forced to a mean during the measurement, then restored
    weighted = measure(tmp_path, model, lanczos_steps=d)
    assert criterion.reduction == "none"
    for a, b in zip(auto, weighted, strict=True):
        assert a["lambda_max"] == pytest.approx(b["lambda_max"], rel=1e-9)
        assert a["lambda_min"] == pytest.approx(b["lambda_min"], rel=1e-6, abs=1e-9)
    ce = measure(tmp_path, model, lanczos_steps=d, loss="ce")
    assert ce[2]["lambda_max"] == pytest.approx(ce_max, rel=1e-8)


class Foreign(L.LightningModule):
    """A module with no criterion / loss_module: ``auto`` falls back to cross-entropy."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 5), nn.Tanh())
        self.head = nn.Linear(5, 3)
        self.double()

    def forward(self, x):
        return self.head(self.body(x))


def test_t9_foreign_module_falls_back_to_ce(tmp_path):
    counts = {"class_counts": COUNTS}
    auto = measure(tmp_path, Foreign(), params="all", lanczos_steps=10, trace_probes=3, **counts)
    ce = measure(tmp_path, Foreign(), params="all", lanczos_steps=10, trace_probes=3, loss="ce", **counts)
    keys = ("lambda_max", "lambda_min", "trace", "neg_mass")
    assert [[r[k] for k in keys] for r in auto] == [[r[k] for k in keys] for r in ce]


# ----------------------------------------------------------------------------------------------------- T7
def _fit(tmp_path: Path, callbacks, **trainer_kwargs):
    L.seed_everything(3, verbose=False)
    dm = LongTailDataModule("digits", batch_size=64, imbalance_ratio=10)
    model = LongTailClassifier(dm.class_counts, backbone_kwargs={"width": 4}, in_chans=1)
    trainer = cpu_trainer(tmp_path, callbacks=callbacks, max_epochs=2, num_sanity_val_steps=0, **trainer_kwargs)
    trainer.fit(model, dm)
    return trainer, model, dm


def small_callback(**kwargs) -> ClassHessianSpectrum:
    options = dict(samples_per_class=8, lanczos_steps=5, trace_probes=2, epoch_samples_per_class=6)
    return ClassHessianSpectrum(**{**dict(options, epoch_lanczos_steps=4, epoch_trace_probes=1), **kwargs})


def test_t7_fit_is_unchanged_files_and_keys(tmp_path):
    cb = small_callback(every_n_epochs=1)
    logger = CSVLogger(tmp_path / "with", name="", version="")
    trainer, with_cb, _ = _fit(tmp_path / "with", [cb], logger=logger, limit_train_batches=3, limit_val_batches=1)
    _, without, _ = _fit(tmp_path / "without", [], limit_train_batches=3, limit_val_batches=1)
    a, b = with_cb.state_dict(), without.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise non-interference
    out = Path(trainer.log_dir)
    assert {"hessian_fit.csv", "hessian_fit.png", "hessian_density_fit.npz", "hessian_history.csv"} <= {
        p.name for p in out.iterdir()
    }
    with (out / "hessian_history.csv").open() as f:
        history = list(csv.DictReader(f))
    assert [r["epoch"] for r in history] == ["0"] * 10 + ["1"] * 10 and history[0]["samples"] == "6"
    with (out / "hessian_fit.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and rows[-1]["samples"] == "8" and rows[-1]["hvps"] == "7"
    assert {
        "hessian/all/lambda_min",
        "hessian/few/trace",
        "hessian/class_9/lambda_max",
    } <= trainer.callback_metrics.keys()
    with (out / "metrics.csv").open() as f:
        header = next(csv.reader(f))
    assert {"fit/hessian/many/lambda_min", "fit/hessian/class_0/neg_ratio"} <= set(header)


def test_t7_fast_dev_run_and_at_test_under_inference_mode(tmp_path):
    cb = small_callback(at_test=True)
    trainer, model, dm = _fit(tmp_path, [cb], fast_dev_run=True)
    assert all(r["samples"] <= 2 and r["hvps"] <= 5 for r in cb.results["fit"])
    tester = cpu_trainer(tmp_path / "test", callbacks=[cb], inference_mode=True, limit_test_batches=1)
    logged = tester.test(model, dm, verbose=False)[0]
    assert logged["test/hessian/all/lambda_max"] > 0
    assert (tmp_path / "test" / "hessian_test.csv").exists()
    assert cb.results["test"][0]["samples"] == 8


def test_arguments_and_preset():
    cb = ClassHessianSpectrum(preset="paper", samples_per_class=3)
    assert (cb.samples_per_class, cb.lanczos_steps, cb.loss, cb.trace_probes) == (None, 100, "ce", 100)
    with pytest.raises(ValueError, match="preset"):
        ClassHessianSpectrum(preset="fast")
    with pytest.raises(ValueError, match="params"):
        ClassHessianSpectrum(params="body")
    with pytest.raises(ValueError, match="classes"):
        ClassHessianSpectrum(classes=[1, 1])
    with pytest.raises(ValueError, match="eval_view"):
        ClassHessianSpectrum(class_counts=COUNTS).setup(cpu_trainer(None), Foreign(), "fit")


# ----------------------------------------------------------------------------------------------------- T8
class HessianTestModel(LongTailClassifier):
    """A classifier whose test loop does nothing (the callback measures at the end of it)."""

    def test_step(self, batch, batch_idx):
        return None

    def test_dataloader(self):
        return torch.utils.data.DataLoader(Images(torch.float32), batch_size=4)


class OneThread(L.Callback):
    """Every process computes with one CPU thread: a float32 matmul's summation order depends on the thread count,
    which Lightning sets per DDP worker (cores // workers), so an exact comparison needs the same count everywhere.
    Module-level: ddp_spawn pickles it."""

    def setup(self, trainer, pl_module, stage):
        torch.set_num_threads(1)


def _ddp_run(tmp_path: Path, **trainer_kwargs) -> tuple[dict[str, float], list[dict[str, str]]]:
    torch.manual_seed(0)
    model = HessianTestModel(COUNTS, backbone_kwargs={"width": 4}, in_chans=1)
    cb = ClassHessianSpectrum(
        dataset=Images(torch.float32),
        samples_per_class=5,
        lanczos_steps=6,
        trace_probes=2,
        at_fit_end=False,
        at_test=True,
        output_dir=tmp_path,
    )
    trainer = cpu_trainer(tmp_path, callbacks=[OneThread(), cb], **trainer_kwargs)
    logged = trainer.test(model, verbose=False)[0]
    with (tmp_path / "hessian_test.csv").open() as f:
        return logged, [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


@pytest.mark.ddp
@pytest.mark.timeout(180)
def test_t8_two_process_ddp_equals_single_process(tmp_path):
    threads = torch.get_num_threads()
    try:
        single, single_rows = _ddp_run(tmp_path / "single")
    finally:
        torch.set_num_threads(threads)
    ddp, ddp_rows = _ddp_run(tmp_path / "ddp", devices=2, strategy="ddp_spawn")
    assert [r["samples"] for r in single_rows] == ["5", "5", "3"]
    assert ddp_rows == single_rows  # every digit of every field (seconds aside)
    assert ddp.keys() == single.keys()
    assert all(ddp[k] == single[k] or (math.isnan(ddp[k]) and math.isnan(single[k])) for k in single)  # no many/medium
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if p.name.startswith("hessian")) == [
        "hessian_density_test.npz",
        "hessian_test.csv",
        "hessian_test.png",
    ]
