"""End to end through the real entry point ``lt_lightning.cli.main`` (the ``lt-lightning`` console script)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
import yaml

from lt_lightning.cli import build_cli, main, with_default_classes
from lt_lightning.data.device_data import IndexBatch
from lt_lightning.generators import MUNIT_CONFIGS, MUNITGenerator, save_generator
from lt_lightning.methods import LongTailClassifier
from tests.data.fake_data import write_cifar10, write_cifar100, write_imagefolder, write_k49, write_npz
from tests.data.fake_split_lists import write_imagenet_lt, write_inat2018, write_places_lt

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _fit(tmp_path: Path, *extra: str):
    return build_cli(["fit", f"--trainer.default_root_dir={tmp_path}", *QUIET, *extra])


def test_fit_embedded_default_two_epochs(tmp_path):
    cli = _fit(tmp_path, "--trainer.max_epochs=2")
    metrics = cli.trainer.callback_metrics
    # 10 balanced test classes: chance is 0.1.
    assert metrics["val/acc"] > 0.2 and metrics["val/balanced_acc"] > 0.2
    log_dir = Path(cli.trainer.log_dir)
    with (log_dir / "per_class_val.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["class"]) for r in rows] == list(range(10))
    assert [int(r["train_count"]) for r in rows] == list(cli.datamodule.class_counts)
    assert all(int(r["support"]) == 40 for r in rows)
    assert (log_dir / "per_class_val.png").stat().st_size > 1000
    assert (log_dir / "config.yaml").exists()
    # the datamodule's counts reached the model without being repeated anywhere
    assert cli.model.class_counts == cli.datamodule.class_counts
    assert cli.model.hparams.in_chans == 1


def test_checkpoint_predicts_without_the_datamodule(tmp_path):
    cli = _fit(tmp_path, "--trainer.max_epochs=1")
    ckpt = next(Path(cli.trainer.log_dir).rglob("*.ckpt"))
    model = LongTailClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    assert model.class_counts == cli.datamodule.class_counts
    model.eval()
    x = torch.stack([cli.datamodule.test_set[i][0] for i in range(4)])
    with torch.no_grad():
        probs = model.predict_step((x, None), 0)
        expected = cli.model.cpu().eval()(x).softmax(1)
    torch.testing.assert_close(probs, expected)


def test_predict_subcommand_from_checkpoint(tmp_path):
    cli = _fit(tmp_path, "--trainer.max_epochs=1")
    ckpt = next(Path(cli.trainer.log_dir).rglob("*.ckpt"))
    out = build_cli(["predict", f"--ckpt_path={ckpt}", f"--trainer.default_root_dir={tmp_path}", *QUIET])
    assert out.trainer.state.finished


def test_console_script_main_returns_none(tmp_path):
    assert main(["fit", "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}", *QUIET]) is None


def test_print_config_lists_linked_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "lt_lightning.methods.LongTailClassifier"
    assert printed["data"]["init_args"]["dataset"] == "digits"
    assert "class_counts" not in printed["model"]["init_args"]  # linked from the datamodule


def test_unknown_loss_and_backbone_names_are_listed(tmp_path):
    with pytest.raises(ValueError, match=r"loss must be one of \[.*'ldam'.*\].*got 'ldma'"):
        _fit(tmp_path, "--trainer.fast_dev_run=true", "--model.init_args.loss=ldma")
    with pytest.raises(ValueError, match=r"resnet32.*got|unknown backbone|not a known"):
        _fit(tmp_path, "--trainer.fast_dev_run=true", "--model.init_args.backbone=resnet_nope")


def _write_fake(dataset: str, root: Path) -> None:
    # Enough images per class that rho = 100 keeps at least one image in the tail class.
    if dataset == "cifar10":
        write_cifar10(root, n_per_class=100, n_test_per_class=1)
    elif dataset == "cifar100":
        write_cifar100(root, n_per_class=100, n_test_per_class=1)
    elif dataset == "imagefolder":
        write_imagefolder(root, n_per_class=3)
    elif dataset == "k49":
        write_k49(root, n_per_class=40)  # 30 validation images per class + reuse-filled training images
    elif dataset == "imagenet_lt":
        write_imagenet_lt(root, num_classes=3, per_class=(6, 4, 2))
    elif dataset == "places_lt":
        write_places_lt(root)
    elif dataset == "inat2018":
        write_inat2018(root)


# The 224-px presets run their real backbones (ResNet-50 / ResNeXt-50 / ResNet-152) at this crop side and batch 4:
# the config, the data path and the model are exercised, at a fraction of the CPU time of 224 px and batch 512.
LARGE_PRESET_SIDE = 32
LARGE_DATASETS = ("imagenet_lt", "places_lt", "inat2018")


def _stage1_preset(dataset: str) -> str:
    """The stage-1 preset a post-hoc preset of ``dataset`` is tested on."""
    if dataset == "digits" or dataset in LARGE_DATASETS:
        return f"{dataset}_ce"
    return f"{dataset}_lt_ce"


PRESETS = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
GEOMETRY = {"digits": (1, 8), "k49": (1, 28), "cifar10": (3, 32), "cifar100": (3, 32)}


def _write_tiny_generator(path: Path, dataset: str) -> None:
    """What step 1 of GIT (a NuisanceMUNIT preset) would have written, at the data's geometry, untrained."""
    in_chans, side = GEOMETRY[dataset]
    save_generator(MUNITGenerator(in_chans=in_chans, image_size=side, **MUNIT_CONFIGS["tiny"]["generator"]), path)


