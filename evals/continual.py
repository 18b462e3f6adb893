"""Study 2 — continual learning: three tasks in a row, RL vs FST.

    python -m evals.continual [--study v2] [--seeds 0 1 2] [--jobs 1] [--report-only]

`--study v2` (the default): `evals/configs/continual_v2.yaml` (Qwen2.5-Coder-0.5B: ticket_routing ->
date_normalize -> chain_sum), results in `evals/results/continual_v2/`; `--study v1`: the first study's
`evals/configs/continual.yaml` (SmolLM2: chain_sum -> letter_counting -> basic_arithmetic), results in
`evals/results/continual/`. One task-agnostic seed instruction. Runs `fst run <config>` per (mode, seed),
skipping finished runs. Then writes to the results folder:

- `continual.png`: accuracy on the current task vs RL step, normalised per stage as in the paper — divided
  by the best accuracy either method reached on that task within the stage — with stage boundaries, and
  the raw accuracy with each stage's constant-answer baseline;
- `<study>.json` + `<study>.md`: per stage and method the final and normalised accuracy, the runs that
  stalled (ended at or below the constant answer) and the gain within the stage, over seeds with 95%
  t-intervals; the paired per-seed differences FST − RL of the final accuracy and of the gain;
  the KL to the base at the end of each stage, paired FST − RL and FST / RL; the forgetting matrices
  (accuracy on task i after stage j, from each run's `forgetting.json`); and the
  paper's claim (RL stalls on the second task, FST keeps learning), read on the paired final accuracy.

`--study v3` / `--study v3-distill` (issue 49: v2's schedule, seeds and settings with the archive, and the archive
plus a distill phase at each switch) run FST only: their RL is v2's runs (`continual_v2/rl-s<seed>`: RL has no
population, so the archive changes nothing there), and v2's FST is shown beside theirs. Their report adds the
issue's goals: each task's accuracy at the end of the run per seed (from `forgetting.json`), the seeds in which
date_normalize ends ≥ 0.80, and the last task's final accuracy FST − RL read against −0.05.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from evals.report import fmt, reading, summary
from evals.runner import Job, Study, driver_parser, report_seeds, run_jobs, write_report
from fst_prompt.cli import offline_environment
from fst_prompt.rundir import CycleRecord, RunDir

MODES = ("rl", "fst")  # the two loop modes (fst_prompt/modes.py) this study sets side by side
LABELS = {"rl": "RL", "fst": "FST"}
STUDIES = {"v2": Study(name="continual_v2", config="evals/configs/continual_v2.yaml"),  # --study
           "v3": Study(name="continual_v3", config="evals/configs/continual_v3.yaml"),  # v2 + the archive
           "v3-distill": Study(name="continual_v3_distill", config="evals/configs/continual_v3_distill.yaml"),
           "v1": Study(name="continual", config="evals/configs/continual.yaml")}


def jobs_for(study: Study, seeds: list[int], modes: list[str]) -> list[Job]:
    return [study.job(f"{mode}-s{seed}", ["run", study.config, "--set", f"loop.mode={mode}",
                                          "--set", f"seed={seed}"]) for seed in seeds for mode in modes]


BASELINES = {"v3": "v2", "v3-distill": "v2"}  # a study whose RL runs (and earlier FST) are another study's
KEPT_TASK, KEPT_AT = "date_normalize", 0.80  # issue 49: date_normalize at the end of the run >= 0.80 in >= 2 of 3
WITHIN = -0.05  # issue 49: the last task's final accuracy within 0.05 of RL's


def analyse(study: Study, seeds: list[int], baseline: Study | None = None) -> dict:
    """The study's runs (`baseline`: RL's runs are that study's, and its FST is reported beside this one's)."""
    folders = {"rl": (baseline or study).folder, "fst": study.folder}
    runs = {m: {s: RunDir(folders[m] / f"{m}-s{s}").cycles() for s in seeds
                if (folders[m] / f"{m}-s{s}" / "done.json").is_file()} for m in MODES}
    stages = sorted({(c.stage, c.task) for per in runs.values() for cs in per.values() for c in cs})
    out: dict = {"seeds": seeds, "seeds_run": {m: sorted(per) for m, per in runs.items()}, "config": study.config,
                 "stages": [t for _, t in stages], "per_stage": [],
                 "forgetting": {}, "curves": {}}
    for stage, task in stages:
        # the paper's normalisation: the best peak of either method on this task within this stage (per seed)
        row: dict = {"stage": stage, "task": task, "constant": None}
        gains: dict = {}
        finals: dict = {}
        kls: dict = {}
        for m in MODES:
            norm_final, norm_mean, gains[m], finals[m], kls[m] = [], [], {}, {}, {}
            for s, cycles in runs[m].items():
                peak = max(c.val_accuracy_best for per in runs.values() if s in per for c in per[s]
                           if c.stage == stage)
                mine = [c for c in cycles if c.stage == stage]
                row["constant"] = next((c.val_majority_baseline for c in mine if c.val_majority_baseline is not None),
                                       row["constant"])
                acc = [c.val_accuracy_best for c in mine]
                if not acc:
                    continue
                finals[m][s] = acc[-1]
                kls[m][s] = mine[-1].kl  # on this stage's probe prompts
                gains[m][s] = acc[-1] - acc[0]  # a stall (0 → 0) counts: it is what the paper's claim is about
                if peak > 0:  # normalised only where either method of this seed scored on the task
                    norm_final.append(acc[-1] / peak)
                    norm_mean.append(statistics.fmean(acc) / peak)
            row[m] = {"normalised_final": summary(norm_final), "normalised_mean": summary(norm_mean),
                      "final_accuracy": summary(list(finals[m].values())),
                      "gain_within_stage": summary(list(gains[m].values())),
                      "final_kl": summary(list(kls[m].values())),
                      # a stall: the stage ended no better than always giving the most common answer
                      "stalled": None if row["constant"] is None else
                      {"runs": sum(v <= row["constant"] for v in finals[m].values()), "of": len(finals[m])}}
        row["gain_fst_minus_rl"] = summary([gains["fst"][s] - gains["rl"][s] for s in gains["rl"] if s in gains["fst"]])
        row["final_fst_minus_rl"] = summary([finals["fst"][s] - finals["rl"][s] for s in finals["rl"]
                                             if s in finals["fst"]])
        paired = [s for s in kls["rl"] if s in kls["fst"]]
        row["kl_fst_minus_rl"] = summary([kls["fst"][s] - kls["rl"][s] for s in paired])
        row["kl_fst_over_rl"] = summary([kls["fst"][s] / kls["rl"][s] for s in paired if kls["rl"][s] > 0],
                                        geometric=True)
        out["per_stage"].append(row)
    for m in MODES:
        matrices = {s: f for s in runs[m] if (f := RunDir(folders[m] / f"{m}-s{s}").forgetting()) is not None}
        if matrices:
            out["forgetting"][m] = _mean_matrix(list(matrices.values()))
        out["curves"][m] = {s: [_point(c) for c in cycles] for s, cycles in runs[m].items()}
    if baseline is not None:
        out["baseline"] = baseline.name
        out["goals"] = _goals(study, baseline, seeds, out["per_stage"])
    second = out["per_stage"][1] if len(out["per_stage"]) > 1 else None
    # The claim is read on the final accuracy, not on the gain within the stage: a stage's first evaluation comes
    # after its first cycle (FST's after a GEPA round and RL steps), so a method that learns the task within
    # that cycle shows no gain. The paired final difference is what each method reached on the task, each from
    # its own state after the first task.
    out["paper"] = [] if second is None else [{
        "claim": "on the second task RL stalls, FST keeps learning: final accuracy on it at the end of its stage, "
                 "FST − RL (paired)",
        "task": second["task"], "rl_final": second["rl"]["final_accuracy"], "stalled": {
            m: second[m]["stalled"] for m in MODES}, "ours": second["final_fst_minus_rl"],
        "reading": reading(second["final_fst_minus_rl"], better="above", null=0.0)}]
    return out


def _mean_matrix(matrices: list[dict]) -> dict:
    tasks = matrices[0]["tasks"]
    mean = [[_mean([mat["after_stage"][j][i] for mat in matrices if mat["after_stage"][j][i] is not None])
             for i in range(len(tasks))] for j in range(len(tasks))]
    return {"tasks": tasks, "after_stage": mean, "n": len(matrices)}


def _goals(study: Study, baseline: Study, seeds: list[int], per_stage: list[dict]) -> dict:
    """Issue 49's goals: each task's accuracy at the end of the run per seed, for RL, the baseline study's FST
    and this study's; the seeds in which date_normalize ends >= 0.80; the last task's FST − RL read against −0.05."""
    end: dict = {}
    for label, folder, mode in (("rl", baseline.folder, "rl"), (f"fst ({baseline.name})", baseline.folder, "fst"),
                                (f"fst ({study.name})", study.folder, "fst")):
        found = {s: f for s in seeds if (folder / f"{mode}-s{s}" / "done.json").is_file()
                 and (f := RunDir(folder / f"{mode}-s{s}").forgetting()) is not None}
        end[label] = {"matrix": _mean_matrix(list(found.values())) if found else None,
                      "end_of_run": {s: dict(zip(f["tasks"], f["after_stage"][-1], strict=True))
                                     for s, f in found.items()}}
    kept = {label: {"seeds": sorted(s for s, by in e["end_of_run"].items() if (by.get(KEPT_TASK) or 0) >= KEPT_AT),
                    "of": len(e["end_of_run"])} for label, e in end.items()}
    last = per_stage[-1] if per_stage else None
    return {"end": end, "kept": kept, "last_task": None if last is None else {
        "task": last["task"], "fst_minus_rl": last["final_fst_minus_rl"],
        "reading": reading(last["final_fst_minus_rl"], better="above", null=WITHIN)}}


def _point(c: CycleRecord) -> dict:
    return {"step": c.rl_steps, "stage": c.stage, "task": c.task, "acc": c.val_accuracy_best,
            "by_task": c.val_accuracy_by_task, "kl": c.kl}


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _stalls(s: dict | None) -> str:
    return "–" if not s or not s["of"] else f"{s['runs']} of {s['of']}"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def markdown(a: dict) -> str:
    run = "; ".join(f"{m.upper()} {seeds}" for m, seeds in a["seeds_run"].items())
    lines = [f"Seeds asked for: {a['seeds']}; finished runs: {run}. Means over seeds with the 95% t-interval of the "
             "mean (n = runs, one a seed); the reading follows one rule (`fst_prompt.stats`): *confirmed* / "
             "*refuted* only where the t-interval excludes no effect over ≥ 5 seeds or the exact sign-flip test "
             "gives p < 0.05, otherwise *undecided*, with the direction in k of n seeds. "
             "Normalised = accuracy / the best accuracy either method reached on that task within the stage (same "
             "seed). Stalled = runs whose final accuracy on the stage's task is at or below its constant answer. "
             "Gain in stage = last minus first evaluation within the stage; the first evaluation comes after the "
             "stage's first cycle, so a task learned within that cycle shows no gain, and the paper's claim is read "
             "on the paired final accuracy instead.", "",
             "| stage | task | constant answer | RL final | FST final | FST − RL final, paired | stalled RL / FST | "
             "RL final (norm.) | FST final (norm.) | RL gain in stage | FST gain in stage | FST − RL gain, paired |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in a["per_stage"]:
        rl, fst = r["rl"], r["fst"]
        lines.append(f"| {r['stage']} | {r['task']} | {_num(r['constant'])} | {fmt(rl['final_accuracy'])} | "
                     f"{fmt(fst['final_accuracy'])} | {fmt(r['final_fst_minus_rl'])} | "
                     f"{_stalls(rl['stalled'])} / {_stalls(fst['stalled'])} | {fmt(rl['normalised_final'])} | "
                     f"{fmt(fst['normalised_final'])} | {fmt(rl['gain_within_stage'])} | "
                     f"{fmt(fst['gain_within_stage'])} | {fmt(r['gain_fst_minus_rl'])} |")
    lines += ["", "KL(π‖π_base) at the end of each stage, nats, on that stage's probe prompts (not at matched "
              "accuracy); the ratio is a geometric mean over seeds:", "",
              "| stage | task | RL | FST | FST − RL, paired | FST / RL, paired |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['task']} | {fmt(r['rl']['final_kl'], 2)} | {fmt(r['fst']['final_kl'], 2)} | "
              f"{fmt(r['kl_fst_minus_rl'], 2)} | {fmt(r['kl_fst_over_rl'], 2)} |" for r in a["per_stage"]]
    for m, f in a["forgetting"].items():
        lines += ["", f"Forgetting matrix, {LABELS[m]} (mean of n={f['n']}): val accuracy on task (column) after "
                  "stage (row)", "", "| after stage | " + " | ".join(f["tasks"]) + " |",
                  "|---" * (len(f["tasks"]) + 1) + "|"]
        for j, row in enumerate(f["after_stage"]):
            lines.append(f"| {j} ({f['tasks'][j]}) | " + " | ".join(_num(v) for v in row) + " |")
    if "goals" in a:
        lines += _goals_markdown(a)
    if a["paper"]:
        lines += ["", "Next to the paper:", "",
                  "| claim | task | RL's final | stalled RL / FST | ours (FST − RL) | reading |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['claim']} | {r['task']} | {fmt(r['rl_final'])} | {_stalls(r['stalled']['rl'])} / "
                  f"{_stalls(r['stalled']['fst'])} | {fmt(r['ours'])} | {r['reading']} |" for r in a["paper"]]
    return "\n".join(lines) + "\n"


def _goals_markdown(a: dict) -> list[str]:
    g = a["goals"]
    lines = ["", f"RL is `{a['baseline']}`'s runs of the same seeds (RL has no population to archive). Issue 49's "
             f"goals: {KEPT_TASK} at the end of the run ≥ {KEPT_AT:.2f} in ≥ 2 of 3 seeds; the last task's final "
             f"accuracy within {-WITHIN:.2f} of RL's.", "",
             "| runs | accuracy at the end of the run, per seed | seeds with " + KEPT_TASK + f" ≥ {KEPT_AT:.2f} |",
             "|---|---|---|"]
    for label, e in g["end"].items():
        per_seed = "; ".join(f"s{s}: " + ", ".join(f"{t} {_num(v)}" for t, v in by.items())
                             for s, by in sorted(e["end_of_run"].items()))
        k = g["kept"][label]
        lines.append(f"| {label} | {per_seed or '–'} | {len(k['seeds'])} of {k['of']} |")
    if g["last_task"]:
        t = g["last_task"]
        lines += ["", f"Last task ({t['task']}), final accuracy FST − RL, paired: {fmt(t['fst_minus_rl'])}; "
                  f"goal above {WITHIN:.2f}: {t['reading']}."]
    for label, e in g["end"].items():
        f = e["matrix"]
        if f and not label.startswith("rl") and a["baseline"] in label:  # the others are in the tables above
            lines += ["", f"Forgetting matrix, {label} (mean of n={f['n']}): val accuracy on task (column) after "
                      "stage (row)", "", "| after stage | " + " | ".join(f["tasks"]) + " |",
                      "|---" * (len(f["tasks"]) + 1) + "|"]
            lines += [f"| {j} ({f['tasks'][j]}) | " + " | ".join(_num(v) for v in row) + " |"
                      for j, row in enumerate(f["after_stage"])]
    return lines


def plot(a: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peaks = {}  # (seed, stage) -> best of either method
    for m in MODES:
        for s, curve in a["curves"][m].items():
            for p in curve:
                peaks[(s, p["stage"])] = max(peaks.get((s, p["stage"]), 0.0), p["acc"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    for m, color in zip(MODES, ("C0", "C1"), strict=True):
        for i, (s, curve) in enumerate(a["curves"][m].items()):
            for stage in sorted({p["stage"] for p in curve}):
                pts = [p for p in curve if p["stage"] == stage]
                label = f"{LABELS[m]}" if i == 0 and stage == 0 else None
                ax1.plot([p["step"] for p in pts], [p["acc"] / (peaks[(s, stage)] or 1) for p in pts], marker="o",
                         color=color, alpha=0.8, label=label)
                ax2.plot([p["step"] for p in pts], [p["acc"] for p in pts], marker="o", color=color, alpha=0.8,
                         label=label)
    steps = sorted({p["step"] for per in a["curves"].values() for c in per.values() for p in c})
    per_stage = len(steps) // max(len(a["stages"]), 1)
    for ax in (ax1, ax2):
        for j, task in enumerate(a["stages"]):
            if j:
                ax.axvline(steps[j * per_stage - 1], color="grey", ls=":")  # the switch, after this step
            ax.text(steps[j * per_stage], 0.02, task, fontsize=8, color="grey", transform=ax.get_xaxis_transform())
        ax.set(xlabel="RL step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _constants(ax2, a)
    ax1.set(ylabel="accuracy on the current task, normalised per stage")
    ax2.set(ylabel="val accuracy on the current task")
    fig.tight_layout()
    fig.savefig(out / "continual.png", dpi=120)
    plt.close(fig)
    return [out / "continual.png"]


def _constants(ax, a: dict) -> None:
    """Each stage's constant-answer baseline, over that stage's steps."""
    for r in a["per_stage"]:
        xs = [p["step"] for per in a["curves"].values() for c in per.values() for p in c if p["stage"] == r["stage"]]
        if r["constant"] is not None and xs:
            ax.hlines(r["constant"], min(xs), max(xs), color="grey", ls="--", lw=1,
                      label="constant answer" if r["stage"] == 0 else None)
    ax.legend(fontsize=8)


def main() -> None:
    offline_environment()
    ap = driver_parser(__doc__, seeds=[0, 1, 2])
    ap.add_argument("--study", choices=list(STUDIES), default="v2")
    ap.add_argument("--modes", nargs="+", choices=MODES, help="default: rl fst (fst for a study whose RL is "
                    "another's: v3, v3-distill)")
    args = ap.parse_args()
    study = STUDIES[args.study]
    baseline = STUDIES[BASELINES[args.study]] if args.study in BASELINES else None
    modes = args.modes or (["fst"] if baseline else list(MODES))
    if not args.report_only:
        run_jobs(jobs_for(study, args.seeds, modes), parallel=args.jobs, allow_dirty=args.allow_dirty)
    a = analyse(study, report_seeds([0, 1, 2], args), baseline)
    write_report(study, a, markdown(a), plot)


if __name__ == "__main__":
    main()
