"""BBN's cumulative-learning weight ``bbn_alpha`` (METHODS.md §4, official ``lib/core/combiner.py``)."""

from __future__ import annotations

import pytest

from lt_lightning.schedules import bbn_alpha


@pytest.mark.parametrize(
    ("t", "expected"),
    # METHODS.md §4: alpha(T) for 200 epochs, T 1-indexed; 1 - ((T - 1) / 200)^2 by hand.
    [(1, 1.0), (50, 0.939975), (100, 0.754975), (160, 0.367975), (200, 0.009975)],
)
def test_official_form_for_200_epochs(t, expected):
    alpha = bbn_alpha(t - 1, 200)  # the function takes Lightning's 0-indexed epoch
    assert alpha == pytest.approx(expected, abs=1e-12)
    assert bbn_alpha(t - 1, 200, form="code") == alpha  # "code" is the default


def test_published_values_to_three_figures():
    rounded = [round(bbn_alpha(t - 1, 200), 3) for t in (1, 50, 100, 160)] + [round(bbn_alpha(199, 200), 4)]
    assert rounded == [1.0, 0.940, 0.755, 0.368, 0.0100]


@pytest.mark.parametrize(("t", "expected"), [(1, 1 - (1 / 200) ** 2), (100, 0.75), (160, 0.36), (200, 0.0)])
def test_paper_form_is_one_minus_t_over_tmax_squared(t, expected):
    assert bbn_alpha(t - 1, 200, form="paper") == pytest.approx(expected, abs=1e-12)


def test_schedule_decreases_monotonically_from_one():
    for form in ("code", "paper"):
        values = [bbn_alpha(e, 10, form) for e in range(10)]
        assert all(a > b for a, b in zip(values, values[1:], strict=False))
        assert 0.0 <= values[-1] < values[0] <= 1.0
    assert bbn_alpha(0, 10) == 1.0  # the official form starts at exactly 1 (T - 1 = 0)


@pytest.mark.parametrize(
    ("max_epochs", "divisor"),
    # The reference's div_epoch rule: 100 * (MAX_EPOCH // 100 + 1) for 90 and 180 epochs only.
    [(90, 100), (180, 200), (100, 100), (200, 200), (120, 120)],
)
def test_90_and_180_epoch_quirk(max_epochs, divisor):
    for t in (1, max_epochs // 2, max_epochs):
        assert bbn_alpha(t - 1, max_epochs) == pytest.approx(1 - ((t - 1) / divisor) ** 2, abs=1e-12)


def test_quirk_leaves_alpha_near_point_two_at_the_end():
    assert bbn_alpha(89, 90) == pytest.approx(1 - 0.89**2)  # 0.2079
    assert bbn_alpha(179, 180) == pytest.approx(1 - 0.895**2)  # 0.199
    assert bbn_alpha(179, 180, form="paper") == pytest.approx(0.0)  # the paper form has no quirk


def test_epochs_past_the_end_are_clamped():
    assert bbn_alpha(250, 200) == bbn_alpha(199, 200)
    assert bbn_alpha(250, 200, form="paper") == 0.0


@pytest.mark.parametrize("max_epochs", [1, 0, -1, 2.0, None])
def test_max_epochs_below_two_or_not_an_int_is_rejected(max_epochs):
    with pytest.raises(ValueError, match=r"max_epochs must be an integer >= 2.*got"):
        bbn_alpha(0, max_epochs)


def test_unknown_form_is_rejected():
    with pytest.raises(ValueError, match=r"form must be one of \['code', 'paper'\], got 'nope'"):
        bbn_alpha(0, 200, form="nope")
