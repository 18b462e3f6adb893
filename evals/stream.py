"""Study 6 — one rollout stream: FST whose fast loop reads the RL rollouts, against RL, FST sampling its own and
GEPA->RL, every policy rollout counted.

    python -m evals.stream [--tasks date_normalize ticket_routing] [--seeds 0 1 2 3 4] [--jobs 1]
                           [--baselines [MODE ...]] [--online] [--report-only]

Runs `fst run evals/configs/stream.yaml` (the compare v2 settings with `gepa.rollouts: rl`) per task and seed
into `evals/results/stream/<task>/fst-stream-s<seed>` (a seed the study has not run is read from the FST-distill
study's run of that seed, `evals/results/distill/<task>/fst-distill-s<seed>`, when its config is this one plus
`distill:`: up to its distill phase it is the same run, and the phase's time is taken off its wall); its
baselines are the compare v2 study's runs of the same seed (`evals/results/compare_v2/<task>/{rl,fst,gepa-then-rl}-
s<seed>`), and `--baselines [rl fst gepa-then-rl]` runs those that are missing (seeds 3-4; all three by default)
with the v2 config. Then writes `stream.json` + `stream.md`:

- per run: RL rollouts, the fast loop's new ones (its val checks apart), the RL rollouts it read, wall minutes;
- final accuracy, FST with one stream − FST sampling its own, paired by seed (t-interval, reading);
- policy rollouts to reach RL's smoothed peak, all rollouts counted, RL / FST (geometric mean over seeds);
- FST vs GEPA->RL at matched total rollouts: FST's accuracy at the last evaluation within GEPA->RL's total, minus
  GEPA->RL's final accuracy, paired by seed;
- `--online` runs the issue's second way of judging a proposal beside it (the same config with
  `gepa.judging: online`: a proposal is put on trial in the next T steps' contexts and rated by the RL rollouts drawn
  under it) into `<task>/fst-online-s<seed>`, reported against the minibatch arm of the same seed;
- each claim's reading by the one rule (`fst_prompt.stats`: confirmed / refuted / undecided).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from evals.compare import STUDIES as COMPARE
from evals.compare import curve, reach, run_jobs_for
from evals.report import claims_table, summary
from evals.runner import STAMP, Study, run_jobs, task_driver_parser, write_report
from fst_prompt.cli import offline_environment
from fst_prompt.config import load_config
from fst_prompt.rundir import RunDir

STUDY = Study(name="stream", config="evals/configs/stream.yaml")
DISTILL = Study(name="distill", config="evals/configs/distill.yaml")
V2 = COMPARE["v2"]
ARM, DISTILL_ARM, ONLINE_ARM = "fst-stream", "fst-distill", "fst-online"
BASELINES = ("rl", "fst", "gepa-then-rl")  # the compare v2 modes the claims read
SEEDS = {"date_normalize": [0, 1, 2, 3, 4], "ticket_routing": [0, 1, 2]}  # what the issue asks for


def jobs_for(study: Study, tasks: list[str], seeds: list[int], *, online: bool = False,
             distill: Study | None = None) -> list:
    """The stream arm's runs, or (`online`) the online-judging arm's: the same config, `gepa.judging: online`.
    A stream run that the report reads from `distill`'s run of its seed (`stream_run`) is not run again."""
    arm, extra = (ONLINE_ARM, ["--set", "gepa.judging=online"]) if online else (ARM, [])
    return [study.job(f"{task}/{arm}-s{seed}", ["run", study.config, "--set", f"task={task}", "--set", f"seed={seed}",
                                                *extra])
            for seed in seeds for task in tasks if seed in SEEDS.get(task, seeds)
            and (online or stream_run(study, distill, task, seed)[0] is study)]


def stream_run(study: Study, distill: Study | None, task: str, seed: int) -> tuple[Study, str]:
    """Where seed `seed`'s one-stream run is: the study's own, else (none finished) an FST-distill run of the same
    task and seed whose config is the study's with `distill:` added — the same run up to its distill phase."""
    own = study.folder / task / f"{ARM}-s{seed}"
    other = None if distill is None else distill.folder / task / f"{DISTILL_ARM}-s{seed}"
    if (own / "done.json").is_file() or other is None or not (other / "done.json").is_file():
        return study, ARM
    return (distill, DISTILL_ARM) if same_run_before_distill(other, study, task, seed) else (study, ARM)


