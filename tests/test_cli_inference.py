"""Issue 12, items 4, 5, 7 and 10 through the real entry point: predict / test from a checkpoint alone, a loss given
by class_path, ``last.ckpt`` by default, and configuration errors as one line."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lt_lightning.cli import build_cli, main, with_default_classes
from lt_lightning.cli_errors import ConfigError
from lt_lightning.data import InferenceDataModule
from lt_lightning.losses import LDAMLoss
from lt_lightning.methods import LongTailClassifier
from tests.data.fake_data import write_imagefolder

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _fit(tmp_path: Path, *extra: str):
    return build_cli(["fit", f"--trainer.default_root_dir={tmp_path}", *QUIET, *extra])


def _last(cli) -> Path:
    return Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def test_fit_keeps_last_ckpt_by_default(tmp_path):
    cli = _fit(tmp_path, "--trainer.max_epochs=1")
    assert _last(cli).is_file()  # the README's resume / test example points at it


def test_fit_respects_an_explicit_save_last_false(tmp_path):
    cli = _fit(
        tmp_path,
        "--trainer.max_epochs=1",
        "--trainer.callbacks+=ModelCheckpoint",
        "--trainer.callbacks.save_last=false",
    )
    assert not _last(cli).exists()


def test_checkpoint_records_class_path_and_preprocessing(tmp_path):
    cli = _fit(tmp_path, "--trainer.max_epochs=1")
    checkpoint = torch.load(_last(cli), map_location="cpu", weights_only=True)  # plain types only
    meta = checkpoint["lt_lightning"]
    assert meta["module_class"] == "lt_lightning.methods.base.LongTailClassifier"
    assert meta["class_counts"] == list(cli.datamodule.class_counts)
    assert meta["preprocessing"] == {
        "mean": [0.305143],
        "std": [0.375894],
        "image_size": 8,
        "in_chans": 1,
        "dataset": "digits",
    }
    model = LongTailClassifier.load_from_checkpoint(_last(cli), map_location="cpu")
    assert model.preprocessing == meta["preprocessing"]


def test_loss_by_class_path_from_yaml(tmp_path):
    config = tmp_path / "loss.yaml"
    config.write_text(
        "model:\n  init_args:\n    loss:\n      class_path: lt_lightning.losses.LDAMLoss\n"
        "      init_args:\n        max_margin: 0.3\n        scale: 10\n"
    )
    cli = _fit(tmp_path, f"--config={config}", "--trainer.max_epochs=1")
    loss = cli.model.criterion
    assert isinstance(loss, LDAMLoss) and loss.scale == 10.0
    # class_counts were filled in: the largest margin (0.3) belongs to the rarest class
    assert loss.margins.max().item() == pytest.approx(0.3) and int(loss.margins.argmax()) == 9
    assert type(cli.model.backbone.head).__name__ == "NormedLinear"  # head "auto" follows the loss
    restored = LongTailClassifier.load_from_checkpoint(_last(cli), map_location="cpu")
    assert isinstance(restored.criterion, LDAMLoss) and restored.criterion.scale == 10.0


def test_bad_loss_mapping_is_refused_where_it_enters():
    with pytest.raises(ValueError, match="needs 'class_path'"):
        LongTailClassifier((5, 2), loss={"init_args": {}})
    with pytest.raises(ValueError, match="cannot be imported"):
        LongTailClassifier((5, 2), loss={"class_path": "lt_lightning.losses.NoSuchLoss"})


def test_no_args_and_command_line_warning(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["lt-lightning", "fit", "--trainer.fast_dev_run=true", *QUIET])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["fit", "--trainer.fast_dev_run=true", f"--trainer.default_root_dir={tmp_path}", *QUIET])
    assert not [w for w in caught if "args parameter" in str(w.message)]


def test_a_bad_value_is_one_line_naming_the_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--data.init_args.dataset=foo"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lt-lightning: error: --data.init_args.dataset: dataset must be one of [")
    assert err[-1].endswith("got 'foo'") and "Namespace" not in "\n".join(err)


def test_build_cli_raises_the_clean_error_as_a_value_error():
    with pytest.raises(ConfigError, match=r"^--data.init_args.imbalance_ratio: imbalance_ratio must be"):
        build_cli(["fit", "--data.init_args.imbalance_ratio=0.5"])


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["test", f"--ckpt_path={tmp_path / 'nope.ckpt'}"])
    assert "--ckpt_path: " in capsys.readouterr().err


def _write_pngs(folder: Path, count: int, size=(6, 5)) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        path = folder / f"new{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_predict_from_checkpoint_alone_after_the_training_data_is_gone(tmp_path):
    data = tmp_path / "data"
    write_imagefolder(data, n_per_class=4)
    cli = _fit(
        tmp_path,
        "--trainer.max_epochs=1",
        "--data.init_args.dataset=imagefolder",
        f"--data.init_args.root={data}",
        "--data.init_args.profile=none",
        "--data.init_args.image_size=8",
    )
    ckpt = _last(cli)
    shutil.rmtree(data)
    paths = _write_pngs(tmp_path / "new" / "nested", 5)
    out = build_cli(
        ["predict", f"--ckpt_path={ckpt}", f"--data.path={tmp_path / 'new'}", f"--trainer.default_root_dir={tmp_path}"]
        + QUIET
    )
    assert isinstance(out.datamodule, InferenceDataModule) and not out.datamodule.labelled
    assert type(out.model) is LongTailClassifier and out.model.class_names == ("cat", "dog", "emu")
    with (Path(out.trainer.log_dir) / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    assert {"index", "prediction", "class_name", "probability", "top2_class", "top3_probability"} <= set(rows[0])
    # The same preprocessing as training (resize to 8, ImageNet mean / std) and the trained weights.
    model = LongTailClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    x = torch.stack([out.datamodule.predict_set[i] for i in range(5)])
    assert x.shape == (5, 3, 8, 8)
    with torch.no_grad():
        probs = model(x).softmax(1)
    assert [int(r["prediction"]) for r in rows] == probs.argmax(1).tolist()
    torch.testing.assert_close(
        torch.tensor([float(r["probability"]) for r in rows]), probs.max(1).values, atol=1e-5, rtol=0
    )


def test_test_from_checkpoint_restores_the_training_datamodule(tmp_path):
    cli = _fit(tmp_path, "--trainer.max_epochs=1", "--data.init_args.imbalance_ratio=20")
    again = build_cli(["test", f"--ckpt_path={_last(cli)}", f"--trainer.default_root_dir={tmp_path}", *QUIET])
    assert (
        again.datamodule.hparams.imbalance_ratio == 20 and again.datamodule.class_counts == cli.datamodule.class_counts
    )
    expected = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]["test/acc"]
    assert again.trainer.callback_metrics["test/acc"].item() == pytest.approx(expected)


def test_test_on_a_labelled_folder_and_refusal_of_an_unlabelled_one(tmp_path, capsys):
    cli = _fit(tmp_path, "--trainer.max_epochs=1")
    labelled = tmp_path / "labelled"
    for name in ("3", "7"):
        _write_pngs(labelled / name, 2, size=(8, 8))
    root = f"--trainer.default_root_dir={tmp_path}"
    out = build_cli(["test", f"--ckpt_path={_last(cli)}", f"--data.path={labelled}", root, *QUIET])
    assert out.datamodule.labelled and sorted(set(out.datamodule.dataset.targets.tolist())) == [3, 7]
    assert out.trainer.state.finished
    with pytest.raises(SystemExit):
        main(["validate", f"--ckpt_path={_last(cli)}", f"--data.path={labelled / '3'}", root, *QUIET])
    assert "validate needs labelled images" in capsys.readouterr().err


def test_default_classes_for_inference_come_from_the_checkpoint(tmp_path):
    cli = _fit(tmp_path, "--trainer.max_epochs=1")
    args = with_default_classes(["predict", f"--ckpt_path={_last(cli)}", "--data.path=x"])
    assert args[1:3] == [
        "--model=lt_lightning.methods.LongTailClassifier",
        "--data=lt_lightning.data.InferenceDataModule",
    ]
    args = with_default_classes(["test", f"--ckpt_path={_last(cli)}"])
    assert args[2].startswith('--data={"class_path": "lt_lightning.data.LongTailDataModule"')
