"""``TauNormalization`` and ``PostHocLogitAdjustment``: analytic cases through the callbacks, the Bayes-optimal
τ = 1 of logit adjustment, the sweep table and its ties, foreign modules, warnings, errors, DDP and an end to end.

Every expected number is computed by hand. The DDP test uses ``ddp_spawn`` (gloo on CPU), which pickles everything
it uses: all classes live at module level.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.callbacks import PerClassAccuracy, PostHocLogitAdjustment, TauNormalization
from lt_lightning.data import LongTailDataModule
from lt_lightning.functional.posthoc import DEFAULT_TAU_GRID, tau_normalized_logits
from lt_lightning.methods import LongTailClassifier
from tests.helpers import cpu_trainer

W = [[2.0, 0.0], [0.0, 1.0]]
LN9 = math.log(9.0)


# ---------------------------------------------------------------------------------------------- modules and data
class LinearProbe(L.LightningModule):
    """Features are the inputs; head ``nn.Linear(D, C)``. Like ``LongTailClassifier``: ``predict_logits``, the two
    classifier hooks, ``predict_step`` returns probabilities, ``test_step`` returns the logits."""

    def __init__(self, weight=W, bias=(0.0, 0.0)):
        super().__init__()
        weight = torch.tensor(weight)
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(weight)
            self.head.bias.copy_(torch.tensor(bias))

    def forward(self, x):
        return self.head(x)

    def predict_logits(self, x):
        return self(x)

    def classifier_features(self, x):
        return x

    def classifier_head(self):
        return self.head

    def test_step(self, batch, batch_idx):
        return self.predict_logits(batch[0])

    validation_step = test_step

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self.predict_logits(batch[0]).softmax(dim=1)


class Foreign(L.LightningModule):
    """A plain LightningModule: ``self.fc`` after a body, nothing of lt_lightning."""

    def __init__(self, weight=W):
        super().__init__()
        self.body = nn.Identity()
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(weight))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.body(x))

    def test_step(self, batch, batch_idx):
        return self(batch[0])

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self(batch[0]).softmax(dim=1)


class LogitsAreInputs(L.LightningModule):
    """The inputs are the logits (logit adjustment acts on them alone)."""

    def __init__(self, class_counts=None):
        super().__init__()
        self.class_counts = class_counts

    def predict_logits(self, x):
        return x

    def test_step(self, batch, batch_idx):
        return self.predict_logits(batch[0])

    validation_step = test_step

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self.predict_logits(batch[0]).softmax(dim=1)


class GaussianPosterior(L.LightningModule):
    """Classes N(-1, 1) and N(+1, 1) with training priors π: the logits are the exact log-posterior
    ``log π_c - (x - μ_c)² / 2`` (up to a constant); ``on_test_end`` writes the callbacks' choice per rank."""

    def __init__(self, priors=(0.9, 0.1), out_dir: str | None = None):
        super().__init__()
        self.register_buffer("log_prior", torch.tensor(priors).log())
        self.register_buffer("means", torch.tensor([-1.0, 1.0]))
        self.out_dir = out_dir

    def predict_logits(self, x):
        return self.log_prior - (x - self.means) ** 2 / 2

    def test_step(self, batch, batch_idx):
        return self.predict_logits(batch[0])

    def on_test_end(self):
        if self.out_dir is not None:
            callback = next(cb for cb in self.trainer.callbacks if isinstance(cb, PostHocLogitAdjustment))
            record = {"best_tau": callback.best_tau, "sweep": callback.sweep}
            (Path(self.out_dir) / f"rank{self.global_rank}.json").write_text(json.dumps(record))


def gaussian_set(per_class: tuple[int, int], seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    x = (2.0 * y - 1.0 + torch.randn(len(y), generator=generator)).unsqueeze(1)
    return TensorDataset(x, y)


class Splits(L.LightningDataModule):
    """Given validation and test sets; ``class_counts`` for the priors and the shot groups."""

    def __init__(self, val: TensorDataset, test: TensorDataset, class_counts=(900, 100), batch_size: int = 100_000):
        super().__init__()
        self.val, self.test, self.class_counts, self.batch_size = val, test, class_counts, batch_size

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=self.batch_size)


def loader(*rows) -> DataLoader:
    return DataLoader(TensorDataset(torch.tensor(rows, dtype=torch.float32)), batch_size=len(rows))


