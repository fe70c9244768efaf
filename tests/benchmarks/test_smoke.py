"""The speed benchmarks run end to end on tiny fake data (no timing is asserted: they are scripts, not tests)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    """A benchmarks/ script as a module (benchmarks/ is not a package; its scripts import each other by name)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_vs_reference_runs_all_three_variants(tmp_path):
    bench = _load("vs_reference")
    args = ["--root", str(tmp_path), "--fake-per-class", "100", "--device", "cpu", "--workers", "0"]
    args += ["--batch", "8", "--eval-batch", "8"]
    args += ["--epochs", "2", "--repeats", "1", "--limit-batches", "1", "--limit-eval-batches", "1"]
    result = bench.main(args)
    assert set(result) == {"a", "b", "c"}
    assert result["a"]["ratio_vs_a"] == pytest.approx(1.0)
    assert all(r["s_per_epoch"] > 0 and r["images_per_s"] > 0 for r in result.values())


def test_data_path_compares_the_loaders(tmp_path):
    bench = _load("data_path")
    args = ["--workers", "0", "--samplers", "instance", "class_aware_cycle", "--batches", "1", "--batch", "4"]
    args += ["--repeats", "1", "--classes", "3", "--head", "8", "--size", "48", "36", "--cache", str(tmp_path)]
    args += ["--startup-lines", "2000"]
    result = bench.main(args)
    assert {(0, "instance"), (0, "class_aware_cycle"), "startup"} <= set(result)
    plain, ours = result[(0, "instance")]
    assert plain > 0 and ours > 0


def test_vs_reference_full_mode_reports_time_and_accuracy_per_seed(tmp_path):
    bench = _load("vs_reference")
    args = ["--root", str(tmp_path), "--fake-per-class", "100", "--device", "cpu", "--workers", "0"]
    args += ["--batch", "32", "--eval-batch", "100", "--full", "--full-epochs", "1", "--seeds", "0"]
    (row,) = bench.main(args)["rows"]
    seed, a_time, a_acc, c_time, c_acc = row
    assert seed == 0 and a_time > 0 and c_time > 0 and 0 <= a_acc <= 1 and 0 <= c_acc <= 1
