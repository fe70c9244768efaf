"""``PerClassAccuracy`` inside real ``lightning.Trainer`` runs on CPU, with tiny *foreign* modules.

The modules and data modules here are plain Lightning classes that know nothing of ``lt_lightning``: that is the
"drop into any project" contract. Their logits are rows of a fixed table picked by a sample id carried in the batch,
so every expected number below is computed by hand. The DDP test uses ``ddp_spawn`` (gloo on CPU), which pickles
everything it uses: all classes live at module level.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from lt_lightning.callbacks import PerClassAccuracy
from lt_lightning.callbacks.plotting import PER_CLASS_COLUMNS
from tests.helpers import cpu_trainer

CLASS_COUNTS = (500, 60, 30, 5)  # groups: many, medium, medium, few (many > 100, few < 20)
NAMES = ("cat", "dog", "emu", "yak")

# (target, prediction) per sample id. Class 2 ("emu") has NO evaluation sample but is predicted once, so a
# phantom prediction must not turn its NaN into 0. Interleaved so that classes cross batch borders (batch_size=4).
SAMPLES = [(0, 0), (1, 1), (3, 3), (0, 0), (1, 1), (1, 2), (0, 0), (3, 0), (1, 3), (0, 1), (1, 1)]
# By hand: cat 3/4, dog 3/5 (one predicted as emu, one as yak), emu no support, yak 1/2.
EXPECTED_PER_CLASS = (0.75, 0.6, math.nan, 0.5)
EXPECTED_SUPPORT = (4, 5, 0, 2)
EXPECTED_CORRECT = (3, 3, 0, 1)
EXPECTED = {
    "balanced_acc": (0.75 + 0.6 + 0.5) / 3,  # the NaN class is skipped, not counted as 0
    "worst_class_acc": 0.5,
    "many_acc": 0.75,  # cat
    "medium_acc": 0.6,  # dog and emu; emu has no support, so only dog counts
    "few_acc": 0.5,  # yak
}

# 21 validation samples for the DDP test: odd, so DistributedSampler(num_replicas=2) pads one duplicate, which is
# sample 0 (padding repeats the head of the index list). Sample 0 is a wrongly classified "yak" (class 3, 2 samples),
# so counting it twice would turn yak's 1/2 into 1/3.
DDP_SAMPLES = [
    (3, 0), (0, 0), (0, 0), (0, 1), (1, 1), (3, 3), (0, 0), (1, 1), (2, 2), (2, 1), (0, 0),
    (1, 0), (2, 2), (0, 0), (1, 1), (2, 2), (0, 2), (1, 1), (2, 3), (0, 0), (1, 1),
]  # fmt: skip
DDP_EXPECTED_PER_CLASS = (6 / 8, 5 / 6, 3 / 5, 1 / 2)
DDP_EXPECTED_SUPPORT = (8, 6, 5, 2)


def logit_table(samples: list[tuple[int, int]], num_classes: int = 4) -> torch.Tensor:
    """One logit row per sample id whose argmax is the wanted prediction (no ties)."""
    table = -torch.arange(num_classes, dtype=torch.float32).repeat(len(samples), 1) / 10 - 1.0
    for i, (_, pred) in enumerate(samples):
        table[i, pred] = 2.0
    return table


def id_dataset(samples: list[tuple[int, int]]) -> TensorDataset:
    return TensorDataset(torch.arange(len(samples)), torch.tensor([t for t, _ in samples]))


class LookupClassifier(L.LightningModule):
    """A foreign classifier: ``forward(ids)`` returns the fixed logit row of each sample id.

    ``step_returns`` picks what ``validation_step`` / ``test_step`` return: ``"logits"``, ``"dict"``
    (``{"logits", "target"}``), ``"none"`` or ``"loss"`` (a scalar; the callback must then call the module itself),
    or ``"half"`` (a malformed tensor).
    """

    def __init__(self, samples, step_returns: str = "logits", class_counts=None, num_classes: int = 4):
        super().__init__()
        self.register_buffer("table", logit_table(samples, num_classes))
        self.weight = torch.nn.Parameter(torch.zeros(1))  # something to train; never touches the logits
        self.step_returns = step_returns
        if class_counts is not None:
            self.class_counts = class_counts
        self.forward_calls = 0
        self.sanity_steps = 0

    def forward(self, ids):
        self.forward_calls += 1
        return self.table[ids]

    def training_step(self, batch, batch_idx):
        return ((self.weight - 1.0) ** 2).sum()

    def _eval_step(self, batch):
        if self.trainer.sanity_checking:
            self.sanity_steps += 1
        if self.step_returns == "none":
            return None
        logits = self(batch[0])
        if self.step_returns == "loss":  # the commonest Lightning idiom: the step returns its loss
            return torch.nn.functional.cross_entropy(logits, batch[1])
        if self.step_returns == "half":  # a (N/2, C) tensor: neither logits of the batch nor a loss
            return logits[: len(logits) // 2]
        return {"logits": logits, "target": batch[1]} if self.step_returns == "dict" else logits

    def validation_step(self, batch, batch_idx):
        return self._eval_step(batch)

    def test_step(self, batch, batch_idx):
        return self._eval_step(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class LookupData(L.LightningDataModule):
    """A foreign data module; optionally exposes ``class_counts`` / ``class_names`` like many LT projects do."""

    def __init__(self, samples, batch_size: int = 4, class_counts=None, class_names=None):
        super().__init__()
        self.samples = samples
        self.batch_size = batch_size
        if class_counts is not None:
            self.class_counts = class_counts
        if class_names is not None:
            self.class_names = class_names

    def _loader(self):
        return DataLoader(id_dataset(self.samples), batch_size=self.batch_size, num_workers=0)

    def train_dataloader(self):
        return self._loader()

    def val_dataloader(self):
        return self._loader()

    def test_dataloader(self):
        return self._loader()


class DictBatches(Dataset):
    """Yields ``{"x": id, "y": target}``: a batch format the callback cannot read without help."""

    def __len__(self):
        return len(SAMPLES)

    def __getitem__(self, i):
        return {"x": i, "y": SAMPLES[i][0]}


class DictBatchClassifier(LookupClassifier):
    def test_step(self, batch, batch_idx):
        return {"loss": self(batch["x"]).sum()} if self.step_returns == "loss-dict" else None


def make_trainer(tmp_path: Path, callback: PerClassAccuracy, **kwargs) -> L.Trainer:
    return cpu_trainer(tmp_path, **{"callbacks": [callback], "limit_train_batches": 1, **kwargs})


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == PER_CLASS_COLUMNS
        return list(reader)


def metric(trainer: L.Trainer, key: str) -> float:
    return float(trainer.callback_metrics[key])


def assert_close_or_nan(value: float, expected: float) -> None:
    if math.isnan(expected):
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------------------------------------------- known answers
def test_test_run_logs_hand_computed_values_and_writes_csv(tmp_path):
    callback = PerClassAccuracy(class_counts=CLASS_COUNTS, class_names=NAMES, output_dir=tmp_path / "report")
    trainer = make_trainer(tmp_path, callback)
    loader = DataLoader(id_dataset(SAMPLES), batch_size=4)
    (results,) = trainer.test(LookupClassifier(SAMPLES), dataloaders=loader, verbose=False)

    for name, value in EXPECTED.items():
        assert metric(trainer, f"test/per_class/{name}") == pytest.approx(value, abs=1e-6)
        assert results[f"test/per_class/{name}"] == pytest.approx(value, abs=1e-6)
    for name, value in zip(NAMES, EXPECTED_PER_CLASS, strict=True):
        assert_close_or_nan(metric(trainer, f"test/per_class/acc_{name}"), value)

    rows = read_csv(tmp_path / "report" / "per_class_test.csv")
    assert [r["class"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["name"] for r in rows] == list(NAMES)
    assert [int(r["train_count"]) for r in rows] == list(CLASS_COUNTS)
    assert [r["shot"] for r in rows] == ["many", "medium", "medium", "few"]
    assert [int(r["support"]) for r in rows] == list(EXPECTED_SUPPORT)
    assert [int(r["correct"]) for r in rows] == list(EXPECTED_CORRECT)
    assert rows[2]["accuracy"] == ""  # no support: an empty cell, not 0
    for row, value in zip(rows, EXPECTED_PER_CLASS, strict=True):
        if not math.isnan(value):
            assert float(row["accuracy"]) == pytest.approx(value, abs=1e-6)
    assert callback.last_summary["acc"] == pytest.approx(7 / 11)
    # PNG after test, into output_dir, not the trainer's root
    assert (tmp_path / "report" / "per_class_test.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "per_class_test.csv").exists()


@pytest.mark.parametrize(
    ("class_counts", "many_threshold", "few_threshold", "expected"),
    [
        # every class has > 20 and <= 1000 training images except yak: no many class at all
        (CLASS_COUNTS, 1000, 10, {"many_acc": math.nan, "medium_acc": (0.75 + 0.6) / 2, "few_acc": 0.5}),
        # all classes above 100: medium and few are empty
        (
            (500, 300, 200, 150),
            100,
            20,
            {"many_acc": (0.75 + 0.6 + 0.5) / 3, "medium_acc": math.nan, "few_acc": math.nan},
        ),
    ],
)
def test_empty_shot_group_is_nan(tmp_path, class_counts, many_threshold, few_threshold, expected):
    callback = PerClassAccuracy(class_counts, many_threshold=many_threshold, few_threshold=few_threshold)
    trainer = make_trainer(tmp_path, callback)
    trainer.test(LookupClassifier(SAMPLES), dataloaders=DataLoader(id_dataset(SAMPLES), batch_size=4), verbose=False)
    for name, value in expected.items():
        assert_close_or_nan(metric(trainer, f"test/per_class/{name}"), value)
    assert metric(trainer, "test/per_class/balanced_acc") == pytest.approx(EXPECTED["balanced_acc"])
    # default names are the class indices
    assert metric(trainer, "test/per_class/acc_0") == pytest.approx(0.75)
    assert math.isnan(metric(trainer, "test/per_class/acc_2"))


# ---------------------------------------------------------------------------------------------------- step outputs
@pytest.mark.parametrize("step_returns", ["logits", "dict", "none", "loss"])
def test_step_output_forms_give_the_same_result(tmp_path, step_returns):
    model = LookupClassifier(SAMPLES, step_returns=step_returns)
    trainer = make_trainer(tmp_path, PerClassAccuracy(CLASS_COUNTS, class_names=NAMES))
    trainer.test(model, dataloaders=DataLoader(id_dataset(SAMPLES), batch_size=4), verbose=False)
    for name, value in EXPECTED.items():
        assert metric(trainer, f"test/per_class/{name}") == pytest.approx(value, abs=1e-6)
    for name, value in zip(NAMES, EXPECTED_PER_CLASS, strict=True):
        assert_close_or_nan(metric(trainer, f"test/per_class/acc_{name}"), value)
    # the step itself calls forward once per batch; with "none" the callback does it instead, with "loss" both do
    assert model.forward_calls == (6 if step_returns == "loss" else 3)


def test_validation_step_returning_none_or_its_loss_matches_returning_logits(tmp_path):
    # Regression (issue 12): a validation_step returning the loss crashed after the first epoch with a shape error.
    results = {}
    for step_returns in ("logits", "none", "loss"):
        run_dir = tmp_path / step_returns
        trainer = make_trainer(run_dir, PerClassAccuracy(CLASS_COUNTS), num_sanity_val_steps=0, max_epochs=2)
        trainer.fit(LookupClassifier(SAMPLES, step_returns=step_returns), datamodule=LookupData(SAMPLES))
        keys = [k for k in trainer.callback_metrics if k.startswith("val/per_class/")]
        assert len(keys) == 5 + 4
        results[step_returns] = {k: metric(trainer, k) for k in keys}
        assert read_csv(run_dir / "per_class_val.csv") == read_csv(tmp_path / "logits" / "per_class_val.csv")
    for other in ("none", "loss"):
        assert results[other].keys() == results["logits"].keys()
        for key, value in results["logits"].items():
            assert_close_or_nan(results[other][key], value)
    assert results["logits"]["val/per_class/balanced_acc"] == pytest.approx(EXPECTED["balanced_acc"])


# ---------------------------------------------------------------------------------------------------- class counts
def test_class_counts_and_names_from_the_datamodule_win_over_the_module(tmp_path):
    callback = PerClassAccuracy()
    trainer = make_trainer(tmp_path, callback)
    # the module claims every class is few-shot; the datamodule's counts must be used
    model = LookupClassifier(SAMPLES, class_counts=(1, 1, 1, 1))
    trainer.test(model, datamodule=LookupData(SAMPLES, class_counts=CLASS_COUNTS, class_names=NAMES), verbose=False)
    assert callback.class_counts == CLASS_COUNTS
    assert callback.class_names == NAMES
    for name, value in EXPECTED.items():
        assert metric(trainer, f"test/per_class/{name}") == pytest.approx(value, abs=1e-6)
    assert metric(trainer, "test/per_class/acc_dog") == pytest.approx(0.6)


def test_class_counts_from_the_module(tmp_path):
    callback = PerClassAccuracy(few_threshold=2)
    trainer = make_trainer(tmp_path, callback)
    model = LookupClassifier(SAMPLES, class_counts=(1, 1, 1, 1))  # all few-shot with few_threshold=2
    trainer.test(model, dataloaders=DataLoader(id_dataset(SAMPLES), batch_size=4), verbose=False)
    assert callback.class_counts == (1, 1, 1, 1)
    assert math.isnan(metric(trainer, "test/per_class/many_acc"))
    assert math.isnan(metric(trainer, "test/per_class/medium_acc"))
    assert metric(trainer, "test/per_class/few_acc") == pytest.approx(EXPECTED["balanced_acc"])


def test_missing_class_counts_raise_at_setup(tmp_path):
    trainer = make_trainer(tmp_path, PerClassAccuracy())
    with pytest.raises(ValueError, match="class_counts"):
        trainer.test(LookupClassifier(SAMPLES), datamodule=LookupData(SAMPLES), verbose=False)


def test_class_names_that_do_not_match_inferred_counts_raise_at_setup(tmp_path):
    trainer = make_trainer(tmp_path, PerClassAccuracy(class_names=("a", "b")))
    with pytest.raises(ValueError, match="class_names has 2 entries but class_counts has 4"):
        trainer.test(LookupClassifier(SAMPLES), datamodule=LookupData(SAMPLES, class_counts=CLASS_COUNTS))


# ---------------------------------------------------------------------------------------------------- bad input
def test_logits_with_the_wrong_number_of_columns_raise(tmp_path):
    trainer = make_trainer(tmp_path, PerClassAccuracy(CLASS_COUNTS))
    model = LookupClassifier(SAMPLES, num_classes=5)
    with pytest.raises(ValueError, match=r"logits have 5 columns but num_classes is 4 \(got shape \(4, 5\)\)"):
        trainer.test(model, dataloaders=DataLoader(id_dataset(SAMPLES), batch_size=4), verbose=False)


def test_a_malformed_step_output_says_what_to_return(tmp_path):
    trainer = make_trainer(tmp_path, PerClassAccuracy(CLASS_COUNTS))
    with pytest.raises(ValueError, match=r"logits \(N, C\) for a batch of N = 4 targets, got shape \(2, 4\).*return"):
        trainer.test(
            LookupClassifier(SAMPLES, step_returns="half"), dataloaders=DataLoader(id_dataset(SAMPLES), batch_size=4)
        )


@pytest.mark.parametrize("step_returns", ["none", "loss-dict"])
def test_dict_batch_without_logits_and_target_raises_type_error(tmp_path, step_returns):
    trainer = make_trainer(tmp_path, PerClassAccuracy(CLASS_COUNTS))
    model = DictBatchClassifier(SAMPLES, step_returns=step_returns)
    with pytest.raises(
        TypeError, match=r"expects batches \(inputs, targets, \.\.\.\).*'logits'.*got a batch of type dict"
    ):
        trainer.test(model, dataloaders=DataLoader(DictBatches(), batch_size=4), verbose=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"class_counts": (10, 0, 5)},
            r"class_counts must be a non-empty sequence of positive integers, got \(10, 0, 5\)",
        ),
        ({"class_counts": ()}, "class_counts must be a non-empty sequence of positive integers"),
        ({"class_counts": (10, 5, 1), "class_names": ("a", "b")}, "class_names has 2 entries but class_counts has 3"),
        ({"many_threshold": 10, "few_threshold": 20}, "few_threshold must be <= many_threshold"),
        ({"few_threshold": -1}, "few_threshold must be an integer >= 0, got -1"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PerClassAccuracy(**kwargs)


# ---------------------------------------------------------------------------------------------------- sanity check
def test_sanity_check_neither_counts_nor_writes(tmp_path):
    callback = PerClassAccuracy(CLASS_COUNTS)
    model = LookupClassifier(SAMPLES)
    # validation only every 2nd epoch and a single epoch: the sanity check is the only validation that runs
    trainer = make_trainer(tmp_path, callback, num_sanity_val_steps=2, check_val_every_n_epoch=2)
    trainer.fit(model, datamodule=LookupData(SAMPLES))
    assert model.sanity_steps == 2  # the sanity check did run
    assert not any(k.startswith("val/per_class") for k in trainer.callback_metrics)
    assert callback.last_rows == {}
    assert int(callback.metrics["validate"].support.sum()) == 0
    assert list(tmp_path.glob("per_class_*")) == []


def test_counts_reflect_only_the_real_validation(tmp_path):
    callback = PerClassAccuracy(CLASS_COUNTS)
    model = LookupClassifier(SAMPLES)
    trainer = make_trainer(tmp_path, callback, num_sanity_val_steps=2)
    trainer.fit(model, datamodule=LookupData(SAMPLES))
    assert model.sanity_steps == 2  # 8 of the 11 samples went through the sanity check first
    rows = read_csv(tmp_path / "per_class_val.csv")
    assert [int(r["support"]) for r in rows] == list(EXPECTED_SUPPORT)
    assert [int(r["correct"]) for r in rows] == list(EXPECTED_CORRECT)
    assert metric(trainer, "val/per_class/balanced_acc") == pytest.approx(EXPECTED["balanced_acc"])


# ---------------------------------------------------------------------------------------------------- reporting
@pytest.fixture
def lightning_log(caplog):
    """Records ``rank_zero_info`` (logger ``lightning.pytorch.utilities.rank_zero``). ``lightning.pytorch`` stops
    propagating to the root logger, where caplog listens, when the root had no handler at import time; caplog's
    handler is then attached to it directly."""
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    logger = logging.getLogger("lightning.pytorch")
    attach = not logger.propagate
    if attach:
        logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        if attach:
            logger.removeHandler(caplog.handler)


def test_fit_writes_png_and_prints_the_table(tmp_path, lightning_log):
    trainer = make_trainer(tmp_path, PerClassAccuracy(CLASS_COUNTS, class_names=NAMES), num_sanity_val_steps=0)
    trainer.fit(LookupClassifier(SAMPLES), datamodule=LookupData(SAMPLES))
    assert (tmp_path / "per_class_val.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tables = [r.getMessage() for r in lightning_log.records if "per-class accuracy (val)" in r.getMessage()]
    assert len(tables) == 1
    lines = tables[0].splitlines()
    # head to tail by training count, emu without support shown as n/a
    assert [line.split()[0] for line in lines[2:6]] == ["cat", "dog", "emu", "yak"]
    assert lines[4].split() == ["emu", "30", "medium", "0", "n/a"]
    assert lines[5].split() == ["yak", "5", "few", "2", "0.500"]
    assert "balanced_acc=0.6167" in lines[-1] and "acc=0.6364" in lines[-1] and "many_acc=0.7500" in lines[-1]


def test_figure_goes_to_tensorboard(tmp_path, monkeypatch):
    logger = TensorBoardLogger(tmp_path, name="tb")
    calls = []
    writer_cls = type(logger.experiment)
    original = writer_cls.add_figure

    def recording_add_figure(self, tag, figure, global_step=None, *args, **kwargs):
        calls.append((tag, type(figure).__name__, global_step))
        return original(self, tag, figure, global_step, *args, **kwargs)

    monkeypatch.setattr(writer_cls, "add_figure", recording_add_figure)
    trainer = make_trainer(tmp_path, PerClassAccuracy(CLASS_COUNTS), logger=logger, num_sanity_val_steps=0)
    trainer.fit(LookupClassifier(SAMPLES), datamodule=LookupData(SAMPLES))
    assert calls == [("val/per_class_accuracy", "Figure", 1)]
    log_dir = Path(logger.log_dir)
    assert (log_dir / "per_class_val.png").exists() and (log_dir / "per_class_val.csv").exists()
    assert sum(f.stat().st_size for f in log_dir.glob("events.out.tfevents.*")) > 10_000  # the PNG is in there


def test_csv_logger_gets_scalars_and_no_figure_warning(tmp_path, recwarn):
    logger = CSVLogger(tmp_path, name="csv")
    trainer = make_trainer(tmp_path, PerClassAccuracy(CLASS_COUNTS), logger=logger, num_sanity_val_steps=0)
    trainer.fit(LookupClassifier(SAMPLES), datamodule=LookupData(SAMPLES))
    log_dir = Path(logger.log_dir)
    assert (log_dir / "per_class_val.png").exists() and (log_dir / "per_class_val.csv").exists()
    logged = read_metrics_csv(log_dir / "metrics.csv")
    assert float(logged["val/per_class/balanced_acc"]) == pytest.approx(EXPECTED["balanced_acc"])
    assert not [w for w in recwarn if "cannot log figures" in str(w.message)]


def read_metrics_csv(path: Path) -> dict[str, str]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: v for row in rows for k, v in row.items() if v != ""}


# ---------------------------------------------------------------------------------------------------- DDP
def test_distributed_sampler_pads_with_sample_zero():
    """The premise of the DDP test: with 21 samples on 2 ranks, rank 1's last index is a second copy of 0."""
    dataset = id_dataset(DDP_SAMPLES)
    shards = [list(DistributedSampler(dataset, num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 11
    assert sorted(shards[0] + shards[1]) == sorted([*range(21), 0])


def _fit(tmp_path: Path, **trainer_kwargs) -> tuple[dict[str, float], list[dict[str, str]]]:
    trainer = make_trainer(tmp_path, PerClassAccuracy(CLASS_COUNTS, class_names=NAMES), **trainer_kwargs)
    trainer.fit(LookupClassifier(DDP_SAMPLES), datamodule=LookupData(DDP_SAMPLES))
    scalars = {k: metric(trainer, k) for k in trainer.callback_metrics if k.startswith("val/per_class/")}
    return scalars, read_csv(tmp_path / "per_class_val.csv")


@pytest.mark.ddp
@pytest.mark.timeout(120)
def test_two_process_ddp_equals_single_process_exactly(tmp_path):
    single, single_rows = _fit(tmp_path / "single")
    assert [int(r["support"]) for r in single_rows] == list(DDP_EXPECTED_SUPPORT)
    for name, value in zip(NAMES, DDP_EXPECTED_PER_CLASS, strict=True):
        assert single[f"val/per_class/acc_{name}"] == pytest.approx(value, abs=1e-6)

    # output_dir=None: the CSV/PNG directory comes from trainer.log_dir, a collective under DDP
    ddp, ddp_rows = _fit(tmp_path / "ddp", devices=2, strategy="ddp_spawn")
    assert ddp_rows == single_rows  # written by rank 0, padded duplicate of sample 0 dropped
    assert sum(int(r["support"]) for r in ddp_rows) == sum(DDP_EXPECTED_SUPPORT) == 21
    assert ddp.keys() == single.keys() and len(ddp) == 9
    for key, value in single.items():
        assert ddp[key] == value, key  # exactly, not approximately
    assert ddp["val/per_class/acc_yak"] == 0.5  # 1/3 if the padded copy of sample 0 were counted
    assert (tmp_path / "ddp" / "per_class_val.png").exists()


def test_without_a_logger_reports_go_under_default_root_dir_not_the_cwd(tmp_path, monkeypatch):
    cwd, root = tmp_path / "cwd", tmp_path / "root"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    trainer = make_trainer(
        root, PerClassAccuracy(CLASS_COUNTS, class_names=NAMES), num_sanity_val_steps=0, logger=False
    )
    model, datamodule = LookupClassifier(SAMPLES), LookupData(SAMPLES)
    trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule, verbose=False)
    written = {p.name for p in root.iterdir()}
    assert {"per_class_val.csv", "per_class_val.png", "per_class_test.csv", "per_class_test.png"} <= written
    assert list(cwd.iterdir()) == []
