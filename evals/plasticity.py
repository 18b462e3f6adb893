"""Study 3 — plasticity: fresh RL on task B from the base, RL-trained and FST-trained weights on task A.

    python -m evals.plasticity [--study v2] [--seeds 0 1 2] [--jobs 1] [--report-only]

`--study v2` (the default): task A ticket_routing, task B date_normalize, from the compare_v2 study's runs
and config; `--study v1`: chain_sum then letter_counting, from the first compare study's. Needs the compare
study's task-A runs: their final weights are the starting points. For each seed, RL on task B with the
compare config (`loop.mode=rl`) from the RL- and from the FST-trained task-A weights of that seed; the run
from the base weights is the compare study's own task-B RL run of that seed (the same config and seed).
Step 0 is `fst eval` of each starting point on task B with the seed instruction. Where an FST run accepted
no proposal, it trained exactly as RL did (byte-identical weights, checked by sha256), and its start reuses
RL's run. The final weights live only in the `runs/` of the machine that trained them (the results keep
none): where a task-A run finished elsewhere, this study repeats it (`retrain-<start>-s<seed>`, the same
command) before starting from it, and the report sets that repeat's accuracy beside the original's.

Writes to `evals/results/<study>/`: `plasticity.png` (task-B accuracy vs RL step per start, with the
constant-answer baseline), `<study>.json` + `<study>.md` (accuracy at step 0, final accuracy and area under
the curve — the mean accuracy over steps 0..M by the trapezoid rule — over seeds with 95% t-intervals,
the paired per-seed difference of the FST-trained start against the RL-trained one, and what each
run's RL steps had to learn from: the share of groups whose rollouts all scored the same).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from evals.report import fmt, reading, rl_signal, summary
from evals.runner import Job, Study, driver_parser, report_seeds, run_jobs, write_report
from fst_prompt.cli import offline_environment
from fst_prompt.rundir import RunDir
from fst_prompt.stats import mean_over_curve

STARTS = ("base", "rl", "fst")


@dataclass(frozen=True, kw_only=True)
class PlasticityStudy(Study):
    compare: str  # the compare study whose task-A runs give the starting weights (its config is `config`)
    task_a: str
    task_b: str

    def task_a_run(self, start: str, seed: int) -> Job:
        """The compare study's task-A run of a start and seed (its results, its final weights)."""
        return self.job(f"{self.task_a}/{start}-s{seed}", [], study=self.compare)


STUDIES = {  # --study
    "v2": PlasticityStudy(name="plasticity_v2", compare="compare_v2", config="evals/configs/compare_v2.yaml",
                          task_a="ticket_routing", task_b="date_normalize"),
    "v1": PlasticityStudy(name="plasticity", compare="compare", config="evals/configs/compare.yaml",
                          task_a="chain_sum", task_b="letter_counting"),
}


def label(start: str, task_a: str) -> str:
    return "from base" if start == "base" else f"from {start.upper()} on {task_a}"


def start_weights(study: PlasticityStudy, start: str, seed: int) -> Path:
    """Task A's final weights: the compare run's, or this study's re-run of it where that run finished on another
    machine (its results are kept in evals/results, its weights only in that machine's runs/)."""
    rerun = study.job(f"retrain-{start}-s{seed}", []).final_weights
    return rerun if (rerun / "model.safetensors").is_file() else study.task_a_run(start, seed).final_weights


def retrain_jobs(study: PlasticityStudy, seeds: list[int]) -> list[Job]:
    """Task-A runs to repeat for their weights: finished in the compare study, but their weights are not on this
    machine and the plasticity run that starts from them has not finished. Each repeats the compare run's own
    command (its `done.json`) as `retrain-<start>-s<seed>`; the report sets its accuracy beside the original's."""
    jobs = []
    for seed in seeds:
        for start in ("rl", "fst"):
            original = study.task_a_run(start, seed).results / "done.json"
            if (not original.is_file() or (start_weights(study, start, seed) / "model.safetensors").is_file()
                    or study.job(f"{start}-s{seed}", []).done):
                continue
            job = study.job(f"retrain-{start}-s{seed}", json.loads(original.read_text())["argv"])
            if job.done:  # re-run on another machine before: its weights went with it, so run it again
                shutil.rmtree(job.results)
            print(f"{start}-s{seed}: {study.compare}/{study.task_a}/{start}-s{seed} finished elsewhere and its "
                  f"weights are not here: repeating it as {study.name}/{job.name}", flush=True)
            jobs.append(job)
    return jobs