def _write_stage1_checkpoint(path: Path, preset_args: list[str]) -> None:
    """The checkpoint a stage-2 preset reads, ``runs/<stage-1 preset>/lightning_logs/version_0/checkpoints/...``,
    written (untrained) from that stage-1 preset with the same data arguments."""
    stage1_preset = EXAMPLES / f"{path.relative_to(path.parents[4]).parts[0]}.yaml"
    assert stage1_preset.is_file(), f"the stage-2 checkpoint path names no preset: {path}"
    args = [a if not a.startswith("--config=") else f"--config={stage1_preset}" for a in preset_args if a != "fit"]
    stage1_model = yaml.safe_load(stage1_preset.read_text())["model"].get("init_args", {})
    if stage1_model.get("backbone_kwargs", {}).get("pretrained"):
        args.append("--model.init_args.backbone_kwargs={pretrained: false}")  # no network in tests
    cli = build_cli(args, run=False)
    cli.trainer.strategy.connect(cli.model)
    path.parent.mkdir(parents=True, exist_ok=True)
    cli.trainer.save_checkpoint(path)


def test_every_preset_is_covered():
    assert {
        "digits_ce.yaml",
        "cifar10_lt_ldam.yaml",
        "cifar100_lt_cb_focal.yaml",
        "imagefolder_template.yaml",
        "digits_wandb_offline.yaml",
        "digits_rot_lt_ce.yaml",
        "digits_rot_lt_ce_drs.yaml",
        *(f"k49_{n}_lt_{m}.yaml" for n in ("rot", "bg", "dil") for m in ("ce", "ce_drs")),
        "digits_bg_lt_munit.yaml",
        *(f"{d}_munit.yaml" for d in ("k49_bg_lt", "k49_dil_lt", "cifar10_lt", "cifar100_lt")),
        "digits_bg_lt_ce_drs.yaml",
        "digits_bg_lt_ce_drs_git.yaml",
        "digits_rot_lt_ce_drs_git_oracle.yaml",
        *(f"k49_{n}_lt_ce_drs_git.yaml" for n in ("bg", "dil")),
        *(f"{c}_lt_{m}_git.yaml" for c in ("cifar10", "cifar100") for m in ("ce_drs", "ldam_drw")),
        *(f"{d}_{m}.yaml" for d in ("digits", "cifar10_lt", "cifar100_lt") for m in ("cdt", "cdt_drw", "mm_drw")),
        *(f"{d}_ce_drw_cmo.yaml" for d in ("digits", "cifar10_lt", "cifar100_lt")),
        *(f"{d}_dbn_mix.yaml" for d in ("digits", "cifar10_lt", "cifar100_lt")),
        *(
            f"{d}_{m}.yaml"
            for d in ("digits", "cifar10_lt", "cifar100_lt")
            for m in ("crt", "lws", "marc", "tau_norm", "logit_adjustment")
        ),
        *(f"{d}_ce_open.yaml" for d in ("digits", "cifar10_lt", "cifar100_lt")),
        *(f"{d}_open_sampling.yaml" for d in ("digits", "cifar10_lt", "cifar100_lt")),
        *(f"imagenet_lt_{m}.yaml" for m in ("ce", "ce_drw", "ldam_drw", "ce_drw_sam", "ldam_drw_sam", "crt", "lws")),
        *(f"imagenet_lt_{m}.yaml" for m in ("tau_norm", "logit_adjustment")),
        *(f"places_lt_{m}.yaml" for m in ("ce", "crt", "lws", "tau_norm")),
        *(f"inat2018_{m}.yaml" for m in ("ce", "ldam_drw", "ce_drw_sam", "ldam_drw_sam", "bbn", "crt", "tau_norm")),
    } <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_fast_dev_run(tmp_path, preset, monkeypatch):
    _fast_dev_run_preset(tmp_path, preset, monkeypatch)


