"""The figures say what a reader needs to tell learning from noise: the start at RL step 0, the seed instruction
beside the best, Wilson intervals for eval_n, the KL probe's standard error, cycles counted from 1 on integer
axes. Runs are written through `RunDir` into tmp_path; the figures are read before they are saved."""

import math

import pytest
from matplotlib.ticker import MaxNLocator

from fst_prompt.plots import (
    accuracy_figure,
    fast_weights_figure,
    kl_figure,
    load_cycles,
    load_runs,
    plot_runs,
    steps_figure,
    wilson_errors,
)
from fst_prompt.rundir import CycleRecord, RunDir
from fst_prompt.state import Ledger
from fst_prompt.stats import wilson


def record(cycle: int, best: float, seed: float, *, eval_n: int | None = 40, kl: float = 0.5,
           kl_stderr: float | None = 0.1, accepted: int = 0, population: int = 1) -> CycleRecord:
    steps = 6 * (cycle + 1)  # cycle -1 (the start): no step
    return CycleRecord(cycle=cycle, mode="fst", stage=0, task="t", val_accuracy_best=best, val_accuracy_seed=seed,
                       val_accuracy_by_task={"t": best}, val_majority_baseline=0.1, eval_n=eval_n, kl=kl,
                       kl_stderr=kl_stderr, best_id="b", population=population,
                       ledger=Ledger(rl_steps=steps, rl_rollouts=8 * steps, gepa_rollouts=10 * steps,
                                     proposals_accepted=accepted), time=0.0)


START = record(-1, 0.25, 0.25, kl=0.0, kl_stderr=0.0)
CYCLES = [record(0, 0.5, 0.3, accepted=2, population=3), record(1, 0.75, 0.4, accepted=2, population=3),
          record(2, 0.8, 0.45, accepted=3, population=4)]


def write_run(path, cycles=CYCLES, start=START, steps=0) -> RunDir:
    run = RunDir(path)
    path.mkdir(parents=True)
    if start is not None:
        run.write_start(start)
    for c in cycles:
        run.append_cycle(c)
    for i in range(steps):
        run.append_step({"step": i + 1, "cycle": 0, "reward": 0.5, "frac_reward_zero_std": 0.25,
                         "reward/context_0": 0.4, "reward/context_1": 0.6})
    return run


def curve(ax, label):
    """The errorbar container drawn with this label, and its data line."""
    [found] = [c for c in ax.containers if c.get_label() == label]
    return found, found.lines[0]


def bars(collection) -> list[float]:
    """low, high, low, high, ... of the error bars of one direction (y: a vertical bar's ends)."""
    return [float(end[1]) for segment in collection.get_segments() for end in segment]


def test_wilson_errors_are_distances_to_the_interval():
    below, above = wilson_errors([0.5, 0.0], [40, None])
    lo, hi = wilson(0.5, 40)
    assert below[0] == pytest.approx(0.5 - lo) and above[0] == pytest.approx(hi - 0.5)
    assert math.isnan(below[1]) and math.isnan(above[1])
    assert wilson_errors([0.5], [None]) is None


def test_accuracy_starts_at_step_zero_with_seed_curve_and_wilson_bars(tmp_path):
    write_run(tmp_path / "a")
    by_steps, by_rollouts = accuracy_figure(load_runs([tmp_path / "a"])).axes
    best, best_line = curve(by_steps, "a (fst): best")
    seed, seed_line = curve(by_steps, "a (fst): seed")
    assert list(best_line.get_xdata()) == [0, 6, 12, 18]
    assert list(best_line.get_ydata()) == [0.25, 0.5, 0.75, 0.8]
    assert list(seed_line.get_ydata()) == [0.25, 0.3, 0.4, 0.45]  # the start is both curves' first point
    assert seed_line.get_linestyle() == "--" and best_line.get_linestyle() == "-"
    for container, accs in ((best, [0.25, 0.5, 0.75, 0.8]), (seed, [0.25, 0.3, 0.4, 0.45])):
        assert bars(container.lines[2][0]) == pytest.approx([end for a in accs for end in wilson(a, 40)])
    _, rollouts_line = curve(by_rollouts, "a (fst): best")
    assert list(rollouts_line.get_xdata()) == [0, 108, 216, 324]  # RL + GEPA rollouts
    assert any(list(line.get_ydata()) == [0.1, 0.1] for line in by_steps.lines)  # the constant answer


def test_old_runs_have_no_start_and_no_bars(tmp_path):
    old = [record(c, 0.5, 0.3, eval_n=None, kl_stderr=None) for c in range(2)]
    write_run(tmp_path / "old", cycles=old, start=None)
    by_steps, _ = accuracy_figure(load_runs([tmp_path / "old"])).axes
    best, line = curve(by_steps, "old (fst): best")
    assert list(line.get_xdata()) == [6, 12] and not best.has_yerr
    assert "Wilson" not in by_steps.get_ylabel()


def test_kl_points_carry_the_probe_stderr_and_the_start(tmp_path):
    write_run(tmp_path / "a")
    [ax] = kl_figure(load_runs([tmp_path / "a"])).axes
    [container] = ax.containers
    assert list(container.lines[0].get_ydata()) == [0.0, 0.5, 0.5, 0.5]
    assert container.has_xerr and container.has_yerr
    _, yerr = container.lines[2]  # matplotlib draws the x bars, then the y bars
    assert bars(yerr) == pytest.approx([0, 0, 0.4, 0.6, 0.4, 0.6, 0.4, 0.6])  # KL 0.5 ± 0.1; the start: 0 ± 0
    assert [t.get_text() for t in ax.texts] == ["0", "1", "2", "3"]  # cycles as the console counts them


