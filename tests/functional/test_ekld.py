"""Hand-computed checks of lt_lightning.functional.ekld (pairwise KL, consistency, per-class eKLD, shot groups)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lt_lightning.functional.ekld import (
    expected_kl_divergence,
    pairwise_consistency,
    pairwise_kl,
    per_class_mean,
    per_class_selection,
    per_class_sums,
    shot_group_means,
)

# p = softmax([0, 0]) = (1/2, 1/2), q = softmax([log 3, 0]) = (3/4, 1/4).
P_LOGITS = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
Q_LOGITS = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
KL_PQ = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # 0.1438410...
KL_QP = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.1308120...


def test_hand_computed_two_class_kl():
    kl = pairwise_kl(P_LOGITS, Q_LOGITS)
    assert kl.shape == (1,)
    assert kl.item() == pytest.approx(KL_PQ, abs=1e-12)
    assert kl.item() == pytest.approx(0.1438410362, abs=1e-9)  # the hand formula, evaluated


def test_direction_is_original_to_transformed():
    assert abs(KL_PQ - KL_QP) > 1e-2  # the example really is asymmetric
    assert pairwise_kl(P_LOGITS, Q_LOGITS).item() == pytest.approx(KL_PQ, abs=1e-12)
    assert pairwise_kl(Q_LOGITS, P_LOGITS).item() == pytest.approx(KL_QP, abs=1e-12)


def test_input_ignoring_model_is_perfectly_invariant():
    # A "model" whose logits ignore the input: every original and transformed row is the same vector.
    row = torch.tensor([0.3, -1.2, 2.0, 0.0])
    n = 12
    logits = row.expand(n, -1).clone()
    classes = torch.arange(n) % 4
    out = expected_kl_divergence(logits, logits.clone(), classes, num_classes=4)
    assert torch.equal(out["ekld"], torch.zeros(4))
    assert torch.equal(out["consistency"], torch.ones(4))
    assert out["count"].tolist() == [3, 3, 3, 3]
    assert out["consistent"].tolist() == [3, 3, 3, 3]


def test_per_class_means_and_class_without_pairs():
    # Class 0: pairs (p, q) and (p, p) -> mean KL_PQ / 2; class 1: none -> NaN; class 2: (q, p) -> KL_QP.
    orig = torch.cat([P_LOGITS, P_LOGITS, Q_LOGITS])
    tfm = torch.cat([Q_LOGITS, P_LOGITS, P_LOGITS])
    # Pad to 3 logit columns with a class that is never probable, so the two-class values are unchanged.
    pad = torch.full((3, 1), -math.inf, dtype=torch.float64)
    orig, tfm = torch.cat([orig, pad], 1), torch.cat([tfm, pad], 1)
    out = expected_kl_divergence(orig, tfm, torch.tensor([0, 0, 2]), num_classes=3)
    assert out["ekld"][0].item() == pytest.approx(KL_PQ / 2, abs=1e-12)
    assert math.isnan(out["ekld"][1].item())
    assert out["ekld"][2].item() == pytest.approx(KL_QP, abs=1e-12)
    assert out["kl_sum"].tolist() == pytest.approx([KL_PQ, 0.0, KL_QP], abs=1e-12)
    assert out["count"].tolist() == [2, 0, 1]
    assert out["count"].dtype == torch.int64
    # argmax: p = (.5, .5) ties -> index 0, q -> 0: all three pairs agree.
    assert out["consistency"][0].item() == 1.0 and out["consistency"][2].item() == 1.0
    assert math.isnan(out["consistency"][1].item())


def test_consistency_counts():
    orig = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 2.0]])
    tfm = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 5.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    agree = pairwise_consistency(orig, tfm)
    assert agree.tolist() == [True, False, True, False, True]
    out = expected_kl_divergence(orig, tfm, torch.tensor([0, 0, 1, 2, 2]), num_classes=3)
    assert out["consistent"].tolist() == [1, 1, 1]
    assert out["consistency"].tolist() == [0.5, 1.0, 0.5]


def test_per_class_sums_and_mean():
    values = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0])
    classes = torch.tensor([3, 0, 3, 3, 0])
    sums, counts = per_class_sums(values, classes, num_classes=5)
    assert sums.tolist() == [18.0, 0.0, 0.0, 13.0, 0.0]
    assert counts.tolist() == [2, 0, 0, 3, 0]
    mean = per_class_mean(values, classes, num_classes=5)
    assert mean[0].item() == 9.0 and mean[3].item() == pytest.approx(13.0 / 3)
    assert [math.isnan(v) for v in mean.tolist()] == [False, True, True, False, True]
    # bool values are summed as 0/1.
    flag_sums, _ = per_class_sums(torch.tensor([True, False, True]), torch.tensor([1, 1, 0]), num_classes=2)
    assert flag_sums.tolist() == [1.0, 1.0]


def test_agrees_with_torch_kl_div():
    gen = torch.Generator().manual_seed(0)
    orig = torch.randn(64, 7, generator=gen, dtype=torch.float64) * 3
    tfm = torch.randn(64, 7, generator=gen, dtype=torch.float64) * 3
    ref = F.kl_div(F.log_softmax(tfm, 1), F.log_softmax(orig, 1), log_target=True, reduction="none").sum(1)
    torch.testing.assert_close(pairwise_kl(orig, tfm), ref, rtol=1e-10, atol=1e-12)
    # float32 inputs come back as float32 and still agree.
    out32 = pairwise_kl(orig.float(), tfm.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, ref.float(), rtol=1e-4, atol=1e-5)


def test_large_logits_stay_finite():
    orig = torch.tensor([[1e4, 0.0, -1e4], [0.0, 1e4, 0.0], [5e3, 5e3, 0.0]])
    tfm = torch.tensor([[0.0, 1e4, -1e4], [0.0, 1e4, 0.0], [5e3, 0.0, 5e3]])
    kl = pairwise_kl(orig, tfm)
    assert torch.isfinite(kl).all()
    # Row 0: p = one-hot(0), log q_0 = -1e4 -> KL = 1e4. Row 1: identical -> 0. Row 2: p = (.5, .5, 0),
    # q = (.5, 0, .5) -> KL = .5 * 0 + .5 * (log .5 - (-5e3 - log 2)) = 2500.
    torch.testing.assert_close(kl, torch.tensor([1e4, 0.0, 2500.0]), rtol=1e-5, atol=1e-3)


def test_minus_inf_original_logit_contributes_zero():
    orig = torch.tensor([[0.0, -math.inf]])
    tfm = torch.tensor([[0.0, 3.0]])
    # p = (1, 0): KL = log p_0 - log q_0 = 0 - log softmax([0, 3])_0 = log(1 + e^3).
    assert pairwise_kl(orig, tfm).item() == pytest.approx(math.log1p(math.exp(3.0)), rel=1e-6)


def test_empty_batch():
    out = expected_kl_divergence(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 3)
    assert out["count"].tolist() == [0, 0, 0]
    assert out["ekld"].isnan().all()


def test_shot_group_means_skip_nan():
    per_class = torch.tensor([0.1, 0.3, 0.5, float("nan"), 0.9, 0.7])
    counts = [500, 101, 100, 20, 19, 5]  # many, many, medium, medium, few, few
    means = shot_group_means(per_class, counts)
    assert means["many"] == pytest.approx(0.2)
    assert means["medium"] == pytest.approx(0.5)
    assert means["few"] == pytest.approx(0.8)
    # Custom thresholds: many > 200, few < 50.
    means = shot_group_means(per_class, counts, many=200, few=50)
    assert means["many"] == pytest.approx(0.1)
    assert means["medium"] == pytest.approx(0.4)
    assert means["few"] == pytest.approx(0.8)
    # An empty group is NaN.
    assert math.isnan(shot_group_means(torch.tensor([0.1, 0.2]), [500, 300])["few"])


@pytest.mark.parametrize(
    ("orig", "tfm", "match"),
    [
        (torch.zeros(3, 2), torch.zeros(3, 3), "same"),
        (torch.zeros(3, 2), torch.zeros(2, 2), "same"),
        (torch.zeros(3), torch.zeros(3), "logits_original must be"),
        (torch.zeros(3, 2), torch.zeros(3, 2, 1), "logits_transformed must be"),
        (torch.zeros(3, 0), torch.zeros(3, 0), "C >= 1"),
    ],
)
def test_bad_shapes_raise(orig, tfm, match):
    with pytest.raises(ValueError, match=match):
        pairwise_kl(orig, tfm)
    with pytest.raises(ValueError, match=match):
        pairwise_consistency(orig, tfm)


def test_bad_types_raise():
    with pytest.raises(TypeError, match="floating"):
        pairwise_kl(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        pairwise_kl([[0.0, 0.0]], torch.zeros(1, 2))


@pytest.mark.parametrize(
    ("classes", "num_classes", "match"),
    [
        (torch.tensor([0, 3]), 3, r"\[0, 3\)"),
        (torch.tensor([-1, 0]), 3, r"\[0, 3\)"),
        (torch.tensor([0, 1, 2]), 3, "3 entries"),
        (torch.tensor([0.0, 1.0]), 3, "integer"),
        (torch.tensor([[0, 1]]), 3, "1-D"),
        (torch.tensor([0, 1]), 4, "num_classes is 4"),
        (torch.tensor([0, 1]), 0, "num_classes must be an integer >= 1"),
    ],
)
def test_bad_classes_raise(classes, num_classes, match):
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=match):
        expected_kl_divergence(logits, logits, classes, num_classes)


def test_per_class_sums_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        per_class_sums(torch.ones(2), torch.tensor([0, 2]), num_classes=2)
    with pytest.raises(ValueError, match="1-D"):
        per_class_sums(torch.ones(2, 1), torch.tensor([0, 1]), num_classes=2)


def test_shot_group_means_bad_input():
    with pytest.raises(ValueError, match="2 entries"):
        shot_group_means(torch.tensor([0.1, 0.2, 0.3]), [500, 5])
    with pytest.raises(ValueError, match="floating"):
        shot_group_means(torch.tensor([1, 2]), [500, 5])


def test_same_image_pairing_not_gits_permuted_pairing():
    # A model invariant to T but not to the image: logits(T(x_i)) == logits(x_i) != logits(x_j). The definition
    # (same image on both sides) gives eKLD 0; GIT's helper (kdatasets.py:333-339) pairs x_i with T(x_perm[i]), a
    # different image of the class, and would report a spurious positive divergence.
    per_image = torch.tensor([[2.0, 0.0], [0.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    classes = torch.zeros(3, dtype=torch.long)
    same = expected_kl_divergence(per_image, per_image.clone(), classes, num_classes=2)
    assert same["ekld"][0].item() == 0.0
    permuted = expected_kl_divergence(per_image, per_image[[1, 2, 0]], classes, num_classes=2)
    assert permuted["ekld"][0].item() > 0.1


# ---------------------------------------------------------------------------------------------- image selection
def test_selection_takes_k_slots_per_class_and_cycles_short_classes():
    targets = torch.tensor([2, 0, 2, 1, 0, 2, 2, 0])  # class 0: {1, 4, 7}, class 1: {3}, class 2: {0, 2, 5, 6}
    idx, cls = per_class_selection(targets, 4, 5, torch.Generator().manual_seed(0))
    assert cls.tolist() == [0] * 5 + [1] * 5 + [2] * 5  # class 3 has no image: no slot
    assert (targets[idx] == cls).all()
    assert idx[5:10].tolist() == [3] * 5  # one image fills all of class 1's slots
    class0 = idx[:5].tolist()
    assert sorted(set(class0)) == [1, 4, 7] and class0[3:] == class0[:2]  # i mod 3: the order repeats
    class2 = idx[10:].tolist()
    assert sorted(class2[:4]) == [0, 2, 5, 6] and class2[4] == class2[0]


def test_selection_is_seeded_and_covers_distinct_images_first():
    targets = torch.arange(100) % 2
    a = per_class_selection(targets, 2, 10, torch.Generator().manual_seed(1))[0]
    b = per_class_selection(targets, 2, 10, torch.Generator().manual_seed(1))[0]
    c = per_class_selection(targets, 2, 10, torch.Generator().manual_seed(2))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a[:10].tolist())) == 10  # 50 images available: no repeat within the 10 slots


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images_per_class": 0}, r"images_per_class must be an integer >= 1, got 0"),
        ({"images_per_class": True}, r"images_per_class must be an integer >= 1, got True"),
        ({"num_classes": 2, "targets": torch.tensor([0, 2])}, r"classes must lie in \[0, 2\)"),
    ],
)
def test_selection_bad_input(kwargs, match):
    args = {"targets": torch.tensor([0, 1]), "num_classes": 2, "images_per_class": 3} | kwargs
    with pytest.raises(ValueError, match=match):
        per_class_selection(**args)