def same_run_before_distill(folder: Path, study: Study, task: str, seed: int) -> bool:
    """The run's config is `study`'s for this task and seed but its `distill:` section (and where it ran: run_dir,
    the reflection threads the runner sets)."""
    def settings(config: dict) -> dict:
        kept = {k: v for k, v in config.items() if k not in ("distill", "run_dir")}
        return kept | {"reflection": {k: v for k, v in config["reflection"].items() if k != "threads"}}

    expected = load_config(study.config, [f"task={task}", f"seed={seed}"]).model_dump()
    return settings(RunDir(folder).config_data()) == settings(json.loads(json.dumps(expected)))


def base_accuracy(v2: Study, task: str) -> float | None:
    path = v2.folder / task / "base" / "eval.json"
    return json.loads(path.read_text())["accuracy"] if path.is_file() else None


def run_summary(folder, mode_curve: list[dict] | None) -> dict | None:
    """A finished run's spending and its end: rollouts by where they went, wall minutes, final accuracy."""
    if mode_curve is None:
        return None
    run, done = RunDir(folder), json.loads((folder / "done.json").read_text())
    cycles = run.cycles()
    last, ended = cycles[-1], {c.cycle: c.time for c in cycles}
    ledger = last.ledger
    # a distill phase after the last cycle (an FST-distill run read as a stream run) is not part of the run
    after = sum(d.time - ended[d.cycle] for d in run.distills())
    wall = one_attempt_wall(done, last.time)
    if wall is None:
        wall = done["wall_seconds"] - after
    return {"rl_rollouts": ledger.rl_rollouts, "fast_new": ledger.fast_new_rollouts,
            "val_checks": ledger.gepa_val_rollouts, "reused": ledger.gepa_reused_rollouts,
            "total": last.total_rollouts, "wall_minutes": wall / 60,
            "final": last.val_accuracy_best,
            "fast_minutes": ledger.fast_seconds / 60,
            "resumed": bool(done.get("resumed")), "commit": done.get("commit")}


def one_attempt_wall(done: dict, last_cycle_end: float) -> float | None:
    """A resumed run whose cycles all ran in its first attempt (it was resumed after them, in a distill phase): the
    seconds from that attempt's start to its last cycle's end. done.json's wall is the last attempt's alone."""
    starts = [time.mktime(time.strptime(a["started"], STAMP)) for a in done.get("attempts", [])]
    if not done.get("resumed") or len(starts) < 2 or min(starts[1:]) < last_cycle_end:
        return None
    return last_cycle_end - starts[0]


def without_val_checks(points: list[dict], folder) -> list[dict]:
    """The curve with the accepted proposals' val checks (a diagnostic, not part of the method) taken off its
    rollouts axis: each point of cycle c (after its round) loses the val checks the ledger counted by then."""
    checks = {c.cycle: c.ledger.gepa_val_rollouts for c in RunDir(folder).cycles()}
    return [p | {"rollouts": p["rollouts"] - checks.get(p["cycle"], 0)} for p in points]


def at_rollouts(points: list[dict], budget: float) -> float | None:
    """The accuracy of the last full evaluation (a cycle's: KL measured) within `budget` policy rollouts."""
    within = [p for p in points if p["rollouts"] <= budget and p["kl"] is not None and p["step"] > 0]
    return within[-1]["acc"] if within else None


