"""Intervals for reported accuracies: an accuracy is worth reporting only with its n and its spread."""

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
