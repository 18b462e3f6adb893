"""Study 2 — continual learning: three tasks in a row, RL vs FST.

    python evals/continual.py [--seeds 0] [--jobs 2] [--report-only]

Runs `fst run evals/configs/continual.yaml` (chain_sum -> letter_counting -> basic_arithmetic, 2 cycles x
T=4 RL steps each, one task-agnostic seed instruction) per (mode, seed), skipping finished runs. Then writes
to `evals/results/continual/`:

- `continual.png`: accuracy on the current task vs RL step, normalised per stage as in the paper — divided
  by the best accuracy either method reached on that task within the stage — with stage boundaries;
- `continual.json` + `continual.md`: the normalised per-stage accuracies and the forgetting matrices
  (accuracy on task i after stage j, from each run's `forgetting.json`).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import RESULTS, Job, driver_parser, load_cycles, run_jobs, write_report  # noqa: E402

CONFIG = "evals/configs/continual.yaml"
MODES = ("rl", "fst")
LABELS = {"rl": "RL", "fst": "FST"}
STUDY = "continual"


def jobs_for(seeds: list[int], modes: list[str]) -> list[Job]:
    return [Job(STUDY, f"{mode}-s{seed}", ["run", CONFIG, "--set", f"loop.mode={mode}", "--set", f"seed={seed}"])
            for seed in seeds for mode in modes]


def analyse(seeds: list[int]) -> dict:
    runs = {m: {s: load_cycles(RESULTS / STUDY / f"{m}-s{s}") for s in seeds
                if (RESULTS / STUDY / f"{m}-s{s}" / "done.json").is_file()} for m in MODES}
    stages = sorted({(c["stage"], c["task"]) for per in runs.values() for cs in per.values() for c in cs})
    out: dict = {"seeds": seeds, "config": CONFIG, "stages": [t for _, t in stages], "per_stage": [],
                 "forgetting": {}, "curves": {}}
    for stage, task in stages:
        # the paper's normalisation: the best peak of either method on this task within this stage (per seed)
        row: dict = {"stage": stage, "task": task}
        for m in MODES:
            norm_final, norm_mean, raw_final, gain = [], [], [], []
            for s, cycles in runs[m].items():
                peak = max(c["val_accuracy_best"] for per in runs.values() if s in per for c in per[s]
                           if c["stage"] == stage)
                mine = [c["val_accuracy_best"] for c in cycles if c["stage"] == stage]
                if not mine or peak == 0:
                    continue
                norm_final.append(mine[-1] / peak)
                norm_mean.append(statistics.fmean(mine) / peak)
                raw_final.append(mine[-1])
                gain.append(mine[-1] - mine[0])
            row[m] = {"normalised_final": _mean(norm_final), "normalised_mean": _mean(norm_mean),
                      "final_accuracy": _mean(raw_final), "gain_within_stage": _mean(gain), "n": len(raw_final)}
        out["per_stage"].append(row)
    for m in MODES:
        matrices = [json.loads((RESULTS / STUDY / f"{m}-s{s}" / "forgetting.json").read_text()) for s in runs[m]]
        if matrices:
            tasks = matrices[0]["tasks"]
            mean = [[_mean([mat["after_stage"][j][i] for mat in matrices if mat["after_stage"][j][i] is not None])
                     for i in range(len(tasks))] for j in range(len(tasks))]
            out["forgetting"][m] = {"tasks": tasks, "after_stage": mean, "n": len(matrices)}
        out["curves"][m] = {s: [{"step": c["rl_steps"], "stage": c["stage"], "task": c["task"],
                                 "acc": c["val_accuracy_best"], "by_task": c["val_accuracy_by_task"], "kl": c["kl"]}
                                for c in cycles] for s, cycles in runs[m].items()}
    return out


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def markdown(a: dict) -> str:
    lines = [f"Seeds: {a['seeds']}. Normalised = accuracy / the best accuracy either method reached on that task "
             "within the stage (same seed); mean over seeds.", "",
             "| stage | task | RL final (norm.) | FST final (norm.) | RL mean (norm.) | FST mean (norm.) | "
             "RL gain in stage | FST gain in stage |", "|---|---|---|---|---|---|---|---|"]
    for r in a["per_stage"]:
        rl, fst = r["rl"], r["fst"]
        lines.append(f"| {r['stage']} | {r['task']} | {_num(rl['final_accuracy'])} ({_num(rl['normalised_final'])}) | "
                     f"{_num(fst['final_accuracy'])} ({_num(fst['normalised_final'])}) | "
                     f"{_num(rl['normalised_mean'])} | {_num(fst['normalised_mean'])} | "
                     f"{_num(rl['gain_within_stage'])} | {_num(fst['gain_within_stage'])} |")
    for m, f in a["forgetting"].items():
        lines += ["", f"Forgetting matrix, {LABELS[m]} (n={f['n']}): val accuracy on task (column) after stage (row)",
                  "", "| after stage | " + " | ".join(f["tasks"]) + " |", "|---" * (len(f["tasks"]) + 1) + "|"]
        for j, row in enumerate(f["after_stage"]):
            lines.append(f"| {j} ({f['tasks'][j]}) | " + " | ".join(_num(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


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
    ax1.set(ylabel="accuracy on the current task, normalised per stage")
    ax2.set(ylabel="val accuracy on the current task")
    fig.tight_layout()
    fig.savefig(out / "continual.png", dpi=120)
    plt.close(fig)
    return [out / "continual.png"]


def main() -> None:
    ap = driver_parser(__doc__, seeds=[0])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = ap.parse_args()
    if not args.report_only:
        run_jobs(jobs_for(args.seeds, args.modes), parallel=args.jobs)
    a = analyse(args.seeds)
    write_report(STUDY, a, markdown(a), plot)


if __name__ == "__main__":
    main()