def analyse(study: Study, v2: Study, tasks: list[str], seeds: list[int], distill: Study | None = None) -> dict:
    """Per task: each seed's spending and end for the stream arm (`study`, or for a seed it lacks an FST-distill
    run in `distill`) and v2's baselines (`v2`), and the claims over seeds."""
    out = {}
    for task in tasks:
        base = base_accuracy(v2, task)
        if base is None:
            continue
        per_seed = {}
        for seed in seeds:
            curves = {mode: curve(v2, task, mode, seed, base) for mode in ("rl", "fst", "gepa-then-rl")}
            where, arm = stream_run(study, distill, task, seed)
            curves[ARM] = curve(where, task, arm, seed, base)
            if curves[ARM] is None:
                continue
            folders = {mode: v2.folder / task / f"{mode}-s{seed}" for mode in ("rl", "fst", "gepa-then-rl")}
            folders[ARM] = where.folder / task / f"{arm}-s{seed}"
            row = {mode: run_summary(folders[mode], c) for mode, c in curves.items()}
            n = curves[ARM][-1].get("n")
            if curves["rl"]:
                row["reach_rollouts"] = {m: reach(curves["rl"], curves[m], "rollouts", n)["ratio"]
                                         for m in (ARM, "fst") if curves[m]}
                row["reach_rollouts"]["no_val_checks"] = reach(curves["rl"], without_val_checks(curves[ARM],
                                                               folders[ARM]), "rollouts", n)["ratio"]
            if curves["gepa-then-rl"]:
                budget = row["gepa-then-rl"]["total"]
                mine = at_rollouts(curves[ARM], budget)
                row["matched"] = {"budget": budget, "fst_stream": mine, "gepa_then_rl": row["gepa-then-rl"]["final"],
                                  "diff": None if mine is None else mine - row["gepa-then-rl"]["final"]}
            row["run"] = f"{where.name}/{task}/{arm}-s{seed}"
            row[ONLINE_ARM] = run_summary(study.folder / task / f"{ONLINE_ARM}-s{seed}",
                                          curve(study, task, ONLINE_ARM, seed, base))
            per_seed[seed] = row
        stream = [r[ARM] for r in per_seed.values()]
        claims = {
            "fast_new_over_rl": summary([r["fast_new"] / r["rl_rollouts"] for r in stream]),
            "wall_over_rl": summary([r[ARM]["wall_minutes"] / r["rl"]["wall_minutes"]
                                     for r in per_seed.values() if r["rl"]]),
            # the same machine and run: RL's run taken as this run less its fast steps (its RL steps, evaluations
            # and KL probes are the same work; an RL run's prompts are shorter, so this leans towards RL)
            "wall_within_run": summary([r[ARM]["wall_minutes"] / (r[ARM]["wall_minutes"] - r[ARM]["fast_minutes"])
                                        for r in per_seed.values()]),
            "final_minus_own": summary([r[ARM]["final"] - r["fst"]["final"] for r in per_seed.values() if r["fst"]]),
            "reach_rl_over_stream": summary([r.get("reach_rollouts", {}).get(ARM) for r in per_seed.values()],
                                            geometric=True),
            "reach_no_val_checks": summary([r.get("reach_rollouts", {}).get("no_val_checks")
                                            for r in per_seed.values()], geometric=True),
            "reach_rl_over_own": summary([r.get("reach_rollouts", {}).get("fst") for r in per_seed.values()],
                                         geometric=True),
            "matched_minus_gepa_then_rl": summary([r.get("matched", {}).get("diff") for r in per_seed.values()]),
            "online_fast_new_over_rl": summary([r[ONLINE_ARM]["fast_new"] / r[ONLINE_ARM]["rl_rollouts"]
                                                for r in per_seed.values() if r[ONLINE_ARM]]),
            "online_minus_minibatch": summary([r[ONLINE_ARM]["final"] - r[ARM]["final"]
                                               for r in per_seed.values() if r[ONLINE_ARM]]),
        }
        out[task] = {"base": base, "seeds": per_seed, "claims": claims}
    return out


GOALS = [  # claim, the goal's direction and null, as the issue states it
    ("fast_new_over_rl", "the fast loop's own new rollouts ≤ RL's (ratio ≤ 1)", "below", 1.0),
    ("wall_over_rl", "FST's wall time ≤ 1.3x RL's (different sessions: see the runs' commits and hosts)", "below", 1.3),
    ("wall_within_run", "the same within the run: its wall time over its wall time less its fast steps",
     "below", 1.3),
    ("final_minus_own", "final accuracy, one stream − sampling its own: no loss beyond 0.05", "above", -0.05),
    ("reach_rl_over_stream", "rollouts to RL's peak, RL / FST with one stream: ≥ 1.5", "above", 1.5),
    ("reach_no_val_checks", "the same, FST's val checks (a diagnostic) not counted", "above", 1.5),
    ("reach_rl_over_own", "the same for FST sampling its own, val checks counted (v2: 0.28)", "above", 1.5),
    ("matched_minus_gepa_then_rl", "FST with one stream − GEPA→RL at GEPA→RL's total rollouts: > 0", "above", 0.0),
]
ONLINE_GOALS = [  # the online arm, where it has runs (the issue sets it no goal of its own: read as the stream arm's)
    ("online_fast_new_over_rl", "online judging: the fast loop's own new rollouts ≤ RL's", "below", 1.0),
    ("online_minus_minibatch", "final accuracy, online − minibatch judging: no loss beyond 0.05", "above", -0.05),
]