# Presets of the in-memory datasets, which data_on_device serves. Every one of them runs with the flag in the slow
# suite (make test-slow); the default run takes one per kind of pipeline: paired streams + SAM, a batch-mixing
# callback, a static nuisance with GIT's generator callback, and a stage-2 model on a frozen stage-1 checkpoint.
def _preset_dataset(preset: str) -> str:
    return yaml.safe_load((EXAMPLES / preset).read_text())["data"]["init_args"]["dataset"]


ON_DEVICE_PRESETS = [p for p in PRESETS if _preset_dataset(p) in ("digits", "cifar10", "cifar100", "k49")]
ON_DEVICE_DEFAULT = ("digits_ldam_drw_sam.yaml", "digits_ce_drw_cmo.yaml", "k49_bg_lt_ce_drs_git.yaml")
ON_DEVICE_DEFAULT += ("digits_crt.yaml",)


@pytest.mark.parametrize(
    "preset", [p if p in ON_DEVICE_DEFAULT else pytest.param(p, marks=pytest.mark.slow) for p in ON_DEVICE_PRESETS]
)
def test_preset_fast_dev_run_with_data_on_device(tmp_path, preset, monkeypatch):
    _fast_dev_run_preset(tmp_path, preset, monkeypatch, "--data.init_args.data_on_device=true")


def test_the_on_device_presets_of_the_default_run_exist():
    assert set(ON_DEVICE_DEFAULT) <= set(ON_DEVICE_PRESETS)


def _fast_dev_run_preset(tmp_path, preset, monkeypatch, *extra: str) -> None:
    config = yaml.safe_load((EXAMPLES / preset).read_text())
    data = config["data"]["init_args"]
    args = [
        "fit",
        f"--config={EXAMPLES / preset}",
        "--trainer.fast_dev_run=true",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path}",
        "--data.init_args.num_workers=0",
        *QUIET,
        *extra,
    ]
    if data["dataset"] != "digits":
        _write_fake(data["dataset"], tmp_path / "data")
        args.append(f"--data.init_args.root={tmp_path / 'data'}")
    if data["dataset"] in LARGE_DATASETS:
        args += [f"--data.init_args.image_size={LARGE_PRESET_SIDE}", "--data.init_args.batch_size=4"]
        if (config.get("model") or {}).get("init_args", {}).get("backbone_kwargs", {}).get("pretrained"):
            args.append("--model.init_args.backbone_kwargs={pretrained: false}")  # no network in tests
    if data.get("aux_dataset") == "npz":  # the user-supplied OOD pool (Open-Sampling): a tiny one, CIFAR-shaped
        write_npz(tmp_path / "ood.npz", shape=(32, 32, 3), num_classes=1, n_per_class=8)
        args.append(f"--data.init_args.aux_root={tmp_path / 'ood.npz'}")
    # Generator presets write, and GIT presets read, generators/<name>.pt relative to the working directory.
    monkeypatch.chdir(tmp_path)
    for callback in config["trainer"].get("callbacks") or []:
        generator = callback.get("init_args", {}).get("generator", "")
        if callback["class_path"].endswith("GenerativeInvarianceTransfer") and generator.endswith(".pt"):
            _write_tiny_generator(tmp_path / generator, data["dataset"])
    if "model" not in config:  # a post-hoc preset (a callback applied at test): test a stage-1 checkpoint with it
        stage1_preset = _stage1_preset(data["dataset"])
        ckpt = tmp_path / "runs" / stage1_preset / "lightning_logs/version_0/checkpoints/last.ckpt"
        _write_stage1_checkpoint(ckpt, args)
        cli = build_cli(["test", *args[1:], f"--ckpt_path={ckpt}"])
        (callback,) = [
            cb for cb in cli.trainer.callbacks if type(cb).__name__ in ("TauNormalization", "PostHocLogitAdjustment")
        ]
        assert callback.best_tau in callback.grid and "test/balanced_acc" in cli.trainer.callback_metrics
        return
    stage1 = config["model"].get("init_args", {}).get("checkpoint")
    if stage1:  # a stage-2 preset: the stage-1 checkpoint its comment says how to make, untrained
        _write_stage1_checkpoint(tmp_path / stage1, args)
    logger = config["trainer"].get("logger")
    if logger and "Wandb" in logger["class_path"]:
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_DIR", str(tmp_path))
        # fast_dev_run replaces every logger by a DummyLogger: run one real (tiny) epoch instead.
        args += [
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.fast_dev_run=false",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1",
        ]
    cli = build_cli(args)
    assert cli.trainer.state.finished
    assert cli.model.num_classes == cli.datamodule.num_classes
    if "--data.init_args.data_on_device=true" in extra:
        assert cli.datamodule.hparams.data_on_device
        uses_loader = cli.datamodule.aux_set is not None or cli.datamodule.hparams.nuisance_mode == "oracle"
        assert uses_loader or isinstance(next(iter(cli.datamodule.train_dataloader())), IndexBatch)
    if logger and "Wandb" in logger["class_path"]:
        assert list(tmp_path.rglob("offline-run-*")), os.listdir(tmp_path)


