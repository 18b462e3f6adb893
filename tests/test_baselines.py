"""The constant-answer baseline: scored with the task's metric, deterministic, shown by eval, loop and plots."""

import json
from dataclasses import replace

import dspy

from fst_prompt import Feedback, Task
from fst_prompt.baselines import Baseline, majority_baseline
from fst_prompt.cli import _print_summary
from fst_prompt.loop import _cycle_line
from fst_prompt.plots import accuracy_figure, load_runs, plot_runs
from fst_prompt.rundir import CycleRecord, RunDir
from fst_prompt.state import Ledger
from tests.conftest import QA, exact_metric


def numeric_metric(gold: dspy.Example, pred: dspy.Prediction) -> Feedback:
    ok = float(pred.answer) == float(gold.answer)
    return Feedback(float(ok), "Correct." if ok else "Wrong.")


def task_with(answers: list[str], metric=exact_metric) -> Task:
    examples = [dspy.Example(question=f"q{i}", answer=a).with_inputs("question") for i, a in enumerate(answers)]
    return Task(name="t", program=dspy.Predict(QA), train=examples, val=examples, test=examples, metric=metric)


def test_most_frequent_answer_wins():
    assert majority_baseline(task_with(["1", "1", "2", "1", "3"]), "val") == Baseline("1", 0.6, 5)


def test_the_task_metric_is_used_not_string_equality():
    answers = ["-2", "-2.0", "-2.0", "5", "5"]
    assert majority_baseline(task_with(answers, numeric_metric), "val") == Baseline("-2.0", 0.6, 5)
    assert majority_baseline(task_with(answers), "val") == Baseline("-2.0", 0.4, 5)


def test_ties_are_deterministic():
    for answers in (["b", "a", "b", "a", "c"], ["a", "c", "a", "b", "b"]):
        assert majority_baseline(task_with(answers), "test") == Baseline("a", 0.4, 5)


def test_n_is_respected():
    task = task_with(["1", "1", "2", "2", "2"])
    assert majority_baseline(task, "val", n=2) == Baseline("1", 1.0, 2)
    assert majority_baseline(task, "val") == Baseline("2", 0.6, 5)


def test_a_metric_that_never_accepts_gives_zero():
    task = task_with(["1", "1", "2"], metric=lambda gold, pred: Feedback(0.0, "no"))
    assert majority_baseline(task, "train") == Baseline("1", 0.0, 3)


def test_only_the_twenty_most_frequent_answers_are_tried():
    answers = [f"a{i:02d}" for i in range(25)]
    task = task_with(answers, metric=lambda gold, pred: Feedback(float(pred.answer == gold.answer == "a24"), ""))
    assert majority_baseline(task, "val") == Baseline("a00", 0.0, 25)


def cycle(i: int, **extra) -> dict:
    """A metrics.jsonl line as runs before the baseline wrote it (extra: what newer runs add)."""
    return {"cycle": i, "mode": "fst", "stage": 0, "task": "t", "val_accuracy_best": 0.2, "val_accuracy_seed": 0.1,
            "kl": 0.0, "best_id": "b", "rl_steps": 6 * (i + 1), "rl_rollouts": 0, "gepa_rollouts": 0,
            "proposals_accepted": 0, "proposals_tried": 0, "fast_seconds": 0.0, "slow_seconds": 0.0,
            "total_rollouts": i, "population": 1, **extra}


def test_cycle_line_shows_the_baseline_when_recorded():
    line = _cycle_line(CycleRecord.from_json(cycle(0, val_majority_baseline=0.094)), 3)
    assert "(seed 0.100) (constant baseline 0.094); KL" in line
    assert "constant baseline" not in _cycle_line(CycleRecord.from_json(cycle(0)), 3)


def test_old_and_new_metrics_plot(tmp_path):
    """An old run (no baseline, no eval_n, no start) and a new one (all three) draw side by side: the new one
    from RL step 0 with Wilson bars, the old one from its first cycle without, one constant-answer line."""
    for name, extra in (("old", {}), ("new", {"val_majority_baseline": 0.25, "eval_n": 50})):
        (tmp_path / name).mkdir()
        lines = [json.dumps(cycle(i, **extra)) for i in range(2)]
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    first = CycleRecord.from_json(cycle(0, val_majority_baseline=0.25, eval_n=50))
    RunDir(tmp_path / "new").write_start(replace(first, cycle=-1, val_accuracy_best=0.1, ledger=Ledger()))
    for runs in (["old"], ["old", "new"]):
        paths = plot_runs([tmp_path / r for r in runs], tmp_path / "plots")
        assert (tmp_path / "plots" / "accuracy.png") in paths
    by_steps, _ = accuracy_figure(load_runs([tmp_path / "old", tmp_path / "new"])).axes
    curves = {c.get_label(): c for c in by_steps.containers}
    assert set(curves) == {f"{r} (fst): {w}" for r in ("old", "new") for w in ("best", "seed")}
    new_best, new_seed, old_best = curves["new (fst): best"], curves["new (fst): seed"], curves["old (fst): best"]
    assert list(new_best.lines[0].get_xdata()) == [0, 6, 12]
    assert list(new_best.lines[0].get_ydata()) == [0.1, 0.2, 0.2]
    assert list(new_seed.lines[0].get_ydata()) == [0.1, 0.1, 0.1]
    assert new_best.has_yerr and not old_best.has_yerr
    assert list(old_best.lines[0].get_xdata()) == [6, 12]
    assert any(list(line.get_ydata()) == [0.25, 0.25] for line in by_steps.lines)  # the constant answer


def test_eval_summary_prints_the_baseline(capsys):
    summary = {"task": "t", "split": "val", "n": 5, "accuracy": 0.8, "mean_score": 0.8, "parse_failure_rate": 0.0,
               "truncated_rate": 0.0, "mean_completion_tokens": 3.0, "rollouts_per_s": 1.0, "generate_calls": 1,
               "seconds": 5.0}
    _print_summary(summary, "tiny", Baseline("1", 0.734, 5))
    assert "  constant baseline  0.734   (always answering '1')" in capsys.readouterr().out
