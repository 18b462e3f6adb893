"""The 95% intervals printed next to accuracies."""

import pytest

from fst_prompt.stats import bootstrap_mean, first_reach, mean_over_curve, smooth, wilson, with_interval


def test_wilson_matches_known_intervals_and_keeps_width_at_the_ends():
    assert with_interval(19 / 64, 64) == "0.297 [0.199, 0.418]"
    lo, hi = wilson(0.0, 64)
    assert lo == 0.0 and hi == pytest.approx(0.0565, abs=1e-3)  # 0 of 64 still leaves up to ~6%
    lo, hi = wilson(1.0, 10)
    assert hi == 1.0 and lo == pytest.approx(0.722, abs=1e-3)
    assert wilson(0.5, 1000)[1] - wilson(0.5, 1000)[0] < wilson(0.5, 100)[1] - wilson(0.5, 100)[0]


def test_wilson_refuses_what_is_not_an_accuracy():
    with pytest.raises(ValueError, match="n >= 1"):
        wilson(0.5, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wilson(1.5, 10)


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    diffs = [0.10, 0.05, 0.20, -0.02, 0.08]
    lo, hi = bootstrap_mean(diffs)
    assert lo < sum(diffs) / len(diffs) < hi
    assert min(diffs) <= lo and hi <= max(diffs)
    assert bootstrap_mean(diffs) == (lo, hi)  # a report drawn twice is identical
    assert bootstrap_mean([0.3, 0.3, 0.3]) == pytest.approx((0.3, 0.3))
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_mean([])


def test_mean_over_curve_is_the_trapezoid_area_over_the_span():
    assert mean_over_curve([0, 2, 4], [0.0, 0.5, 0.5]) == pytest.approx((0.5 + 1.0) / 4)
    assert mean_over_curve([3], [0.4]) == 0.4
    with pytest.raises(ValueError, match="as many"):
        mean_over_curve([0, 1], [0.1])


def test_smooth_averages_neighbours_and_keeps_the_ends():
    assert smooth([0.0, 0.3, 0.0, 0.3], 3) == pytest.approx([0.15, 0.1, 0.2, 0.15])
    assert smooth([0.1, 0.2], 1) == [0.1, 0.2]
    with pytest.raises(ValueError, match="odd"):
        smooth([0.1], 2)


def test_first_reach_interpolates_between_evaluations():
    xs, ys = [0, 3, 6, 9], [0.1, 0.2, 0.4, 0.3]
    assert first_reach(xs, ys, 0.3) == pytest.approx(4.5)
    assert first_reach(xs, ys, 0.05) == 0.0
    assert first_reach(xs, ys, 0.5) is None
