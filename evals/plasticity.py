"""Study 3 — plasticity: fresh RL on task B from the base, RL-trained and FST-trained weights on task A.

    python evals/plasticity.py [--seeds 0 1 2] [--jobs 2] [--report-only]

Needs the compare study's chain_sum runs (task A): their final weights are the starting points. For each
seed, RL on letter_counting (task B) with the compare config (`loop.mode=rl`, 3 cycles x T=4 steps) from
the RL- and from the FST-trained chain_sum weights of that seed; the run from the base weights is the
compare study's own letter_counting RL run of that seed (the same config and seed). Step 0 is `fst eval`
of each starting point on task B with the seed instruction. Where an FST run accepted no proposal, it
trained exactly as RL did (byte-identical weights, checked by sha256), and its start reuses RL's run.

Writes to `evals/results/plasticity/`: `plasticity.png` (task-B accuracy vs RL step per start),
`plasticity.json` + `plasticity.md` (final accuracy and area under the curve, i.e. the mean accuracy over
steps 0..M by the trapezoid rule).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runner import RESULTS, ROOT, Job, driver_parser, final_weights, load_cycles, run_jobs, write_report  # noqa: E402

CONFIG = "evals/configs/compare.yaml"
TASK_A, TASK_B = "chain_sum", "letter_counting"
STARTS = ("base", "rl", "fst")
LABELS = {"base": "from base", "rl": f"from RL on {TASK_A}", "fst": f"from FST on {TASK_A}"}
STUDY = "plasticity"


def start_weights(start: str, seed: int) -> Path:
    return final_weights("compare", f"{TASK_A}/{start}-s{seed}")


def jobs_for(seeds: list[int]) -> tuple[list[Job], list[Job]]:
    """(step-0 evaluations, RL runs) for the trained starting points whose compare run has finished."""
    import yaml

    cfg = yaml.safe_load((ROOT / CONFIG).read_text())
    evals, runs = [], []
    for seed in seeds:
        for start in ("rl", "fst"):
            weights = start_weights(start, seed)
            if not (weights / "model.safetensors").is_file():
                print(f"skipping {start}-s{seed}: no final weights at {weights} (run evals/compare.py first)")
                continue
            if start == "fst" and _sha256(weights) == _sha256(start_weights("rl", seed)):
                # GEPA accepted nothing in that FST run, so it trained exactly as RL did: reuse RL's start
                marker = RESULTS / STUDY / f"fst-s{seed}" / "same_as.json"
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(json.dumps({"same_weights_as": f"rl-s{seed}", "sha256": _sha256(weights)}))
                continue
            job = Job(STUDY, f"start-{start}-s{seed}", [])
            job.argv = ["eval", "--task", TASK_B, "--model", str(weights), "--split", "val",
                        "--n", str(cfg["loop"]["eval_n"]),
                        "--max-new-tokens", str(cfg["policy"]["max_new_tokens"]),
                        "--out", str(job.results / "eval.json")]
            evals.append(job)
            runs.append(Job(STUDY, f"{start}-s{seed}", [
                "run", CONFIG, "--set", f"task={TASK_B}", "--set", "loop.mode=rl", "--set", f"policy.model={weights}",
                "--set", f"seed={seed}"]))
    return evals, runs


def _sha256(weights: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(weights / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def curve(start: str, seed: int) -> list[dict] | None:
    if (RESULTS / STUDY / f"{start}-s{seed}" / "same_as.json").is_file():  # byte-identical starting weights
        start = "rl"
    if start == "base":
        run, step0 = RESULTS / "compare" / TASK_B / f"rl-s{seed}", RESULTS / "compare" / TASK_B / "base"
    else:
        run, step0 = RESULTS / STUDY / f"{start}-s{seed}", RESULTS / STUDY / f"start-{start}-s{seed}"
    if not (run / "done.json").is_file() or not (step0 / "eval.json").is_file():
        return None
    points = [{"step": 0, "acc": json.loads((step0 / "eval.json").read_text())["accuracy"]}]
    return points + [{"step": c["rl_steps"], "acc": c["val_accuracy_best"]} for c in load_cycles(run)]


def auc(points: list[dict]) -> float:
    """Mean accuracy over steps 0..M (trapezoid rule)."""
    area = sum((b["step"] - a["step"]) * (a["acc"] + b["acc"]) / 2 for a, b in zip(points, points[1:], strict=False))
    return area / (points[-1]["step"] - points[0]["step"])


def analyse(seeds: list[int]) -> dict:
    out: dict = {"seeds": seeds, "task_a": TASK_A, "task_b": TASK_B, "config": CONFIG, "starts": {},
                 "fst_same_as_rl": [s for s in seeds if (RESULTS / STUDY / f"fst-s{s}" / "same_as.json").is_file()]}
    for start in STARTS:
        curves = {s: c for s in seeds if (c := curve(start, s))}
        out["starts"][start] = {"curves": curves, "n": len(curves),
                                "start_accuracy": _spread([c[0]["acc"] for c in curves.values()]),
                                "final_accuracy": _spread([c[-1]["acc"] for c in curves.values()]),
                                "auc": _spread([auc(c) for c in curves.values()])}
    return out


def _spread(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)}


def _fmt(s: dict) -> str:
    return "–" if not s.get("n") else f"{s['mean']:.3f} [{s['min']:.3f}, {s['max']:.3f}]"


def markdown(a: dict) -> str:
    lines = [f"Fresh RL on {a['task_b']} (val accuracy, n=32, greedy); mean [min, max] over seeds.", "",
             f"| start | n | {a['task_b']} at step 0 | final | area under curve (mean accuracy) |",
             "|---|---|---|---|---|"]
    for start, r in a["starts"].items():
        lines.append(f"| {LABELS[start]} | {r['n']} | {_fmt(r['start_accuracy'])} | {_fmt(r['final_accuracy'])} | "
                     f"{_fmt(r['auc'])} |")
    lines += ["", "Per seed (accuracy at steps 0, 4, 8, 12): " + "; ".join(
        f"{start} s{s}: " + " ".join(f"{p['acc']:.3f}" for p in c)
        for start, r in a["starts"].items() for s, c in r["curves"].items())]
    if a["fst_same_as_rl"]:
        lines += ["", f"Seeds {a['fst_same_as_rl']}: GEPA accepted no proposal in that seed's FST run on "
                      f"{a['task_a']}, so its weights are byte-identical to RL's and its row repeats RL's run."]
    return "\n".join(lines) + "\n"


def plot(a: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for start, color in zip(STARTS, ("C2", "C0", "C1"), strict=True):
        for i, c in enumerate(a["starts"][start]["curves"].values()):
            ax.plot([p["step"] for p in c], [p["acc"] for p in c], marker="o", color=color, alpha=0.8,
                    label=LABELS[start] if i == 0 else None)
    ax.set(xlabel=f"RL steps on {a['task_b']}", ylabel=f"val accuracy on {a['task_b']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "plasticity.png", dpi=120)
    plt.close(fig)
    return [out / "plasticity.png"]


def main() -> None:
    args = driver_parser(__doc__, seeds=[0, 1, 2]).parse_args()
    if not args.report_only:
        evals, runs = jobs_for(args.seeds)
        run_jobs(evals + runs, parallel=args.jobs)
    a = analyse(args.seeds)
    write_report(STUDY, a, markdown(a), plot)


if __name__ == "__main__":
    main()
