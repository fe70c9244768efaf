"""Open-Sampling: the complementary distribution, its label draws (chi-square), the loss by hand, lambda_o = 0 as
plain CE bit for bit, the effective prior, errors, one fast_dev_run on digits 0-6 with OOD digits 7-9, and a
2-process gloo DDP run."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from lt_lightning.data import LongTailDataModule
from lt_lightning.functional.open_sampling import (
    complementary_distribution,
    complementary_weights,
    open_sampling_ood_loss,
    sample_complementary_labels,
)
from lt_lightning.methods import LongTailClassifier, OpenSampling
from lt_lightning.methods.open_sampling import label_generator
from tests.helpers import cpu_trainer

COUNTS = (500, 200, 80, 30, 10)


def open_set_dm(**kwargs) -> LongTailDataModule:
    options = dict(classes=list(range(7)), aux_dataset="digits", batch_size=32, aux_batch_size=128)
    return LongTailDataModule("digits", **{**options, **kwargs})


def test_gamma_mirrors_the_prior():
    pi = np.array(COUNTS) / sum(COUNTS)
    gamma = complementary_distribution(COUNTS).numpy()
    np.testing.assert_allclose(gamma, pi.max() + pi.min() - pi, rtol=0, atol=1e-15)
    hat = gamma / gamma.sum()
    assert hat[0] == pytest.approx(pi.min() / gamma.sum(), abs=1e-15)  # the head gets pi_min / sum(Gamma)
    assert hat[-1] == pytest.approx(pi.max() / gamma.sum(), abs=1e-15)  # the tail gets pi_max / sum(Gamma)
    assert np.all(np.diff(hat) > 0)
    # alpha > 0: alpha - pi; and the OOD weights Gamma / sum(Gamma) * C average to 1.
    np.testing.assert_allclose(complementary_distribution(COUNTS, alpha=0.9).numpy(), 0.9 - pi, atol=1e-15)
    assert complementary_weights(torch.as_tensor(gamma)).mean().item() == pytest.approx(1.0)
    # balanced data: Gamma is uniform
    assert complementary_distribution((7, 7, 7)).tolist() == pytest.approx([1 / 3] * 3)


def test_drawn_labels_pass_a_chi_square_test():
    gamma = complementary_distribution(COUNTS)
    labels = sample_complementary_labels(gamma, 10**5, torch.Generator().manual_seed(0))
    observed = np.bincount(labels.numpy(), minlength=len(COUNTS))
    expected = (gamma / gamma.sum()).numpy() * 10**5
    assert chisquare(observed, expected).pvalue > 0.01


def test_the_effective_prior_is_flatter():
    """(N pi + M Gamma^) / (N + M) with the reference's M = 4 N (512 per 128): closer to uniform than pi."""
    pi = np.array(COUNTS) / sum(COUNTS)
    hat = complementary_distribution(COUNTS).numpy()
    hat = hat / hat.sum()
    n = sum(COUNTS)
    for m in (n // 4, n, 4 * n):
        effective = (n * pi + m * hat) / (n + m)
        assert effective.max() / effective.min() < pi.max() / pi.min()
        uniform = np.full(len(pi), 1 / len(pi))
        assert np.sum(effective * np.log(effective / uniform)) < np.sum(pi * np.log(pi / uniform))


def test_labels_are_a_function_of_seed_step_and_rank():
    gamma = complementary_distribution(COUNTS)

    def draw(*key):
        return sample_complementary_labels(gamma, 64, label_generator(*key)).tolist()

    assert draw(0, 3, 0) == draw(0, 3, 0)
    assert len({tuple(draw(*key)) for key in ((0, 3, 0), (0, 4, 0), (0, 3, 1), (1, 3, 0))}) == 4


def test_loss_by_hand():
    torch.manual_seed(0)
    model = OpenSampling(COUNTS, backbone="small_cnn", in_chans=1, lambda_o=0.7, seed=5)
    x, y, x_aux = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 0]), torch.randn(24, 1, 8, 8)
    model.eval()  # BatchNorm on running stats: the joint forward is then a per-image function, checkable in parts
    loss, logits, target = model.training_loss((x, y, x_aux))
    z = model(torch.cat([x, x_aux]))
    torch.testing.assert_close(logits, z[:6], rtol=0, atol=0)
    labels = sample_complementary_labels(model.gamma, 24, label_generator(5, 0, 0))
    w = (model.gamma / model.gamma.sum() * 5)[labels]
    per_image = F.cross_entropy(z[6:], labels, reduction="none")
    expected = F.cross_entropy(z[:6], y) + 0.7 * (w * per_image).sum() / w.sum()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(open_sampling_ood_loss(z[6:], labels, model.gamma), (w * per_image).sum() / w.sum())
    assert torch.equal(target, y)


def test_the_id_term_is_the_configured_loss():
    torch.manual_seed(0)
    model = OpenSampling(COUNTS, backbone="small_cnn", in_chans=1, loss="ldam", lambda_o=0.0)
    assert type(model.criterion).__name__ == "LDAMLoss"


