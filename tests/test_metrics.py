"""PerClassAccuracyMetric against hand-computed values, plus a real 2-process gloo DDP check."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler
from torchmetrics.classification import MulticlassAccuracy

from lt_lightning.metrics import ExpectedKLDivergenceMetric, PerClassAccuracyMetric

# Training counts (500, 60, 30, 5) -> many, medium, medium, few.
# Test batch: class 0 has 4 samples (3 right), class 1 has 2 (1 right), class 2 has 2 (2 right),
# class 3 has 1 (0 right).
COUNTS = (500, 60, 30, 5)
TARGET = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 3])
PREDS = torch.tensor([0, 0, 0, 1, 1, 3, 2, 2, 2])
EXPECTED = {
    "acc": 6 / 9,
    "balanced_acc": (0.75 + 0.5 + 1.0 + 0.0) / 4,
    "worst_class_acc": 0.0,
    "many_acc": 0.75,
    "medium_acc": (0.5 + 1.0) / 2,
    "few_acc": 0.0,
}


def _logits(preds: torch.Tensor, num_classes: int) -> torch.Tensor:
    logits = torch.linspace(-1.0, 1.0, preds.numel() * num_classes).reshape(preds.numel(), num_classes)
    logits[torch.arange(preds.numel()), preds] = 5.0
    return logits


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True, msg=key)


def test_hand_computed_four_classes() -> None:
    metric = PerClassAccuracyMetric(num_classes=4, class_counts=COUNTS)
    metric.update(PREDS, TARGET)
    out = metric.compute()
    assert set(out) == {"acc", "balanced_acc", "worst_class_acc", "per_class", "support", *EXPECTED}
    for key, value in EXPECTED.items():
        assert out[key].item() == pytest.approx(value), key
    assert out["per_class"].tolist() == [0.75, 0.5, 1.0, 0.0]
    assert out["support"].tolist() == [4, 2, 2, 1]


def test_without_class_counts_has_no_shot_keys() -> None:
    metric = PerClassAccuracyMetric(num_classes=4)
    metric.update(PREDS, TARGET)
    assert set(metric.compute()) == {"acc", "balanced_acc", "worst_class_acc", "per_class", "support"}


def test_unsupported_and_phantom_classes() -> None:
    # Class 3 never appears in the target but is predicted once; our metric must not invent a class 3 accuracy.
    target = torch.tensor([0, 0, 1, 1, 2])
    preds = torch.tensor([0, 3, 1, 1, 0])
    metric = PerClassAccuracyMetric(num_classes=4)
    metric.update(preds, target)
    out = metric.compute()
    assert out["per_class"][:3].tolist() == [0.5, 1.0, 0.0]
    assert math.isnan(out["per_class"][3])
    assert out["balanced_acc"].item() == pytest.approx(0.5)  # mean over the 3 classes in the test set
    assert out["worst_class_acc"].item() == 0.0
    # torchmetrics' macro average counts the predicted-only class as 0: (0.5 + 1 + 0 + 0) / 4 (LIGHTNING_NOTES B.6).
    tm_macro = MulticlassAccuracy(num_classes=4, average="macro")(preds, target)
    assert tm_macro.item() == pytest.approx(0.375)


def test_empty_shot_group_is_nan() -> None:
    metric = PerClassAccuracyMetric(num_classes=3, class_counts=(500, 200, 10))  # no medium class
    metric.update(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 1, 1]))  # class 2 (few) has no test support
    out = metric.compute()
    assert out["many_acc"].item() == pytest.approx((1.0 + 2 / 3) / 2)
    assert math.isnan(out["medium_acc"])  # empty group: OLTR-style code would report 0
    assert math.isnan(out["few_acc"])  # group whose only class has no test support


def test_accumulating_updates_equals_one_call() -> None:
    once = PerClassAccuracyMetric(num_classes=4, class_counts=COUNTS)
    once.update(PREDS, TARGET)
    several = PerClassAccuracyMetric(num_classes=4, class_counts=COUNTS)
    for chunk in (slice(0, 2), slice(2, 2), slice(2, 7), slice(7, 9)):  # includes an empty batch
        several.update(PREDS[chunk], TARGET[chunk])
    _assert_same(once.compute(), several.compute())


def test_forward_returns_batch_value_and_accumulates() -> None:
    metric = PerClassAccuracyMetric(num_classes=4, class_counts=COUNTS)
    batch = metric(PREDS[:4], TARGET[:4])
    assert batch["acc"].item() == pytest.approx(0.75)
    metric(PREDS[4:], TARGET[4:])
    assert metric.compute()["acc"].item() == pytest.approx(6 / 9)


def test_logits_equal_integer_predictions() -> None:
    by_logits = PerClassAccuracyMetric(num_classes=4, class_counts=COUNTS)
    by_logits.update(_logits(PREDS, 4), TARGET)
    by_labels = PerClassAccuracyMetric(num_classes=4, class_counts=COUNTS)
    by_labels.update(PREDS, TARGET)
    _assert_same(by_logits.compute(), by_labels.compute())


def test_reset_clears_states_but_keeps_class_counts() -> None:
    metric = PerClassAccuracyMetric(num_classes=4, class_counts=COUNTS)
    metric.update(PREDS, TARGET)
    metric.update(PREDS, TARGET, indices=None)
    metric.reset()
    assert metric.correct.tolist() == [0, 0, 0, 0] and metric.support.tolist() == [0, 0, 0, 0]
    assert metric.class_counts.tolist() == list(COUNTS)
    metric.update(PREDS[:4], TARGET[:4])
    assert metric.compute()["support"].tolist() == [4, 0, 0, 0]


def test_class_counts_is_a_buffer_not_a_state() -> None:
    metric = PerClassAccuracyMetric(num_classes=4, class_counts=torch.tensor(COUNTS))
    assert "class_counts" in dict(metric.named_buffers())
    assert "class_counts" not in metric._defaults  # never reset, never summed across ranks
    assert "class_counts" not in metric.state_dict()  # checkpoints load with or without class_counts
    assert metric.correct.dtype == metric.support.dtype == torch.long  # exact sums


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 4, "class_counts": (5, 4, 3)}, "class_counts must have num_classes=4 entries, got 3"),
        ({"num_classes": 0}, "num_classes must be an integer >= 1, got 0"),
        ({"num_classes": 2.0}, "num_classes must be an integer >= 1, got 2.0"),
        ({"num_classes": 2, "class_counts": (5, -1)}, "class_counts must be non-negative integers"),
        ({"num_classes": 2, "class_counts": (5, 1), "few_threshold": 200}, "few_threshold must be <="),
    ],
)
def test_constructor_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        PerClassAccuracyMetric(**kwargs)


def test_update_validation() -> None:
    metric = PerClassAccuracyMetric(num_classes=10)
    with pytest.raises(ValueError, match=re.escape("logits have 5 columns but num_classes is 10")):
        metric.update(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=re.escape("target has shape (4,) but predictions have 3 rows")):
        metric.update(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=re.escape("target labels must lie in [0, 10), got min 0, max 11")):
        metric.update(torch.zeros(2, dtype=torch.long), torch.tensor([0, 11]))
    with pytest.raises(ValueError, match=re.escape("indices has shape (3,) but target has shape (2,)")):
        metric.update(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), indices=torch.arange(3))
    with pytest.raises(TypeError, match="indices must hold integer dataset indices, got dtype torch.float32"):
        metric.update(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), indices=torch.zeros(2))
    assert metric.support.sum() == 0  # nothing was counted by the failed calls


def test_dedup_by_indices_drops_repeated_sample() -> None:
    # Samples 0..8 of the hand-made batch, then sample 8 (class 3, wrong) and sample 0 (class 0, right) again.
    order = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 0])
    reference = PerClassAccuracyMetric(num_classes=4, class_counts=COUNTS)
    reference.update(PREDS, TARGET)
    dedup = PerClassAccuracyMetric(num_classes=4, class_counts=COUNTS)
    dedup.update(PREDS[order[:6]], TARGET[order[:6]], indices=order[:6])
    dedup.update(_logits(PREDS[order[6:]], 4), TARGET[order[6:]], indices=order[6:])
    assert dedup.correct.sum() == 0 and dedup.support.sum() == 0  # the dedup path keeps rows, not sums
    _assert_same(dedup.compute(), reference.compute())
    # Without indices the duplicates count twice: support of classes 0 and 3 grows.
    padded = PerClassAccuracyMetric(num_classes=4, class_counts=COUNTS)
    padded.update(PREDS[order], TARGET[order])
    assert padded.compute()["support"].tolist() == [5, 2, 2, 2]
    assert padded.compute()["acc"].item() == pytest.approx(7 / 11)
    dedup.reset()
    assert dedup.records == []
    with pytest.warns(UserWarning, match="called before the ``update`` method"):
        assert math.isnan(dedup.compute()["acc"])


def test_dedup_rejects_mixed_updates_and_conflicting_targets() -> None:
    mixed = PerClassAccuracyMetric(num_classes=4)
    mixed.update(PREDS[:2], TARGET[:2])
    mixed.update(PREDS[2:], TARGET[2:], indices=torch.arange(2, 9))
    with pytest.raises(ValueError, match="some update\\(\\) calls passed indices and others did not"):
        mixed.compute()
    mixed_other_way = PerClassAccuracyMetric(num_classes=4)
    mixed_other_way.update(PREDS[:2], TARGET[:2], indices=torch.arange(2))
    with pytest.raises(ValueError, match="indices=None but earlier update\\(\\) calls passed indices"):
        mixed_other_way.update(PREDS[2:], TARGET[2:])
    conflict = PerClassAccuracyMetric(num_classes=4)
    conflict.update(torch.tensor([0, 1]), torch.tensor([0, 1]), indices=torch.tensor([7, 7]))
    with pytest.raises(ValueError, match=re.escape("the same index was given with different targets (indices [7])")):
        conflict.compute()


# ----------------------------------------------------------------------------------------------------------------
# Real 2-process DDP (gloo, CPU). Seven samples on two ranks: DistributedSampler pads rank 1 with sample 0 again.

_DDP_TARGET = torch.tensor([0, 1, 1, 2, 0, 3, 2])
_DDP_PREDS = torch.tensor([1, 1, 0, 2, 0, 3, 3])  # sample 0 (the padded duplicate) is wrong, so padding shows
_DDP_COUNTS = (300, 50, 40, 8)
_DDP_WORLD = 2


def _ddp_rank_indices(rank: int) -> torch.Tensor:
    sampler = DistributedSampler(range(len(_DDP_TARGET)), num_replicas=_DDP_WORLD, rank=rank, shuffle=False)
    return torch.tensor(list(sampler))


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # no intra-op thread pool in a forked child
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=_DDP_WORLD, timeout=timedelta(seconds=60)
    )
    try:
        idx = _ddp_rank_indices(rank)
        plain = PerClassAccuracyMetric(num_classes=4, class_counts=_DDP_COUNTS)
        dedup = PerClassAccuracyMetric(num_classes=4, class_counts=_DDP_COUNTS)
        one_rank_only = PerClassAccuracyMetric(num_classes=4)  # rank 1 never updates: empty "cat" state there
        for chunk in idx.split(3):  # two updates per rank, of uneven sizes
            plain.update(_logits(_DDP_PREDS[chunk], 4), _DDP_TARGET[chunk])
            dedup.update(_DDP_PREDS[chunk], _DDP_TARGET[chunk], indices=chunk)
            if rank == 0:
                one_rank_only.update(_DDP_PREDS[chunk], _DDP_TARGET[chunk], indices=chunk)
        # Every rank must call compute(): it all-gathers. Each rank writes its own copy so the parent can compare.
        results = {"plain": plain.compute(), "dedup": dedup.compute(), "one_rank_only": one_rank_only.compute()}
        results["local_support"] = plain.support.clone()  # after compute() the local (unsynced) state is restored
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
@pytest.mark.timeout(180)
def test_ddp_two_processes_exact_and_deduplicated(tmp_path: Path) -> None:
    # fork (where the OS has it) skips re-importing torch and torchmetrics in each child (~10 s on 2 busy cores); the
    # tensors here are too small for intra-op threads, so forking after the parent used torch is safe.
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    args = (str(tmp_path / "dist_init"), str(tmp_path))
    mp.start_processes(_ddp_worker, args=args, nprocs=_DDP_WORLD, join=True, start_method=start_method)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(_DDP_WORLD)]

    padded_order = torch.cat([_ddp_rank_indices(r) for r in range(_DDP_WORLD)])
    assert sorted(padded_order.tolist()) == [0, 0, 1, 2, 3, 4, 5, 6]  # the sampler really padded with a duplicate
    single_padded = PerClassAccuracyMetric(num_classes=4, class_counts=_DDP_COUNTS)
    single_padded.update(_DDP_PREDS[padded_order], _DDP_TARGET[padded_order])
    single = PerClassAccuracyMetric(num_classes=4, class_counts=_DDP_COUNTS)
    single.update(_DDP_PREDS, _DDP_TARGET)
    rank0_only = PerClassAccuracyMetric(num_classes=4)
    rank0_only.update(_DDP_PREDS[_ddp_rank_indices(0)], _DDP_TARGET[_ddp_rank_indices(0)])

    for res in results:  # both ranks see the same synced numbers
        _assert_same(res["plain"], single_padded.compute())  # summed states: exact, duplicate included
        _assert_same(res["dedup"], single.compute())  # dedup by index: exactly the unpadded data set
        _assert_same(res["one_rank_only"], rank0_only.compute())
    assert results[0]["local_support"].sum() == 4 and results[1]["local_support"].sum() == 4
    # The padded duplicate does change the answer, so the dedup comparison above can fail.
    assert results[0]["plain"]["acc"].item() == pytest.approx(4 / 8)
    assert results[0]["dedup"]["acc"].item() == pytest.approx(4 / 7)
    assert results[0]["dedup"]["support"].tolist() == [2, 2, 2, 1]


# ---------------------------------------------------------------------------------------------------- eKLD metric
# Pairs: p = softmax([0, 0]) = (1/2, 1/2) against q = softmax([log 3, 0]) = (3/4, 1/4): KL(p || q) = 0.1438410.
KL_HALF_VS_3_1 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)


def _ekld_batch():
    # 4 classes; column 4 (and 3 in the first rows) at -80 carries no mass (e^-80 ~ 1e-35).
    original = torch.tensor([[0.0, 0.0, -80, -80], [0.0, 0.0, -80, -80], [3.0, 0, 0, -80], [0.0, 2.0, 0, -80]])
    transformed = torch.tensor([[math.log(3.0), 0, -80, -80], [0.0, 0, -80, -80], [3.0, 0, 0, -80], [0.0, 0, 2, -80]])
    return original, transformed, torch.tensor([0, 0, 1, 2])


def test_ekld_metric_hand_computed_with_groups() -> None:
    metric = ExpectedKLDivergenceMetric(num_classes=4, class_counts=(500, 60, 5, 40))
    metric.update(*_ekld_batch())
    out = metric.compute()
    # class 2 row: p = softmax([0, 2, 0]) against q = softmax([0, 0, 2]): the two large entries swap, so
    # KL = (e^2 - 1)(2) / (e^2 + 2) in closed form (p_1 log(p_1/q_1) + p_2 log(p_2/q_2), q_1 = p_2, q_2 = p_1).
    swap = (math.e**2 - 1) * 2 / (math.e**2 + 2)
    expected = [KL_HALF_VS_3_1 / 2, 0.0, swap, float("nan")]
    torch.testing.assert_close(
        out["ekld"], torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-7, equal_nan=True
    )
    assert out["consistency"].tolist()[:3] == [1.0, 1.0, 0.0]  # the first pair keeps argmax 0 (tie broken by index)
    assert out["count"].tolist() == [2, 1, 1, 0]
    assert out["mean_ekld"].item() == pytest.approx((KL_HALF_VS_3_1 / 2 + swap) / 3)
    assert out["ekld_many"].item() == pytest.approx(KL_HALF_VS_3_1 / 2)  # class 0 (500)
    assert out["ekld_medium"].item() == pytest.approx(0.0)  # class 1 (60); class 3 (40) has no pair: skipped
    assert out["ekld_few"].item() == pytest.approx(swap)  # class 2 (5)


def test_ekld_metric_accumulates_like_one_update_and_resets() -> None:
    original, transformed, classes = _ekld_batch()
    whole = ExpectedKLDivergenceMetric(num_classes=4)
    whole.update(original, transformed, classes)
    parts = ExpectedKLDivergenceMetric(num_classes=4)
    for i in range(4):
        parts.update(original[i : i + 1], transformed[i : i + 1], classes[i : i + 1])
    a, b = whole.compute(), parts.compute()
    for key in ("kl_sum", "consistent", "count"):
        torch.testing.assert_close(a[key], b[key])
    assert "ekld_many" not in a  # no class_counts: no groups
    parts.reset()
    assert parts.count.sum() == 0 and parts.kl_sum.sum() == 0


def test_ekld_metric_bad_input() -> None:
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1, got 0"):
        ExpectedKLDivergenceMetric(num_classes=0)
    with pytest.raises(ValueError, match=r"class_counts must have num_classes=3 entries, got 2"):
        ExpectedKLDivergenceMetric(num_classes=3, class_counts=(5, 6))
    metric = ExpectedKLDivergenceMetric(num_classes=2)
    with pytest.raises(ValueError, match="logits have 3 columns but num_classes is 2"):
        metric.update(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([0]))
