"""What the study drivers share when they report: a quantity over runs with its interval, and its reading
against a claim, and what a run's RL steps had to learn from. A result is worth reporting only with its n and its
spread."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from fst_prompt.state import read_jsonl
from fst_prompt.stats import bootstrap_mean


def summary(values: list[float | None], *, geometric: bool = False) -> dict:
    """Mean, sd, min, max and a seeded 95% bootstrap interval of the mean over runs (n = runs; None: a run
    without the value). `geometric` (for ratios): the mean and its interval are taken over the logarithms, so
    2x and 0.5x average to 1x and one large ratio does not stand for the rest; where a ratio is 0 or below
    (no logarithm) the arithmetic mean is kept, and `geometric` in the result says which it is."""
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    spread = {"sd": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values),
              "n": len(values)}
    if geometric and min(values) > 0:
        logs = [math.log(v) for v in values]
        lo, hi = bootstrap_mean(logs)
        return {"mean": math.exp(statistics.fmean(logs)), "ci": [math.exp(lo), math.exp(hi)], "geometric": True,
                **spread}
    lo, hi = bootstrap_mean(values)
    return {"mean": statistics.fmean(values), "ci": [lo, hi], **({"geometric": False} if geometric else {}), **spread}


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
    kind = ", arithmetic mean: a ratio ≤ 0" if s.get("geometric") is False else ""
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f} (n=1{kind})"
    lo, hi = s["ci"]
    return f"{s['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}] (n={s['n']}{kind})"


def rl_signal(results: Path) -> dict | None:
    """What the RL steps had to learn from (`steps.jsonl`, the last record of a step a resume repeated): the
    share of groups whose rollouts all scored the same (a zero advantage: no policy gradient from them), the
    steps with at least one group that did not, and the mean reward per rollout."""
    path = results / "steps.jsonl"
    steps = {(r["cycle"], r["step"]): r for r in read_jsonl(path) if "frac_reward_zero_std" in r} \
        if path.is_file() else {}
    if not steps:
        return None
    flat = [r["frac_reward_zero_std"] for r in steps.values()]
    return {"zero_std": sum(flat) / len(flat), "steps_with_signal": sum(f < 1 for f in flat), "steps": len(flat),
            "reward": sum(r["reward"] for r in steps.values()) / len(steps)}
