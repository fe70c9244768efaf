"""Hand-computed checks of lt_lightning.functional.metrics (per-class, balanced, worst, shot and overall accuracy)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from lt_lightning.functional.metrics import (
    balanced_accuracy,
    overall_accuracy,
    per_class_accuracy,
    per_class_counts,
    shot_accuracy,
    shot_groups,
    worst_class_accuracy,
)

# 4 classes, training counts (500, 60, 30, 5) -> many, medium, medium, few.
# Test set: class 0 has 4 samples (3 right), class 1 has 2 (1 right), class 2 has 2 (2 right), class 3 has 1 (0 right).
COUNTS = (500, 60, 30, 5)
TARGET = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 3])
PREDS = torch.tensor([0, 0, 0, 1, 1, 3, 2, 2, 2])


def _one_hot_logits(preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    # Distinct, non-trivial scores whose argmax is `preds`.
    logits = torch.linspace(-1.0, 1.0, preds.numel() * num_classes).reshape(preds.numel(), num_classes)
    logits[torch.arange(preds.numel()), preds] = 5.0
    return logits


def test_shot_groups_strict_thresholds() -> None:
    assert shot_groups(COUNTS) == ("many", "medium", "medium", "few")
    # Strict > 100 and < 20: exactly 100 and exactly 20 are medium (OLTR / Decoupling).
    assert shot_groups([101, 100, 20, 19, 0]) == ("many", "medium", "medium", "few", "few")
    assert shot_groups(torch.tensor([11, 10, 5, 4]), many_threshold=10, few_threshold=5) == (
        "many",
        "medium",
        "medium",
        "few",
    )
    assert shot_groups(np.array([7, 7]), many_threshold=7, few_threshold=7) == ("medium", "medium")
    assert shot_groups([]) == ()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"many_threshold": 10, "few_threshold": 20}, "few_threshold must be <= many_threshold"),
        ({"many_threshold": -1, "few_threshold": -5}, "many_threshold must be an integer >= 0, got -1"),
        ({"few_threshold": -1}, "few_threshold must be an integer >= 0, got -1"),
        ({"few_threshold": 2.5}, "few_threshold must be an integer >= 0, got 2.5"),
    ],
)
def test_shot_groups_rejects_bad_thresholds(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        shot_groups(COUNTS, **kwargs)


@pytest.mark.parametrize("counts", [[10, -1], [10, 2.5], [True, 3]])
def test_shot_groups_rejects_bad_counts(counts: list) -> None:
    with pytest.raises(ValueError, match="class_counts must be non-negative integers"):
        shot_groups(counts)


def test_per_class_counts_by_hand() -> None:
    correct, support = per_class_counts(PREDS, TARGET, num_classes=4)
    assert correct.tolist() == [3, 1, 2, 0]
    assert support.tolist() == [4, 2, 2, 1]
    assert correct.dtype == support.dtype == torch.long


def test_per_class_counts_logits_equal_integer_predictions() -> None:
    logits = _one_hot_logits(PREDS, 4)
    by_logits = per_class_counts(logits, TARGET, num_classes=4)
    by_labels = per_class_counts(PREDS, TARGET, num_classes=4)
    assert torch.equal(by_logits[0], by_labels[0]) and torch.equal(by_logits[1], by_labels[1])
    # int32 labels are accepted as well.
    by_int32 = per_class_counts(PREDS.int(), TARGET.int(), num_classes=4)
    assert torch.equal(by_int32[0], by_labels[0]) and torch.equal(by_int32[1], by_labels[1])


def test_per_class_counts_empty_batch() -> None:
    for preds in (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)):
        correct, support = per_class_counts(preds, torch.zeros(0, dtype=torch.long), num_classes=3)
        assert correct.tolist() == [0, 0, 0] and support.tolist() == [0, 0, 0]


def test_per_class_counts_matches_a_loop_on_random_data() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(257, 7, generator=gen)
    target = torch.randint(0, 7, (257,), generator=gen)
    correct, support = per_class_counts(logits, target, num_classes=7)
    preds = logits.argmax(1)
    for c in range(7):
        assert support[c] == int((target == c).sum())
        assert correct[c] == int(((target == c) & (preds == c)).sum())


_LONG = torch.long
_BAD_INPUTS = [
    (torch.zeros(4, 5), torch.zeros(4, dtype=_LONG), 10, "logits have 5 columns but num_classes is 10"),
    (torch.zeros(3, dtype=_LONG), torch.zeros(4, dtype=_LONG), 10, "target has shape (4,) but predictions have 3 rows"),
    (torch.zeros(3, 10), torch.zeros(4, dtype=_LONG), 10, "target has shape (4,) but predictions have 3 rows"),
    (torch.tensor([0, 1]), torch.tensor([0, 10]), 10, "target labels must lie in [0, 10), got min 0, max 10"),
    (torch.tensor([0, 1]), torch.tensor([-1, 0]), 10, "target labels must lie in [0, 10), got min -1, max 0"),
    (torch.tensor([0, 12]), torch.tensor([0, 1]), 10, "predicted labels must lie in [0, 10), got min 0, max 12"),
    (torch.zeros(2, 2, 2), torch.tensor([0, 1]), 2, "preds_or_logits must be (N, C) logits or (N,)"),
    (torch.zeros(2, 2), torch.zeros(2, 1, dtype=_LONG), 2, "target must be 1-D (N,) class labels"),
    (torch.zeros(2, 2), torch.tensor([0, 1]), 0, "num_classes must be an integer >= 1, got 0"),
]
_BAD_TYPES = [
    (torch.tensor([0.0, 1.0]), torch.tensor([0, 1]), 2, "1-D predictions must be integer class labels"),
    (torch.zeros(2, 2), torch.tensor([0.0, 1.0]), 2, "target must hold integer class labels"),
    ([0, 1], torch.tensor([0, 1]), 2, "preds_or_logits must be a torch.Tensor, got list"),
]


@pytest.mark.parametrize(("preds", "target", "num_classes", "message"), _BAD_INPUTS)
def test_per_class_counts_rejects_bad_values(preds, target, num_classes, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        per_class_counts(preds, target, num_classes)


@pytest.mark.parametrize(("preds", "target", "num_classes", "message"), _BAD_TYPES)
def test_per_class_counts_rejects_bad_types(preds, target, num_classes, message) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        per_class_counts(preds, target, num_classes)


def test_per_class_accuracy_nan_without_support() -> None:
    acc = per_class_accuracy(torch.tensor([3, 1, 2, 0, 0]), torch.tensor([4, 2, 2, 1, 0]))
    assert acc[:4].tolist() == [0.75, 0.5, 1.0, 0.0]
    # "always wrong" (class 3) is 0, "no test support" (class 4) is NaN: the two are never confused.
    assert math.isnan(acc[4])
    assert acc.dtype == torch.get_default_dtype()
    assert per_class_accuracy(torch.tensor([1.0]), torch.tensor([4.0], dtype=torch.float64)).dtype == torch.float32


@pytest.mark.parametrize(
    ("correct", "support", "message"),
    [
        (torch.tensor([1, 2]), torch.tensor([1, 2, 3]), "correct and support must have the same shape"),
        (torch.tensor([3, 0]), torch.tensor([2, 1]), "need 0 <= correct <= support"),
        (torch.tensor([-1, 0]), torch.tensor([2, 1]), "need 0 <= correct <= support"),
        (torch.tensor([[1]]), torch.tensor([[1]]), "correct must be a 1-D per-class vector"),
    ],
)
def test_per_class_accuracy_rejects_bad_counts(correct, support, message) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        per_class_accuracy(correct, support)


def test_balanced_and_worst_by_hand() -> None:
    acc = per_class_accuracy(*per_class_counts(PREDS, TARGET, num_classes=4))
    assert balanced_accuracy(acc).item() == pytest.approx((0.75 + 0.5 + 1.0 + 0.0) / 4)
    assert worst_class_accuracy(acc).item() == 0.0
    with_gap = torch.tensor([0.75, float("nan"), 0.25, 1.0])
    assert balanced_accuracy(with_gap).item() == pytest.approx(2.0 / 3.0)  # NaN class skipped, not counted as 0
    assert worst_class_accuracy(with_gap).item() == 0.25


def test_balanced_and_worst_all_nan() -> None:
    all_nan = torch.full((3,), float("nan"))
    assert math.isnan(balanced_accuracy(all_nan))
    assert math.isnan(worst_class_accuracy(all_nan))
    assert math.isnan(worst_class_accuracy(torch.zeros(0)))


def test_balanced_and_worst_reject_counts() -> None:
    with pytest.raises(ValueError, match="per_class must be a 1-D floating vector"):
        balanced_accuracy(torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="per_class must be a 1-D floating vector"):
        worst_class_accuracy(torch.zeros(2, 2))


def test_balanced_accuracy_matches_sklearn_with_phantom_and_missing_classes() -> None:
    from sklearn.metrics import balanced_accuracy_score

    gen = torch.Generator().manual_seed(1)
    target = torch.randint(0, 6, (300,), generator=gen)  # class 6 never appears in the target
    preds = torch.where(torch.rand(300, generator=gen) < 0.6, target, torch.randint(0, 7, (300,), generator=gen))
    assert (preds == 6).any()  # a phantom class is predicted
    acc = per_class_accuracy(*per_class_counts(preds, target, num_classes=8))  # class 7: neither
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        expected = balanced_accuracy_score(target.numpy(), preds.numpy())
    assert balanced_accuracy(acc).item() == pytest.approx(expected, abs=1e-6)
    assert math.isnan(acc[6]) and math.isnan(acc[7])


def test_shot_accuracy_by_hand() -> None:
    acc = per_class_accuracy(*per_class_counts(PREDS, TARGET, num_classes=4))
    shots = shot_accuracy(acc, shot_groups(COUNTS))
    assert shots == {"many": 0.75, "medium": 0.75, "few": 0.0}  # medium = (0.5 + 1.0) / 2


def test_shot_accuracy_empty_group_is_nan() -> None:
    acc = torch.tensor([0.9, 0.6, 0.3, float("nan")])
    shots = shot_accuracy(acc, shot_groups([500, 200, 150, 120]))  # every class is "many"
    assert shots["many"] == pytest.approx(0.6)  # the NaN class (no test support) is skipped
    assert math.isnan(shots["medium"]) and math.isnan(shots["few"])  # OLTR-style code would report 0
    # A non-empty group whose classes all lack test support is NaN too.
    shots = shot_accuracy(torch.tensor([0.5, float("nan")]), ("many", "few"))
    assert shots["many"] == 0.5 and math.isnan(shots["few"]) and math.isnan(shots["medium"])


def test_shot_accuracy_rejects_bad_groups() -> None:
    with pytest.raises(ValueError, match=re.escape("groups has 3 entries but per_class has 4 classes")):
        shot_accuracy(torch.zeros(4), ("many", "many", "few"))
    with pytest.raises(ValueError, match="groups must only contain"):
        shot_accuracy(torch.zeros(2), ("many", "tail"))


def test_overall_accuracy_by_hand() -> None:
    correct, support = per_class_counts(PREDS, TARGET, num_classes=4)
    assert overall_accuracy(correct, support).item() == pytest.approx(6 / 9)
    assert math.isnan(overall_accuracy(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)))
