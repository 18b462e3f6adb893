"""Study 7 — FST-distill: does distilling the best instruction into the weights let the seed instruction do
what the best one did, and at what drift?

    python -m evals.distill [--tasks date_normalize] [--seeds 0 1 2] [--jobs 1] [--report-only]

Runs `fst run evals/configs/distill.yaml` (the one-stream FST run of `stream.yaml`, then a distill phase) per task
and seed into `evals/results/distill/<task>/fst-distill-s<seed>`, and writes `distill.json` + `distill.md` from
each run's `distill.jsonl`:

- val accuracy with the seed instruction before → after the distill phase, and with the best instruction;
- KL to the base before → after; the distill phase's steps, student rollouts and seconds;
- the issue's goals, each read by the one rule (`fst_prompt.stats`): the seed instruction after distill reaches
  ≥ 80% of the best instruction before it (ratio ≥ 0.8), and the KL grows by less than the FST run's own
  (growth / the KL before < 1).
"""

from __future__ import annotations

from evals.report import claims_table, summary
from evals.runner import Study, run_jobs, task_driver_parser, write_report
from fst_prompt.cli import offline_environment
from fst_prompt.rundir import RunDir

STUDY = Study(name="distill", config="evals/configs/distill.yaml")
ARM = "fst-distill"
TASKS = ("date_normalize",)


def jobs_for(study: Study, tasks: list[str], seeds: list[int]) -> list:
    return [study.job(f"{task}/{ARM}-s{seed}", ["run", study.config, "--set", f"task={task}", "--set", f"seed={seed}"])
            for seed in seeds for task in tasks]


def analyse(study: Study, tasks: list[str], seeds: list[int]) -> dict:
    """Per task: each seed's distill phase (the last stage's) and the goals over seeds."""
    out = {}
    for task in tasks:
        per_seed = {}
        for seed in seeds:
            folder = study.folder / task / f"{ARM}-s{seed}"
            distills = RunDir(folder).distills() if folder.is_dir() else []
            if not distills:
                continue
            d = distills[-1]
            before, after = d.before, d.after
            per_seed[seed] = {"before": before, "after": after, "steps": d.steps, "rollouts": d.rollouts,
                              "seconds": d.seconds, "eval_n": d.eval_n,
                              "seed_after_over_best_before": (after["val_accuracy_seed"] / before["val_accuracy_best"]
                                                              if before["val_accuracy_best"] else None),
                              "kl_growth_over_fst_kl": ((after["kl"] - before["kl"]) / before["kl"]
                                                        if before["kl"] else None),
                              # the same on the probe problems under the best instruction (runs since 2026-12-07)
                              "kl_best_growth_over_fst_kl": ((after["kl_best"] - before["kl_best"]) / before["kl_best"]
                                                             if before.get("kl_best") and after.get("kl_best") is not
                                                             None else None)}
        rows = list(per_seed.values())
        claims = {
            "seed_after_over_best_before": summary([r["seed_after_over_best_before"] for r in rows]),
            "kl_growth_over_fst_kl": summary([r["kl_growth_over_fst_kl"] for r in rows]),
            "kl_best_growth_over_fst_kl": summary([r["kl_best_growth_over_fst_kl"] for r in rows]),
            "seed_gain": summary([r["after"]["val_accuracy_seed"] - r["before"]["val_accuracy_seed"] for r in rows]),
            "best_change": summary([r["after"]["val_accuracy_best"] - r["before"]["val_accuracy_best"] for r in rows]),
        }
        out[task] = {"seeds": per_seed, "claims": claims}
    return out


GOALS = [  # claim, the goal's direction and null, as the issue states it
    ("seed_after_over_best_before", "seed instruction after distill / best instruction before: ≥ 0.8", "above", 0.8),
    ("kl_growth_over_fst_kl", "KL growth in the distill phase / the FST run's own KL: < 1", "below", 1.0),
    ("kl_best_growth_over_fst_kl", "the same, the probe's problems under the best instruction (the seed "
     "instruction's behaviour is what distill changes)", "below", 1.0),
    ("seed_gain", "seed instruction, after − before distill: > 0", "above", 0.0),
    ("best_change", "best instruction, after − before distill (no goal; a loss is forgetting)", "above", 0.0),
]


def markdown(a: dict) -> str:
    lines = ["# FST-distill (study 7)", "",
             "Regenerate: `python -m evals.distill --report-only`. Runs: `evals/configs/distill.yaml` (the one-stream "
             "FST run, then the distill phase). Val accuracy greedy; brackets: 95% t-intervals over seeds; readings "
             "by the one rule (`fst_prompt/stats.py`).", ""]
    for task, t in a.items():
        lines += [f"## {task}", "",
                  "| seed | n | seed instr. before → after | best instr. before → after | KL before → after | "
                  "KL, best instr. prompts | steps | student rollouts | seconds |", "|---" * 9 + "|"]
        for seed, r in sorted(t["seeds"].items()):
            b, f = r["before"], r["after"]
            lines.append(f"| {seed} | {r['eval_n']} | {b['val_accuracy_seed']:.3f} → {f['val_accuracy_seed']:.3f} | "
                         f"{b['val_accuracy_best']:.3f} → {f['val_accuracy_best']:.3f} | "
                         f"{b['kl']:.2f} → {f['kl']:.2f} | {_arrow(b.get('kl_best'), f.get('kl_best'))} | "
                         f"{r['steps']} | {r['rollouts']} | {r['seconds']:.0f} |")
        lines += ["", *claims_table(t["claims"], GOALS), ""]
    return "\n".join(lines)


def _arrow(before: float | None, after: float | None) -> str:
    return "–" if before is None or after is None else f"{before:.2f} → {after:.2f}"


def main() -> None:
    offline_environment()
    ap = task_driver_parser(__doc__, tasks=TASKS, seeds=[0, 1, 2])
    args = ap.parse_args()
    if not args.report_only:
        run_jobs(jobs_for(STUDY, args.tasks, args.seeds), parallel=args.jobs, allow_dirty=args.allow_dirty)
    a = analyse(STUDY, list(TASKS), [0, 1, 2, 3, 4])
    write_report(STUDY, a, markdown(a), lambda _a, _out: [])


if __name__ == "__main__":
    main()
