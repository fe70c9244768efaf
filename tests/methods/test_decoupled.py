"""Stage 2 (issue 14): ``ClassifierRetraining`` in its three modes on checkpoints of every stage-1 method.

Checked against exact answers: LWS and MARC at start reproduce the stage-1 logits bit for bit, MARC with ω = 0 and
β = 1 gives the head's row norms, cRT leaves every stage-1 parameter bit-identical (and the BatchNorm buffers too with
``bn_mode="eval"``, while ``"train"`` re-estimates them), only the stage-2 numbers train (C·D + C, C, 2C), a stage-2
checkpoint reloads without the stage-1 file, and every bad input is one clear error."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn

from lt_lightning.data.datamodule import LongTailDataModule
from lt_lightning.methods import ABSGD, BBN, LDAMDRW, ClassifierRetraining, LongTailClassifier, SAMClassifier
from lt_lightning.models.calibration_heads import LearnableWeightScaling, MarginCalibration
from tests.helpers import cpu_trainer

SMALL = {"backbone": "small_cnn", "backbone_kwargs": {"width": 8}}
STAGE1 = {
    "ce": (LongTailClassifier, {}),
    "ldam_drw": (LDAMDRW, {}),
    "bbn": (BBN, {}),
    "sam": (SAMClassifier, {}),
    "absgd": (ABSGD, {}),
}


def digits(**kwargs) -> LongTailDataModule:
    return LongTailDataModule(dataset="digits", batch_size=64, **kwargs)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A real checkpoint of each stage-1 method: 2 epochs of 2 batches on the digits default."""
    root = tmp_path_factory.mktemp("stage1")
    paths = {}
    for name, (cls, extra) in STAGE1.items():
        dm = digits(rebalancing_sampler="reversed" if cls is BBN else None)
        torch.manual_seed(0)
        model = cls(dm.class_counts, in_chans=dm.in_chans, class_names=dm.class_names, **SMALL, **extra)
        trainer = cpu_trainer(root / name, max_epochs=2, limit_train_batches=2, limit_val_batches=1)
        trainer.fit(model, datamodule=dm)
        paths[name] = root / f"{name}.ckpt"
        trainer.save_checkpoint(paths[name])
    return paths


def inputs(n: int = 16) -> torch.Tensor:
    dm = digits()
    return torch.stack([dm.test_set[i][0] for i in range(n)])


def stage1_logits(path: Path, x: torch.Tensor) -> torch.Tensor:
    from lt_lightning.checkpoints import load_trained_module

    with torch.no_grad():
        return load_trained_module(path).predict_logits(x)


# ----------------------------------------------------------------- any method loads; identity at start
@pytest.mark.parametrize("method", list(STAGE1))
def test_lws_and_marc_at_start_reproduce_every_stage1_method_exactly(checkpoints, method):
    x = inputs()
    expected = stage1_logits(checkpoints[method], x)
    for mode, trained in (("lws", 10), ("marc", 20)):
        model = ClassifierRetraining(checkpoints[method], mode=mode).eval()
        with torch.no_grad():
            assert torch.equal(model.predict_logits(x), expected), (method, mode)
        assert model.num_trainable_parameters() == trained
        assert type(model.stage1).__name__ == STAGE1[method][0].__name__


@pytest.mark.parametrize("method", list(STAGE1))
def test_crt_runs_one_step_on_every_stage1_method(checkpoints, method, tmp_path):
    model = ClassifierRetraining(checkpoints[method], mode="crt")
    features = model.backbone.num_features  # BBN: both branches, 2D
    assert model.num_trainable_parameters() == 10 * features + 10
    assert isinstance(model.backbone.head, nn.Linear)  # LDAM's cosine stage-1 head is replaced by a linear one
    cpu_trainer(tmp_path, fast_dev_run=True).fit(model, datamodule=digits(sampler="class_balanced"))