def jobs_for(study: PlasticityStudy, seeds: list[int]) -> tuple[list[Job], list[Job]]:
    """(step-0 evaluations, RL runs) for the trained starting points whose compare run has finished."""
    cfg = study.run_config()
    evals, runs = [], []
    for seed in seeds:
        for start in ("rl", "fst"):
            if study.job(f"{start}-s{seed}", []).done and study.job(f"start-{start}-s{seed}", []).done:
                continue  # finished: its starting weights are no longer needed
            weights = start_weights(study, start, seed)
            if not (weights / "model.safetensors").is_file():
                print(f"skipping {start}-s{seed}: {study.compare}/{study.task_a}/{start}-s{seed} has not finished "
                      f"(python -m evals.compare --tasks {study.task_a} --seeds {seed} --modes {start})")
                continue
            rl_weights = start_weights(study, "rl", seed)
            if (start == "fst" and (rl_weights / "model.safetensors").is_file()
                    and _sha256(weights) == _sha256(rl_weights)):
                # GEPA accepted nothing in that FST run, so it trained exactly as RL did: reuse RL's start
                marker = study.folder / f"fst-s{seed}" / "same_as.json"
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(json.dumps({"same_weights_as": f"rl-s{seed}", "sha256": _sha256(weights)}))
                continue
            job = study.job(f"start-{start}-s{seed}", [])
            job.argv = ["eval", "--task", study.task_b, "--model", str(weights), "--split", "val",
                        "--n", str(cfg["loop"]["eval_n"]),
                        "--max-new-tokens", str(cfg["policy"]["max_new_tokens"]),
                        "--out", str(job.results / "eval.json")]
            evals.append(job)
            runs.append(study.job(f"{start}-s{seed}", [
                "run", study.config, "--set", f"task={study.task_b}", "--set", "loop.mode=rl",
                "--set", f"policy.model={weights}", "--set", f"seed={seed}"]))
    return evals, runs