def predict(module, callback, rows) -> torch.Tensor:
    trainer = cpu_trainer(Path("."), callbacks=[callback] if callback is not None else [])
    return torch.cat(trainer.predict(module, loader(*rows)))


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------- 1. τ-norm analytic
def test_tau_norm_analytic_through_the_callback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = LinearProbe()
    f = [1.0, 1.1]  # logits (2, 1.1) at τ = 0, (1, 1.1) at τ = 1
    assert int(predict(module, TauNormalization(tau=0.0), [f]).argmax()) == 0
    assert int(predict(module, TauNormalization(tau=1.0), [f]).argmax()) == 1
    assert "predict_logits" not in vars(module)  # restored at the end of the stage

    # τ = 1: unit rows, so e_0 and e_1 give logits (1, 0) and (0, 1): log-odds +1 and -1 (τ = 0: +2 and -1)
    for tau, expected in ((1.0, [1.0, -1.0]), (0.0, [2.0, -1.0])):
        probs = predict(module, TauNormalization(tau=tau), [[1.0, 0.0], [0.0, 1.0]])
        log_odds = (probs[:, 0] / probs[:, 1]).log()
        assert log_odds.tolist() == pytest.approx(expected, abs=1e-5)

    # a bias that flips the τ = 1 decision: (1, 1.1) + (0.5, 0) = (1.5, 1.1)
    biased = LinearProbe(bias=(0.5, 0.0))
    assert int(predict(biased, TauNormalization(tau=1.0, keep_bias=True), [f]).argmax()) == 0
    assert int(predict(biased, TauNormalization(tau=1.0, keep_bias=False), [f]).argmax()) == 1
    assert int(predict(biased, None, [[1.0, 1.1]]).argmax()) == 0  # the untouched model: 2.5 > 1.1