def test_marc_with_omega_0_and_beta_1_gives_the_row_norms_of_the_stage1_head(checkpoints):
    model = ClassifierRetraining(checkpoints["ce"], mode="marc").eval()
    head = model.backbone.head
    assert isinstance(head, MarginCalibration)
    with torch.no_grad():
        head.omega.zero_()
        head.beta.fill_(1.0)
        logits = model.predict_logits(inputs(4))
    norms = model.stage1.backbone.head.weight.norm(dim=1)
    assert torch.equal(logits, norms.expand(4, -1))
    # The norms grow with the class size after CE on long-tailed data: that is what β calibrates.
    assert [n.requires_grad for n in (head.omega, head.beta, head.weight_norms)] == [True, True, False]


# ----------------------------------------------------------------- frozen means frozen
def _stage1_state(model: ClassifierRetraining) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.stage1.state_dict().items()}


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_crt_leaves_the_stage1_model_bit_identical(checkpoints, tmp_path, bn_mode):
    torch.manual_seed(0)
    model = ClassifierRetraining(checkpoints["ce"], mode="crt", bn_mode=bn_mode)
    before = _stage1_state(model)
    head_before = model.backbone.head.weight.detach().clone()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"backbone.head.weight", "backbone.head.bias"}
    cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=1).fit(
        model, datamodule=digits(sampler="class_balanced")
    )
    after = model.stage1.state_dict()
    buffers = {k for k in before if "running_" in k or "num_batches_tracked" in k}
    assert buffers, "the small CNN has BatchNorm"
    for key, value in before.items():
        if key in buffers and bn_mode == "train":
            continue
        assert torch.equal(after[key], value), key
    changed = [k for k in buffers if "running_mean" in k and not torch.equal(after[k], before[k])]
    assert bool(changed) == (bn_mode == "train")  # the official code re-estimates the statistics in stage 2
    assert not torch.equal(model.backbone.head.weight, head_before)  # the new head trained
    stage1_head = model.stage1.backbone.head.weight
    assert not torch.equal(model.backbone.head.weight, stage1_head)  # re-initialised, not the stage-1 head


def test_lws_and_marc_train_only_their_numbers(checkpoints, tmp_path):
    for mode, names in (("lws", ["scales"]), ("marc", ["omega", "beta"])):
        model = ClassifierRetraining(checkpoints["bbn"], mode=mode, bn_mode="eval")
        before = _stage1_state(model)
        cpu_trainer(tmp_path / mode, max_epochs=1, limit_train_batches=3, limit_val_batches=1).fit(
            model, datamodule=digits(sampler="class_balanced")
        )
        for key, value in model.stage1.state_dict().items():
            assert torch.equal(value, before[key]), (mode, key)
        head = model.backbone.head
        assert isinstance(head, LearnableWeightScaling | MarginCalibration)
        moved = [
            n for n in names if not torch.equal(getattr(head, n), torch.ones(10) if n != "beta" else torch.zeros(10))
        ]
        assert moved == names, mode


# ----------------------------------------------------------------- recipe, checkpoints, warnings
def test_default_recipe_is_the_official_one(checkpoints, tmp_path):
    model = ClassifierRetraining(checkpoints["ce"])
    trainer = cpu_trainer(tmp_path, max_epochs=10)
    model.trainer = trainer
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD)
    assert {k: optimizer.defaults[k] for k in ("lr", "momentum", "weight_decay")} == {
        "lr": 0.2,
        "momentum": 0.9,
        "weight_decay": 5e-4,
    }
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR) and scheduler.T_max == 10
    assert scheduler.eta_min == 0.0
    assert model.hparams.bn_mode == "train" and model.hparams.mode == "crt"


def test_instance_sampler_warns(checkpoints, tmp_path):
    model = ClassifierRetraining(checkpoints["ce"], mode="lws")
    with pytest.warns(UserWarning, match="class_aware_cycle"):
        cpu_trainer(tmp_path, fast_dev_run=True).fit(model, datamodule=digits())
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*instance.*sampler")
        cpu_trainer(tmp_path, fast_dev_run=True).fit(model, datamodule=digits(sampler="class_balanced"))


