"""Instruction headroom: how much an instruction alone moves a task on frozen base weights.

    python -m evals.headroom [--tasks chain_sum ...] [--seeds 0 1 2] [--jobs 1] [--report-only]

Per task, on the base weights, greedy, the first n val problems (n = 128): the constant-answer baseline,
the seed instruction, a strong hand-written instruction (`HAND_WRITTEN`: one person's try), and the best
instruction a generous GEPA-only run finds (`fst run` in gepa mode, evals/configs/headroom.yaml, one run
per seed, about a CPU-hour each on 2 cores). Only tasks where instructions can move the accuracy give
fast weights room to act. FST's fast step scores instructions as RL samples them, so the seed and hand-written
instructions are also scored sampled at the RL temperature (one completion a problem, sampling seed 0): room that
exists only under greedy decoding is room FST's fast step cannot see. Jobs run through the resumable runner; results in
evals/results/HEADROOM.md (and evals/results/headroom/headroom.json).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from evals.runner import Job, Study, eval_job, report_scope, run_jobs, sets, task_driver_parser, write_report
from fst_prompt.cli import offline_environment
from fst_prompt.rundir import RunDir

STUDY = Study(name="headroom", config="evals/configs/headroom.yaml")
SEEDS = [0, 1, 2]
TASKS = ("chain_sum", "ticket_routing", "date_normalize", "letter_counting", "simple_equations")
# GEPA runs (an hour each) only where the screen (seed vs hand-written) shows room; RESULTS.md §2 lists the tasks
# screened with `fst eval` alone (basic_arithmetic, leg_counting, number_sorting, spell_backward, decimal_chain_sum).
GEPA_TASKS = ("chain_sum", "ticket_routing", "date_normalize")
RL_TEMPERATURE = 1.0  # rl.temperature in evals/configs/fast_weights.yaml (the default)

# Per task, settings over the config (dotted keys, as `--set`). ticket_routing: SmolLM2-135M answers the customer
# whatever the system prompt says (0 of 40 under four instructions, one listing the teams), so the stronger
# offline policy; a one-word answer needs few tokens; the reflection prompt asks for the convention (the teams
# and their topics) instead of a worked procedure; 400 problems scored fit the CPU-hour. date_normalize: the same
# (a house date format is a convention too; SmolLM2 is not screened on it).
CONVENTION_ON_QWEN = {"policy.model": "qwen2.5-coder-0.5b-instruct", "policy.max_new_tokens": 24,
                      "gepa.max_metric_calls": 400, "reflection.template": "convention"}
TASK_SETTINGS: dict[str, dict] = {"ticket_routing": CONVENTION_ON_QWEN, "date_normalize": CONVENTION_ON_QWEN}

STEP_BY_STEP = ("Work it out step by step: write each intermediate result on its own line. "
                "End with a final line of the form 'Answer: <integer>'.")
HAND_WRITTEN = {
    "chain_sum": STEP_BY_STEP,
    "ticket_routing": ("You are a ticket classifier. Do not answer the customer. Reply with one word, the team: "
                       "billing, delivery, tech, accounts or returns.\nExamples: 'I was charged twice' -> billing. "
                       "'My parcel has not arrived' -> delivery. 'The app crashes' -> tech. 'I forgot my password' -> "
                       "accounts. 'The item is damaged, I want to send it back' -> returns."),
    "date_normalize": ("Reply with the date only, written as YYYY-MM-DD (for example 2025-04-03). Numeric dates in "
                       "the message are day first: 03.04.2025 and 3/4/2025 both mean 3 April 2025, so 2025-04-03."),
    "basic_arithmetic": STEP_BY_STEP,
    "letter_counting": ("Spell the text one letter at a time, one per line, and mark each letter that matches "
                        "with '<-'. Then count the marks. End with a final line 'Answer: <integer>'."),
    "simple_equations": ("Solve step by step. For 'a*x + b = c': first compute c - b, then divide it by a. Write "
                         "each step on its own line. End with a final line 'Answer: <integer>'."),
    "leg_counting": ("Legs per animal: bird, chicken, duck 2; dog, cat, cow, horse, sheep, zebra, tiger, "
                     "elephant 4; insect (ant, bee, beetle, grasshopper, butterfly, cricket) 6; spider 8; "
                     "crab, shrimp, lobster 10; starfish 5. For each animal write count x legs, then add them up. "
                     "End with a final line 'Answer: <integer>'."),
}


def settings(study: Study, task: str) -> dict:
    """The config as the task's runs see it (TASK_SETTINGS applied)."""
    cfg = study.run_config()
    for key, value in TASK_SETTINGS.get(task, {}).items():
        section, leaf = key.split(".")
        cfg[section][leaf] = value
    return cfg


def jobs_for(study: Study, tasks: list[str], seeds: list[int]) -> list[Job]:
    jobs = []
    for task in tasks:
        cfg = settings(study, task)
        jobs.append(eval_job(study, f"{task}/seed", task, cfg))
        jobs.append(eval_job(study, f"{task}/seed-sampled", task, cfg, temperature=RL_TEMPERATURE))
        if task in HAND_WRITTEN:
            jobs.append(eval_job(study, f"{task}/hand", task, cfg, {"self": HAND_WRITTEN[task]}))
            jobs.append(eval_job(study, f"{task}/hand-sampled", task, cfg, {"self": HAND_WRITTEN[task]},
                                 temperature=RL_TEMPERATURE))
        if task in GEPA_TASKS:
            jobs += [study.job(f"{task}/gepa-s{seed}", ["run", study.config, "--set", f"task={task}", "--set",
                                                       f"seed={seed}", *sets(TASK_SETTINGS.get(task, {}))])
                     for seed in seeds]
    return jobs


