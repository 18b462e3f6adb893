"""Intervals and curve arithmetic for reported results: an accuracy is worth reporting only with its n and
its spread, a comparison of runs only with its interval."""

from __future__ import annotations

import math


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


def bootstrap_mean(values: list[float], *, resamples: int = 10_000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of `values` (e.g. the per-seed paired differences FST − RL).
    Seeded, so a report drawn twice from the same results is identical. With a handful of values it is
    narrow and optimistic: it can say no more than those few values span."""
    import numpy as np

    if not values:
        raise ValueError("a bootstrap interval needs at least one value")
    x = np.asarray(values, dtype=float)
    means = np.random.default_rng(seed).choice(x, size=(resamples, len(x)), replace=True).mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


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
