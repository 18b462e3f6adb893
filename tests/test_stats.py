"""The 95% intervals printed next to accuracies."""

import pytest

from fst_prompt.stats import wilson, with_interval


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
