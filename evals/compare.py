"""Study 1 — RL vs GEPA-only vs GEPA->RL vs FST, same RL steps, several tasks and seeds.

    python evals/compare.py [--tasks chain_sum letter_counting] [--seeds 0 1 2] [--jobs 2] [--report-only]

Runs `fst run evals/configs/compare.yaml` once per (task, seed, mode) — finished runs are skipped — plus
`fst eval` of the base weights with the seed instruction (step 0, shared by every method: greedy decoding)
and with each FST run's learned instruction (the 2x2 table). Then writes to `evals/results/compare/`:

- `accuracy.png`: val accuracy vs RL step and vs policy rollouts (RL + GEPA), mean over seeds with a
  min-max band, one panel row per task;
- `kl_vs_accuracy.png`: KL(pi || pi_base) vs val accuracy for RL and FST;
- `compare.json` + `compare.md`: steps to reach RL's peak (FST, GEPA->RL), KL at matched accuracy
  (FST / RL), the 2x2 table, final accuracies, wall times.

GEPA->RL spends the GEPA budget FST spreads over its cycles (cycles x gepa.max_metric_calls) in one round
on the base weights, anchored on every problem its RL steps will use, then trains with the best instruction.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import RESULTS, ROOT, Job, driver_parser, eval_job, load_cycles, run_jobs, write_report  # noqa: E402

CONFIG = "evals/configs/compare.yaml"
MODES = ("rl", "fst", "gepa-then-rl", "gepa")
LABELS = {"rl": "RL", "fst": "FST", "gepa-then-rl": "GEPA→RL", "gepa": "GEPA-only"}
STUDY = "compare"


def base_config() -> dict:
    import yaml

    return yaml.safe_load((ROOT / CONFIG).read_text())


def run_jobs_for(tasks: list[str], seeds: list[int], modes: list[str]) -> list[Job]:
    cfg = base_config()
    cycles, budget = cfg["loop"]["cycles"], cfg["gepa"]["max_metric_calls"]
    jobs = []
    for seed in seeds:
        for task in tasks:
            for mode in modes:
                argv = ["run", CONFIG, "--set", f"task={task}", "--set", f"loop.mode={mode}",
                        "--set", f"seed={seed}"]
                if mode == "gepa-then-rl":
                    argv += ["--set", f"gepa.max_metric_calls={cycles * budget}"]
                jobs.append(Job(STUDY, f"{task}/{mode}-s{seed}", argv))
    return jobs


def eval_jobs_for(tasks: list[str], seeds: list[int]) -> list[Job]:
    """Step 0 (base weights, seed instruction) per task; base weights + each FST run's learned instruction."""
    cfg = base_config()
    jobs = []
    for task in tasks:
        jobs.append(eval_job(STUDY, f"{task}/base", task, cfg))
        for seed in seeds:
            fst = RESULTS / STUDY / task / f"fst-s{seed}"
            if (fst / "done.json").is_file():
                jobs.append(eval_job(STUDY, f"{task}/base-learned-s{seed}", task, cfg, best_instructions(fst)))
    return jobs


def best_instructions(results: Path) -> dict[str, str]:
    from fst_prompt.fast.population import Population

    return Population.from_json(json.loads((results / "state.json").read_text())["population"]).best().instructions


def eval_accuracy(results: Path) -> float | None:
    path = results / "eval.json"
    return json.loads(path.read_text())["accuracy"] if path.is_file() else None


def curve(task: str, mode: str, seed: int, base_acc: float) -> list[dict] | None:
    """(rl_step, rollouts, accuracy, kl) per evaluation, step 0 = the base weights with the seed instruction."""
    results = RESULTS / STUDY / task / f"{mode}-s{seed}"
    if not (results / "done.json").is_file():
        return None
    T = base_config()["loop"]["steps_per_cycle"]
    points = [{"step": 0, "rollouts": 0, "acc": base_acc, "seed_acc": base_acc, "kl": 0.0, "cycle": -1,
               "accepted": 0, "tried": 0}]
    for c in load_cycles(results):
        step = c["rl_steps"] if mode != "gepa" else (c["cycle"] + 1) * T
        points.append({"step": step, "rollouts": c["total_rollouts"], "acc": c["val_accuracy_best"],
                       "seed_acc": c["val_accuracy_seed"], "kl": c["kl"], "cycle": c["cycle"],
                       "accepted": c["proposals_accepted"], "tried": c["proposals_tried"]})
    return points


