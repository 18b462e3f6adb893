"""The experiment drivers' bookkeeping and arithmetic (evals/): skipping, harvesting, ratios, areas. Every study
a test builds lives under tmp_path (`dataclasses.replace` of the driver's study, with other roots): nothing here
writes into the repository."""

import json
import subprocess
import time
from dataclasses import fields, replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from evals import bench_pipeline, compare, continual, fast_weights, headroom, plasticity, report, runner
from fst_prompt.modes import MODES as LOOP_MODES
from fst_prompt.rundir import FRESH_OK, STATE, STEPS, CycleRecord, RunDir, StepEvalRecord, StepRecord
from fst_prompt.state import Ledger

LEDGER = {f.name for f in fields(Ledger)}


def in_tmp(study, tmp_path: Path):
    """The driver's study with its results and runs under tmp_path."""
    return replace(study, results_root=tmp_path / "results", runs_root=tmp_path / "runs")


def cycle(number: int, acc: float, **values) -> CycleRecord:
    """A cycle's record: neutral values besides the ones given (ledger fields among them, by name)."""
    ledger = Ledger(**{k: values.pop(k) for k in list(values) if k in LEDGER})
    neutral = {"mode": "rl", "stage": 0, "task": "t", "val_accuracy_seed": 0.0, "val_accuracy_by_task": {},
               "val_majority_baseline": None, "eval_n": None, "kl": 0.0, "kl_stderr": None, "best_id": "0",
               "population": 1, "time": 0.0}
    return CycleRecord(cycle=number, val_accuracy_best=acc, ledger=ledger, **(neutral | values))