def _sha256(weights: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(weights / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def results_of(study: PlasticityStudy, start: str, seed: int) -> tuple[Path, Path]:
    """(the RL run's results, its step-0 evaluation's) for a start and seed."""
    if (study.folder / f"{start}-s{seed}" / "same_as.json").is_file():  # byte-identical starting weights
        start = "rl"
    if start == "base":
        compare = study.results_root / study.compare / study.task_b
        return compare / f"rl-s{seed}", compare / "base"
    return study.folder / f"{start}-s{seed}", study.folder / f"start-{start}-s{seed}"


def curve(study: PlasticityStudy, start: str, seed: int) -> list[dict] | None:
    run, step0 = results_of(study, start, seed)
    if not (run / "done.json").is_file() or not (step0 / "eval.json").is_file():
        return None
    points = [{"step": 0, "acc": json.loads((step0 / "eval.json").read_text())["accuracy"]}]
    return points + [{"step": c.rl_steps, "acc": c.val_accuracy_best, "constant": c.val_majority_baseline}
                     for c in RunDir(run).cycles()]


def auc(points: list[dict]) -> float:
    """Mean accuracy over steps 0..M (trapezoid rule)."""
    return mean_over_curve([p["step"] for p in points], [p["acc"] for p in points])


def analyse(study: PlasticityStudy, seeds: list[int]) -> dict:
    out: dict = {"seeds": seeds, "task_a": study.task_a, "task_b": study.task_b, "config": study.config,
                 "starts": {},
                 "fst_same_as_rl": [s for s in seeds if (study.folder / f"fst-s{s}" / "same_as.json").is_file()]}
    curves = {start: {s: c for s in seeds if (c := curve(study, start, s))} for start in STARTS}
    for start in STARTS:
        runs = curves[start]
        out["starts"][start] = {"curves": runs, "n": len(runs),
                                "signal": {s: sig for s in runs
                                           if (sig := rl_signal(results_of(study, start, s)[0]))},
                                "start_accuracy": summary([c[0]["acc"] for c in runs.values()]),
                                "final_accuracy": summary([c[-1]["acc"] for c in runs.values()]),
                                "auc": summary([auc(c) for c in runs.values()])}
    both = [s for s in curves["rl"] if s in curves["fst"]]
    out["fst_minus_rl"] = {"seeds": both,
                           "final": summary([curves["fst"][s][-1]["acc"] - curves["rl"][s][-1]["acc"] for s in both]),
                           "auc": summary([auc(curves["fst"][s]) - auc(curves["rl"][s]) for s in both])}
    out["fst_minus_rl"]["reading"] = reading(out["fst_minus_rl"]["auc"], better="above", null=0.0)
    out["fst_minus_rl"]["reading_final"] = reading(out["fst_minus_rl"]["final"], better="above", null=0.0)
    constants = [p["constant"] for per in curves.values() for c in per.values() for p in c[1:] if p.get("constant")]
    out["constant"] = constants[-1] if constants else None
    out["retrained"] = {}  # task-A runs repeated for their weights: final accuracy here and in the compare study
    for run in sorted(study.folder.glob("retrain-*")):
        if (run / "done.json").is_file():
            name = run.name.removeprefix("retrain-")
            original = study.results_root / study.compare / study.task_a / name
            final = {where: RunDir(r).cycles()[-1].val_accuracy_best for where, r in (("here", run),
                                                                                     ("original", original))}
            out["retrained"][name] = final
    return out


def markdown(a: dict) -> str:
    constant = "not recorded by these runs" if a["constant"] is None else f"{a['constant']:.3f}"
    lines = [f"Fresh RL on {a['task_b']} (val accuracy, greedy); means over seeds with the 95% t-interval of the "
             "mean (n = runs, one a seed); readings by one rule (`fst_prompt.stats`): *confirmed* / *refuted* only "
             "where the t-interval excludes no effect over ≥ 5 seeds or the exact sign-flip test gives p < 0.05, "
             f"otherwise *undecided*, with the direction in k of n seeds. Constant answer on {a['task_b']}: "
             f"{constant}.", "",
             f"| start | {a['task_b']} at step 0 | final | area under curve (mean accuracy) |", "|---|---|---|---|"]
    for start, r in a["starts"].items():
        lines.append(f"| {label(start, a['task_a'])} | {fmt(r['start_accuracy'])} | {fmt(r['final_accuracy'])} | "
                     f"{fmt(r['auc'])} |")
    d = a["fst_minus_rl"]
    lines += ["", f"Paired per seed, FST-trained start − RL-trained start (seeds {d['seeds']}): final "
                  f"{fmt(d['final'])}, area under curve {fmt(d['auc'])}. FST's start keeps more plasticity: "
                  f"in final accuracy {d['reading_final']}; in area under the curve {d['reading']}."]
    lines += ["", "Per seed (accuracy at each evaluation from step 0): " + "; ".join(
        f"{start} s{s}: " + " ".join(f"{p['acc']:.3f}" for p in c)
        for start, r in a["starts"].items() for s, c in r["curves"].items())]
    signal = [f"| {label(start, a['task_a'])} s{s} | {g['zero_std']:.0%} | {g['steps_with_signal']}/{g['steps']} "
              f"| {g['reward']:.3f} |" for start, r in a["starts"].items() for s, g in r["signal"].items()]
    if signal:  # runs older than steps.jsonl have none
        lines += ["", "What the RL steps had to learn from (steps.jsonl), per seed: groups whose rollouts all scored "
                      "the same (no gradient from the advantage); steps with a group that did not; mean reward per "
                      "rollout:", "", "| start | groups without signal | steps with signal | mean reward |",
                  "|---|---|---|---|", *signal]
    if a["retrained"]:
        lines += ["", "Starting weights trained again for this study (the compare run's stayed on the machine that "
                      f"ran it), final val accuracy on {a['task_a']} here vs in the compare run: " + "; ".join(
                          f"{name} {r['here']:.3f} vs {r['original']:.3f}" for name, r in a["retrained"].items())
                  + ". The base row and the pairing use the compare runs."]
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
                    label=label(start, a["task_a"]) if i == 0 else None)
    if a["constant"] is not None:
        ax.axhline(a["constant"], color="grey", ls=":", lw=1, label=f"constant answer {a['constant']:.3f}")
    ax.set(xlabel=f"RL steps on {a['task_b']}", ylabel=f"val accuracy on {a['task_b']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "plasticity.png", dpi=120)
    plt.close(fig)
    return [out / "plasticity.png"]


def main() -> None:
    offline_environment()
    ap = driver_parser(__doc__, seeds=[0, 1, 2])
    ap.add_argument("--study", choices=list(STUDIES), default="v2")
    args = ap.parse_args()
    study = STUDIES[args.study]
    if not args.report_only:
        run_jobs(retrain_jobs(study, args.seeds), parallel=args.jobs, allow_dirty=args.allow_dirty)
        evals, runs = jobs_for(study, args.seeds)
        run_jobs(evals + runs, parallel=args.jobs, allow_dirty=args.allow_dirty)
    a = analyse(study, report_seeds([0, 1, 2], args))
    write_report(study, a, markdown(a), plot)


if __name__ == "__main__":
    main()