def steps_to_reach(points: list[dict], target: float) -> int | None:
    return next((p["step"] for p in points if p["acc"] >= target), None)


def kl_at(points: list[dict], acc: float) -> float | None:
    """KL when the run first reaches `acc`, linearly interpolated between evaluations (None if never)."""
    for a, b in zip(points, points[1:], strict=False):
        if b["acc"] >= acc:
            if a["acc"] >= acc:
                return a["kl"]
            t = (acc - a["acc"]) / (b["acc"] - a["acc"])
            return a["kl"] + t * (b["kl"] - a["kl"])
    return None


def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def analyse(tasks: list[str], seeds: list[int]) -> dict:
    out: dict = {"tasks": {}, "seeds": seeds, "config": CONFIG}
    for task in tasks:
        base = eval_accuracy(RESULTS / STUDY / task / "base")
        if base is None:
            continue
        curves = {m: {s: curve(task, m, s, base) for s in seeds} for m in MODES}
        curves = {m: {s: c for s, c in per.items() if c} for m, per in curves.items()}
        t: dict = {"base_accuracy": base, "curves": curves, "reach_rl_peak": {}, "kl_ratio_matched": [],
                   "final": {}, "two_by_two": {}, "wall_minutes": {}}
        for m in MODES:
            t["final"][m] = spread([c[-1]["acc"] for c in curves[m].values()])
            t["wall_minutes"][m] = spread([json.loads((RESULTS / STUDY / task / f"{m}-s{s}" / "done.json").read_text())
                                           ["wall_seconds"] / 60 for s in curves[m]])
        for m in ("fst", "gepa-then-rl"):
            rows = []
            for s, rl in curves["rl"].items():
                if s not in curves[m]:
                    continue
                peak = max(p["acc"] for p in rl)
                rl_steps = steps_to_reach(rl, peak)
                other = steps_to_reach(curves[m][s], peak)
                rows.append({"seed": s, "rl_peak": peak, "rl_steps": rl_steps, "steps": other,
                             "ratio": (rl_steps / other) if other else None})
            t["reach_rl_peak"][m] = {"runs": rows, "ratio": spread([r["ratio"] for r in rows if r["ratio"]]),
                                     "reached": sum(r["steps"] is not None for r in rows)}
        for s, rl in curves["rl"].items():
            if s not in curves["fst"]:
                continue
            fst = curves["fst"][s]
            matched = min(max(p["acc"] for p in rl), max(p["acc"] for p in fst))  # both runs reach it
            kl_rl, kl_fst = kl_at(rl, matched), kl_at(fst, matched)
            t["kl_ratio_matched"].append({"seed": s, "acc": matched, "kl_rl": kl_rl, "kl_fst": kl_fst,
                                          "ratio": kl_fst / kl_rl if kl_rl else None,
                                          "final_kl_rl": rl[-1]["kl"], "final_kl_fst": fst[-1]["kl"]})
        t["kl_ratio"] = spread([r["ratio"] for r in t["kl_ratio_matched"] if r["ratio"] is not None])
        t["final_kl_ratio"] = spread([r["final_kl_fst"] / r["final_kl_rl"] for r in t["kl_ratio_matched"]
                                      if r["final_kl_rl"]])
        learned = [eval_accuracy(RESULTS / STUDY / task / f"base-learned-s{s}") for s in curves["fst"]]
        t["two_by_two"] = {
            "base_seed": base,
            "base_learned": spread(learned),
            "fst_seed": spread([c[-1]["seed_acc"] for c in curves["fst"].values()]),
            "fst_learned": spread([c[-1]["acc"] for c in curves["fst"].values()]),
            "rl_seed": spread([c[-1]["acc"] for c in curves["rl"].values()]),
        }
        out["tasks"][task] = t
    return out


def fmt(s: dict, digits: int = 3) -> str:
    if not s or s.get("n", 0) == 0:
        return "–"
    return f"{s['mean']:.{digits}f} [{s['min']:.{digits}f}, {s['max']:.{digits}f}] (n={s['n']})"