def write_cycles(run: Path, records: list[CycleRecord]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    for record in records:
        RunDir(run).append_cycle(record)


def pts(*pairs):
    return [{"step": s, "acc": a, "kl": k} for s, a, k in pairs]


def test_kl_at_matched_accuracy_reads_the_smoothed_curve_between_evaluations():
    rl = pts((0, 0.2, 0.0), (4, 0.2, 0.2), (8, 0.5, 0.6), (12, 0.5, 0.8))  # smoothed: .2, .3, .4, .5
    assert compare.kl_at(rl, 0.35) == pytest.approx(0.2 + 0.5 * 0.4)  # halfway from step 4 to step 8
    assert compare.kl_at(rl, 0.1) == 0.0 and compare.kl_at(rl, 0.6) is None
    fast, slow = pts((0, 0.2, 0), (3, 0.5, 0), (6, 0.5, 0)), pts((0, 0.2, 0), (3, 0.2, 0), (6, 0.5, 0), (9, 0.5, 0))
    # smoothed: slow .2 .3 .4 .5 (peak at step 9); fast .35 .4 .5 (reaches .5 at step 6)
    r = compare.reach(slow, fast, "step")
    assert (r["rl_peak"], r["rl"], r["other"], r["ratio"]) == pytest.approx((0.5, 9.0, 6.0, 1.5))
    assert compare.reach(fast, slow, "step")["ratio"] == pytest.approx(6 / 9)
    never = pts((0, 0.2, 0), (3, 0.2, 0), (6, 0.2, 0))
    assert compare.reach(fast, never, "step")["ratio"] is None  # never reached: no ratio
    assert compare.reach(never, fast, "step")["ratio"] is None  # RL's peak is its start: no ratio


def test_a_rise_inside_the_starts_interval_is_no_peak_to_reach():
    """ticket_routing seed 1: RL from 0.016 to a smoothed 0.018 at n = 128 (Wilson upper end 0.055) gave FST a
    "108x" steps ratio for matching what the base weights already scored; at n = 128 that rise is no peak."""
    rl = pts((0, 0.016, 0), (6, 0.023, 0.4), (12, 0.016, 1.4), (18, 0.016, 1.6), (24, 0.023, 1.5))
    fst = pts((0, 0.016, 0), (6, 0.234, 0.4), (12, 0.273, 0.9), (18, 0.305, 1.5), (24, 0.266, 2.0))
    r = compare.reach(rl, fst, "step", n=128)
    assert not r["rose"] and r["ratio"] is None and r["start_ceiling"] == pytest.approx(0.055, abs=1e-3)
    assert compare.reach(rl, fst, "step")["ratio"] > 1  # without n: any rise above the start counts
    climbed = pts((0, 0.016, 0), (6, 0.1, 0.4), (12, 0.2, 1.4))  # smoothed peak 0.15, clear of 0.055
    assert compare.reach(climbed, fst, "step", n=128)["rose"]
    assert compare.reach(climbed, fst, "step", n=8)["ratio"] is None  # at n = 8 the start's interval reaches 0.32


def test_readings_follow_the_one_rule_on_the_runs_values():
    """`report.reading` reads a summary's per-seed values by `fst_prompt.stats.reading`: three seeds of one sign are
    undecided (exact p = 0.25, and a t-interval needs 5 seeds), five clear of no effect are confirmed."""
    three = report.summary([0.344, 0.242, 0.273])
    assert report.reading(three, better="above", null=0.0) == "undecided: the direction in 3 of 3 seeds, exact p = 0.25"
    five = report.summary([0.30, 0.25, 0.28, 0.31, 0.26])
    assert report.reading(five, better="above", null=0.0).startswith("confirmed (n = 5, the direction in 5 of 5")
    assert report.reading(five, better="below", null=0.0).startswith("refuted (n = 5")
    ratios = report.summary([0.5, 0.4, 0.6, 0.45, 0.55], geometric=True)  # read on the logarithms, null log 1 = 0
    assert report.read(ratios, better="below", null=1.0).label == "confirmed"
    assert report.reading(report.summary([]), better="above", null=0.0) == "undecided (no seeds)"
    lo, hi = three["ci"]  # the t-interval, wider than the three values' range: 0.286 ± 4.303 · 0.0524 / √3
    assert (lo, hi) == pytest.approx((0.286 - 0.1303, 0.286 + 0.1303), abs=1e-3)


def test_ratios_are_summarised_by_their_geometric_mean():
    """2x and 0.5x average to 1x; one large ratio does not stand for the others; a ratio of 0 has no logarithm."""
    assert report.summary([2.0, 0.5], geometric=True)["mean"] == pytest.approx(1.0)
    s = report.summary([77.7, 2.0], geometric=True)
    assert s["mean"] == pytest.approx((77.7 * 2.0) ** 0.5) and s["ci"][0] < 2.0 and s["ci"][1] > 77.7  # t at df 1
    assert report.summary([77.7, 2.0])["mean"] == pytest.approx(39.85)  # the arithmetic mean, for other quantities
    assert report.read(report.summary([2.0, 3.0, 4.0, 2.5, 3.5], geometric=True), better="above",
                       null=1.0).label == "confirmed"
    zero = report.summary([0.0, 0.5], geometric=True)
    assert zero["geometric"] is False and zero["mean"] == pytest.approx(0.25)
    assert report.fmt(zero).endswith("(n=2, arithmetic mean: a ratio ≤ 0)")
    assert report.fmt(report.summary([2.0, 0.5], geometric=True)).endswith("(n=2)")


def _fake_compare_results(tmp_path: Path) -> compare.CompareStudy:
    """rl and fst runs of one task over 3 seeds: FST is 0.1 ahead and drifts half as far."""
    study = in_tmp(compare.STUDIES["v2"], tmp_path)
    task = study.folder / "t"
    (task / "base").mkdir(parents=True)
    (task / "base" / "eval.json").write_text(json.dumps({"accuracy": 0.2, "n": 128,
                                                         "majority_baseline": {"accuracy": 0.05}}))
    for seed in range(3):
        for mode, lift, drift in (("rl", 0.0, 1.0), ("fst", 0.1, 0.5)):
            run = task / f"{mode}-s{seed}"
            write_cycles(run, [cycle(c, 0.2 + 0.05 * (c + 1) + lift + 0.01 * seed, mode=mode, rl_steps=3 * (c + 1),
                                     rl_rollouts=24 * (c + 1), slow_seconds=100.0 * (c + 1), val_accuracy_seed=0.2,
                                     kl=drift * (c + 1), kl_stderr=0.1, proposals_accepted=1, proposals_tried=4)
                               for c in range(4)])
            RunDir(run).write_config("loop:\n  steps_per_cycle: 3\n")
            (run / "done.json").write_text(json.dumps({"wall_seconds": 600 + 60 * seed}))
            if mode == "fst":  # light evaluations between RL steps (loop.eval_every = 1, 32 val problems)
                for s in (1, 2):
                    RunDir(run).append_step_eval(StepEvalRecord(
                        cycle=0, stage=0, task="t", rl_steps=s, val_accuracy_best=0.3, eval_n=32,
                        total_rollouts=8 * s, seconds=30.0 * s, time=0.0))
    return study


def test_compare_report_pairs_seeds_and_redraws_byte_identically(tmp_path):
    study = _fake_compare_results(tmp_path)
    a = compare.analyse(study, ["t"], [0, 1, 2])
    t = a["tasks"]["t"]
    assert t["constant"] == 0.05 and t["eval_n"] == 128
    fst = t["curves"]["fst"][0]
    assert [(p["step"], p["n"], p["kl"] is None) for p in fst[:4]] == [(0, None, False), (1, 32, True),
                                                                       (2, 32, True), (3, None, False)]
    assert t["paired"]["fst"]["final"]["mean"] == pytest.approx(0.1) and t["paired"]["fst"]["final"]["n"] == 3
    steps = t["reach_rl_peak"]["fst"]["step"]
    assert steps["reached"] == 3 and steps["ratio"]["mean"] > 1  # FST gets to RL's final level sooner
    assert t["paired"]["fst"]["final_kl"]["mean"] == pytest.approx(-2.0)  # final KL 2 vs 4 nats
    assert t["kl"]["matched_ratio"]["mean"] < 0.5  # at RL's accuracy FST has drifted less than half as far
    readings = {r["claim"]: r["reading"] for r in a["paper"]}  # both claims hold in all 3 seeds: no more than that
    assert set(readings.values()) == {"undecided: the direction in 3 of 3 seeds, exact p = 0.25"}
    runner.write_report(study, a, compare.markdown(a), compare.plot)
    hashes = {p.name: p.read_bytes() for p in study.folder.iterdir() if p.is_file()}
    again = compare.analyse(study, ["t"], [0, 1, 2])  # --report-only: a pure function of the stored runs
    runner.write_report(study, again, compare.markdown(again), compare.plot)
    report = f"{study.name}.md"
    assert set(hashes) == {f"{study.name}.json", report, "accuracy.png", "kl_vs_accuracy.png"}
    assert all((study.folder / name).read_bytes() == data for name, data in hashes.items())
    assert "constant answer: 0.050" in hashes[report].decode()


def test_fst_is_paired_against_its_halves_on_the_seeds_both_ran():
    """FST − GEPA-only per seed, only where both ran: final accuracy, the area under the curve, final KL."""
    def run(accs, kl):
        return [{"step": 2 * k, "acc": a, "kl": kl * k} for k, a in enumerate(accs)]

    fst = {0: run([0.0, 0.9, 0.95], 2.0), 1: run([0.0, 0.8, 0.9], 1.0), 2: run([0.0, 0.5, 0.5], 1.0)}
    gepa = {0: run([0.0, 0.8, 0.8], 0.0), 1: run([0.0, 0.8, 0.7], 0.5)}  # seed 2 not run yet
    p = compare.paired(fst, gepa)
    assert p["seeds"] == [0, 1] and p["final"]["n"] == 2
    assert p["final"]["mean"] == pytest.approx((0.15 + 0.2) / 2)
    assert p["auc"]["mean"] == pytest.approx(((0.6875 - 0.6) + (0.625 - 0.575)) / 2)  # trapezoids over steps 0-4
    assert p["final_kl"]["mean"] == pytest.approx((4.0 + 1.0) / 2)  # KL 4 vs 0 and 2 vs 1 after 4 steps
    assert compare.paired(fst, {})["final"] == {"n": 0}


def test_compare_reports_a_study_run_in_pieces(tmp_path):
    """One seed of RL and FST, no GEPA runs yet (the study finished in pieces): a report with n = 1 and every
    claim undecided, not a crash."""
    import shutil

    study = _fake_compare_results(tmp_path)
    for seed in (1, 2):
        for mode in ("rl", "fst"):
            shutil.rmtree(study.folder / "t" / f"{mode}-s{seed}")
    a = compare.analyse(study, ["t", "not-run-yet"], [0, 1, 2])
    assert list(a["tasks"]) == ["t"]
    t = a["tasks"]["t"]
    assert t["paired"]["fst"]["final"]["n"] == 1 and t["final"]["gepa"] == {"n": 0}
    assert {r["reading"] for r in a["paper"]} == {"undecided: the direction in 1 of 1 seeds, exact p = 1"}
    runner.write_report(study, a, compare.markdown(a), compare.plot)
    assert "| GEPA-only | – |" in (study.folder / f"{study.name}.md").read_text()


def test_compare_counts_the_rl_steps_that_had_signal(tmp_path):
    """From the RL steps' logs: groups with a zero advantage, steps with any signal, mean reward; a step a resume
    repeated counts once (its last record)."""
    study = _fake_compare_results(tmp_path)
    run = RunDir(study.folder / "t" / "rl-s0")
    for log in [{"cycle": 0, "step": 1, "frac_reward_zero_std": 1.0, "reward": 0.0},
                {"cycle": 0, "step": 2, "frac_reward_zero_std": 1.0, "reward": 0.0},  # killed after this log ...
                {"cycle": 0, "step": 2, "frac_reward_zero_std": 0.5, "reward": 0.25},  # ... and step 2 redone
                {"cycle": 0, "train_runtime": 9.0}]:  # the trainer's closing record: no step
        run.append_step(log)
    a = compare.analyse(study, ["t"], [0, 1, 2])
    assert a["tasks"]["t"]["signal"]["rl"] == [{"seed": 0, "zero_std": 0.75, "steps_with_signal": 1, "steps": 2,
                                                "reward": 0.125}]
    assert "| RL s0 | 75% | 1/2 | 0.125 |" in compare.markdown(a)


def test_compare_says_when_rl_never_rose_above_its_start(tmp_path):
    """RL flat at its step-0 accuracy (every group scored 0: no signal): no steps ratio, said in words."""
    study = _fake_compare_results(tmp_path)
    for seed in range(3):
        run = study.folder / "t" / f"rl-s{seed}"
        # each cycle written again, as a resume would: the last record of a cycle is the one that counts
        write_cycles(run, [replace(c, val_accuracy_best=0.2) for c in RunDir(run).cycles()])
    a = compare.analyse(study, ["t"], [0, 1, 2])
    steps = a["paper"][0]
    assert steps["ours"] == {"n": 0}
    assert steps["reading"] == "undecided (no seeds); in 3 of 3 seeds RL never rose clear of its start"
    text = compare.markdown(a)
    assert "s0: RL never rose above its start (0.200)" in text
    assert "s0: no matched accuracy (RL never rose clear of its start; both reach 0.200); final KL RL" in text
    kl = a["paper"][1]  # matched at the start, where neither has drifted: no KL ratio either
    assert kl["ours"] == {"n": 0}
    assert kl["reading"] == \
        "undecided (no seeds); no ratio in the 3 seed(s) where RL never rose clear of its start"


def test_area_under_curve_is_the_mean_accuracy_over_steps():
    assert plasticity.auc([{"step": 0, "acc": 0.0}, {"step": 4, "acc": 0.4}, {"step": 12, "acc": 0.4}]) == \
        pytest.approx((4 * 0.2 + 8 * 0.4) / 12)


def _job(tmp_path: Path, name: str = "task/rl-s0") -> runner.Job:
    return runner.Job("study", name, ["run", "cfg.yaml"], tmp_path / "results", tmp_path / "runs")


def test_a_resumed_run_keeps_no_wall_time_in_the_report(tmp_path):
    """A resumed run's wall seconds are its last attempt's: they are marked, and the wall minutes leave them out."""
    jobs = [_job(tmp_path, f"task/rl-s{seed}") for seed in (0, 1)]
    for job, resumed in zip(jobs, (False, True), strict=True):
        job.run_dir.mkdir(parents=True)
        runner._harvest(job, 600.0, threads=1, parallel=1, commit="abc1234", resumed=resumed)
    assert [json.loads((j.results / "done.json").read_text())["resumed"] for j in jobs] == [False, True]
    assert runner.uninterrupted_minutes([j.results for j in jobs]) == [10.0]


@pytest.mark.parametrize("left_behind, resumed", [
    ({}, False),  # a fresh start
    ({STATE: "{}", "log.txt": "loading"}, False),  # the first attempt died before any step: time whole
    ({STATE: "{}", STEPS: '{"step": 1}\n'}, True),
    ({STATE: "{}", "gepa/cycle-0/gepa_state.bin": "x"}, True),  # died in the first GEPA round
])
def test_a_run_is_marked_resumed_only_when_an_earlier_attempt_did_work(tmp_path, monkeypatch, left_behind, resumed):
    job = _job(tmp_path, "task/rl-s2")
    for name, text in left_behind.items():
        (job.run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (job.run_dir / name).write_text(text)
    calls = []
    fake_run = lambda argv, **kw: calls.append(argv) or SimpleNamespace(returncode=0)  # noqa: E731
    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    monkeypatch.setattr(runner, "_commit", lambda: "abc1234")
    assert runner._run_one(job, threads=1, parallel=1)
    assert ("--resume" in calls[0]) == (STATE in left_behind)
    assert json.loads((job.results / "done.json").read_text())["resumed"] is resumed


def test_a_run_killed_by_the_kernel_fails_and_says_memory_is_the_likely_cause(tmp_path, monkeypatch, capsys):
    job = _job(tmp_path)
    monkeypatch.setattr(runner.subprocess, "run", lambda argv, **kw: SimpleNamespace(returncode=-9))
    monkeypatch.setattr(runner, "_commit", lambda: "aaa1111")
    assert not runner._run_one(job, threads=1, parallel=2)
    out = capsys.readouterr().out
    assert "FAILED (exit -9)" in out and "out-of-memory" in out and "--jobs 1" in out  # 2 side by side → 1
    assert not (job.results / "done.json").exists()


def test_every_attempt_of_a_run_records_the_code_it_started_from(tmp_path, monkeypatch):
    """A run that crashed on one commit and was resumed on another names both in its done.json."""
    job = _job(tmp_path, "task/gepa-s0")
    outcomes = iter([1, 0])  # the first attempt fails, the second finishes

    def fake_run(argv, **kw):  # the first attempt finds a folder `fst run` starts in (only files it allows)
        assert "--resume" in argv or {p.name for p in job.run_dir.iterdir()} <= FRESH_OK
        (job.run_dir / STATE).write_text("{}")
        return SimpleNamespace(returncode=next(outcomes))

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    commits = iter(["aaa1111", "bbb2222"])
    monkeypatch.setattr(runner, "_commit", lambda: next(commits))
    assert not runner._run_one(job, threads=1, parallel=1)
    assert not (job.results / "done.json").exists()
    assert runner._run_one(job, threads=1, parallel=1)
    done = json.loads((job.results / "done.json").read_text())
    assert done["commit"] == "bbb2222"
    assert [a["commit"] for a in done["attempts"]] == ["aaa1111", "bbb2222"]


def test_a_run_names_its_commit_dirty_only_for_changed_code(tmp_path, monkeypatch):
    """Reports a finished run rewrote under evals/results/ do not make the next run's code `-dirty`."""
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for name in ("fst_prompt/loop.py", "evals/results/report.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("one\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    clean = runner._commit()
    assert clean and not clean.endswith("-dirty")
    (tmp_path / "evals/results/report.md").write_text("two\n")
    assert runner._commit() == clean
    (tmp_path / "fst_prompt/loop.py").write_text("two\n")
    assert runner._commit() == clean + "-dirty"


def test_a_job_refuses_a_dirty_tree_unless_told_why_and_records_the_reason(tmp_path, monkeypatch, capsys):
    job = _job(tmp_path)
    calls = []
    fake_run = lambda argv, **kw: calls.append(argv) or SimpleNamespace(returncode=0)  # noqa: E731
    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    monkeypatch.setattr(runner, "_commit", lambda: "abc1234-dirty")
    with pytest.raises(SystemExit, match="--allow-dirty"):
        runner.run_jobs([job])
    assert not runner._run_one(job, threads=1, parallel=1)  # checked per job too: the tree changes during a queue
    assert not calls and not job.run_dir.exists() and "refusing to start" in capsys.readouterr().out
    runner.run_jobs([job], allow_dirty="README edits only")
    done = json.loads((job.results / "done.json").read_text())
    assert done["commit"] == "abc1234-dirty"
    assert done["attempts"][0]["dirty_reason"] == "README edits only" and len(calls) == 1
    args = runner.driver_parser("d", seeds=[0]).parse_args(["--allow-dirty", "why"])
    assert args.allow_dirty == "why"


def test_runner_harvests_keeps_final_weights_and_skips_done_jobs(tmp_path, monkeypatch):
    job = _job(tmp_path)
    for step, complete in ((4, True), (8, True), (12, False)):  # checkpoint-12: killed while being written
        ckpt = job.run_dir / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_text(f"weights {step}")
        (ckpt / "optimizer.pt").write_text("state")
        if complete:
            (ckpt / "trainer_state.json").write_text("{}")
    write_cycles(job.run_dir, [cycle(0, 0.5)])
    runner._harvest(job, 61.0, threads=1, parallel=1, commit="abc1234")
    done = json.loads((job.results / "done.json").read_text())
    assert RunDir(job.results).cycles() == [cycle(0, 0.5)] and done["wall_seconds"] == 61.0
    assert done["commit"] == "abc1234"  # the commit the job started from
    final = job.final_weights
    assert [p.name for p in final.iterdir()] == ["model.safetensors"]  # no optimizer state
    assert (final / "model.safetensors").read_text() == "weights 8"
    assert not (job.run_dir / "checkpoints").exists()
    assert job.done
    monkeypatch.setattr(runner, "_run_one", lambda *a: pytest.fail("a finished job was run again"))
    runner.run_jobs([job], parallel=1)


def _continual_run(run: Path, values: list[float], forgetting: list, constants: list[float] | None = None,
                   kl: list[float] | None = None) -> None:
    """A finished two-stage continual run (tasks a, b; two cycles each) with these val accuracies (and KLs)."""
    write_cycles(run, [cycle(i, v, stage=i // 2, task=["a", "b"][i // 2], rl_steps=4 * (i + 1),
                             kl=kl[i] if kl else 0.0, val_majority_baseline=constants[i // 2] if constants else None)
                       for i, v in enumerate(values)])
    RunDir(run).write_forgetting({"tasks": ["a", "b"], "after_stage": forgetting})
    (run / "done.json").write_text("{}")


def test_continual_normalises_each_stage_by_the_best_peak_of_either_method(tmp_path):
    study = in_tmp(continual.STUDIES["v2"], tmp_path)
    accs = {"rl": [0.2, 0.4, 0.1, 0.1], "fst": [0.3, 0.5, 0.2, 0.3]}  # stage b: RL gains 0, FST 0.1
    for seed in range(3):
        for mode, values in accs.items():
            kl = [0.1, 0.2, 0.3, 0.4 * (seed + 1)] if mode == "rl" else [0.1, 0.1, 0.2, 0.2 * (seed + 1)]
            _continual_run(study.folder / f"{mode}-s{seed}", values,
                           [[values[1], None], [0.1, values[3]]], constants=[0.05, 0.25], kl=kl)
    a = continual.analyse(study, [0, 1, 2, 3])  # seed 3 never ran
    assert a["seeds_run"] == {"rl": [0, 1, 2], "fst": [0, 1, 2]}
    stage_a, stage_b = a["per_stage"]
    assert stage_a["rl"]["normalised_final"]["mean"] == pytest.approx(0.4 / 0.5)
    assert stage_a["fst"]["normalised_final"]["mean"] == 1 and stage_a["fst"]["normalised_final"]["n"] == 3
    assert stage_b["rl"]["normalised_final"]["mean"] == pytest.approx(0.1 / 0.3)
    assert stage_b["rl"]["gain_within_stage"]["mean"] == 0 and stage_b["constant"] == 0.25
    assert stage_b["gain_fst_minus_rl"]["ci"] == pytest.approx([0.1, 0.1])
    assert stage_b["final_fst_minus_rl"]["ci"] == pytest.approx([0.2, 0.2])
    assert stage_b["rl"]["stalled"] == {"runs": 3, "of": 3} and stage_b["fst"]["stalled"] == {"runs": 0, "of": 3}
    assert a["forgetting"]["fst"]["after_stage"] == [[pytest.approx(0.5), None], pytest.approx([0.1, 0.3])]
    assert a["paper"][0]["task"] == "b"  # three seeds, each +0.2: the direction in 3 of 3, no more
    assert a["paper"][0]["reading"] == "undecided: the direction in 3 of 3 seeds, exact p = 0.25"
    # KL at the end of each stage (its last cycle), paired per seed
    assert stage_a["kl_fst_minus_rl"]["mean"] == pytest.approx(-0.1)
    assert stage_b["rl"]["final_kl"]["mean"] == pytest.approx(0.8)
    assert stage_b["kl_fst_minus_rl"]["mean"] == pytest.approx(-0.4)
    assert stage_b["kl_fst_over_rl"]["mean"] == pytest.approx(0.5) and stage_b["kl_fst_over_rl"]["geometric"]
    text = continual.markdown(a)
    assert "| 1 | b | 0.80 [-0.19, 1.79] (n=3) | 0.40 [-0.10, 0.90] (n=3) |"  # 0.8 ± 4.303 · 0.4 / √3 in text
    assert "| 1 (b) | 0.100 | 0.300 |" in text and "| 1 | b | 0.250 |" in text and "| 3 of 3 / 0 of 3 |" in text
    assert text.startswith("Seeds asked for: [0, 1, 2, 3]; finished runs: RL [0, 1, 2]; FST [0, 1, 2].")
    assert continual.plot(a, tmp_path)[0].stat().st_size > 5000


def test_continual_counts_a_stage_where_neither_method_scored(tmp_path):
    """Both methods at 0 on a task: no normalised value (0/0), but the final accuracy and the zero gain count."""
    study = in_tmp(continual.STUDIES["v2"], tmp_path)
    for seed, (rl_b, fst_b) in enumerate([([0.0, 0.0], [0.0, 0.0]), ([0.0, 0.0], [0.0, 0.25])]):
        for mode, values in {"rl": [0.5, 0.5, *rl_b], "fst": [0.5, 0.5, *fst_b]}.items():
            _continual_run(study.folder / f"{mode}-s{seed}", values, [[0.5, None], [0.5, values[3]]])
    stage_b = continual.analyse(study, [0, 1])["per_stage"][1]
    assert stage_b["rl"]["final_accuracy"]["n"] == 2 and stage_b["rl"]["final_accuracy"]["mean"] == 0
    assert stage_b["rl"]["gain_within_stage"]["n"] == 2
    assert stage_b["rl"]["normalised_final"]["n"] == 1  # seed 0 has no peak to normalise by
    assert stage_b["gain_fst_minus_rl"]["n"] == 2
    assert stage_b["gain_fst_minus_rl"]["mean"] == pytest.approx(0.125)
    assert stage_b["rl"]["stalled"] is None  # no constant baseline stored: no stall count


def test_continual_reads_the_claim_on_final_accuracy_when_the_task_is_learned_in_its_first_cycle(tmp_path):
    """FST at 0.9 after the stage's first cycle and 0.94 after its last: a gain of only 0.04, but RL ended at
    0 — the claim (FST keeps learning where RL stalls) is read on the final accuracy, paired per seed."""
    study = in_tmp(continual.STUDIES["v2"], tmp_path)
    for seed, fst_b in enumerate([[0.9, 0.94], [0.8, 0.9], [0.85, 0.85]]):
        for mode, values in {"rl": [0.5, 0.5, 0.0, 0.0], "fst": [0.5, 0.5, *fst_b]}.items():
            _continual_run(study.folder / f"{mode}-s{seed}", values, [[0.5, None], [0.5, values[3]]],
                           constants=[0.2, 0.01])
    a = continual.analyse(study, [0, 1, 2])
    stage_b = a["per_stage"][1]
    assert stage_b["gain_fst_minus_rl"]["mean"] == pytest.approx(0.14 / 3)
    assert stage_b["final_fst_minus_rl"]["mean"] == pytest.approx((0.94 + 0.9 + 0.85) / 3)
    assert a["paper"][0]["ours"] == stage_b["final_fst_minus_rl"]
    assert a["paper"][0]["reading"] == "undecided: the direction in 3 of 3 seeds, exact p = 0.25"  # 3 seeds
    assert a["paper"][0]["stalled"] == {"rl": {"runs": 3, "of": 3}, "fst": {"runs": 0, "of": 3}}
    # 0.897 ± 4.303 · 0.045 / √3 (sd of 0.94, 0.90, 0.85)
    assert ("| 3 of 3 / 0 of 3 | 0.897 [0.785, 1.009] (n=3) | undecided: the direction in 3 of 3 seeds, exact p = "
            "0.25 |") in continual.markdown(a)


def test_continual_v3_reads_rl_from_v2_and_reports_the_issues_goals(tmp_path):
    """v3 runs FST only: RL (and the FST beside it) are v2's runs of the same seeds. Its goals: date_normalize at
    the end of the run >= 0.80 per seed, and the last task's FST − RL read against −0.05."""
    v2, v3 = in_tmp(continual.STUDIES["v2"], tmp_path), in_tmp(continual.STUDIES["v3"], tmp_path)
    tasks = ["date_normalize", "chain_sum"]
    ends = {(v2, "rl"): [0.0, 0.0, 0.9], (v2, "fst"): [0.0, 0.5, 0.8], (v3, "fst"): [0.85, 0.9, 0.5]}  # per seed
    for (study, mode), date_end in ends.items():
        for seed, date in enumerate(date_end):
            run = study.folder / f"{mode}-s{seed}"
            last = 0.9 if mode == "rl" else 0.88  # chain_sum, the last task: FST − RL −0.02 in every seed
            write_cycles(run, [cycle(i, v, stage=i // 2, task=tasks[i // 2], rl_steps=4 * (i + 1))
                               for i, v in enumerate([0.5, 0.9, 0.8, last])])
            RunDir(run).write_forgetting({"tasks": tasks, "after_stage": [[0.9, None], [date, last]]})
            (run / "done.json").write_text("{}")
    a = continual.analyse(v3, [0, 1, 2], v2)
    assert a["seeds_run"] == {"rl": [0, 1, 2], "fst": [0, 1, 2]}
    g = a["goals"]
    assert g["end"]["fst (continual_v3)"]["end_of_run"][0] == {"date_normalize": 0.85, "chain_sum": 0.88}
    assert g["kept"] == {"rl": {"seeds": [2], "of": 3}, "fst (continual_v2)": {"seeds": [2], "of": 3},
                         "fst (continual_v3)": {"seeds": [0, 1], "of": 3}}
    assert g["last_task"]["fst_minus_rl"]["mean"] == pytest.approx(-0.02)
    assert g["last_task"]["reading"].startswith("undecided")  # three seeds
    text = continual.markdown(a)
    assert "| fst (continual_v3) | s0: date_normalize 0.850, chain_sum 0.880; " in text and "| 2 of 3 |" in text
    assert "Forgetting matrix, fst (continual_v2) (mean of n=3)" in text
    assert "goals" not in continual.analyse(v2, [0, 1, 2])  # v2's own report is as it was


def test_pipeline_bench_times_rl_steps_within_a_cycle_only(tmp_path):
    run = RunDir(tmp_path)
    for log in [{"cycle": 0, "step": 1, "time": 10.0, "loss": 0.1, "reward": 0.0},
                {"cycle": 0, "step": 2, "time": 13.0, "loss": 0.1, "reward": 0.0},
                {"cycle": 0, "step": 2, "time": 13.5, "train_runtime": 9.0},  # the end-of-slice summary
                {"cycle": 1, "step": 3, "time": 99.0, "loss": 0.1, "reward": 0.0},  # after the evaluation and round
                {"cycle": 1, "step": 4, "time": 103.0, "loss": 0.1, "reward": 0.0}]:
        run.append_step(log)
    assert bench_pipeline.rl_step_seconds(run.steps()) == [3.0, 4.0]
    assert bench_pipeline.rl_step_seconds([StepRecord(step=1, cycle=0, stage=0, task="t", reward=0.0, time=1.0)]) == []


@pytest.mark.parametrize("driver", [headroom, fast_weights])
def test_running_a_few_jobs_reports_every_finished_run(driver):
    args = runner.task_driver_parser(driver.__doc__, driver.TASKS, driver.SEEDS).parse_args(
        ["--tasks", "date_normalize", "--seeds", "1", "4"])
    tasks, seeds = runner.report_scope(driver.TASKS, driver.SEEDS, args)
    assert tasks == list(driver.TASKS) and seeds == [0, 1, 2, 4]  # the defaults, and seed 4 asked for


@pytest.mark.parametrize("driver", [headroom, fast_weights])
def test_every_study_run_has_a_valid_config_with_its_task_settings(driver, tmp_path):
    from fst_prompt.config import CONVENTION_TEMPLATE, load_config

    study = in_tmp(driver.STUDY, tmp_path)
    runs = [j for j in driver.jobs_for(study, list(driver.TASKS), [0, 1]) if j.argv[0] == "run"]
    assert not any(tmp_path.iterdir())  # building the jobs wrote nothing
    assert {j.name.split("/")[0] for j in runs} == {"chain_sum", "ticket_routing", "date_normalize"}  # headroom
    for job in runs:
        overrides = [job.argv[i + 1] for i, a in enumerate(job.argv) if a == "--set"]
        config = load_config(job.argv[1], overrides)
        task = job.name.split("/")[0]
        assert config.task == task and config.seed == int(job.name[-1])
        convention = task in ("ticket_routing", "date_normalize")
        assert config.policy.model == ("qwen2.5-coder-0.5b-instruct" if convention else "smollm2-135m-instruct")
        assert (config.reflection.template == CONVENTION_TEMPLATE) == convention


def test_headroom_scores_the_seed_and_hand_written_instructions_also_as_rl_samples_them(tmp_path):
    from fst_prompt.config import load_config

    jobs = {j.name: j.argv for j in headroom.jobs_for(in_tmp(headroom.STUDY, tmp_path), ["chain_sum"], [0])}
    assert load_config(fast_weights.STUDY.config).rl.temperature == headroom.RL_TEMPERATURE
    for name in ("seed", "hand"):
        greedy, sampled = jobs[f"chain_sum/{name}"], jobs[f"chain_sum/{name}-sampled"]
        assert "--temperature" not in greedy
        assert sampled[sampled.index("--temperature") + 1] == str(headroom.RL_TEMPERATURE)
        assert sampled[sampled.index("--seed") + 1] == "0"
        assert ("--prompt" in sampled) == (name == "hand") and sampled[sampled.index("--n") + 1] == "128"


def test_an_eval_job_writes_its_prompt_when_it_starts_not_when_it_is_built(tmp_path, monkeypatch):
    study = in_tmp(headroom.STUDY, tmp_path)
    job = runner.eval_job(study, "chain_sum/hand", "chain_sum", headroom.settings(study, "chain_sum"),
                          {"self": "Add them up."})
    prompt = Path(job.argv[job.argv.index("--prompt") + 1])
    assert prompt == job.results / "prompt.json" and not any(tmp_path.iterdir())  # nothing written yet
    monkeypatch.setattr(runner.subprocess, "run", lambda argv, **kw: SimpleNamespace(returncode=0))
    monkeypatch.setattr(runner, "_commit", lambda: "abc1234")
    assert runner._run_one(job, threads=1, parallel=1)
    assert json.loads(prompt.read_text()) == {"instructions": {"self": "Add them up."}}


def test_the_compared_modes_are_the_loops_modes():
    assert set(compare.MODES) == set(LOOP_MODES) and compare.MODES[0] == "rl"  # RL, the baseline, first
    assert set(continual.MODES) <= set(LOOP_MODES)


def test_v2_studies_resolve_every_run_and_evaluate_between_steps():
    from fst_prompt.config import load_config

    runs = compare.run_jobs_for(compare.STUDIES["v2"], ["ticket_routing", "date_normalize"], [0, 1, 2],
                                list(compare.MODES))
    runs += continual.jobs_for(continual.STUDIES["v2"], [0, 1, 2], list(continual.MODES))
    assert len(runs) == 2 * 3 * 4 + 3 * 2
    for job in runs:
        overrides = [job.argv[i + 1] for i, a in enumerate(job.argv) if a == "--set"]
        config = load_config(job.argv[1], overrides)
        assert config.policy.model == "qwen2.5-coder-0.5b-instruct" and config.total_cycles * 6 >= 24
        assert config.loop.eval_n >= 128 and config.loop.eval_every == 2 and config.rl.warmup_steps == 0
        assert config.rl.kl_probe_n >= 32 and config.rl.kl_samples >= 4


def test_plasticity_pairs_the_trained_starts_per_seed(tmp_path):
    study = in_tmp(plasticity.STUDIES["v2"], tmp_path)
    for seed in range(3):
        for start, accs in (("rl", [0.1, 0.2, 0.3]), ("fst", [0.1, 0.3, 0.4])):
            run, step0 = study.folder / f"{start}-s{seed}", study.folder / f"start-{start}-s{seed}"
            write_cycles(run, [cycle(i, a, rl_steps=4 * (i + 1), val_majority_baseline=0.04)
                               for i, a in enumerate(accs[1:])])
            step0.mkdir(parents=True)
            (step0 / "eval.json").write_text(json.dumps({"accuracy": accs[0]}))
            (run / "done.json").write_text("{}")
            if start == "rl":  # RL from the RL-trained start never saw a rewarded rollout; a resume repeated step 1
                for k in (1, 1, 2):
                    RunDir(run).append_step({"cycle": 0, "step": k, "frac_reward_zero_std": 1.0, "reward": 0.0})
    a = plasticity.analyse(study, [0, 1, 2])
    assert a["starts"]["rl"]["signal"][0] == {"zero_std": 1.0, "steps_with_signal": 0, "steps": 2, "reward": 0.0}
    assert a["starts"]["fst"]["signal"] == {}
    assert "| from RL on ticket_routing s2 | 100% | 0/2 | 0.000 |" in plasticity.markdown(a)
    assert a["starts"]["base"]["n"] == 0 and a["starts"]["fst"]["n"] == 3 and a["constant"] == 0.04
    assert a["fst_minus_rl"]["final"]["mean"] == pytest.approx(0.1)
    assert a["fst_minus_rl"]["auc"]["mean"] == pytest.approx((4 * 0.05 + 4 * 0.1) / 8)
    three = "undecided: the direction in 3 of 3 seeds, exact p = 0.25"  # 3 seeds cannot confirm (p >= 0.25)
    assert a["fst_minus_rl"]["reading"] == three and f"in area under the curve {three}" in plasticity.markdown(a)


def test_plasticity_repeats_a_task_a_run_whose_weights_stayed_on_another_machine(tmp_path):
    """The results keep no weights: a compare run finished elsewhere is run again (its own command) before a
    plasticity run starts from it, and the report sets the repeat's accuracy beside the original's."""
    study = in_tmp(plasticity.STUDIES["v2"], tmp_path)
    compare_dir = study.results_root / study.compare / study.task_a

    def finished(folder: Path, argv: list[str], acc: float) -> None:
        write_cycles(folder, [cycle(0, acc, rl_steps=24)])
        (folder / "done.json").write_text(json.dumps({"argv": argv}))

    for start in ("rl", "fst"):
        finished(compare_dir / f"{start}-s1", ["run", "c.yaml", "--set", f"loop.mode={start}", "--set", "seed=1"], 0.5)
    # repeated on a machine since lost: no weights here
    finished(study.folder / "retrain-fst-s1", ["run", "stale"], 0.25)
    jobs = plasticity.retrain_jobs(study, [1, 2])  # seed 2 has no compare run: nothing to repeat
    assert [(j.name, j.argv[-3:]) for j in jobs] == [("retrain-rl-s1", ["loop.mode=rl", "--set", "seed=1"]),
                                                     ("retrain-fst-s1", ["loop.mode=fst", "--set", "seed=1"])]
    assert not (study.folder / "retrain-fst-s1").exists()  # its stale results go, so the runner runs it again
    weights = tmp_path / "runs" / study.name / "retrain-rl-s1" / "final"
    weights.mkdir(parents=True)
    (weights / "model.safetensors").write_bytes(b"w")
    assert plasticity.start_weights(study, "rl", 1) == weights
    finished(study.folder / "fst-s1", ["run"], 0.0)  # the plasticity run from FST's start is done already
    finished(study.folder / "start-fst-s1", ["eval"], 0.0)
    assert plasticity.retrain_jobs(study, [1]) == []
    finished(study.folder / "retrain-rl-s1", ["run"], 0.375)
    a = plasticity.analyse(study, [0, 1, 2])
    assert a["retrained"] == {"rl-s1": {"here": 0.375, "original": 0.5}}
    assert "rl-s1 0.375 vs 0.500" in plasticity.markdown(a)


def test_reach_charges_a_gepa_round_before_the_gain_after_it():
    """FST's first evaluation (step 2) comes after its round's 600 rollouts: RL's peak is reached at >= 600
    rollouts, not at a point interpolated from 0 (the round ran before RL step 1)."""
    rl = [{"step": 0, "rollouts": 0, "seconds": 0.0, "acc": 0.0}, {"step": 24, "rollouts": 192, "seconds": 1000.0,
                                                                    "acc": 0.1}]
    fst = [{"step": 0, "rollouts": 0, "seconds": 0.0, "acc": 0.0},
           {"step": 2, "rollouts": 616, "seconds": 600.0, "acc": 0.8,
            "gepa_before": {"rollouts": 600, "seconds": 500.0}}]
    acc = [0.0, 0.8]
    assert compare.reach_at(fst, acc, 0.1, "rollouts") == pytest.approx(600 + 16 / 8)
    assert compare.reach_at(fst, acc, 0.1, "seconds") == pytest.approx(500 + 100 / 8)
    assert compare.reach_at(fst, acc, 0.1, "step") == pytest.approx(2 / 8)  # a round costs no RL steps
    assert compare.reach_at(rl, [0.0, 0.1], 0.1, "rollouts") == pytest.approx(192)


DRIVERS = {"compare": compare, "continual": continual, "plasticity": plasticity, "fast_weights": fast_weights,
           "headroom": headroom}


@pytest.mark.parametrize("driver, study", [("compare", "v1"), ("compare", "v2"), ("continual", "v1"),
                                           ("continual", "v2"), ("plasticity", "v1"), ("plasticity", "v2"),
                                           ("fast_weights", None), ("headroom", None)])
def test_the_stored_reports_are_what_the_stored_runs_give(driver, study):
    """`--report-only` redraws every committed table from the committed runs: a report left stale by an
    analysis change, or results committed without their report, fails here."""
    module = DRIVERS[driver]
    if study is None:  # one study, its default tasks and seeds
        spec = module.STUDY
        a = module.analyse(spec, list(module.TASKS), module.SEEDS)
    else:
        spec = module.STUDIES[study]
        tasks = [list(spec.tasks)] if driver == "compare" else []  # compare reports on its study's tasks
        a = module.analyse(spec, *tasks, [0, 1, 2])
    assert module.markdown(a) == (spec.folder / f"{spec.name}.md").read_text()
    assert json.loads(json.dumps(a, default=str)) == json.loads((spec.folder / f"{spec.name}.json").read_text())
    if driver == "headroom":
        assert module.markdown(a) + "\n" == (spec.results_root / "HEADROOM.md").read_text()


def test_stream_report_counts_every_rollout_and_pairs_the_arms_by_seed(tmp_path):
    from evals import stream

    v2, study = in_tmp(compare.STUDIES["v2"], tmp_path), in_tmp(stream.STUDY, tmp_path)
    (v2.folder / "t" / "base").mkdir(parents=True)
    (v2.folder / "t" / "base" / "eval.json").write_text(json.dumps({"accuracy": 0.0, "n": 128}))
    arms = {  # accuracy after each of 4 cycles, the fast loop's rollouts a cycle (val checks among them), read
        (v2, "rl"): ([0.1, 0.2, 0.3, 0.5], 0, 0, 0), (v2, "fst"): ([0.5, 0.6, 0.6, 0.6], 400, 0, 0),
        (v2, "gepa-then-rl"): ([0.6, 0.6, 0.6, 0.6], 0, 0, 0),
        (study, "fst-stream"): ([0.5, 0.6, 0.6, 0.7], 40, 10, 48)}
    for seed in range(2):
        for (where, mode), (accs, fast, checks, read) in arms.items():
            run = where.folder / "t" / f"{mode}-s{seed}"
            first = 1600 if mode == "gepa-then-rl" else 0  # its one round, before any RL step
            write_cycles(run, [cycle(c, acc, rl_steps=6 * (c + 1), rl_rollouts=48 * (c + 1), kl=0.1,
                                     gepa_rollouts=first + fast * (c + 1), gepa_val_rollouts=checks * (c + 1),
                                     gepa_reused_rollouts=read * c, fast_seconds=60.0 * (c + 1) * (fast > 0))
                                for c, acc in enumerate(accs)])
            RunDir(run).write_config("loop:\n  steps_per_cycle: 6\n")
            (run / "done.json").write_text(json.dumps({"wall_seconds": 1200 if mode == "fst-stream" else 1000}))
    a = stream.analyse(study, v2, ["t"], [0, 1, 2])
    t, row = a["t"], a["t"]["seeds"][0]
    assert sorted(t["seeds"]) == [0, 1]  # seed 2 has no runs
    assert row["fst-stream"] | {"commit": None} == {
        "rl_rollouts": 192, "fast_new": 120, "val_checks": 40, "reused": 144, "total": 352, "wall_minutes": 20.0,
        "final": 0.7, "fast_minutes": 4.0, "resumed": False, "commit": None}
    claims = t["claims"]
    assert claims["fast_new_over_rl"]["mean"] == pytest.approx(120 / 192)
    assert claims["wall_over_rl"]["mean"] == pytest.approx(1.2)
    assert claims["wall_within_run"]["mean"] == pytest.approx(20 / (20 - 4))  # its wall over its wall less fast
    assert claims["final_minus_own"]["mean"] == pytest.approx(0.1)
    # RL's peak 0.5 (smoothed: 0.4 at its end) is reached by the stream arm after its first cycle (48 + 40
    # rollouts) and by FST sampling its own after 48 + 400: RL needs more than either at its end (192)
    ratio, own = row["reach_rollouts"]["fst-stream"], row["reach_rollouts"]["fst"]
    assert ratio > 1 > own and row["reach_rollouts"]["no_val_checks"] > ratio
    # at GEPA->RL's total (1600 + 192) the stream arm has ended (0.7) above GEPA->RL's 0.6
    assert row["matched"] == {"budget": 1792, "fst_stream": 0.7, "gepa_then_rl": 0.6,
                              "diff": pytest.approx(0.1)}
    text = stream.markdown(a)
    assert "| 0 | 192 | 120 (+ 40) | 144 | 352 | 20 (17) | 0.700 (0.500 / 0.600 / 0.600) |" in text
    assert text == stream.markdown(stream.analyse(study, v2, ["t"], [0, 1, 2]))  # a pure function of the runs
    assert row["fst-online"] is None and claims["online_minus_minibatch"] == {"n": 0}
    assert "Online judging" not in text and "online −" not in text  # no online runs: no online rows

    # the online-judging arm (seed 0 only): its own table and claims, paired with the stream arm of its seed
    run = study.folder / "t" / "fst-online-s0"
    write_cycles(run, [cycle(c, acc, rl_steps=6 * (c + 1), rl_rollouts=48 * (c + 1), kl=0.1, gepa_rollouts=8 * c,
                             gepa_reused_rollouts=48 * c, fast_seconds=30.0 * (c + 1))
                       for c, acc in enumerate([0.4, 0.5, 0.6, 0.65])])
    RunDir(run).write_config("loop:\n  steps_per_cycle: 6\n")
    (run / "done.json").write_text(json.dumps({"wall_seconds": 1100}))
    a = stream.analyse(study, v2, ["t"], [0, 1])
    row, claims = a["t"]["seeds"][0], a["t"]["claims"]
    assert a["t"]["seeds"][1]["fst-online"] is None
    assert row["fst-online"]["fast_new"] == 24 and row["fst-online"]["reused"] == 144
    assert claims["online_minus_minibatch"]["values"] == [pytest.approx(-0.05)]
    assert claims["online_fast_new_over_rl"]["values"] == [pytest.approx(24 / 192)]
    text = stream.markdown(a)
    assert "| 0 | 192 | 24 (+ 0) | 144 | 216 | 18 | 0.650 (0.700) |" in text
    assert "| final accuracy, online − minibatch judging: no loss beyond 0.05 | -0.050 (n=1) |" in text


def test_the_online_arm_runs_the_stream_config_with_online_judging():
    from evals import stream

    jobs = stream.jobs_for(stream.STUDY, ["date_normalize", "ticket_routing"], [0, 4], online=True)
    assert [j.name for j in jobs] == ["date_normalize/fst-online-s0", "ticket_routing/fst-online-s0",
                                      "date_normalize/fst-online-s4"]  # ticket_routing's study has seeds 0-2
    assert jobs[0].argv[-2:] == ["--set", "gepa.judging=online"] and jobs[0].argv[1] == stream.STUDY.config
    assert "gepa.judging=online" not in stream.jobs_for(stream.STUDY, ["date_normalize"], [0])[0].argv


def test_stream_report_reads_a_distill_run_of_the_same_settings_up_to_its_distill_phase(tmp_path):
    """A seed the stream study has not run is read from the FST-distill run of that seed when that run's config is
    the stream config plus `distill:` (as the runner writes it): its cycles, and its wall less the distill phase.
    A distill run of other settings is not read."""
    import yaml

    from evals import stream
    from fst_prompt.config import load_config, redacted
    from fst_prompt.rundir import DistillRecord

    v2 = in_tmp(compare.STUDIES["v2"], tmp_path)
    study, distilled = in_tmp(stream.STUDY, tmp_path), in_tmp(stream.DISTILL, tmp_path)
    (v2.folder / "date_normalize" / "base").mkdir(parents=True)
    (v2.folder / "date_normalize" / "base" / "eval.json").write_text(json.dumps({"accuracy": 0.0, "n": 128}))
    for seed, other in [(0, []), (1, ["rl.learning_rate=5e-6"])]:  # seed 1's stream part is not the stream config's
        folder = distilled.folder / "date_normalize" / f"fst-distill-s{seed}"
        write_cycles(folder, [cycle(c, 0.5 + 0.1 * c, task="date_normalize", rl_steps=6 * (c + 1), kl=0.1,
                                    rl_rollouts=48 * (c + 1), gepa_rollouts=30 * (c + 1), fast_seconds=60.0 * (c + 1),
                                    time=1000.0 * (c + 1)) for c in range(4)])
        config = load_config(distilled.config, ["task=date_normalize", f"seed={seed}", f"run_dir={folder}",
                                                "reflection.threads=2", *other])
        RunDir(folder).write_config(yaml.safe_dump(redacted(config.model_dump()), sort_keys=False))
        RunDir(folder).append_distill(DistillRecord(
            stage=0, task="date_normalize", cycle=3, student="seed", teacher_id="abc", steps=24, rollouts=192,
            seconds=500.0, eval_n=128, time=4000.0 + 600.0, before={}, after={}))
        (folder / "done.json").write_text(json.dumps({"wall_seconds": 1800 + 600}))
    a = stream.analyse(study, v2, ["date_normalize"], [0, 1], distilled)
    t = a["date_normalize"]
    assert sorted(t["seeds"]) == [0]  # seed 1's run is another configuration
    row = t["seeds"][0]
    assert row["run"] == "distill/date_normalize/fst-distill-s0"
    assert row["fst-stream"]["wall_minutes"] == pytest.approx(30.0)  # 2400 s less its distill phase's 600
    assert row["fst-stream"]["final"] == pytest.approx(0.8) and row["fst-stream"]["rl_rollouts"] == 192
    assert "| 0 (distill/date_normalize/fst-distill-s0, before its distill phase) | 192 |" in stream.markdown(a)
    assert stream.analyse(study, v2, ["date_normalize"], [0, 1])["date_normalize"]["seeds"] == {}  # not asked
    # and the driver does not run seed 0's stream arm again; seed 1's, read from nowhere, it runs
    assert [j.name for j in stream.jobs_for(study, ["date_normalize"], [0, 1], distill=distilled)] == [
        "date_normalize/fst-stream-s1"]
    assert len(stream.jobs_for(study, ["date_normalize"], [0, 1], online=True, distill=distilled)) == 2


def test_a_run_resumed_after_its_cycles_has_its_first_attempts_wall_up_to_its_last_cycle():
    """done.json's wall of a resumed run is its last attempt's: when the resume came after the last cycle (a crash
    in the distill phase, 2026-12-07), the stream part's wall is the first attempt's start to the last cycle's end;
    a run resumed earlier has no such reading."""
    from evals import stream

    start = time.mktime(time.strptime("2026-12-07 18:59:05", runner.STAMP))
    done = {"resumed": True, "wall_seconds": 1029.6,
            "attempts": [{"started": "2026-12-07 18:59:05"}, {"started": "2026-12-07 20:31:27"}]}
    assert stream.one_attempt_wall(done, start + 4900.0) == pytest.approx(4900.0)
    assert stream.one_attempt_wall(done, start + 6000.0) is None  # the second attempt began before it ended
    assert stream.one_attempt_wall(done | {"resumed": False}, start + 4900.0) is None


def test_distill_report_reads_each_runs_distill_phase_and_the_goals(tmp_path):
    from evals import distill
    from fst_prompt.rundir import DistillRecord

    study = in_tmp(distill.STUDY, tmp_path)
    # seed 0: the seed instruction rises to 0.72 after distill (0.8 of the best's 0.9), KL 2.0 -> 3.0 (growth 0.5
    # of the run's own); seed 1: to 0.9 (1.0), KL 2.0 -> 2.5 (0.25); seed 2 has no run
    for seed, (seed_after, kl_after) in enumerate([(0.72, 3.0), (0.9, 2.5)]):
        run = RunDir(study.folder / "date_normalize" / f"fst-distill-s{seed}")
        run.path.mkdir(parents=True)
        run.append_distill(DistillRecord(
            stage=0, task="date_normalize", cycle=3, student="seed", teacher_id="abc", steps=24, rollouts=192,
            seconds=1800.0, eval_n=128, time=0.0,
            before={"val_accuracy_best": 0.9, "val_accuracy_seed": 0.0, "val_accuracy_by_task": {}, "kl": 2.0,
                    "kl_stderr": 0.1},
            after={"val_accuracy_best": 0.9, "val_accuracy_seed": seed_after, "val_accuracy_by_task": {},
                   "kl": kl_after, "kl_stderr": 0.1}))
    a = distill.analyse(study, ["date_normalize"], [0, 1, 2])
    t = a["date_normalize"]
    assert sorted(t["seeds"]) == [0, 1]
    assert t["seeds"][0]["seed_after_over_best_before"] == pytest.approx(0.8)
    assert t["claims"]["seed_after_over_best_before"]["values"] == pytest.approx([0.8, 1.0])
    assert t["claims"]["kl_growth_over_fst_kl"]["values"] == pytest.approx([0.5, 0.25])
    assert t["claims"]["seed_gain"]["mean"] == pytest.approx(0.81)
    text = distill.markdown(a)
    assert "| 0 | 128 | 0.000 → 0.720 | 0.900 → 0.900 | 2.00 → 3.00 | – | 24 | 192 | 1800 |" in text
    assert "undecided" in text and text == distill.markdown(distill.analyse(study, ["date_normalize"], [0, 1, 2]))
