"""The 95% intervals printed next to accuracies, and the rule that reads a claim from per-seed differences."""

import pytest

from fst_prompt.stats import (
    first_reach,
    mean_over_curve,
    reading,
    sign_flip_p,
    smooth,
    t_cdf_two_sided,
    t_interval,
    t_quantile,
    wilson,
    with_interval,
)


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


def test_t_quantiles_match_the_tables():
    # P(|T| < t) = 0.95: 12.706 (df 1), 4.303 (2), 2.776 (4), 2.228 (10); df 1 is Cauchy: P(|T| < 1) = 1/2
    assert [round(t_quantile(0.95, df), 3) for df in (1, 2, 4, 10)] == [12.706, 4.303, 2.776, 2.228]
    assert t_cdf_two_sided(1.0, 1) == pytest.approx(0.5)
    assert t_quantile(0.99, 3) == pytest.approx(5.841, abs=1e-3)


def test_t_interval_is_mean_plus_minus_t_sd_over_root_n():
    # [0.1, 0.2, 0.3]: mean 0.2, sd 0.1, t(0.95, 2) = 4.3027 → 0.2 ± 4.3027 · 0.1 / √3 = 0.2 ± 0.24841
    lo, hi = t_interval([0.1, 0.2, 0.3])
    assert (lo, hi) == pytest.approx((0.2 - 0.24841, 0.2 + 0.24841), abs=1e-5)
    # three differences of one sign: a bootstrap gave [min, max] = [0.109, 0.164]; the t-interval is wider
    lo, hi = t_interval([0.164, 0.109, 0.133])
    assert lo < 0.109 and hi > 0.164
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([0.3])


def test_sign_flip_p_enumerates_every_assignment():
    assert sign_flip_p([1.0, 2.0, 3.0]) == 0.25  # all + and all − of 8: the smallest p 3 seeds can give
    assert sign_flip_p([1.0, 2.0, -3.0]) == 1.0  # the sum is 0: every assignment is as far out
    assert sign_flip_p([1.0, -1.0, 2.0, 3.0, 4.0]) == pytest.approx(6 / 32)  # |sum| ≥ 9: ±1 free, −1 +1 too
    assert sign_flip_p([0.2] * 6) == pytest.approx(2 / 64)
    assert sign_flip_p([1.2, 1.1, 1.3], null=1.0) == 0.25


def test_reading_needs_five_seeds_or_an_exact_p_below_005():
    three = reading([0.344, 0.242, 0.273])  # FST − RL on ticket_routing: same sign, 3 seeds
    assert three.label == "undecided" and (three.k, three.n, three.p) == (3, 3, 0.25)
    assert str(three) == "undecided: the direction in 3 of 3 seeds, exact p = 0.25"
    five = reading([0.30, 0.25, 0.28, 0.31, 0.26])  # t-interval clear of 0, 5 seeds (exact p = 0.0625)
    assert five.label == "confirmed" and five.p == pytest.approx(2 / 32) and five.interval[0] > 0
    assert reading([0.30, 0.25, 0.28, 0.31, 0.26], better="below").label == "refuted"
    assert reading([0.2, -0.1, 0.3, 0.1, -0.2]).label == "undecided"  # interval reaches 0
    six = reading([-0.2, -0.1, -0.3, -0.1, -0.2, -0.15], better="below")
    assert six.label == "confirmed" and six.k == 6
    assert reading([]).label == "undecided" and reading([0.5]).interval is None
    with pytest.raises(ValueError, match="above"):
        reading([0.1, 0.2], better="up")


def test_the_rule_confirms_no_effect_rarely_and_a_large_one_mostly():
    """The rule's coverage: simulated studies of paired per-seed differences, normal with sd 1. With no effect,
    *confirmed* (in the claim's direction) must come out in at most 5% of studies; with an effect of 2 sd, in most
    studies of 5 or more seeds. 3 seeds never confirm: the t-interval needs 5, and the exact p cannot go below
    0.25."""
    import numpy as np

    rng = np.random.default_rng(0)
    for n in (3, 5, 8):
        null = [reading(list(d)).label for d in rng.normal(0.0, 1.0, size=(2000, n))]
        assert null.count("confirmed") / len(null) <= 0.05, n
        large = [reading(list(d)).label for d in rng.normal(2.0, 1.0, size=(500, n))]
        if n == 3:
            assert large.count("confirmed") == 0
        else:
            assert large.count("confirmed") / len(large) > 0.8, n
            assert "refuted" not in large


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
