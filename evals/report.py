"""What the study drivers share when they report: a quantity over runs with its interval, and its reading
against a claim. A result is worth reporting only with its n and its spread."""

from __future__ import annotations

import statistics

from fst_prompt.stats import bootstrap_mean


def summary(values: list[float | None]) -> dict:
    """Mean, sd, min, max and a seeded 95% bootstrap interval of the mean over runs (n = runs; None: a run
    without the value)."""
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    lo, hi = bootstrap_mean(values)
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "ci": [lo, hi], "n": len(values)}


def reading(s: dict, *, better: str, null: float) -> str:
    """Confirmed / refuted / undecided: where the 95% interval lies against no effect (`null`), the claim
    being that the value lies `better` ("above" or "below") it; fewer than 3 runs decide nothing."""
    if s.get("n", 0) < 3:
        return f"undecided (n = {s.get('n', 0)} runs)"
    lo, hi = s["ci"]
    if (lo > null) if better == "above" else (hi < null):
        return "confirmed"
    if (hi <= null) if better == "above" else (lo >= null):
        return "refuted"
    return "undecided"


def fmt(s: dict, digits: int = 3) -> str:
    """'0.354 [0.281, 0.438] (n=3)': a mean over runs with its 95% bootstrap interval."""
    if not s or s.get("n", 0) == 0:
        return "–"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f} (n=1)"
    lo, hi = s["ci"]
    return f"{s['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] (n={s['n']})"