# ---------------------------------------------------------------------------------------------- 2. LA flip point
def test_logit_adjustment_flips_at_one_over_ln9(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = LogitsAreInputs()
    assert round(1 / LN9, 5) == 0.45512
    at = {
        tau: predict(module, PostHocLogitAdjustment(tau=tau, priors=[0.9, 0.1]), [[1.0, 0.0]])
        for tau in (0, 0.455, 0.456)
    }
    assert int(at[0.455].argmax()) == 0 and int(at[0.456].argmax()) == 1
    assert at[0].squeeze().tolist() == pytest.approx(torch.tensor([1.0, 0.0]).softmax(0).tolist(), abs=1e-6)
    # τ = 1: (1 - ln 0.9, -ln 0.1) = (1.1054, 2.3026)
    probs = predict(module, PostHocLogitAdjustment(priors=[0.9, 0.1]), [[1.0, 0.0]]).squeeze()
    assert float((probs[1] / probs[0]).log()) == pytest.approx(math.log(0.9 / 0.1) - 1, abs=1e-5)


# ---------------------------------------------------------------------------------------------- 3. Bayes check
@pytest.fixture(scope="module")
def bayes_data():
    return Splits(gaussian_set((100_000, 100_000), seed=1), gaussian_set((100_000, 100_000), seed=2))


def test_bayes_tau_one_is_optimal_for_balanced_accuracy(tmp_path, bayes_data):
    def balanced(callback) -> float:
        per_class = PerClassAccuracy(class_counts=(900, 100), log_per_class=False, output_dir=tmp_path)
        trainer = cpu_trainer(tmp_path, callbacks=[callback, per_class])
        trainer.test(GaussianPosterior(), datamodule=bayes_data)
        return float(trainer.callback_metrics["test/per_class/balanced_acc"])

    # Bayes threshold of π = (0.9, 0.1): x* = ln 9 / 2, so (Φ(1 + x*) + 1 - Φ(x* - 1)) / 2 = 0.72140
    assert balanced(PostHocLogitAdjustment(tau=0.0)) == pytest.approx(0.72140, abs=0.005)
    assert balanced(PostHocLogitAdjustment(tau=1.0)) == pytest.approx(0.84134, abs=0.005)  # Φ(1): threshold 0
    auto = PostHocLogitAdjustment(tau="auto")
    assert balanced(auto) == pytest.approx(0.84134, abs=0.005)
    assert 0.8 <= auto.best_tau <= 1.2
    assert auto.sweep[0]["all"] == pytest.approx(0.72140, abs=0.005)  # τ = 0 on the validation split


# ---------------------------------------------------------------------------------------------- 4. sweep table, ties
def test_sweep_file_and_ties_go_to_the_smallest_tau(tmp_path):
    # priors (0.9, 0.1): the class-1 sample (1, 0) is right from τ = 1/ln 9 = 0.455, the class-0 sample (3, 0) wrong
    # from τ = 3/ln 9 = 1.365: balanced accuracy 0.5, then 1.0 for τ = 0.5 ... 1.3 (a tie of 9 values), then 0.5.
    val = TensorDataset(torch.tensor([[3.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]))
    data = Splits(val, val, class_counts=(900, 100))
    callback = PostHocLogitAdjustment(tau="auto", output_dir=tmp_path / "report")
    results = cpu_trainer(tmp_path, callbacks=[callback]).test(LogitsAreInputs(), datamodule=data)
    assert callback.best_tau == 0.5
    assert results[0]["test/logit_adjustment/best_tau"] == 0.5
    assert results[0]["test/logit_adjustment/balanced_acc"] == 1.0

    rows = read_csv(tmp_path / "report" / "tau_sweep.csv")
    assert list(rows[0]) == ["tau", "many", "medium", "few", "all"]
    assert [float(r["tau"]) for r in rows] == list(DEFAULT_TAU_GRID)
    expected = [0.5 if tau < 1 / LN9 or tau > 3 / LN9 else 1.0 for tau in DEFAULT_TAU_GRID]
    assert [float(r["all"]) for r in rows] == expected
    # 900 images: many; exactly 100: medium; no few class (empty cell)
    assert [float(r["many"]) for r in rows] == [0.0 if tau > 3 / LN9 else 1.0 for tau in DEFAULT_TAU_GRID]
    assert [float(r["medium"]) for r in rows] == [0.0 if tau < 1 / LN9 else 1.0 for tau in DEFAULT_TAU_GRID]
    assert {r["few"] for r in rows} == {""}
    assert [r["all"] for r in callback.sweep] == expected


# ---------------------------------------------------------------------------------------------- 5. foreign module
def test_foreign_module_with_both_callbacks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = Foreign()
    assert int(predict(module, None, [[1.0, 1.1]]).argmax()) == 0
    assert int(predict(module, TauNormalization(tau=1.0), [[1.0, 1.1]]).argmax()) == 1
    assert "forward" not in vars(module)
    # logits (2, 0): class 1 from τ = 2 / ln 9 = 0.910
    assert int(predict(module, PostHocLogitAdjustment(tau=0.9, priors=[0.9, 0.1]), [[1.0, 0.0]]).argmax()) == 0
    assert int(predict(module, PostHocLogitAdjustment(tau=0.92, priors=[0.9, 0.1]), [[1.0, 0.0]]).argmax()) == 1
    assert "forward" not in vars(module)

    # "auto" on a foreign module: features captured from its head's input. Val: (1, 1.1) is class 1, (1, 0) class
    # 0: τ = 0 gets only the class-0 sample, τ >= 0.2 both ((2^(1-τ), 1.1) → class 1 once 2^(1-τ) < 1.1).
    val = TensorDataset(torch.tensor([[1.0, 1.1], [1.0, 0.0]]), torch.tensor([1, 0]))
    callback = TauNormalization(tau="auto", output_dir=tmp_path)
    cpu_trainer(tmp_path, callbacks=[callback]).test(module, datamodule=Splits(val, val, class_counts=(9, 1)))
    assert callback.best_tau == 0.9  # 2^(1-τ) < 1.1 ⟺ τ > 1 - log2(1.1) = 0.8625
    assert [r["all"] for r in callback.sweep[:10]] == [0.5] * 9 + [1.0]


# ---------------------------------------------------------------------------------------------- 6. warnings
def digit_images(n: int = 4) -> DataLoader:
    return DataLoader(TensorDataset(torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(0))), batch_size=n)


def test_cosine_head_warns_and_leaves_the_logits_unchanged(tmp_path):
    torch.manual_seed(0)
    model = LongTailClassifier((50, 20, 5), in_chans=1, head="cosine")
    plain = torch.cat(cpu_trainer(tmp_path).predict(model, digit_images()))
    callback = TauNormalization(tau=1.0)
    trainer = cpu_trainer(tmp_path, callbacks=[callback])
    with pytest.warns(UserWarning, match="cosine head.*identity"):
        adjusted = torch.cat(trainer.predict(model, digit_images()))
    assert torch.equal(adjusted, plain)
    with warnings_as_list() as seen:  # once per callback
        trainer.predict(model, digit_images())
    assert not [w for w in seen if "cosine head" in str(w.message)]


def warnings_as_list():
    import warnings

    return warnings.catch_warnings(record=True)


def test_double_adjustment_warns(tmp_path):
    model = LongTailClassifier((50, 20, 5), in_chans=1, loss="balanced_softmax")
    with pytest.warns(UserWarning, match="adjusting twice"):
        cpu_trainer(tmp_path, callbacks=[PostHocLogitAdjustment()]).predict(model, digit_images())


# ---------------------------------------------------------------------------------------------- 7. errors
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau": -0.1}, r"tau must be a finite number >= 0.*-0\.1"),
        ({"tau": "best"}, r"tau must be 'auto' or a finite number >= 0, got 'best'"),
        ({"tau": float("nan")}, "tau must be a finite number"),
        ({"grid": [0.0, 1.0, 0.5]}, "grid must be strictly increasing"),
        ({"grid": []}, "grid must be a non-empty sequence"),
    ],
)
@pytest.mark.parametrize("cls", [TauNormalization, PostHocLogitAdjustment])
def test_bad_tau_and_grid(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_bad_priors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"priors must all be finite numbers > 0, got \[0.5, 0.0\]"):
        PostHocLogitAdjustment(priors=[0.5, 0.0])
    with pytest.raises(ValueError, match="priors must be 'train_counts' or a non-empty sequence"):
        PostHocLogitAdjustment(priors="uniform")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"priors has 3 classes but the model's logits have shape \(1, 2\)"):
        predict(LogitsAreInputs(), PostHocLogitAdjustment(priors=[0.5, 0.3, 0.2]), [[1.0, 0.0]])
    with pytest.raises(ValueError, match="needs class counts"):
        predict(LogitsAreInputs(), PostHocLogitAdjustment(), [[1.0, 0.0]])