def _eval(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def analyse(study: Study, tasks: list[str], seeds: list[int]) -> dict:
    out: dict = {"config": study.config, "seeds": seeds, "tasks": {}}
    for task in tasks:
        seed, hand, seed_t, hand_t = (_eval(study.folder / task / name / "eval.json")
                                      for name in ("seed", "hand", "seed-sampled", "hand-sampled"))
        if seed is None:
            continue
        row = {"n": seed["n"], "policy": settings(study, task)["policy"]["model"],
               "constant": seed["majority_baseline"]["accuracy"],
               "constant_answer": seed["majority_baseline"]["answer"], "seed": seed["accuracy"],
               "hand": hand and hand["accuracy"], "hand_instruction": HAND_WRITTEN.get(task), "gepa": {},
               "seed_sampled": seed_t and seed_t["accuracy"], "hand_sampled": hand_t and hand_t["accuracy"]}
        for s in seeds:
            results = study.folder / task / f"gepa-s{s}"
            if (results / "done.json").is_file():
                row["gepa"][s] = _gepa_run(results)
        accs = [g["val_accuracy"] for g in row["gepa"].values()]
        row["gepa_mean"] = statistics.fmean(accs) if accs else None
        row["gepa_beats_seed_by_0.10"] = sum(a >= row["seed"] + 0.10 and a > row["constant"] for a in accs)
        out["tasks"][task] = row
    return out


def _gepa_run(results: Path) -> dict:
    """A finished GEPA-only run: its best instruction, what its rounds tried and spent, and its job's record."""
    from fst_prompt.fast.population import Population

    run, done = RunDir(results), json.loads((results / "done.json").read_text())
    last, rounds = run.cycles()[-1], run.rounds()
    return {"val_accuracy": last.val_accuracy_best, "seed_val_accuracy": last.val_accuracy_seed,
            "instructions": Population.from_json(run.load_state().population).best().instructions,
            "accepted": sum(r.proposals_accepted for r in rounds), "tried": sum(r.proposals_tried for r in rounds),
            "metric_calls": sum(r.metric_calls for r in rounds),
            "budget": run.config_data()["gepa"]["max_metric_calls"], "commit": done.get("commit", "?"),
            "note": done.get("note"), "minutes": done["wall_seconds"] / 60}


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _ci(x: float | None, n: int) -> str:
    from fst_prompt.stats import with_interval

    return "–" if x is None else with_interval(x, n)


def markdown(a: dict) -> str:
    seeds = a["seeds"]
    lines = [
        "# Instruction headroom on frozen base weights",
        "",
        f"Regenerate: `python -m evals.headroom` (config `{a['config']}`). Val, greedy, the first n problems; the",
        "constant baseline is the best single answer (`fst_prompt/baselines.py`). GEPA: one gepa-mode `fst run` per",
        "seed: its best instruction's val accuracy (accepted/tried proposals, metric calls used/budget, wall minutes, "
        "the commit it ran). Sampled: the same instruction, one completion a problem at the RL temperature "
        f"(T = {RL_TEMPERATURE:g}), as FST's fast step and RL see it. Brackets: 95% Wilson intervals at that n.",
        "",
        "| " + " | ".join(["task", "policy", "n", "constant", "seed instruction", "hand-written",
                           *(f"GEPA s{s}" for s in seeds), "GEPA mean", "GEPA ≥ seed + 0.10", "seed, sampled",
                           "hand-written, sampled"]) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(seeds) + "---|---|---|---|",
    ]
    for task, r in a["tasks"].items():
        runs = [r["gepa"].get(s) for s in seeds]
        cells = [f"{_ci(g['val_accuracy'], r['n'])} ({g['accepted']}/{g['tried']}, {g['metric_calls']}/{g['budget']} "
                 f"calls, {g['minutes']:.0f} min, `{g['commit']}`)" if g else "–" for g in runs]
        constant = f"{_f(r['constant'])} ({r['constant_answer']!r})"
        lines.append("| " + " | ".join([task, r["policy"], str(r["n"]), constant, _ci(r["seed"], r["n"]),
                                         _ci(r["hand"], r["n"]),
                                         *cells, _f(r["gepa_mean"]),
                                         f"{r['gepa_beats_seed_by_0.10']} of {sum(g is not None for g in runs)}",
                                         _ci(r.get("seed_sampled"), r["n"]), _ci(r.get("hand_sampled"), r["n"])])
                     + " |")
    lines += ["", "## Instructions", ""]
    for task, r in a["tasks"].items():
        lines += [f"### {task}", "", f"- hand-written: {r['hand_instruction']!r}"]
        lines += [f"- GEPA s{s}: {g['instructions']!r}" + (f" ({g['note']})" if g["note"] else "")
                  for s, g in r["gepa"].items()]
        lines.append("")
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
    (STUDY.results_root / "HEADROOM.md").write_text(markdown(a) + "\n")


if __name__ == "__main__":
    main()