@pytest.mark.parametrize(
    "args",
    [["--model=LDAMDRW"], ["--model", "lt_lightning.methods.LDAMDRW"], ["--config", "CONFIG"]],
)
def test_a_subclass_keeps_its_own_defaults(tmp_path, args, capsys):
    # Regression: a parser-level default class made jsonargparse carry LongTailClassifier's `loss: ce` and
    # `backbone: small_cnn` into LDAMDRW when a subclass was named, silently replacing LDAM-DRW's own defaults.
    config = tmp_path / "m.yaml"
    config.write_text("model:\n  class_path: lt_lightning.methods.LDAMDRW\n")
    args = [str(config) if a == "CONFIG" else a for a in args]
    with pytest.raises(SystemExit):
        main(["fit", *args, "--print_config"])
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    assert model["class_path"] == "lt_lightning.methods.LDAMDRW"
    assert model["init_args"]["loss"] == "ldam" and model["init_args"]["backbone"] == "resnet32"


def test_default_classes_are_added_only_when_unnamed(tmp_path):
    config = tmp_path / "d.yaml"
    config.write_text("data:\n  class_path: lt_lightning.data.LongTailDataModule\n")
    assert with_default_classes(["fit"]) == [
        "fit",
        "--model=lt_lightning.methods.LongTailClassifier",
        "--data=lt_lightning.data.LongTailDataModule",
    ]
    assert with_default_classes(["fit", "-c", str(config)]) == [
        "fit",
        "--model=lt_lightning.methods.LongTailClassifier",
        "-c",
        str(config),
    ]
    assert with_default_classes(["--help"]) == ["--help"]
    # setting init_args of the default class keeps the default class
    args = with_default_classes(["fit", "--model.init_args.loss=focal"])
    assert args[1] == "--model=lt_lightning.methods.LongTailClassifier" and args[-1] == "--model.init_args.loss=focal"
    # a config file that sets only init_args names no class either (jsonargparse >= 4.5x would otherwise resolve
    # them against the bare LightningModule and refuse every argument)
    only_args = tmp_path / "only_args.yaml"
    only_args.write_text("model:\n  init_args:\n    loss: focal\ndata:\n  init_args:\n    batch_size: 8\n")
    assert with_default_classes(["fit", "--config", str(only_args)])[1:3] == [
        "--model=lt_lightning.methods.LongTailClassifier",
        "--data=lt_lightning.data.LongTailDataModule",
    ]


def test_digits_rot_lt_preset_writes_ekld_csv_and_scatter(tmp_path):
    """lt-lightning fit with the Digits-ROT-LT preset (one real epoch, a small eKLD sample): CSV + scatter plot."""
    cli = build_cli(
        [
            "fit",
            f"--config={EXAMPLES / 'digits_rot_lt_ce.yaml'}",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=1",
            "--trainer.callbacks.init_args.images_per_class=4",
            "--trainer.callbacks.init_args.transforms_per_image=3",
            *QUIET,
        ]
    )
    assert cli.datamodule.nuisance is not None and cli.datamodule.class_counts[:3] == (114, 28, 12)
    log_dir = Path(cli.trainer.log_dir)
    with (log_dir / "ekld_fit.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["train_count"]) for r in rows] == list(cli.datamodule.class_counts)
    assert all(int(r["pairs"]) == 4 * 3 for r in rows) and all(float(r["ekld"]) >= 0 for r in rows)
    assert (log_dir / "ekld_fit.png").stat().st_size > 1000


def test_fit_prints_the_split_once(tmp_path, capsys):
    cli = _fit(tmp_path, "--trainer.fast_dev_run=true")
    out = capsys.readouterr().out
    header = "LongTailDataModule: digits, profile exponential (automatic: balanced benchmark pool, imbalance_ratio 10)"
    assert out.count(header) == 1 and out.count("LongTailDataModule:") == 1
    assert "  kept 544 of 1397 training-pool images (ratio 10.3)" in out
    assert cli.datamodule.class_counts == (134, 103, 80, 62, 48, 37, 28, 22, 17, 13)  # no-argument split unchanged
    assert cli.datamodule.hparams.profile == "exponential"  # the resolved profile, as logged and checkpointed