def test_auto_needs_a_validation_split_or_an_earlier_choice(tmp_path):
    dm = LongTailDataModule("digits")  # val_per_class=0: validation is the test set
    model = LongTailClassifier(dm.class_counts, in_chans=1)
    with pytest.raises(ValueError, match=r"needs a validation split separate from the test set.*val_per_class"):
        cpu_trainer(tmp_path, callbacks=[TauNormalization(tau="auto")]).test(model, datamodule=dm)
    assert "predict_logits" not in vars(model)
    with pytest.raises(ValueError, match="tau='auto'.*the trainer has no datamodule.*or pass a number for tau"):
        cpu_trainer(tmp_path, callbacks=[PostHocLogitAdjustment(tau="auto")]).predict(model, digit_images())

    # a τ chosen before (restored from a checkpoint's callback state) is reused: predict on new images
    callback = PostHocLogitAdjustment(tau="auto")
    callback.load_state_dict({"best_tau": 0.7})
    assert callback.state_dict() == {"best_tau": 0.7}
    plain = torch.cat(cpu_trainer(tmp_path).predict(model, digit_images()))
    adjusted = torch.cat(cpu_trainer(tmp_path, callbacks=[callback]).predict(model, digit_images()))
    pi = torch.tensor(dm.class_counts, dtype=torch.float64) / sum(dm.class_counts)
    expected = (plain.double().log() - torch.log(pi**0.7 + 1e-12)).softmax(dim=1)
    assert torch.allclose(adjusted.double(), expected, atol=1e-5)
    fixed = PostHocLogitAdjustment(tau=0.3)
    fixed.load_state_dict({"best_tau": 0.7})
    assert fixed.best_tau == 0.3  # a number given by the user wins


