"""Intervals, readings and curve arithmetic for reported results: an accuracy is worth reporting only with its n
and its spread, a comparison of runs only with its interval over seeds and the number of seeds."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass


def wilson(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of an accuracy measured on n problems scored 0/1. It stays
    inside [0, 1] and keeps its width at 0 and 1, where the normal approximation collapses to a point."""
    if n <= 0:
        raise ValueError(f"an interval needs n >= 1 problems, got {n}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy must lie in [0, 1], got {accuracy}")
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def with_interval(accuracy: float, n: int) -> str:
    """'0.297 [0.199, 0.418]': an accuracy with its 95% Wilson interval."""
    lo, hi = wilson(accuracy, n)
    return f"{accuracy:.3f} [{lo:.3f}, {hi:.3f}]"


# The rule for readings over seeds (DESIGN.md §7), stated once. A seed is the unit: a run's rollouts or problems
# are not independent of each other, so a test over them describes that run, never the method.
#   - An interval over seeds is a t-interval of the mean (95%), shown with its n. No bootstrap: over a handful of
#     seeds a percentile bootstrap is [min, max] of the values (with 3 seeds its coverage is ~75%, not 95%).
#   - Beside it, the exact sign-flip randomisation test of the paired differences (two-sided). With n seeds its
#     smallest p is 2 / 2^n: 0.25 at 3 seeds, 0.0625 at 5, 0.031 at 6.
#   - *confirmed* (or *refuted*, the other way) only when the t-interval excludes no effect and there are
#     >= MIN_SEEDS seeds, or the exact test gives p < ALPHA; otherwise *undecided*, with "the direction in k of n".
MIN_SEEDS = 5
ALPHA = 0.05


def t_cdf_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with `df` (integer >= 1) degrees of freedom, by the finite series of Abramowitz &
    Stegun 26.7.3-4 (exact, no special functions): θ = atan(t / √df); odd df: (2/π)(θ + sinθ cosθ Σ), even df:
    sinθ Σ, each Σ a short sum of powers of cos²θ."""
    if df < 1:
        raise ValueError(f"a t distribution needs df >= 1, got {df}")
    t = abs(t)
    theta = math.atan(t / math.sqrt(df))
    c2, s, c = math.cos(theta) ** 2, math.sin(theta), math.cos(theta)
    if df % 2:  # 1 + (2/3)c² + (2·4)/(3·5)c⁴ + ... up to c^(df-3)
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(2, df - 1, 2):
            term *= c2 * k / (k + 1)
            total += term
        return 2 / math.pi * (theta + s * c * total)
    term, total = 1.0, 1.0  # 1 + (1/2)c² + (1·3)/(2·4)c⁴ + ... up to c^(df-2)
    for k in range(1, df - 2, 2):
        term *= c2 * k / (k + 1)
        total += term
    return s * total


def t_quantile(level: float, df: int) -> float:
    """The t with P(|T| < t) = level (0.95: the 97.5th percentile, 4.303 at df = 2), by bisection on the CDF."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    lo, hi = 0.0, 1.0
    while t_cdf_two_sided(hi, df) < level:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf_two_sided(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean of `values` (one per seed): mean ± t(level, n − 1) · sd / √n. It needs two
    values; with 2 or 3 it is wide (t = 12.7 and 4.3), which is what so few seeds can say."""
    n = len(values)
    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 values, got {n}")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(level, n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


@functools.lru_cache(maxsize=32)
def _signs(n: int):  # [2^n, n]: every assignment of ±1 to n values
    import numpy as np

    return 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)


def sign_flip_p(diffs: list[float], null: float = 0.0) -> float:
    """Exact two-sided p-value of the paired randomisation test: the share of the 2^n sign assignments of the
    differences (from `null`) whose mean is at least as far from 0 as the observed one. Under no effect a paired
    difference is as likely negative as positive. Its smallest value is 2 / 2^n (0.25 for 3 seeds)."""
    import numpy as np

    n = len(diffs)
    if not 1 <= n <= 20:
        raise ValueError(f"the exact sign-flip test enumerates 2^n assignments: n must be 1..20, got {n}")
    d = np.asarray(diffs, dtype=float) - null
    means = np.abs(_signs(n) @ d)  # [2^n]
    return float(np.mean(means >= abs(d.sum()) * (1 - 1e-9)))  # ties: a float sum may differ in its last bit


@dataclass(frozen=True)
class Reading:
    """What paired per-seed differences say about a claim: `label` is confirmed / refuted / undecided; `k` of `n`
    seeds point the claim's way; `interval` the 95% t-interval of the mean (None below 2 seeds); `p` the exact
    two-sided sign-flip p-value."""

    label: str
    k: int
    n: int
    mean: float | None
    interval: tuple[float, float] | None
    p: float | None

    def __str__(self) -> str:
        """'undecided: the direction in 2 of 3 seeds, exact p = 0.5', or 'confirmed (n = 6, the direction in 6 of
        6 seeds, exact p = 0.031)'."""
        if self.n == 0:
            return "undecided (no seeds)"
        p = "" if self.p is None else f", exact p = {self.p:.2g}"
        if self.label == "undecided":
            return f"undecided: the direction in {self.k} of {self.n} seeds{p}"
        return f"{self.label} (n = {self.n}, the direction in {self.k} of {self.n} seeds{p})"


