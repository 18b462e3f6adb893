"""Figures from one or several run directories (PNG, matplotlib), read only through `RunDir`:

- accuracy.png: val accuracy vs RL step, and vs all policy rollouts (RL's and the fast loop's new ones: every
  mode on one axis), with the best instruction (solid) and the seed instruction (dashed, lighter) of each run,
  each point with its 95% Wilson interval (runs that record eval_n), starting from step 0 (base weights, seed
  instruction; runs that record start.json), and the constant-answer baseline of each task as a dotted line
  (runs that record it); a distill phase (FST-distill) is a star after its stage's last cycle, joined to it by a
  dotted line, its steps and student rollouts added to the axes;
- kl_vs_accuracy.png: KL(pi || pi_base) on the probe set, with its standard error, vs val accuracy with its
  Wilson interval, one point per cycle (and the start, at KL 0), each labelled with its cycle number, and a star
  after each distill phase;
- fast_weights.png: accepted proposals and population size per cycle (cycles numbered from 1, as the console);
- rl_steps.png (runs that train): reward per RL step, overall and per context of the population, and the
  fraction of zero-variance groups (which give no gradient).

Each run keeps one colour in every figure. The figure builders return the matplotlib `Figure` (no pyplot, no
global backend), so a test can read the plotted data before anything is saved.

    fst plot runs/fst runs/rl --out runs/plots

It only reads the run directories.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fst_prompt.rundir import CycleRecord, DistillRecord, RunDir, StepRecord
from fst_prompt.stats import wilson

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

BEST, SEED = {"ls": "-", "alpha": 1.0}, {"ls": "--", "alpha": 0.45}  # how the two instructions are drawn
DISTILLED = {"marker": "*", "ms": 10, "ls": ":"}  # a distill phase's end, joined to the cycle it followed


@dataclass(frozen=True)
class Run:
    """What the figures draw of one run directory."""

    label: str
    color: str
    cycles: list[CycleRecord]
    start: CycleRecord | None  # the evaluation before any training (runs older than it: None)
    steps: list[StepRecord]
    distills: list[DistillRecord] = field(default_factory=list)

    @property
    def points(self) -> list[CycleRecord]:
        """The evaluations in order: the start when recorded, then each cycle."""
        return ([self.start] if self.start else []) + self.cycles

    def distilled(self) -> list[tuple[CycleRecord, DistillRecord]]:
        """Each distill phase with the cycle evaluation it followed (its "before")."""
        by_cycle = {c.cycle: c for c in self.cycles}
        return [(by_cycle[d.cycle], d) for d in self.distills if d.cycle in by_cycle]


def load_cycles(run_dir: Path) -> list[dict[str, Any]]:
    """The cycles of a run as JSON dicts: kept for scripts written against 0.1. New code should use
    `RunDir(run_dir).cycles()`, which gives typed `CycleRecord`s."""
    return [c.to_json() for c in RunDir(run_dir).cycles()]


def load_runs(run_dirs: list[Path]) -> list[Run]:
    """The runs to draw, labelled `name (mode)` (a name given twice: numbered), one colour each."""
    dirs = [RunDir(d) for d in run_dirs]
    cycles = [d.cycles() for d in dirs]
    labels = [f"{d.path.name} ({c[0].mode})" if c else d.path.name for d, c in zip(dirs, cycles, strict=True)]
    labels = [f"{label} #{i + 1}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]
    return [Run(label, f"C{i % 10}", c, d.start(), d.steps(), d.distills())
            for i, (label, d, c) in enumerate(zip(labels, dirs, cycles, strict=True))]


def plot_runs(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    """Draw the figures of the runs into out_dir; the paths written."""
    runs = load_runs([Path(d) for d in run_dirs])
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [_save(accuracy_figure(runs), out_dir / "accuracy.png"),
               _save(kl_figure(runs), out_dir / "kl_vs_accuracy.png"),
               _save(fast_weights_figure(runs), out_dir / "fast_weights.png")]
    if any(run.steps for run in runs):
        written.append(_save(steps_figure(runs), out_dir / "rl_steps.png"))
    return written


def wilson_errors(accuracies: list[float], ns: list[int | None]) -> list[list[float]] | None:
    """Error bars [[below...], [above...]] of the Wilson intervals; NaN for a point without n, and None when
    no point has one (nothing to draw)."""
    if all(n is None for n in ns):
        return None
    bounds = [wilson(a, n) if n is not None else (math.nan, math.nan) for a, n in zip(accuracies, ns, strict=True)]
    return [[a - lo for a, (lo, _) in zip(accuracies, bounds, strict=True)],
            [hi - a for a, (_, hi) in zip(accuracies, bounds, strict=True)]]


def accuracy_figure(runs: list[Run]) -> Figure:
    """Val accuracy, best and seed instruction, vs RL steps (left) and vs policy rollouts (right)."""
    fig, (by_steps, by_rollouts) = _figure(2)
    for run in runs:
        points = run.points
        ns = [p.eval_n for p in points]
        for which, style in (("best", BEST), ("seed", SEED)):
            acc = [p.val_accuracy_best if which == "best" else p.val_accuracy_seed for p in points]
            for ax, xs in ((by_steps, [p.rl_steps for p in points]), (by_rollouts, [p.total_rollouts for p in points])):
                ax.errorbar(xs, acc, yerr=wilson_errors(acc, ns), color=run.color, marker="o", ms=4, capsize=3,
                            label=f"{run.label}: {which}", **style)
        for before, d in run.distilled():
            for which, style in (("best", BEST), ("seed", SEED)):
                acc = [d.before[f"val_accuracy_{which}"], d.after[f"val_accuracy_{which}"]]
                for ax, xs in ((by_steps, [before.rl_steps, before.rl_steps + d.steps]),
                               (by_rollouts, [before.total_rollouts, before.total_rollouts + d.rollouts])):
                    ax.plot(xs, acc, color=run.color, lw=1, ls=":", alpha=style["alpha"])
                    ax.errorbar(xs[1:], acc[1:], yerr=wilson_errors(acc[1:], [d.eval_n]), color=run.color,
                                marker="*", ms=10, capsize=3, ls="none", alpha=style["alpha"],
                                label=f"{run.label}: {which}, after distill")
    distilled = any(run.distills for run in runs)
    baselines = _baselines(runs)
    for ax in (by_steps, by_rollouts):
        for i, (_task, value) in enumerate(baselines):
            ax.axhline(value, color=f"C{(len(runs) + i) % 10}", ls=":", lw=1.2)
        ax.xaxis.set_major_locator(_integer())
    started, accuracy = any(run.start for run in runs), "val accuracy" + _interval(runs)
    _axes(by_steps, "RL steps" + (" (0: base weights, seed instruction)" if started else "")
          + (" then distill steps" if distilled else ""), accuracy)
    _axes(by_rollouts, "policy rollouts (RL + fast loop's new" + (" + distill's" if distilled else "") + ")",
          accuracy)
    styles = [("best instruction", BEST), ("seed instruction", SEED)] + [("after distill", DISTILLED)] * distilled
    _figure_legend(fig, _legend(runs, *styles) + _baseline_handles(runs, baselines))
    return fig


def kl_figure(runs: list[Run]) -> Figure:
    """KL to the base (probe set, ± standard error) vs val accuracy of the best instruction (Wilson interval),
    each point labelled with its cycle (0: the start)."""
    fig, (ax,) = _figure(1)
    for run in runs:
        points = run.points
        acc = [p.val_accuracy_best for p in points]
        kl_err = [_nan(p.kl_stderr) for p in points]
        ax.errorbar(acc, [p.kl for p in points], xerr=wilson_errors(acc, [p.eval_n for p in points]),
                    yerr=None if all(math.isnan(e) for e in kl_err) else kl_err, color=run.color, marker="o", ms=4,
                    capsize=3, label=run.label)
        for p in points:
            ax.annotate(str(p.cycle + 1), (p.val_accuracy_best, p.kl), textcoords="offset points", xytext=(4, 4),
                        fontsize=7, color=run.color)
        for before, d in run.distilled():
            acc, kl = [before.val_accuracy_best, d.after["val_accuracy_best"]], [before.kl, d.after["kl"]]
            ax.plot(acc, kl, color=run.color, lw=1, ls=":")
            ax.errorbar(acc[1:], kl[1:], xerr=wilson_errors(acc[1:], [d.eval_n]),
                        yerr=None if d.after.get("kl_stderr") is None else [d.after["kl_stderr"]], color=run.color,
                        marker="*", ms=10, capsize=3, ls="none")
    stderr = " (± s.e.)" if any(p.kl_stderr is not None for run in runs for p in run.points) else ""
    _axes(ax, "val accuracy, best instruction" + _interval(runs), f"KL(π‖π_base), nats per sequence{stderr}")
    started = " (0: the start)" if any(run.start for run in runs) else ""
    distilled = [("after distill", DISTILLED)] * any(run.distills for run in runs)
    _figure_legend(fig, _legend(runs, *distilled), title=f"points labelled with their cycle{started}")
    return fig


def fast_weights_figure(runs: list[Run]) -> Figure:
    """Proposals accepted in each cycle, and the population size after it; cycles numbered from 1."""
    fig, (accepted_ax, population_ax) = _figure(2)
    for run in runs:
        xs = [c.cycle + 1 for c in run.cycles]
        total = [c.ledger.proposals_accepted for c in run.cycles]  # cumulative over the run
        accepted = [b - a for a, b in zip([0, *total[:-1]], total, strict=True)]
        accepted_ax.plot(xs, accepted, color=run.color, marker="o", label=run.label)
        population_ax.plot(xs, [c.population for c in run.cycles], color=run.color, marker="o", label=run.label)
    for ax, ylabel in ((accepted_ax, "proposals accepted in the cycle"), (population_ax, "population size")):
        ax.xaxis.set_major_locator(_integer())
        ax.yaxis.set_major_locator(_integer())
        # counts start at 0 and span at least one integer: a flat line would otherwise get a fractional range
        # (3 ± 0.15) in which no integer tick but one fits, and matplotlib then ticks fractions
        ax.set_ylim(-0.2, max(1.0, ax.get_ylim()[1]) + 0.2)
        _axes(ax, "cycle", ylabel)
    _figure_legend(fig, _legend(runs))
    return fig


def steps_figure(runs: list[Run]) -> Figure:
    """Reward per RL step (thick: all rollouts; thin: each context of the population) and the fraction of
    groups whose rollouts all scored alike. Steps are numbered across stages, from 1."""
    fig, (reward_ax, zero_ax) = _figure(2)
    for run in runs:
        xs = list(range(1, len(run.steps) + 1))  # global RL step (stages follow each other)
        reward_ax.plot(xs, [s.reward for s in run.steps], color=run.color, lw=1.8, label=f"{run.label}: all")
        contexts = sorted({k for s in run.steps for k in s.context_rewards})
        for j, key in enumerate(contexts):
            reward_ax.plot(xs, [s.context_rewards.get(key, math.nan) for s in run.steps], color=run.color, alpha=0.4,
                           lw=1, ls=("--", ":", "-.")[j % 3], label=f"{run.label}: {key}")
        zero_ax.plot(xs, [_nan(s.frac_reward_zero_std) for s in run.steps], color=run.color, label=run.label)
    for ax in (reward_ax, zero_ax):
        ax.xaxis.set_major_locator(_integer())
    _axes(reward_ax, "RL step", "mean reward")
    _axes(zero_ax, "RL step", "fraction of zero-variance groups")
    _figure_legend(fig, _legend([r for r in runs if r.steps], ("all rollouts", {"ls": "-", "lw": 1.8}),
                                ("one context of the population", {"ls": "--", "lw": 1, "alpha": 0.4})))
    return fig


def _interval(runs: list[Run]) -> str:
    """What the accuracy error bars are, for an axis label (old runs that did not record eval_n have none)."""
    return " (95% Wilson interval)" if any(p.eval_n is not None for run in runs for p in run.points) else ""


def _baselines(runs: list[Run]) -> list[tuple[str, float]]:
    """The constant answer's accuracy per task, of the runs that record it."""
    found = {c.task: c.val_majority_baseline for run in runs for c in run.cycles if c.val_majority_baseline is not None}
    return sorted(found.items())


def _baseline_handles(runs: list[Run], baselines: list[tuple[str, float]]) -> list[Any]:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=f"C{(len(runs) + i) % 10}", ls=":", lw=1.2,
                   label="constant answer" if len(baselines) == 1 else f"constant answer ({task})")
            for i, (task, _) in enumerate(baselines)]


def _legend(runs: list[Run], *styles: tuple[str, dict[str, Any]]) -> list[Any]:
    """A small legend: one entry per run (its colour), then one per line style (in grey), rather than one per
    run and style."""
    from matplotlib.lines import Line2D

    return ([Line2D([], [], color=run.color, lw=2, label=run.label) for run in runs]
            + [Line2D([], [], color="0.35", label=name, **style) for name, style in styles])


def _figure_legend(fig: Figure, handles: list[Any], title: str | None = None) -> None:
    """One small legend under the axes, where it hides no data."""
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=7, title=title,
               title_fontsize=7, frameon=False)


def _figure(ncols: int) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5 * ncols, 4.4), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _integer() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _axes(ax: Axes, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _save(fig: Figure, path: Path) -> Path:
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path
