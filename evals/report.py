"""What the study drivers share when they report: a quantity over runs (seeds) with its t-interval and n, its
reading against a claim by the one rule of `fst_prompt.stats` (confirmed / refuted only with a t-interval clear of
no effect over >= 5 seeds, or an exact sign-flip test at p < 0.05; else undecided, with the direction in k of n
seeds), and what a run's RL steps had to learn from. Tests within one run (its rollouts or problems as units)
describe that run, never the method, and are not readings."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from fst_prompt.rundir import RunDir
from fst_prompt.stats import Reading, t_interval
from fst_prompt.stats import reading as stats_reading


def summary(values: list[float | None], *, geometric: bool = False) -> dict:
    """Mean, sd, min, max, the per-run values and the 95% t-interval of the mean over runs (n = runs, a run a seed;
    None: a run without the value; one run: no interval). `geometric` (for ratios): the mean and its interval are
    taken over the logarithms, so 2x and 0.5x average to 1x and one large ratio does not stand for the rest; where
    a ratio is 0 or below (no logarithm) the arithmetic mean is kept, and `geometric` in the result says which."""
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    spread = {"sd": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values),
              "n": len(values), "values": values}
    if geometric and min(values) > 0:
        logs = [math.log(v) for v in values]
        ci = [math.exp(x) for x in t_interval(logs)] if len(logs) > 1 else None
        return {"mean": math.exp(statistics.fmean(logs)), "ci": ci, "geometric": True, **spread}
    ci = list(t_interval(values)) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "ci": ci, **({"geometric": False} if geometric else {}), **spread}


def read(s: dict, *, better: str, null: float) -> Reading:
    """`fst_prompt.stats.reading` (the one rule: t-interval over seeds and ≥ 5 seeds, or an exact sign-flip
    p < 0.05) of a `summary`'s per-run values, the claim being that they lie `better` ("above" or "below")
    `null`; a geometric summary is read on the logarithms."""
    values = s.get("values", [])
    if s.get("geometric"):
        return stats_reading([math.log(v) for v in values], better=better, null=math.log(null))
    return stats_reading(values, better=better, null=null)


def reading(s: dict, *, better: str, null: float) -> str:
    """`read` as the reports print it: 'confirmed (n = 6, ...)' or 'undecided: the direction in 2 of 3 seeds,
    exact p = 0.5'."""
    return str(read(s, better=better, null=null))


def fmt(s: dict, digits: int = 3) -> str:
    """'0.354 [0.281, 0.438] (n=3)': a mean over runs with its 95% t-interval over seeds."""
    if not s or s.get("n", 0) == 0:
        return "–"
    kind = ", arithmetic mean: a ratio ≤ 0" if s.get("geometric") is False else ""
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f} (n=1{kind})"
    lo, hi = (_num(x, digits) for x in s["ci"])
    return f"{_num(s['mean'], digits)} [{lo}, {hi}] (n={s['n']}{kind})"


def _num(x: float, digits: int) -> str:
    """Fixed point; a huge value (a t-interval of a ratio over 2 seeds reaches 10^8) in scientific notation."""
    return f"{x:.{digits}f}" if abs(x) < 1e4 else f"{x:.2e}"


def rl_signal(results: Path) -> dict | None:
    """What the RL steps had to learn from (the run's RL steps, the last record of a step a resume repeated): the
    share of groups whose rollouts all scored the same (a zero advantage: no policy gradient from them), the
    steps with at least one group that did not, and the mean reward per rollout."""
    steps = [s for s in RunDir(results).steps() if s.frac_reward_zero_std is not None]
    if not steps:
        return None
    flat = [s.frac_reward_zero_std for s in steps]
    return {"zero_std": sum(flat) / len(flat), "steps_with_signal": sum(f < 1 for f in flat), "steps": len(flat),
            "reward": sum(s.reward for s in steps) / len(steps)}


def claims_table(claims: dict, goals: list[tuple[str, str, str, float]]) -> list[str]:
    """A report's table of claims: each goal's measured mean (t-interval, n) and its reading by the one rule.
    `goals`: (claim key, text, the goal's direction "above"/"below", its null)."""
    lines = ["| claim | measured | reading |", "|---|---|---|"]
    for key, text, better, null in goals:
        c = claims[key]
        lines.append(f"| {text} | {fmt(c)} | {reading(c, better=better, null=null) if c.get('n') else '–'} |")
    return lines