def reading(values: list[float], *, better: str = "above", null: float = 0.0, level: float = 0.95) -> Reading:
    """The rule above, applied to per-seed values (paired differences, or log ratios with null 0): the claim is
    that their mean lies `better` ("above" or "below") `null`."""
    if better not in ("above", "below"):
        raise ValueError(f"better must be 'above' or 'below', got {better!r}")
    n = len(values)
    sign = 1 if better == "above" else -1
    k = sum(sign * (v - null) > 0 for v in values)
    if n == 0:
        return Reading("undecided", 0, 0, None, None, None)
    mean = sum(values) / n
    interval = t_interval(values, level) if n >= 2 else None
    p = sign_flip_p(values, null) if n <= 20 else None
    label = "undecided"
    for name, s in (("confirmed", sign), ("refuted", -sign)):
        clears = interval is not None and n >= MIN_SEEDS and (interval[0] > null if s > 0 else interval[1] < null)
        exact = p is not None and p < ALPHA and s * (mean - null) > 0
        if clears or exact:
            label = name
    return Reading(label, k, n, mean, interval, p)


def mean_over_curve(xs: list[float], ys: list[float]) -> float:
    """Area under the piecewise-linear curve (xs, ys) divided by its x-span: the curve's mean height, so
    runs of different lengths compare on one scale (an accuracy). One point: its height."""
    if len(xs) != len(ys) or not xs:
        raise ValueError("a curve needs as many x as y values, and at least one")
    if len(xs) == 1 or xs[-1] == xs[0]:
        return float(ys[-1])
    area = sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False))
    return area / (xs[-1] - xs[0])


def smooth(ys: list[float], window: int = 3) -> list[float]:
    """Centred moving average over `window` points (fewer at the ends): evaluations of a few dozen problems
    jump by one problem's worth; the smoothed curve says when a level is held, not first touched."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"the window must be an odd number >= 1, got {window}")
    h = window // 2
    return [sum(ys[max(0, i - h): i + h + 1]) / len(ys[max(0, i - h): i + h + 1]) for i in range(len(ys))]


def first_reach(xs: list[float], ys: list[float], target: float, tol: float = 1e-9) -> float | None:
    """The x at which the piecewise-linear curve first reaches `target` (interpolated between points, so
    the steps-to-reach ratio is not limited to ratios of evaluation steps); None if it never does. Values
    within `tol` count as reached (an average of equal accuracies is not always bit-equal to them)."""
    if ys and ys[0] >= target - tol:
        return float(xs[0])
    for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False):
        if y1 >= target - tol:
            return x0 + min(1.0, (target - y0) / (y1 - y0)) * (x1 - x0)
    return None
