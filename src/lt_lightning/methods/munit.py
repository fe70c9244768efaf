"""``NuisanceMUNIT``: train GIT's class-agnostic nuisance generator (MUNIT) with Lightning and the same CLI.

The reference (``core/train_munit.py``, ``core/munit/trainer.py``; ``shared/research/git.md`` §2) draws two batches
``x_a``, ``x_b`` per iteration from two class-balanced loaders over the SAME long-tailed training set and trains
two generators / two discriminators, no labels. Here one loader (``sampler: class_balanced`` in the presets) gives
a batch of ``2n`` images whose two random halves are ``x_a`` and ``x_b``: batch 2 is the reference's two batch-1
draws. Per iteration (one training batch): a discriminator step, then a generator step, with

    L_D = w_gan [LS_D(D_a(x_ba), D_a(x_a)) + LS_D(D_b(x_ab), D_b(x_b))]                 (fakes detached)
    L_G = w_gan [LS_G(D_a(x_ba)) + LS_G(D_b(x_ab))]
        + w_x [|G_a(c_a, s'_a) - x_a| + |G_b(c_b, s'_b) - x_b|]
        + w_s [|s~_a - s_a| + |s~_b - s_b|] + w_c [|c~_b - c_b| + |c~_a - c_a|]
        + w_cyc [|G_a(c~_a, s'_a) - x_a| + |G_b(c~_b, s'_b) - x_b|]

where ``(c, s') = E(x)``, ``s ~ N(0, I)`` fresh per image, ``x_ba = G_a(c_b, s_a)``, ``(c~_b, s~_a) = E_a(x_ba)``
(see :mod:`lt_lightning.functional.munit` for the terms). Weights: gan 1, x 10, s 1, c 1, cyc 0 (the GIT configs).
Optimisers: Adam(lr 1e-4, betas (0.5, 0.999), weight decay 1e-4) for the generators and for the discriminators,
each with StepLR x0.5 every 100,000 ITERATIONS. ``two_domains=False`` shares one generator and one discriminator
between the halves (half the cost; the small presets).

``max_steps`` and iterations: Lightning's ``global_step`` counts OPTIMIZER steps, and each iteration steps two
optimisers, so ``max_steps = 2 x iterations`` (the K49 presets' 10k reference iterations are ``max_steps: 20000``).
The learning-rate schedule counts iterations (``global_step // 2``), never ``global_step``.

Several devices: each step leaves the other network's parameters without gradients (the discriminator step does
not touch the generators), so DDP needs ``strategy: ddp_find_unused_parameters_true`` (Lightning's plain ``ddp``
stops with a message saying so). Each rank splits its own batch; the export is written by rank 0.

Images come normalised by the datamodule: they are un-normalised with its ``preprocessing`` mean / std (or the
``mean`` / ``std`` arguments) to [0, 1], then mapped to [-1, 1] as in the reference. At fit end the first generator
is written to ``export_path`` (relative to the working directory, as the GIT callback's ``generator`` path is; the
presets write ``generators/<dataset>.pt``, the file the GIT presets load; default: ``generator.pt`` in the run's log
directory, beside ``config.yaml`` and ``checkpoints/``), loadable with :func:`lt_lightning.generators.load_generator`
and usable as the ``GenerativeInvarianceTransfer`` callback's ``generator``. Logged: ``munit/{loss_d, loss_g, adv,
recon_x, recon_s, recon_c}`` and, every ``sample_every_n_iterations`` and at fit end, an image grid (rows: classes;
columns: the input, its reconstruction, ``grid_styles`` random styles) to every logger that takes images (TensorBoard,
W&B).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from typing_extensions import override

from lt_lightning.functional.munit import lsgan_discriminator_loss, lsgan_generator_loss, recon_l1
from lt_lightning.generators.loading import CHECKPOINT_CONFIG_KEY, save_generator
from lt_lightning.generators.munit import MUNITDiscriminator, MUNITGenerator, check_min_ints, munit_config

LOSS_NAMES = ("adv", "recon_x", "recon_s", "recon_c", "recon_x_cyc")


class NuisanceMUNIT(L.LightningModule):
    """Class-agnostic MUNIT generator training (GIT's nuisance model), manual optimisation with two optimisers.

    Args:
        config: ``reference`` (GIT's 15 M-parameter generator), ``small`` (28x28 on a CPU) or ``tiny`` (8x8).
        generator_kwargs: overrides of the config's generator arguments (``dim``, ``style_dim``, ``mlp_dim``,
            ``n_downsample``, ``n_res``, ``style_downsample``).
        discriminator_kwargs: overrides of its discriminator arguments (``dim``, ``n_layers``, ``num_scales``).
        in_chans: image channels (linked from the datamodule by the CLI).
        image_size: square side; default: the datamodule's ``preprocessing["image_size"]``, read at setup (the
            generator is then built for it and the GIT callback checks it).
        class_counts: training images per class (linked by the CLI): only used to size the sample grid.
        class_names: class names (linked by the CLI): recorded, unused by the training.
        two_domains: the reference's two generators and two discriminators (True) or one of each (False).
        gan_weight, recon_x_weight, recon_s_weight, recon_c_weight, recon_x_cyc_weight: loss weights.
        lr, betas, weight_decay: Adam (coupled L2 weight decay, as the reference).
        lr_step_iterations, lr_gamma: StepLR of both optimisers, counted in iterations.
        mean, std: per-channel normalisation of the incoming images (default: the datamodule's ``preprocessing``).
        export_path: where the fit-end generator goes, relative to the working directory (like the GIT
            callback's ``generator`` path); None: ``generator.pt`` in the run's log directory (``trainer.log_dir``,
            else ``default_root_dir``).
        export: write the generator at fit end (False: no export).
        sample_every_n_iterations: image-grid period (0: only at fit end); grid_classes: rows (classes, the first
            ones seen); grid_styles: random-style columns.
    """

    def __init__(
        self,
        config: Literal["reference", "small", "tiny"] = "reference",
        generator_kwargs: dict[str, Any] | None = None,
        discriminator_kwargs: dict[str, Any] | None = None,
        in_chans: int = 1,
        image_size: int | None = None,
        class_counts: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
        two_domains: bool = True,
        gan_weight: float = 1.0,
        recon_x_weight: float = 10.0,
        recon_s_weight: float = 1.0,
        recon_c_weight: float = 1.0,
        recon_x_cyc_weight: float = 0.0,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        weight_decay: float = 1e-4,
        lr_step_iterations: int = 100_000,
        lr_gamma: float = 0.5,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        export_path: str | None = None,
        export: bool = True,
        sample_every_n_iterations: int = 500,
        grid_classes: int = 10,
        grid_styles: int = 6,
    ) -> None:
        super().__init__()
        cfg = munit_config(config)
        self.generator_kwargs = {**cfg["generator"], **(generator_kwargs or {})}
        self.discriminator_kwargs = {**cfg["discriminator"], **(discriminator_kwargs or {})}
        for name, value in (("lr", lr), ("lr_gamma", lr_gamma)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        weights = {
            "gan_weight": gan_weight,
            "recon_x_weight": recon_x_weight,
            "recon_s_weight": recon_s_weight,
            "recon_c_weight": recon_c_weight,
            "recon_x_cyc_weight": recon_x_cyc_weight,
        }
        for name, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        check_min_ints(
            ("lr_step_iterations", lr_step_iterations, 1),
            ("sample_every_n_iterations", sample_every_n_iterations, 0),
            ("grid_classes", grid_classes, 1),
            ("grid_styles", grid_styles, 1),
        )
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither (then the datamodule's preprocessing is used)")
        if std is not None and (len(std) != len(mean) or min(std) <= 0):
            raise ValueError(f"std must be positive and as long as mean, got mean={list(mean)}, std={list(std)}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.class_counts = None if class_counts is None else tuple(int(c) for c in class_counts)
        self.num_classes = None if self.class_counts is None else len(self.class_counts)
        self.in_chans = in_chans
        self._mean = None if mean is None else [float(m) for m in mean]
        self._std = None if std is None else [float(s) for s in std]
        self._grid_examples: dict[int, Tensor] = {}
        self.generator_a: MUNITGenerator | None = None
        if image_size is not None:
            self._build(image_size)

    # ------------------------------------------------------------------ construction
    def _build(self, image_size: int | None) -> None:
        hp = self.hparams
        self.image_size = image_size
        self.generator_a = MUNITGenerator(hp.in_chans, image_size, **self.generator_kwargs)
        self.dis_a = MUNITDiscriminator(hp.in_chans, **self.discriminator_kwargs)
        if hp.two_domains:
            self.generator_b = MUNITGenerator(hp.in_chans, image_size, **self.generator_kwargs)
            self.dis_b = MUNITDiscriminator(hp.in_chans, **self.discriminator_kwargs)
        else:
            self.generator_b, self.dis_b = self.generator_a, self.dis_a

    @override
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        prep = getattr(datamodule, "preprocessing", None)
        batch_size = getattr(datamodule, "batch_size", None)
        if isinstance(batch_size, int) and batch_size % 2:
            raise ValueError(
                f"NuisanceMUNIT splits each batch into two domains: the batch size must be even, got "
                f"data.batch_size={batch_size}"
            )
        if self._mean is None:
            if not prep or prep.get("mean") is None:
                raise ValueError(
                    "NuisanceMUNIT needs the inputs' normalisation: pass mean and std, or use a datamodule with a "
                    "`preprocessing` mapping (LongTailDataModule without a custom eval_transform)"
                )
            self._mean, self._std = list(prep["mean"]), list(prep["std"])
        if len(self._mean) != self.hparams.in_chans:
            raise ValueError(f"NuisanceMUNIT has in_chans={self.hparams.in_chans} but mean/std for {len(self._mean)}")
        if self.generator_a is None:
            self._build(prep.get("image_size") if prep else None)
        elif prep and prep.get("image_size") not in (None, self.image_size):
            raise ValueError(
                f"NuisanceMUNIT was built for {self.image_size}x{self.image_size} images but the data is "
                f"{prep['image_size']}x{prep['image_size']}"
            )

    @override
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        gen = _unique_params(self.generator_a, self.generator_b)
        dis = _unique_params(self.dis_a, self.dis_b)
        kw = {"lr": hp.lr, "betas": tuple(hp.betas), "weight_decay": hp.weight_decay}
        opt_g, opt_d = torch.optim.Adam(gen, **kw), torch.optim.Adam(dis, **kw)
        step = {"step_size": hp.lr_step_iterations, "gamma": hp.lr_gamma}
        sch_g = torch.optim.lr_scheduler.StepLR(opt_g, **step)
        sch_d = torch.optim.lr_scheduler.StepLR(opt_d, **step)
        # Stepped by hand once per iteration (manual optimisation): "interval" is informative only.
        return [opt_g, opt_d], [{"scheduler": sch_g, "interval": "step"}, {"scheduler": sch_d, "interval": "step"}]

    # ------------------------------------------------------------------ maths
    def to_unit_range(self, x: Tensor) -> Tensor:
        """Normalised model inputs -> [-1, 1] (un-normalise with mean / std, clamp to [0, 1], map)."""
        mean = torch.as_tensor(self._mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.as_tensor(self._std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1) * 2 - 1

    def split_domains(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The two halves of a batch (the two domains); the batch size must be even."""
        if len(x) % 2 or len(x) < 2:
            raise ValueError(
                f"NuisanceMUNIT splits each batch into two domains: the batch size must be even and >= 2, got "
                f"{len(x)} (set data.batch_size to an even number; a last partial batch of odd size is dropped)"
            )
        return x[: len(x) // 2], x[len(x) // 2 :]

    def discriminator_loss(self, x_a: Tensor, x_b: Tensor, s_a: Tensor, s_b: Tensor) -> Tensor:
        """``L_D`` for images in [-1, 1] and the random styles ``s_a``, ``s_b``; fakes are generated without grad."""
        with torch.no_grad():
            c_a, c_b = self.generator_a.enc_content(x_a), self.generator_b.enc_content(x_b)
            x_ba, x_ab = self.generator_a.decode(c_b, s_a), self.generator_b.decode(c_a, s_b)
        loss = lsgan_discriminator_loss(self.dis_a(x_ba), self.dis_a(x_a))
        loss = loss + lsgan_discriminator_loss(self.dis_b(x_ab), self.dis_b(x_b))
        return self.hparams.gan_weight * loss

    def generator_losses(self, x_a: Tensor, x_b: Tensor, s_a: Tensor, s_b: Tensor) -> dict[str, Tensor]:
        """The unweighted terms of ``L_G`` (each summed over both domains) and their weighted sum ``loss_g``."""
        hp = self.hparams
        ga, gb = self.generator_a, self.generator_b
        c_a, s_a_prime = ga.encode(x_a)
        c_b, s_b_prime = gb.encode(x_b)
        x_a_recon, x_b_recon = ga.decode(c_a, s_a_prime), gb.decode(c_b, s_b_prime)
        x_ba, x_ab = ga.decode(c_b, s_a), gb.decode(c_a, s_b)
        c_b_recon, s_a_recon = ga.encode(x_ba)
        c_a_recon, s_b_recon = gb.encode(x_ab)
        terms = {
            "adv": lsgan_generator_loss(self.dis_a(x_ba)) + lsgan_generator_loss(self.dis_b(x_ab)),
            "recon_x": recon_l1(x_a_recon, x_a) + recon_l1(x_b_recon, x_b),
            "recon_s": recon_l1(s_a_recon, s_a) + recon_l1(s_b_recon, s_b),
            "recon_c": recon_l1(c_b_recon, c_b) + recon_l1(c_a_recon, c_a),
        }
        if hp.recon_x_cyc_weight > 0:
            x_aba, x_bab = ga.decode(c_a_recon, s_a_prime), gb.decode(c_b_recon, s_b_prime)
            terms["recon_x_cyc"] = recon_l1(x_aba, x_a) + recon_l1(x_bab, x_b)
        weights = {
            "adv": hp.gan_weight,
            "recon_x": hp.recon_x_weight,
            "recon_s": hp.recon_s_weight,
            "recon_c": hp.recon_c_weight,
            "recon_x_cyc": hp.recon_x_cyc_weight,
        }
        terms["loss_g"] = sum(weights[k] * v for k, v in terms.items())
        return terms

    # ------------------------------------------------------------------ training
    @property
    def iteration(self) -> int:
        """Iterations done (each steps two optimisers, so ``global_step // 2``)."""
        return self.global_step // 2

    @override
    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = (batch[0], batch[1]) if isinstance(batch, list | tuple) else (batch, None)
        if len(x) % 2 and len(x) > 2 and batch_idx > 0:
            x, y = x[:-1], (None if y is None else y[:-1])  # a last partial batch of odd size: drop one image
        x = self.to_unit_range(x)
        x_a, x_b = self.split_domains(x)
        if y is not None and len(self._grid_examples) < self.hparams.grid_classes:
            self._remember_examples(x, y)
        opt_g, opt_d = self.optimizers()
        sch_g, sch_d = self.lr_schedulers()
        n, device = len(x_a), x.device
        gen = self.generator_a

        s_a, s_b = gen.random_style(n, device), gen.random_style(n, device)
        loss_d = self.discriminator_loss(x_a, x_b, s_a, s_b)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        opt_d.step()

        s_a, s_b = gen.random_style(n, device), gen.random_style(n, device)
        terms = self.generator_losses(x_a, x_b, s_a, s_b)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(terms["loss_g"])
        opt_g.step()
        sch_g.step()
        sch_d.step()

        logged: dict[str, Tensor | float] = {f"munit/{k}": v.detach() for k, v in terms.items() if k != "recon_x"}
        logged["munit/loss_d"] = loss_d.detach()
        logged["munit/lr"] = float(opt_g.param_groups[0]["lr"])
        self.log_dict(logged, on_step=True, on_epoch=False, batch_size=len(x))
        self.log("munit/recon_x", terms["recon_x"].detach(), prog_bar=True, on_step=True, batch_size=len(x))
        every = self.hparams.sample_every_n_iterations
        if every and self.iteration % every == 0:
            self.log_sample_grid()

    def _remember_examples(self, x: Tensor, y: Tensor) -> None:
        for image, label in zip(x, y.tolist(), strict=True):
            if label not in self._grid_examples and len(self._grid_examples) < self.hparams.grid_classes:
                self._grid_examples[int(label)] = image.detach().cpu().clone()

    @torch.no_grad()
    def sample_grid(self, images: Tensor | None = None, seed: int = 0) -> Tensor:
        """Rows: one image per class (``images`` in [-1, 1], default the first seen of each class); columns: the
        input, its reconstruction, ``grid_styles`` random styles (seeded). Returns ``(rows * cols, C, H, W)`` in
        [0, 1]."""
        if images is None:
            if not self._grid_examples:
                return torch.empty(0)
            images = torch.stack([self._grid_examples[k] for k in sorted(self._grid_examples)])
        gen = self.generator_a
        was_training = gen.training
        gen.eval()
        images = images.to(self.device)
        content, style = gen.encode(images)
        columns = [images, gen.decode(content, style)]
        rng = torch.Generator(device=images.device).manual_seed(seed)
        for _ in range(self.hparams.grid_styles):
            columns.append(gen.decode(content, gen.random_style(len(images), images.device, rng)))
        gen.train(was_training)
        grid = torch.stack(columns, dim=1).flatten(0, 1)  # row-major: per class, its columns
        return ((grid + 1) / 2).clamp(0, 1).cpu()

    def log_sample_grid(self) -> None:
        """Send the sample grid to every logger that takes images (TensorBoard ``add_image``, W&B ``log_image``)."""
        if not self.loggers or not self.trainer.is_global_zero:
            return
        tiles = self.sample_grid()
        if not len(tiles):
            return
        from torchvision.utils import make_grid

        grid = make_grid(tiles, nrow=2 + self.hparams.grid_styles, padding=1, pad_value=1.0)
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("munit/samples", grid, global_step=self.iteration)
            elif hasattr(logger, "log_image"):
                logger.log_image("munit/samples", [grid], step=self.global_step)

    # ------------------------------------------------------------------ export and checkpoints
    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_CONFIG_KEY] = dict(self.generator_a.config)  # load_generator reads it

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.generator_a is None and CHECKPOINT_CONFIG_KEY in checkpoint:
            self._build(checkpoint[CHECKPOINT_CONFIG_KEY]["image_size"])

    @override
    def on_fit_end(self) -> None:
        self.log_sample_grid()
        path = self.export_file()
        if path is not None and self.trainer.is_global_zero:
            save_generator(self.generator_a, path)
            rank_zero_info(f"NuisanceMUNIT: generator written to {path} ({self.iteration} iterations)")

    def export_file(self) -> Path | None:
        """Where the generator goes: ``export_path`` (relative to the working directory), else ``generator.pt`` in
        the run's log directory; None when ``export`` is off. Call on every rank (``log_dir`` may broadcast)."""
        if not self.hparams.get("export", True):
            return None
        if self.hparams.export_path:
            return Path(os.path.expanduser(self.hparams.export_path))
        return Path(self.trainer.log_dir or self.trainer.default_root_dir) / "generator.pt"


def _unique_params(*modules: torch.nn.Module) -> list[torch.nn.Parameter]:
    seen: dict[int, torch.nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


__all__ = ["LOSS_NAMES", "NuisanceMUNIT"]