# ---------------------------------------------------------------------------------------------- 8. DDP
def _gaussian_test(tmp_path: Path, **trainer_kwargs) -> list[dict]:
    # 81 + 20 = 101 validation samples: not divisible by 2, so a DistributedSampler would pad
    data = Splits(gaussian_set((81, 20), seed=3), gaussian_set((40, 40), seed=4), batch_size=16)
    callback = PostHocLogitAdjustment(tau="auto", output_dir=tmp_path)
    trainer = cpu_trainer(tmp_path, callbacks=[callback], **trainer_kwargs)
    trainer.test(GaussianPosterior(out_dir=str(tmp_path)), datamodule=data)
    return read_csv(tmp_path / "tau_sweep.csv")


@pytest.mark.ddp
@pytest.mark.timeout(180)
def test_two_process_ddp_equals_single_process(tmp_path):
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    single_dir.mkdir(), ddp_dir.mkdir()
    single_rows = _gaussian_test(single_dir)
    single = json.loads((single_dir / "rank0.json").read_text())
    ddp_rows = _gaussian_test(ddp_dir, devices=2, strategy="ddp_spawn")
    assert ddp_rows == single_rows and len(ddp_rows) == 21
    assert len({r["all"] for r in single_rows}) > 3  # the table really varies with τ
    for rank in (0, 1):
        record = json.loads((ddp_dir / f"rank{rank}.json").read_text())
        assert record == single, rank


# ---------------------------------------------------------------------------------------------- 9. end to end
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    dm = LongTailDataModule("digits", val_per_class=5, batch_size=64, eval_batch_size=200)
    # Adam at a constant rate: one epoch (9 batches) is enough to be well above chance and long-tail biased.
    model = LongTailClassifier(
        dm.class_counts,
        in_chans=1,
        optimizer=lambda params: torch.optim.Adam(params, lr=3e-3),
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0),
    )
    cpu_trainer(tmp_path_factory.mktemp("fit"), max_epochs=2, limit_val_batches=0).fit(model, datamodule=dm)
    return dm, model


def balanced_accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    hit = logits.argmax(dim=1) == target
    return float(torch.stack([hit[target == c].float().mean() for c in target.unique()]).mean())