def test_joint_forward_sees_both_streams_in_batchnorm():
    torch.manual_seed(0)
    model = OpenSampling(COUNTS, backbone="small_cnn", in_chans=1)
    x, y, x_aux = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), torch.randn(16, 1, 8, 8) + 3
    _, logits, _ = model.training_loss((x, y, x_aux))
    alone = model(x)  # train mode: batch statistics of the ID images only
    assert not torch.allclose(logits, alone)


def _fit_steps(model, dm, tmp_path, steps=4):
    trainer = cpu_trainer(tmp_path, max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_lambda_zero_is_plain_ce_bit_for_bit(tmp_path):
    """Same init, same ID batches (the aux wrapper leaves the ID sampler's draw untouched): after 4 SGD steps every
    parameter and BatchNorm buffer is identical."""
    L.seed_everything(1)
    plain = _fit_steps(
        LongTailClassifier((1,) * 7, in_chans=1), open_set_dm(aux_dataset=None, aux_batch_size=None), tmp_path / "ce"
    )
    L.seed_everything(1)
    ours = _fit_steps(OpenSampling((1,) * 7, in_chans=1, lambda_o=0.0), open_set_dm(), tmp_path / "os")
    assert plain.keys() == {k for k in ours if k != "gamma"}
    for key, value in plain.items():
        assert torch.equal(value, ours[key]), key
    L.seed_everything(1)
    other = _fit_steps(OpenSampling((1,) * 7, in_chans=1, lambda_o=1.0), open_set_dm(), tmp_path / "os1")
    assert not torch.equal(other["backbone.head.weight"], plain["backbone.head.weight"])


def test_bad_arguments_and_missing_aux(tmp_path):
    with pytest.raises(ValueError, match=r"lambda_o must be a finite number >= 0, got -0.5"):
        OpenSampling(COUNTS, lambda_o=-0.5)
    with pytest.raises(ValueError, match=r"alpha must be >= max\(pi\) = 0.609756.*got 0.3"):
        OpenSampling(COUNTS, alpha=0.3)
    with pytest.raises(ValueError, match=r"seed must be an integer >= 0, got -1"):
        OpenSampling(COUNTS, seed=-1)
    model = OpenSampling(COUNTS, in_chans=1)
    with pytest.raises(ValueError, match=r"set aux_dataset on the datamodule"):
        model.training_loss((torch.zeros(2, 1, 8, 8), torch.tensor([0, 1])))
    dm = LongTailDataModule("digits")
    with pytest.raises(ValueError, match=r"set aux_dataset on the datamodule.*aux_dataset=None"):
        cpu_trainer(tmp_path, fast_dev_run=True).fit(OpenSampling(dm.class_counts, in_chans=1), datamodule=dm)


def test_fast_dev_run_on_digits_open_set(tmp_path):
    dm = open_set_dm()
    model = OpenSampling(dm.class_counts, in_chans=1, class_names=dm.class_names)
    trainer = cpu_trainer(tmp_path, fast_dev_run=True)
    trainer.fit(model, datamodule=dm)
    assert trainer.state.finished
    assert torch.isfinite(trainer.callback_metrics["open_sampling/ood_loss"])
    assert model.num_classes == 7


class AuxRecorder(OpenSampling):
    """Writes, per rank and step, the aux batch size, an aux checksum and the drawn OOD labels. Module-level:
    ddp_spawn pickles it."""

    def __init__(self, class_counts, out_dir: str, **kwargs):
        super().__init__(class_counts, **kwargs)
        self.out_dir = out_dir
        self.rows: list[dict] = []

    def training_loss(self, batch):
        x_aux = batch[2]
        labels = self.ood_labels(len(x_aux))
        self.rows.append({"n": len(x_aux), "sum": round(float(x_aux.double().sum()), 3), "labels": labels.tolist()})
        return super().training_loss(batch)

    def on_train_end(self):
        path = Path(self.out_dir) / f"rank{self.global_rank}.json"
        path.write_text(json.dumps({"rows": self.rows, "head": self.backbone.head.weight.sum().item()}))


@pytest.mark.ddp
def test_two_process_ddp(tmp_path):
    dm = open_set_dm(aux_batch_size=64, batch_size=16)
    model = AuxRecorder(dm.class_counts, str(tmp_path), in_chans=1)
    trainer = cpu_trainer(
        tmp_path, devices=2, strategy="ddp_spawn", max_steps=3, limit_val_batches=0, num_sanity_val_steps=0
    )
    trainer.fit(model, datamodule=dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank in ranks:
        assert [row["n"] for row in rank["rows"]] == [64, 64, 64]
    for a, b in zip(ranks[0]["rows"], ranks[1]["rows"], strict=True):
        assert a["sum"] != b["sum"]  # disjoint aux shards
        assert a["labels"] != b["labels"]  # labels seeded by rank
    assert ranks[0]["head"] == ranks[1]["head"]  # gradients all-reduced: the replicas stay identical
