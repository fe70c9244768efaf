"""NuisanceMUNIT: loss terms against the formulas, max_steps = 2 x iterations, the learning-rate schedule per
iteration, a short run lowering the reconstruction loss, fast_dev_run exporting generator.pt, CLI, bad input."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lt_lightning.cli import build_cli
from lt_lightning.data import LongTailDataModule
from lt_lightning.functional.munit import lsgan_discriminator_loss, lsgan_generator_loss
from lt_lightning.generators import MUNITGenerator, load_generator
from lt_lightning.methods import NuisanceMUNIT

QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False, "enable_checkpointing": False}


def _module(**kw) -> NuisanceMUNIT:
    # No export unless a test asks: without a logger or default_root_dir it would land in the working directory.
    return NuisanceMUNIT(**{"config": "tiny", "image_size": 8, "mean": [0.0], "std": [1.0], "export": False, **kw})


def _loader(n: int = 64, batch_size: int = 16) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    return DataLoader(TensorDataset(x, torch.arange(n) % 4), batch_size=batch_size)


def test_generator_loss_is_the_weighted_sum_of_the_formula_terms():
    torch.manual_seed(0)
    m = _module(two_domains=True, recon_x_weight=10.0, recon_s_weight=2.0, recon_c_weight=3.0, gan_weight=0.5)
    x_a, x_b = torch.rand(2, 2, 1, 8, 8) * 2 - 1
    s_a, s_b = torch.randn(2, 2, 8, 1, 1)
    terms = m.generator_losses(x_a, x_b, s_a, s_b)
    ga, gb = m.generator_a, m.generator_b
    c_a, sp_a = ga.encode(x_a)
    c_b, sp_b = gb.encode(x_b)
    x_ba, x_ab = ga.decode(c_b, s_a), gb.decode(c_a, s_b)
    c_b2, s_a2 = ga.encode(x_ba)
    c_a2, s_b2 = gb.encode(x_ab)

    def l1(u, v):
        return (u - v).abs().mean()

    expected = {
        "adv": ((m.dis_a(x_ba)[0] - 1) ** 2).mean() + ((m.dis_b(x_ab)[0] - 1) ** 2).mean(),
        "recon_x": l1(ga.decode(c_a, sp_a), x_a) + l1(gb.decode(c_b, sp_b), x_b),
        "recon_s": l1(s_a2, s_a) + l1(s_b2, s_b),
        "recon_c": l1(c_b2, c_b) + l1(c_a2, c_a),
    }
    for name, value in expected.items():
        torch.testing.assert_close(terms[name], value)
    total = 0.5 * expected["adv"] + 10 * expected["recon_x"] + 2 * expected["recon_s"] + 3 * expected["recon_c"]
    torch.testing.assert_close(terms["loss_g"], total)
    assert "recon_x_cyc" not in terms  # weight 0: skipped, as the reference
    assert "recon_x_cyc" in _module(recon_x_cyc_weight=1.0).generator_losses(x_a, x_b, s_a, s_b)
    # the discriminator sees the fakes of the same styles, detached
    loss_d = m.discriminator_loss(x_a, x_b, s_a, s_b)
    with torch.no_grad():
        fa, fb = ga.decode(c_b, s_a), gb.decode(c_a, s_b)
    ref = lsgan_discriminator_loss(m.dis_a(fa), m.dis_a(x_a)) + lsgan_discriminator_loss(m.dis_b(fb), m.dis_b(x_b))
    torch.testing.assert_close(loss_d, 0.5 * ref)
    assert lsgan_generator_loss(m.dis_a(fa)).item() == pytest.approx(
        ((m.dis_a(x_ba)[0] - 1) ** 2).mean().item(), rel=1e-5
    )


def test_two_domains_builds_two_of_each_and_one_domain_shares():
    two, one = _module(two_domains=True), _module(two_domains=False)
    assert two.generator_a is not two.generator_b and two.dis_a is not two.dis_b
    assert one.generator_a is one.generator_b
    n_two = sum(p.numel() for p in two.parameters())
    n_one = sum(p.numel() for p in one.parameters())
    assert n_two == 2 * n_one == 2 * (160_393 + 8_529)


def test_max_steps_counts_two_optimizer_steps_per_iteration_and_the_lr_steps_per_iteration():
    m = _module(lr_step_iterations=2, lr_gamma=0.5, lr=1e-3)
    trainer = L.Trainer(max_steps=10, accelerator="cpu", **QUIET)
    trainer.fit(m, _loader())
    assert trainer.global_step == 10 and m.iteration == 5
    opt_g, opt_d = m.optimizers()
    # StepLR x0.5 every 2 iterations, 5 iterations: 1e-3 * 0.5 ** 2
    assert opt_g.param_groups[0]["lr"] == pytest.approx(2.5e-4)
    assert opt_d.param_groups[0]["lr"] == pytest.approx(2.5e-4)
    assert opt_g.param_groups[0]["betas"] == (0.5, 0.999) and opt_g.param_groups[0]["weight_decay"] == 1e-4


def _recon_x(m: NuisanceMUNIT, x: torch.Tensor) -> float:
    with torch.no_grad():
        c, s = m.generator_a.encode(x)
        return float((m.generator_a.decode(c, s) - x).abs().mean())


def test_a_short_run_lowers_the_image_reconstruction_loss_by_40_percent():
    torch.manual_seed(0)
    dm = LongTailDataModule(
        "digits", profile="zipf", val_per_class=20, nuisance="background", sampler="class_balanced", batch_size=32
    )
    m = NuisanceMUNIT(
        config="tiny", in_chans=1, image_size=8, two_domains=False, lr=5e-4, sample_every_n_iterations=0,
        export=False,
    )  # fmt: skip
    mean, std = dm.preprocessing["mean"][0], dm.preprocessing["std"][0]
    held_out = torch.stack([dm.val_set[i][0] for i in range(0, len(dm.val_set), 2)])  # never trained on
    x = (held_out * std + mean).clamp(0, 1) * 2 - 1
    before = _recon_x(m, x)
    L.Trainer(max_steps=200, max_epochs=-1, accelerator="cpu", **QUIET).fit(m, datamodule=dm)  # 100 iterations
    after = _recon_x(m, x)
    assert after <= 0.6 * before, (before, after)  # measured: 0.590 -> 0.279 (-53 %)


def test_fast_dev_run_writes_a_loadable_generator_in_the_log_dir(tmp_path, monkeypatch):
    dm = LongTailDataModule("digits", profile="zipf", nuisance="background", sampler="class_balanced", batch_size=32)
    m = NuisanceMUNIT(config="tiny", in_chans=1, class_counts=dm.class_counts, class_names=dm.class_names)
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False)
    trainer.fit(m, datamodule=dm)
    path = tmp_path / "generator.pt"  # fast_dev_run has no log dir: default_root_dir
    assert path.is_file() and m.num_classes == 10
    g = load_generator(path)
    assert isinstance(g, MUNITGenerator) and (g.in_chans, g.image_size) == (1, 8)
    absolute = tmp_path / "elsewhere" / "g.pt"
    m2 = NuisanceMUNIT(config="tiny", in_chans=1, export_path=str(absolute))
    L.Trainer(fast_dev_run=True, accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False).fit(
        m2, datamodule=dm
    )
    assert absolute.is_file()
    monkeypatch.chdir(tmp_path)  # a relative export_path is relative to the working directory, as GIT's generator
    m3 = NuisanceMUNIT(config="tiny", in_chans=1, export_path="generators/digits_bg_lt.pt")
    L.Trainer(fast_dev_run=True, accelerator="cpu", default_root_dir=tmp_path / "run", enable_progress_bar=False).fit(
        m3, datamodule=dm
    )
    assert (tmp_path / "generators" / "digits_bg_lt.pt").is_file()


def test_tensorboard_gets_the_losses_and_the_sample_grid(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    m = _module(sample_every_n_iterations=2, grid_styles=3, export=True)
    logger = TensorBoardLogger(tmp_path, name="munit")
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=logger, log_every_n_steps=1, enable_progress_bar=False)
    trainer.fit(m, _loader())
    assert (tmp_path / "munit" / "version_0" / "generator.pt").is_file()  # relative to the log dir
    assert m.sample_grid().shape == (4 * (2 + 3), 1, 8, 8)  # 4 classes seen; input, recon, 3 styles
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "munit" / "version_0")).Reload()
    assert "munit/samples" in events.Tags()["images"]
    assert {"munit/loss_d", "munit/loss_g", "munit/recon_x"} <= set(events.Tags()["scalars"])


def test_cli_short_name_and_the_datamodule_links(tmp_path):
    cli = build_cli(
        [
            "fit",
            "--model=NuisanceMUNIT",
            "--model.init_args.config=tiny",
            "--data.init_args.batch_size=32",
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert isinstance(cli.model, NuisanceMUNIT) and cli.model.class_counts == cli.datamodule.class_counts
    assert (tmp_path / "generator.pt").is_file() and not list(tmp_path.rglob("*.ckpt"))


def test_checkpoint_reload_rebuilds_the_generator(tmp_path):
    m = _module()
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False, logger=False
    )
    trainer.fit(m, _loader())
    ckpt = next(tmp_path.rglob("*.ckpt"))
    restored = NuisanceMUNIT.load_from_checkpoint(ckpt)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(
        restored.generator_a.eval()(x, style=torch.zeros(2, 8)), m.generator_a.eval()(x, style=torch.zeros(2, 8))
    )
    from_ckpt = load_generator(ckpt)  # the GIT callback's path to a NuisanceMUNIT checkpoint
    rng = [torch.Generator().manual_seed(3) for _ in range(2)]
    assert torch.equal(from_ckpt(x, generator=rng[0]), m.generator_a.eval()(x, generator=rng[1]))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="batch size must be even and >= 2, got 3"):
        _module().split_domains(torch.zeros(3, 1, 8, 8))
    dm = LongTailDataModule("digits", batch_size=31)
    with pytest.raises(ValueError, match="batch size must be even, got data.batch_size=31"):
        L.Trainer(fast_dev_run=True, accelerator="cpu", **QUIET).fit(
            NuisanceMUNIT(config="tiny", in_chans=1), datamodule=dm
        )
    with pytest.raises(ValueError, match="needs the inputs' normalisation"):
        L.Trainer(fast_dev_run=True, accelerator="cpu", **QUIET).fit(
            NuisanceMUNIT(config="tiny", image_size=8), _loader()
        )
    with pytest.raises(ValueError, match="image_size 8 is too small for style_downsample=4"):
        NuisanceMUNIT(config="reference", image_size=8, mean=[0.0], std=[1.0])
    with pytest.raises(ValueError, match="config must be one of"):
        NuisanceMUNIT(config="huge")
    with pytest.raises(ValueError, match="recon_x_weight must be a number >= 0"):
        NuisanceMUNIT(recon_x_weight=-1)
    with pytest.raises(ValueError, match="give both mean and std"):
        NuisanceMUNIT(mean=[0.5])


@pytest.mark.ddp
def test_two_cpu_processes_train_and_export_once(tmp_path):
    # Each step leaves the other network's parameters without gradients: DDP needs find_unused_parameters.
    m = _module(two_domains=True, export=True, export_path=str(tmp_path / "g.pt"))
    trainer = L.Trainer(
        max_steps=4, accelerator="cpu", devices=2, strategy="ddp_spawn_find_unused_parameters_true", **QUIET
    )
    trainer.fit(m, _loader(n=64, batch_size=8))
    assert isinstance(load_generator(tmp_path / "g.pt"), MUNITGenerator)