def markdown(a: dict) -> str:
    lines = ["# One rollout stream (study 6)", "",
             "Regenerate: `python -m evals.stream --report-only`. FST with one stream: `evals/configs/stream.yaml`; "
             "RL, FST sampling its own and GEPA→RL: the compare v2 runs of the same seed. Brackets: 95% t-intervals "
             "over seeds; readings by the one rule (`fst_prompt/stats.py`).", ""]
    for task, t in a.items():
        lines += [f"## {task}", "", "| seed | RL rollouts | fast loop new (+ val checks) | RL rollouts read | total | "
                  "wall min (RL's) | final acc (RL / own / GEPA→RL) | RL/FST rollouts to RL's peak (own's) |",
                  "|---|---|---|---|---|---|---|---|"]
        for seed, r in sorted(t["seeds"].items()):
            s, reach_ = r[ARM], r.get("reach_rollouts", {})
            other = " / ".join(f"{r[m]['final']:.3f}" if r[m] else "–" for m in ("rl", "fst", "gepa-then-rl"))
            rl_wall = f"{r['rl']['wall_minutes']:.0f}" if r["rl"] else "–"
            ratio = "–" if reach_.get(ARM) is None else f"{reach_[ARM]:.2f}"
            own = "–" if reach_.get("fst") is None else f"{reach_['fst']:.2f}"
            where = f" ({r['run']}, before its distill phase)" if DISTILL_ARM in r["run"] else ""
            lines.append(f"| {seed}{where} | {s['rl_rollouts']} | {s['fast_new']} (+ {s['val_checks']}) | "
                         f"{s['reused']} | {s['total']} | {s['wall_minutes']:.0f} ({rl_wall}) | "
                         f"{s['final']:.3f} ({other}) | {ratio} ({own}) |")
        online = {seed: r for seed, r in sorted(t["seeds"].items()) if r[ONLINE_ARM]}
        if online:
            lines += ["", f"Online judging (`{ONLINE_ARM}`: the same config, `gepa.judging: online`):", "",
                      "| seed | RL rollouts | fast loop new (+ val checks) | RL rollouts read | total | wall min | "
                      "final acc (minibatch's) |", "|---|---|---|---|---|---|---|"]
            lines += [f"| {seed} | {o['rl_rollouts']} | {o['fast_new']} (+ {o['val_checks']}) | {o['reused']} | "
                      f"{o['total']} | {o['wall_minutes']:.0f} | {o['final']:.3f} ({r[ARM]['final']:.3f}) |"
                      for seed, r in online.items() for o in [r[ONLINE_ARM]]]
        goals = GOALS + (ONLINE_GOALS if online else [])
        lines += ["", *claims_table(t["claims"], goals), ""]
    return "\n".join(lines)


def main() -> None:
    offline_environment()
    ap = task_driver_parser(__doc__, tasks=tuple(SEEDS), seeds=[0, 1, 2, 3, 4])
    ap.add_argument("--baselines", nargs="*", choices=BASELINES, metavar="MODE",
                    help=f"also run the compare v2 baselines these seeds lack (default: all of {' '.join(BASELINES)})")
    ap.add_argument("--online", action="store_true", help="also run the online-judging arm (gepa.judging: online)")
    args = ap.parse_args()
    if not args.report_only:
        run_jobs(jobs_for(STUDY, args.tasks, args.seeds, distill=DISTILL), parallel=args.jobs,
                 allow_dirty=args.allow_dirty)
        if args.online:
            run_jobs(jobs_for(STUDY, args.tasks, args.seeds, online=True), parallel=args.jobs,
                     allow_dirty=args.allow_dirty)
        if args.baselines is not None:
            run_jobs(run_jobs_for(V2, args.tasks, args.seeds, args.baselines or list(BASELINES)), parallel=args.jobs,
                     allow_dirty=args.allow_dirty)
    a = analyse(STUDY, V2, list(SEEDS), sorted({s for seeds in SEEDS.values() for s in seeds}), DISTILL)
    write_report(STUDY, a, markdown(a), lambda _a, _out: [])


if __name__ == "__main__":
    main()