@pytest.mark.parametrize("cls", [TauNormalization, PostHocLogitAdjustment])
def test_end_to_end_on_digits(tmp_path, trained, cls):
    dm, model = trained
    callback = cls(tau="auto")
    results = cpu_trainer(tmp_path, callbacks=[callback]).test(model, datamodule=dm)[0]
    key = f"test/{callback.key}"
    assert callback.best_tau in DEFAULT_TAU_GRID
    assert results[f"{key}/best_tau"] == pytest.approx(callback.best_tau)  # logged as float32
    assert results[f"{key}/balanced_acc"] == pytest.approx(max(r["all"] for r in callback.sweep))
    assert (tmp_path / "tau_sweep.csv").exists()
    assert "predict_logits" not in vars(model)

    batches = list(dm.test_dataloader())
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    model.eval()
    with torch.no_grad():
        if cls is TauNormalization:
            weight = model.classifier_head().weight
            logits = tau_normalized_logits(model.classifier_features(x), weight, callback.best_tau)
        else:
            pi = torch.tensor(dm.class_counts, dtype=torch.float64) / sum(dm.class_counts)
            logits = model(x) - torch.log(pi**callback.best_tau + 1e-12).float()
    assert results["test/balanced_acc"] == pytest.approx(balanced_accuracy(logits, y), abs=1e-6)
    assert results["test/balanced_acc"] > 0.3  # a trained model, not chance
    assert results["test/acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean()), abs=1e-6)


# ---------------------------------------------------------------------------------------------- the README's CLI
def test_cli_test_from_a_checkpoint_with_auto_tau(tmp_path):
    from lt_lightning.cli import build_cli

    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    fit = build_cli(["fit", f"--trainer.default_root_dir={tmp_path}", *quiet, "--trainer.max_epochs=1"])
    checkpoint = Path(fit.trainer.log_dir) / "checkpoints" / "last.ckpt"
    cli = build_cli(
        ["test", f"--ckpt_path={checkpoint}", f"--trainer.default_root_dir={tmp_path / 'test'}", *quiet]
        + ["--trainer.callbacks+=lt_lightning.callbacks.PostHocLogitAdjustment", "--trainer.callbacks.tau=auto"]
        + ["--data.init_args.val_per_class", "20"]
    )
    callback = next(cb for cb in cli.trainer.callbacks if isinstance(cb, PostHocLogitAdjustment))
    assert callback.tau == "auto" and callback.best_tau in DEFAULT_TAU_GRID
    assert len(cli.datamodule.val_set) == 200  # 20 per class, not the test set
    assert cli.trainer.callback_metrics["test/logit_adjustment/best_tau"] == pytest.approx(callback.best_tau)
    assert len(read_csv(Path(cli.trainer.log_dir) / "tau_sweep.csv")) == 21


def test_cli_auto_without_a_validation_split_is_one_line(tmp_path, capsys):
    from lt_lightning.cli import build_cli, main

    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    fit = build_cli(["fit", f"--trainer.default_root_dir={tmp_path}", *quiet, "--trainer.max_epochs=1"])
    checkpoint = Path(fit.trainer.log_dir) / "checkpoints" / "last.ckpt"
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["test", f"--ckpt_path={checkpoint}", f"--trainer.default_root_dir={tmp_path / 'test'}", *quiet]
            + ["--trainer.callbacks+=lt_lightning.callbacks.TauNormalization", "--trainer.callbacks.tau=auto"]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "val_per_class" in err[0] and "Traceback" not in err[0], err


# ---------------------------------------------------------------------------------------------- when it applies
class ValidationRecorder(LinearProbe):
    """Records the validation predictions; trains with lr 0 (the weights never change)."""

    def __init__(self, fail_in_test: bool = False):
        super().__init__()
        self.seen: list[list[int]] = []
        self.fail_in_test = fail_in_test

    def training_step(self, batch, batch_idx):
        return self.head(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.seen.append(self.predict_logits(batch[0]).argmax(dim=1).tolist())

    def test_step(self, batch, batch_idx):
        assert "predict_logits" in vars(self)  # patched during the stage
        if self.fail_in_test:
            raise RuntimeError("boom")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_applies_in_validate_not_in_the_validation_inside_fit_and_restores_on_exceptions(tmp_path):
    data = TensorDataset(torch.tensor([[1.0, 1.1]]), torch.tensor([1]))
    module = ValidationRecorder()
    trainer = cpu_trainer(tmp_path, callbacks=[TauNormalization(tau=1.0)], num_sanity_val_steps=0)
    trainer.fit(module, DataLoader(data), DataLoader(data))
    trainer.validate(module, DataLoader(data))
    assert module.seen == [[0], [1]]  # fit's validation: the raw head; trainer.validate: τ = 1
    assert "predict_logits" not in vars(module)

    failing = ValidationRecorder(fail_in_test=True)
    with pytest.raises(RuntimeError, match="boom"):
        cpu_trainer(tmp_path, callbacks=[PostHocLogitAdjustment(priors=[0.5, 0.5])]).test(failing, DataLoader(data))
    assert "predict_logits" not in vars(failing)  # restored by on_exception


# ---------------------------------------------------------------------------------------------- lt_lightning methods
@pytest.mark.parametrize("backbone", ["small_cnn", "bbn"])
def test_tau_norm_on_lt_lightning_methods_uses_their_classifier_hooks(tmp_path, backbone):
    from lt_lightning.methods import BBN

    torch.manual_seed(0)
    counts = (50, 20, 5)
    model = (
        BBN(counts, backbone="small_cnn", in_chans=1) if backbone == "bbn" else LongTailClassifier(counts, in_chans=1)
    )
    with torch.no_grad():  # a bias and uneven row norms, so that both matter
        model.classifier_head().bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
        model.classifier_head().weight.mul_(torch.tensor([[3.0], [1.0], [0.2]]))
    plain = torch.cat(cpu_trainer(tmp_path).predict(model, digit_images()))
    same = TauNormalization(tau=0.0, keep_bias=True)  # τ = 0 with the bias: the model itself
    assert torch.allclose(torch.cat(cpu_trainer(tmp_path, callbacks=[same]).predict(model, digit_images())), plain)

    adjusted = torch.cat(cpu_trainer(tmp_path, callbacks=[TauNormalization(tau=1.0)]).predict(model, digit_images()))
    model.eval()
    with torch.no_grad():
        x = next(iter(digit_images()))[0]
        expected = tau_normalized_logits(model.classifier_features(x), model.classifier_head().weight, 1.0)
    assert torch.allclose(adjusted, expected.softmax(dim=1), atol=1e-6)
    assert not torch.allclose(adjusted, plain, atol=1e-3)