def test_fast_weights_count_integer_cycles_from_one(tmp_path):
    write_run(tmp_path / "a")
    accepted_ax, population_ax = fast_weights_figure(load_runs([tmp_path / "a"])).axes
    [accepted] = accepted_ax.lines
    assert list(accepted.get_xdata()) == [1, 2, 3]
    assert list(accepted.get_ydata()) == [2, 0, 1]  # per cycle, from the cumulative ledger
    assert list(population_ax.lines[0].get_ydata()) == [3, 3, 4]
    for ax in (accepted_ax, population_ax):
        for axis in (ax.xaxis, ax.yaxis):
            assert isinstance(axis.get_major_locator(), MaxNLocator)
            assert all(float(t).is_integer() for t in axis.get_majorticklocs())


def test_each_run_keeps_its_colour(tmp_path):
    write_run(tmp_path / "a", steps=3)
    write_run(tmp_path / "b", steps=2)
    runs = load_runs([tmp_path / "a", tmp_path / "b"])
    by_steps, _ = accuracy_figure(runs).axes
    for run in runs:
        colours = {curve(by_steps, f"{run.label}: {w}")[1].get_color() for w in ("best", "seed")}
        assert colours == {run.color}
        assert fast_weights_figure(runs).axes[0].lines[runs.index(run)].get_color() == run.color
    reward_ax, _ = steps_figure(runs).axes
    assert [line.get_color() for line in reward_ax.lines] == ["C0"] * 3 + ["C1"] * 3  # all + two contexts each


def test_plot_runs_writes_the_figures(tmp_path):
    write_run(tmp_path / "a")
    out = tmp_path / "plots"
    assert [p.name for p in plot_runs([tmp_path / "a"], out)] == ["accuracy.png", "kl_vs_accuracy.png",
                                                                  "fast_weights.png"]
    write_run(tmp_path / "b", steps=2)
    assert (out / "rl_steps.png") in plot_runs([tmp_path / "a", tmp_path / "b"], out)
    assert all(p.stat().st_size > 5000 for p in out.iterdir())
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.png", "fast_weights.png", "kl_vs_accuracy.png",
                                                     "rl_steps.png"]  # no temporary file left


def test_same_name_twice_is_numbered(tmp_path):
    write_run(tmp_path / "x" / "run")
    write_run(tmp_path / "y" / "run")
    assert [r.label for r in load_runs([tmp_path / "x" / "run", tmp_path / "y" / "run"])] == ["run (fst) #1",
                                                                                            "run (fst) #2"]


def test_load_cycles_still_gives_dicts(tmp_path):
    write_run(tmp_path / "a")
    cycles = load_cycles(tmp_path / "a")
    assert [c["cycle"] for c in cycles] == [0, 1, 2] and cycles[-1]["val_accuracy_best"] == 0.8


def test_a_flat_count_still_gets_integer_ticks(tmp_path):
    """A population that stays at 3 (as in the demo) once drew ticks 2.84 ... 3.16."""
    flat = [record(c, 0.5, 0.3, accepted=2, population=3) for c in range(3)]
    write_run(tmp_path / "a", cycles=flat)
    for ax in fast_weights_figure(load_runs([tmp_path / "a"])).axes:
        ticks = [t for t in ax.yaxis.get_majorticklocs() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def test_a_distill_phase_is_a_star_after_the_cycle_it_followed(tmp_path):
    """FST-distill after the last cycle: its end is drawn at that cycle's RL steps plus the distill steps (and its
    rollouts plus the student's), seed and best instruction, with Wilson bars; on the KL figure, at its KL."""
    from fst_prompt.rundir import DistillRecord

    run = write_run(tmp_path / "a")
    keys = {"val_accuracy_by_task": {}, "kl_stderr": 0.1}
    run.append_distill(DistillRecord(
        stage=0, task="t", cycle=2, student="seed", teacher_id="b", steps=24, rollouts=192, seconds=60.0,
        eval_n=40, time=0.0, before={"val_accuracy_best": 0.8, "val_accuracy_seed": 0.45, "kl": 0.5, **keys},
        after={"val_accuracy_best": 0.7, "val_accuracy_seed": 0.65, "kl": 0.9, **keys}))
    runs = load_runs([tmp_path / "a"])
    by_steps, by_rollouts = accuracy_figure(runs).axes
    for which, acc in (("best", 0.7), ("seed", 0.65)):
        star, line = curve(by_steps, f"a (fst): {which}, after distill")
        assert list(line.get_xdata()) == [18 + 24] and list(line.get_ydata()) == [acc]
        assert line.get_marker() == "*" and bars(star.lines[2][0]) == pytest.approx(list(wilson(acc, 40)))
        _, line = curve(by_rollouts, f"a (fst): {which}, after distill")
        assert list(line.get_xdata()) == [324 + 192]
    assert "distill" in by_steps.get_xlabel() and "distill" in by_rollouts.get_xlabel()
    [ax] = kl_figure(runs).axes
    star = [c for c in ax.containers if c.lines[0].get_marker() == "*"]
    assert len(star) == 1 and list(star[0].lines[0].get_xdata()) == [0.7]
    assert list(star[0].lines[0].get_ydata()) == [0.9]
    assert len(plot_runs([tmp_path / "a"], tmp_path / "plots")) == 3  # no RL step records: three figures
