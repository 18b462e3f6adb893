"""Do the fast weights act? FST runs (mode fst) per task and seed: how many proposals GEPA accepts, and how
much the best instruction beats the seed instruction under the same trained weights.

    python evals/fast_weights.py [--tasks chain_sum ...] [--seeds 0 1 2] [--jobs 1] [--report-only]

Config: evals/configs/fast_weights.yaml (GEPA scored as RL samples: S rollouts a problem at the RL
temperature; val n = 128, greedy). Per run: proposals accepted / evaluated over the run; at the last
cycle, val accuracy with the best and with the seed instruction (same weights) and the constant baseline;
and the overfitting check: each accepted proposal's gain over its parent on the anchor and on held-out val.
Results in evals/results/fast_weights/.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from runner import RESULTS, Job, report_scope, run_jobs, sets, task_driver_parser, write_report

STUDY = "fast_weights"
SEEDS = [0, 1, 2]
CONFIG = "evals/configs/fast_weights.yaml"
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


def jobs_for(tasks: list[str], seeds: list[int]) -> list[Job]:
    return [Job(STUDY, f"{task}/fst-s{seed}", ["run", CONFIG, "--set", f"task={task}", "--set", f"seed={seed}",
                                               *sets(TASK_SETTINGS.get(task, {}))])
            for task in tasks for seed in seeds]


def analyse(tasks: list[str], seeds: list[int]) -> dict:
    from fst_prompt.plots import load_cycles

    out: dict = {"config": CONFIG, "seeds": seeds, "tasks": {}}
    for task in tasks:
        runs = {}
        for s in seeds:
            results = RESULTS / STUDY / task / f"fst-s{s}"
            if not (results / "done.json").is_file():
                continue
            last = load_cycles(results)[-1]
            rounds = [json.loads(line) for line in (results / "rounds.jsonl").read_text().splitlines() if line]
            accepted = [p for r in rounds for p in r.get("proposals", []) if p["accepted"]]
            tried = sum(r["proposals_tried"] for r in rounds)
            runs[s] = {"accepted": sum(r["proposals_accepted"] for r in rounds), "tried": tried,
                       "best": last["val_accuracy_best"], "seed": last["val_accuracy_seed"],
                       "gain": last["val_accuracy_best"] - last["val_accuracy_seed"],
                       "constant": last.get("val_majority_baseline"), "rl_steps": last["rl_steps"],
                       "anchor_gains": [p.get("anchor_gain") for p in accepted],
                       "val_gains": [p.get("val_gain") for p in accepted],
                       "n": last.get("eval_n") or _eval_n(results), "fast_minutes": last["fast_seconds"] / 60,
                       "slow_minutes": last["slow_seconds"] / 60}
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


def _eval_n(results: Path) -> int:
    """Val n of a run that predates `eval_n` in metrics.jsonl: its config's."""
    import yaml

    return yaml.safe_load((results / "config.yaml").read_text())["loop"]["eval_n"]


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:+.3f}" if x < 0 or x > 0 else "0.000"


def markdown(a: dict) -> str:
    from fst_prompt.stats import with_interval as _ci

    lines = ["# Fast weights in FST runs", "",
             f"Regenerate: `python evals/fast_weights.py` (config `{a['config']}`). Val accuracy (greedy,",
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
    args = task_driver_parser(__doc__, TASKS, SEEDS).parse_args()
    if not args.report_only:
        run_jobs(jobs_for(args.tasks, args.seeds), parallel=args.jobs)
    a = analyse(*report_scope(TASKS, SEEDS, args))  # running a few jobs does not shrink the report
    write_report(STUDY, a, markdown(a), plot)


if __name__ == "__main__":
    main()