def markdown(a: dict) -> str:
    lines = ["Mean [min, max] over seeds (n = runs). Val accuracy on 32 val problems, greedy.", ""]
    for task, t in a["tasks"].items():
        lines += [f"### {task}", "", f"Step 0 (base weights, seed instruction): {t['base_accuracy']:.3f}", "",
                  "| method | final val accuracy | wall minutes per run |", "|---|---|---|"]
        lines += [f"| {LABELS[m]} | {fmt(t['final'][m])} | {fmt(t['wall_minutes'][m], 1)} |" for m in MODES]
        lines += ["", "| | steps to reach RL's peak: ratio RL/method | runs that reached it |", "|---|---|---|"]
        for m, r in t["reach_rl_peak"].items():
            lines.append(f"| {LABELS[m]} | {fmt(r['ratio'], 2)} | {r['reached']}/{len(r['runs'])} |")
        fst_runs = t["reach_rl_peak"].get("fst", {}).get("runs", [])
        lines += ["", "Per seed: " + "; ".join(
            f"s{r['seed']}: RL peak {r['rl_peak']:.3f} at step {r['rl_steps']}, FST at "
            f"{r['steps'] if r['steps'] is not None else 'never'}" for r in fst_runs)]
        lines += ["", f"KL at matched accuracy, FST/RL: {fmt(t['kl_ratio'], 2)}; final KL, FST/RL: "
                      f"{fmt(t['final_kl_ratio'], 2)}", ""]
        lines += ["Per seed: " + "; ".join(
            f"s{r['seed']}: acc {r['acc']:.3f}, KL RL {_num(r['kl_rl'])} vs FST {_num(r['kl_fst'])}"
            for r in t["kl_ratio_matched"]), ""]
        accepted = {m: ", ".join(f"s{s}: {c[-1]['accepted']}/{c[-1]['tried']}" for s, c in t["curves"][m].items())
                    for m in ("fst", "gepa-then-rl", "gepa")}
        lines += ["GEPA proposals accepted / evaluated over the run, per seed: "
                  + "; ".join(f"{LABELS[m]} {text}" for m, text in accepted.items()), ""]
        tb = t["two_by_two"]
        lines += ["2x2 (val accuracy):", "", "| weights \\ instruction | seed | learned (FST's best) |",
                  "|---|---|---|",
                  f"| base | {tb['base_seed']:.3f} | {fmt(tb['base_learned'])} |",
                  f"| FST-trained | {fmt(tb['fst_seed'])} | {fmt(tb['fst_learned'])} |",
                  f"| RL-trained | {fmt(tb['rl_seed'])} | – |", ""]
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def plot(a: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(a["tasks"])
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.8 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks, strict=True):
        for m in MODES:
            runs = list(a["tasks"][task]["curves"][m].values())
            if not runs:
                continue
            n = min(len(r) for r in runs)
            acc = np.array([[p["acc"] for p in r[:n]] for r in runs])
            for ax, key in zip(row, ("step", "rollouts"), strict=True):
                x = np.array([[p[key] for p in r[:n]] for r in runs]).mean(0)
                style = "--" if m == "gepa" else "-"
                ax.plot(x, acc.mean(0), style, marker="o", label=f"{LABELS[m]} (n={len(runs)})")
                ax.fill_between(x, acc.min(0), acc.max(0), alpha=0.15)
        row[0].set(title=f"{task}", xlabel="RL step (GEPA-only: the cycle's position)", ylabel="val accuracy")
        row[1].set(title=f"{task}", xlabel="policy rollouts (RL + GEPA)", ylabel="val accuracy")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out / "accuracy.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for m in ("rl", "fst", "gepa-then-rl"):
            for i, r in enumerate(a["tasks"][task]["curves"][m].values()):
                ax.plot([p["acc"] for p in r], [p["kl"] for p in r], marker="o", alpha=0.7,
                        color={"rl": "C0", "fst": "C1", "gepa-then-rl": "C2"}[m], label=LABELS[m] if i == 0 else None)
        ax.set(title=task, xlabel="val accuracy", ylabel="KL(π‖π_base), nats per sequence")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "kl_vs_accuracy.png")
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


def main() -> None:
    ap = driver_parser(__doc__, seeds=[0, 1, 2])
    ap.add_argument("--tasks", nargs="+", default=["chain_sum", "letter_counting"])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = ap.parse_args()
    if not args.report_only:
        run_jobs(run_jobs_for(args.tasks, args.seeds, args.modes), parallel=args.jobs)
        run_jobs(eval_jobs_for(args.tasks, args.seeds), parallel=args.jobs)
    a = analyse(args.tasks, args.seeds)
    write_report(STUDY, a, markdown(a), plot)


if __name__ == "__main__":
    main()
