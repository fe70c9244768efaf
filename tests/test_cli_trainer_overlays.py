"""The multi-GPU / multi-node trainer overlays in ``examples/trainer/`` are valid configs for ``lt-lightning``: each
parses as a second ``--config`` on top of a preset (with accelerator, devices, nodes, precision and strategy put back
to one CPU process, the only thing this machine can run), and ``ScaleLearningRate`` can be appended from the
command line as their comments say."""

from pathlib import Path

import pytest
import yaml

from lt_lightning.callbacks import ScaleLearningRate
from lt_lightning.cli import build_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
OVERLAYS = EXAMPLES / "trainer"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
ON_CPU = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.num_nodes=1",
    "--trainer.precision=32-true",
    "--trainer.strategy=auto",
    "--trainer.sync_batchnorm=false",  # SyncBatchNorm needs GPU modules (LIGHTNING_NOTES D.12)
]
EXPECTED = {
    "gpu1.yaml": {"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed"},
    "gpus8.yaml": {
        "accelerator": "gpu",
        "devices": 8,
        "num_nodes": 1,
        "strategy": "ddp",
        "sync_batchnorm": True,
        "precision": "bf16-mixed",
        "use_distributed_sampler": True,
    },
    "nodes.yaml": {
        "accelerator": "gpu",
        "devices": 8,
        "num_nodes": 2,
        "strategy": "ddp",
        "sync_batchnorm": True,
        "precision": "bf16-mixed",
        "use_distributed_sampler": True,
    },
}


def test_every_overlay_is_covered():
    assert sorted(p.name for p in OVERLAYS.glob("*.yaml")) == sorted(EXPECTED)


# Appended to the preset's callbacks: Lightning reads the bar's metrics at every refresh (a GPU sync each time).
PROGRESS_BAR = [{"class_path": "lightning.pytorch.callbacks.TQDMProgressBar", "init_args": {"refresh_rate": 50}}]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_overlay_is_trainer_only_with_the_documented_settings(name):
    text = (OVERLAYS / name).read_text()
    assert yaml.safe_load(text) == {"trainer": {**EXPECTED[name], "callbacks+": PROGRESS_BAR}}
    assert "batch_size" in text and "global" in text  # the header says how the global batch is formed


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_overlay_appends_a_slow_progress_bar_and_keeps_the_presets_callbacks(tmp_path, name):
    args = ["--config", str(EXAMPLES / "cifar100_lt_ce_drw.yaml"), "--config", str(OVERLAYS / name)]
    config = build_cli(["--config", str(EXAMPLES / "digits_ce.yaml"), *QUIET], run=False).parser.parse_args(args)
    paths = [cb.class_path for cb in config.trainer.callbacks]
    assert paths == ["lt_lightning.callbacks.DeferredReweighting", "lightning.pytorch.callbacks.TQDMProgressBar"]
    assert config.trainer.callbacks[1].init_args.refresh_rate == 50


def test_overlay_progress_bar_is_dropped_when_the_bar_is_off(tmp_path):
    # Lightning refuses a progress-bar callback with enable_progress_bar=False; the CLI leaves it out instead.
    base = ["--config", str(EXAMPLES / "digits_ce.yaml"), "--config", str(OVERLAYS / "gpu1.yaml"), *ON_CPU]
    off = build_cli([*base, f"--trainer.default_root_dir={tmp_path}", *QUIET], run=False)
    assert not any(type(cb).__name__ == "TQDMProgressBar" for cb in off.trainer.callbacks)
    on = build_cli([*base, f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_model_summary=false"], run=False)
    (bar,) = [cb for cb in on.trainer.callbacks if type(cb).__name__ == "TQDMProgressBar"]
    assert bar.refresh_rate == 50


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_overlay_parses_on_top_of_a_preset(tmp_path, name):
    cli = build_cli(
        ["--config", str(EXAMPLES / "digits_ce.yaml"), "--config", str(OVERLAYS / name)]
        + ON_CPU
        + [f"--trainer.default_root_dir={tmp_path}", *QUIET],
        run=False,
    )
    assert cli.config.trainer.use_distributed_sampler is True
    assert cli.config.trainer.max_epochs == 30  # the preset's own settings survive the overlay
    assert cli.config.data.init_args.batch_size == 128
    assert cli.trainer.world_size == 1 and cli.trainer.precision == "32-true"


def test_overlay_values_reach_the_parser_unchanged():
    """Without the CPU overrides (nothing is instantiated: parsing only), the overlay's values are what the parser
    holds, including the later file winning over the preset's ``accelerator: cpu``."""
    parser = build_cli(["--config", str(EXAMPLES / "digits_ce.yaml"), *QUIET], run=False).parser
    config = parser.parse_args(["--config", str(EXAMPLES / "digits_ce.yaml"), "--config", str(OVERLAYS / "nodes.yaml")])
    for key, value in EXPECTED["nodes.yaml"].items():
        assert config.trainer[key] == value, key


def test_fast_dev_run_with_scale_learning_rate_from_the_command_line(tmp_path):
    """``--trainer.callbacks+=...ScaleLearningRate`` then its arguments: batch 128 x 1 device x 1 vs reference 512
    gives x0.25 on the preset's SGD lr 0.1 (warm-up epoch 0: 0.1 / 5)."""
    cli = build_cli(
        [
            "fit",
            "--config",
            str(EXAMPLES / "digits_ce.yaml"),
            "--config",
            str(OVERLAYS / "gpu1.yaml"),
            *ON_CPU,
            "--trainer.callbacks+=lt_lightning.callbacks.ScaleLearningRate",
            "--trainer.callbacks.reference_batch_size=512",
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
            *QUIET,
        ]
    )
    scaling = [cb for cb in cli.trainer.callbacks if isinstance(cb, ScaleLearningRate)]
    assert len(scaling) == 1 and scaling[0].reference_batch_size == 512 and scaling[0].rule == "linear"
    assert scaling[0].global_batch_size == 128 and scaling[0].factor == 0.25
    assert cli.trainer.state.finished
    group = cli.trainer.optimizers[0].param_groups[0]
    assert group["initial_lr"] == pytest.approx(0.025, rel=1e-12)