def test_a_stage2_checkpoint_reloads_without_the_stage1_file(checkpoints, tmp_path):
    stage1 = tmp_path / "stage1.ckpt"
    stage1.write_bytes(checkpoints["ldam_drw"].read_bytes())
    model = ClassifierRetraining(stage1, mode="marc")
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=digits(sampler="class_balanced"))
    trainer.save_checkpoint(tmp_path / "stage2.ckpt")
    stage1.unlink()
    again = ClassifierRetraining.load_from_checkpoint(tmp_path / "stage2.ckpt", map_location="cpu").eval()
    x = inputs()
    with torch.no_grad():
        assert torch.equal(again.predict_logits(x), model.eval().predict_logits(x))
    assert type(again.stage1) is LDAMDRW and again.preprocessing == model.preprocessing


# ----------------------------------------------------------------- a foreign stage-1 model
class ForeignClassifier(L.LightningModule):
    """A user's own LightningModule: no lt_lightning base, an ``fc`` head."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.BatchNorm1d(width), nn.ReLU())
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        return self.fc(self.body(x))


def test_a_foreign_lightning_module_with_its_class_named(tmp_path):
    torch.manual_seed(0)
    foreign = ForeignClassifier()
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": foreign.state_dict(), "hyper_parameters": {"width": 6}}, path)
    with pytest.raises(ValueError, match="records no module class.*stage1_class"):
        ClassifierRetraining(path, class_counts=digits().class_counts)
    model = ClassifierRetraining(
        path, class_counts=digits().class_counts, mode="lws", stage1_class=f"{__name__}.ForeignClassifier"
    ).eval()
    x = inputs()
    with torch.no_grad():
        assert torch.equal(model.predict_logits(x), foreign.eval()(x))
    cpu_trainer(tmp_path, fast_dev_run=True).fit(model, datamodule=digits(sampler="class_balanced"))


# ----------------------------------------------------------------- bad input, one clear line each
def test_bad_input_is_refused_where_it_enters(checkpoints, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint '.*nope.ckpt' does not exist"):
        ClassifierRetraining(tmp_path / "nope.ckpt")
    with pytest.raises(ValueError, match="checkpoint is required"):
        ClassifierRetraining()
    (tmp_path / "junk.ckpt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        ClassifierRetraining(tmp_path / "junk.ckpt")
    with pytest.raises(ValueError, match="is a 10-class model but the datamodule has 3 classes"):
        ClassifierRetraining(checkpoints["ce"], class_counts=(5, 3, 1))
    with pytest.raises(ValueError, match="in_chans is 3 .* takes 1-channel"):
        ClassifierRetraining(checkpoints["ce"], in_chans=3)
    with pytest.raises(ValueError, match=r"mode must be one of \['crt', 'lws', 'marc'\], got 'tau'"):
        ClassifierRetraining(checkpoints["ce"], mode="tau")
    with pytest.raises(ValueError, match=r"bn_mode must be one of \['train', 'eval'\], got 'frozen'"):
        ClassifierRetraining(checkpoints["ce"], bn_mode="frozen")
    with pytest.raises(ValueError, match="stage1_class 'no.such.Module' does not import"):
        ClassifierRetraining(checkpoints["ce"], stage1_class="no.such.Module")
    with pytest.raises(
        ValueError,
        match=r"does not hold the weights of lt_lightning.methods.BBN: \d+ missing keys \(e.g. 'rb_branch.*'\)",
    ):
        ClassifierRetraining(checkpoints["ce"], stage1_class="lt_lightning.methods.BBN")


@pytest.mark.ddp
def test_crt_under_two_process_ddp_keeps_the_stage1_model_frozen(checkpoints, tmp_path):
    """Frozen parameters need no gradient sync (no unused-parameter error); the trained head comes back to the parent
    (rank 0's weights) and the stage-1 model is untouched."""
    torch.manual_seed(0)
    model = ClassifierRetraining(str(checkpoints["ldam_drw"]), mode="marc", bn_mode="eval")
    before = _stage1_state(model)
    trainer = cpu_trainer(
        tmp_path, devices=2, strategy="ddp_spawn", max_epochs=1, limit_train_batches=3, limit_val_batches=1
    )
    trainer.fit(model, datamodule=digits(sampler="class_aware_cycle"))
    for key, value in model.stage1.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(model.backbone.head.omega, torch.ones(10))


def test_the_readme_recipe_through_the_command_line(tmp_path, monkeypatch):
    """Stage 1 with the CLI, stage 2 from its checkpoint with the CLI, then test from the stage-2 checkpoint alone."""
    from lt_lightning.cli import build_cli

    monkeypatch.chdir(tmp_path)
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.max_epochs=1"]
    stage1 = build_cli(
        ["fit", "--trainer.default_root_dir=runs/ce", *quiet, "--model.init_args.backbone_kwargs={width: 8}"]
    )
    ckpt = Path(stage1.trainer.log_dir) / "checkpoints" / "last.ckpt"
    stage2 = build_cli(
        ["fit", "--model=ClassifierRetraining", f"--model.init_args.checkpoint={ckpt}", "--model.init_args.mode=lws"]
        + ["--data.init_args.sampler=class_aware_cycle", "--trainer.default_root_dir=runs/lws", *quiet]
    )
    assert type(stage2.model) is ClassifierRetraining and stage2.model.hparams.stage1["class_path"].endswith(
        "LongTailClassifier"
    )
    # The stage-1 model recorded its own arguments, not stage 2's (the CLI's given-hyper-parameters context).
    assert stage2.model.stage1.hparams.backbone_kwargs == {"width": 8}
    last = Path(stage2.trainer.log_dir) / "checkpoints" / "last.ckpt"
    ckpt.unlink()
    tested = build_cli(["test", f"--ckpt_path={last}", "--trainer.default_root_dir=runs/test", *quiet])
    expected = stage2.trainer.test(stage2.model, datamodule=stage2.datamodule, verbose=False)[0]["test/acc"]
    assert tested.trainer.callback_metrics["test/acc"].item() == pytest.approx(expected)


def test_stage2_on_a_stage2_checkpoint(checkpoints, tmp_path):
    """MARC on top of a cRT model: a ClassifierRetraining checkpoint is a stage-1 model like any other (its
    hyper-parameters hold base-class arguments its __init__ does not take; they are dropped when it is rebuilt)."""
    crt = ClassifierRetraining(checkpoints["ce"], mode="crt")
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(crt, datamodule=digits(sampler="class_balanced"))
    trainer.save_checkpoint(tmp_path / "crt.ckpt")
    marc = ClassifierRetraining(tmp_path / "crt.ckpt", mode="marc").eval()
    x = inputs()
    with torch.no_grad():
        assert torch.equal(marc.predict_logits(x), crt.eval().predict_logits(x))
    assert type(marc.stage1) is ClassifierRetraining and marc.num_trainable_parameters() == 20


def test_post_hoc_callbacks_on_stage2_models(checkpoints, tmp_path):
    """τ-norm needs a W f + b head: LWS / MARC heads are refused when the stage starts; logit adjustment on a stage-2
    model (re-trained on a balanced stream) warns that it may adjust twice."""
    from lt_lightning.callbacks import PostHocLogitAdjustment, TauNormalization

    lws = ClassifierRetraining(checkpoints["ce"], mode="lws")
    with pytest.raises(TypeError, match="LearnableWeightScaling; this method needs a linear head"):
        cpu_trainer(tmp_path, callbacks=[TauNormalization(tau=1.0)]).test(lws, datamodule=digits())
    crt = ClassifierRetraining(checkpoints["ce"], mode="crt")
    with pytest.warns(UserWarning, match="may adjust twice"):
        cpu_trainer(tmp_path, callbacks=[PostHocLogitAdjustment(tau=1.0)], limit_test_batches=1).test(
            crt, datamodule=digits()
        )
