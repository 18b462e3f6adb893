"""Do the fast weights act? FST runs (mode fst) per task and seed: how many proposals GEPA accepts, and how
much the best instruction beats the seed instruction under the same trained weights.

    python -m evals.fast_weights [--tasks chain_sum ...] [--seeds 0 1 2] [--jobs 1] [--report-only]

Config: evals/configs/fast_weights.yaml (GEPA scored as RL samples: S rollouts a problem at the RL
temperature; val n = 128, greedy). Per run: proposals accepted / evaluated over the run; at the last
cycle, val accuracy with the best and with the seed instruction (same weights) and the constant baseline;
and the overfitting check: each accepted proposal's gain over its parent on the anchor and on held-out val.
Results in evals/results/fast_weights/.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from evals.runner import Job, Study, report_scope, run_jobs, sets, task_driver_parser, write_report
from fst_prompt.cli import offline_environment
from fst_prompt.rundir import RunDir

STUDY = Study(name="fast_weights", config="evals/configs/fast_weights.yaml")
SEEDS = [0, 1, 2]
TASKS = ("chain_sum", "ticket_routing", "date_normalize")  # the tasks evals/headroom.py finds instruction headroom on
# Per task, settings over the config (as in evals/headroom.py): ticket_routing runs on Qwen2.5-Coder-0.5B (SmolLM2
# cannot follow a routing instruction), and its reflection prompt asks for the convention (the teams and their
# topics). At SmolLM2's learning rate (5e-6) and a 24-token cap, 6 RL steps took Qwen-0.5B to KL 3.8 nats from its
# base, with replies running into the cap (RESULTS.md §2): a lower rate and more room.
# date_normalize (a house date format) runs as ticket_routing does. Gradient checkpointing: ticket_routing seed 2
# was killed for memory (20.8 GB resident, 24 GB machine) at its second slow step, with 4 contexts' longer
# prompts; it recomputes the same activations, so it changes memory and time, not the trajectory.
CONVENTION_ON_QWEN = {"policy.model": "qwen2.5-coder-0.5b-instruct", "policy.max_new_tokens": 48,
                      "rl.max_completion_length": 48, "rl.learning_rate": 1.0e-6, "reflection.template": "convention",
                      "rl.trainer_args.gradient_checkpointing": "true"}
TASK_SETTINGS: dict[str, dict] = {"ticket_routing": CONVENTION_ON_QWEN, "date_normalize": CONVENTION_ON_QWEN}


def jobs_for(study: Study, tasks: list[str], seeds: list[int]) -> list[Job]:
    return [study.job(f"{task}/fst-s{seed}", ["run", study.config, "--set", f"task={task}", "--set", f"seed={seed}",
                                              *sets(TASK_SETTINGS.get(task, {}))])
            for task in tasks for seed in seeds]


def analyse(study: Study, tasks: list[str], seeds: list[int]) -> dict:
    out: dict = {"config": study.config, "seeds": seeds, "tasks": {}}
    for task in tasks:
        runs = {}
        for s in seeds:
            results = study.folder / task / f"fst-s{s}"
            if (results / "done.json").is_file():
                runs[s] = _run(RunDir(results))
        if not runs:
            continue
        gains = [r["gain"] for r in runs.values()]
        accepted, tried = sum(r["accepted"] for r in runs.values()), sum(r["tried"] for r in runs.values())
        out["tasks"][task] = {
            "runs": runs, "mean_gain": statistics.fmean(gains), "sd_gain": statistics.stdev(gains) if len(gains) > 1
            else 0.0, "accepted": accepted, "tried": tried, "acceptance": accepted / tried if tried else 0.0,
            "mean_anchor_gain": _mean(g for r in runs.values() for g in r["anchor_gains"]),
            "mean_val_gain": _mean(g for r in runs.values() for g in r["val_gains"])}
    return out


def _run(run: RunDir) -> dict:
    """A finished run: GEPA's proposals over the run, and its last cycle's evaluation and ledger."""
    last, rounds = run.cycles()[-1], run.rounds()
    accepted = [p for r in rounds for p in r.proposals if p["accepted"]]
    return {"accepted": sum(r.proposals_accepted for r in rounds), "tried": sum(r.proposals_tried for r in rounds),
            "best": last.val_accuracy_best, "seed": last.val_accuracy_seed,
            "gain": last.val_accuracy_best - last.val_accuracy_seed,
            "constant": last.val_majority_baseline, "rl_steps": last.rl_steps,
            "anchor_gains": [p.get("anchor_gain") for p in accepted],
            "val_gains": [p.get("val_gain") for p in accepted],
            # a run older than eval_n in its cycle records scored its config's loop.eval_n
            "n": last.eval_n or run.config_data()["loop"]["eval_n"], "fast_minutes": last.ledger.fast_seconds / 60,
            "slow_minutes": last.ledger.slow_seconds / 60}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:+.3f}" if x < 0 or x > 0 else "0.000"


def markdown(a: dict) -> str:
    from fst_prompt.stats import with_interval as _ci

    lines = ["# Fast weights in FST runs", "",
             f"Regenerate: `python -m evals.fast_weights` (config `{a['config']}`). Val accuracy (greedy,",
             "n = 128) at the last cycle, best vs seed instruction under the same trained weights; proposals accepted",
             "/ evaluated over the run; overfitting check: accepted proposals' mean gain over their parent on the",
             "anchor (sampled scores) and on held-out val problems (same scoring). Brackets: 95% Wilson intervals.",
             "Minutes: the run's own GEPA rounds (fast) and RL steps (slow), from its ledger (a resumed run counts",
             "what its state kept).", "",
             "| task | seed | RL steps | best | seed instr. | constant | best − seed | accepted / tried | "
             "anchor gain | val gain | fast / slow min |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task, t in a["tasks"].items():
        for s, r in t["runs"].items():
            lines.append(f"| {task} | {s} | {r['rl_steps']} | {_ci(r['best'], r['n'])} | {_ci(r['seed'], r['n'])} | "
                         f"{r['constant']:.3f} | {r['gain']:+.3f} | {r['accepted']}/{r['tried']} | "
                         f"{_f(_mean(r['anchor_gains']))} | {_f(_mean(r['val_gains']))} | "
                         f"{r['fast_minutes']:.0f} / {r['slow_minutes']:.0f} |")
        spread = f"(sd {t['sd_gain']:.3f})" if len(t["runs"]) > 1 else "(one run: no spread)"
        lines.append(f"| **{task}** | mean of {len(t['runs'])} | | | | | **{t['mean_gain']:+.3f}** "
                     f"{spread} | **{t['accepted']}/{t['tried']} = {t['acceptance']:.0%}** | "
                     f"{_f(t['mean_anchor_gain'])} | {_f(t['mean_val_gain'])} | |")
    return "\n".join(lines)


def plot(a: dict, out: Path) -> list[Path]:
    return []


def main() -> None:
    offline_environment()
    args = task_driver_parser(__doc__, TASKS, SEEDS).parse_args()
    if not args.report_only:
        run_jobs(jobs_for(STUDY, args.tasks, args.seeds), parallel=args.jobs, allow_dirty=args.allow_dirty)
    a = analyse(STUDY, *report_scope(TASKS, SEEDS, args))  # running a few jobs does not shrink the report
    write_report(STUDY, a, markdown(a), plot)


if __name__ == "__main__":
    main()
