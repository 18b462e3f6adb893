"""Study 1 — RL vs GEPA-only vs GEPA->RL vs FST, same RL steps, several tasks and seeds.

    python -m evals.compare [--study v2] [--tasks date_normalize ticket_routing] [--seeds 0 1 2] [--jobs 1]
                            [--modes rl fst ...] [--report-only]

`--study v2` (the default): `evals/configs/compare_v2.yaml` (Qwen2.5-Coder-0.5B, 24 RL steps, a light
evaluation every 2 steps, val n = 128, KL probe 32 x 4), results in `evals/results/compare_v2/`. `--study v1`:
the first study's `evals/configs/compare.yaml` (SmolLM2, 12 steps, val n = 32), results in
`evals/results/compare/`. Runs `fst run <config>` once per (task, seed, mode) — finished runs are skipped —
plus `fst eval` of the base weights with the seed instruction (step 0, shared by every method: greedy
decoding) and with each FST run's learned instruction (the 2x2 table). Then writes to the results folder:

- `accuracy.png`: val accuracy vs RL step, vs policy rollouts (RL + GEPA) and vs seconds of GEPA + RL work,
  mean over seeds with a min-max band and the constant-answer baseline, one panel row per task;
- `kl_vs_accuracy.png`: KL(pi || pi_base) (with 1.96 standard errors) vs val accuracy;
- `<study>.json` + `<study>.md`: final accuracy and the area under the accuracy curve per method; paired
  per-seed differences against RL, and of FST against its halves (GEPA->RL, GEPA-only), with 95% t-intervals
  over seeds and their readings (`fst_prompt.stats.reading`: the one rule); steps (rollouts, seconds) to reach
  RL's smoothed peak; KL at matched accuracy
  (FST / RL); the 2x2 table; and the paper's claims next to ours (confirmed / refuted / undecided).
  `--report-only` redraws all of it from the stored runs, byte for byte.

GEPA->RL spends the GEPA budget FST spreads over its cycles (cycles x gepa.max_metric_calls) in one round
on the base weights, anchored on every problem its RL steps will use, then trains with the best instruction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from evals.report import fmt, reading, rl_signal, summary
from evals.runner import (
    Job,
    Study,
    driver_parser,
    eval_job,
    report_scope,
    run_jobs,
    uninterrupted_minutes,
    write_report,
)
from fst_prompt.cli import offline_environment
from fst_prompt.modes import MODES as LOOP_MODES
from fst_prompt.rundir import RunDir
from fst_prompt.stats import first_reach, mean_over_curve, smooth, wilson, with_interval

# Every loop mode (fst_prompt/modes.py), in the report's order (RL, the baseline, first) with its name there
LABELS = {"rl": "RL", "fst": "FST", "gepa-then-rl": "GEPA→RL", "gepa": "GEPA-only"}
if set(LABELS) != set(LOOP_MODES):
    raise RuntimeError(f"evals/compare.py labels the modes {sorted(LABELS)}, fst_prompt/modes.py defines "
                       f"{sorted(LOOP_MODES)}: give every mode a label (and a place in the report's order)")
MODES = tuple(LABELS)


@dataclass(frozen=True, kw_only=True)
class CompareStudy(Study):
    tasks: tuple[str, ...]  # the tasks its report covers by default


STUDIES = {  # --study
    "v2": CompareStudy(name="compare_v2", config="evals/configs/compare_v2.yaml",
                       tasks=("date_normalize", "ticket_routing")),
    "v1": CompareStudy(name="compare", config="evals/configs/compare.yaml", tasks=("chain_sum", "letter_counting")),
}


def run_jobs_for(study: Study, tasks: list[str], seeds: list[int], modes: list[str]) -> list[Job]:
    cfg = study.run_config()
    cycles, budget = cfg["loop"]["cycles"], cfg["gepa"]["max_metric_calls"]
    jobs = []
    for seed in seeds:
        for task in tasks:
            for mode in modes:
                argv = ["run", study.config, "--set", f"task={task}", "--set", f"loop.mode={mode}",
                        "--set", f"seed={seed}"]
                if mode == "gepa-then-rl":
                    argv += ["--set", f"gepa.max_metric_calls={cycles * budget}"]
                jobs.append(study.job(f"{task}/{mode}-s{seed}", argv))
    return jobs


def eval_jobs_for(study: Study, tasks: list[str], seeds: list[int]) -> list[Job]:
    """Step 0 (base weights, seed instruction) per task; base weights + each FST run's learned instruction."""
    cfg = study.run_config()
    jobs = []
    for task in tasks:
        jobs.append(eval_job(study, f"{task}/base", task, cfg))
        for seed in seeds:
            fst = study.folder / task / f"fst-s{seed}"
            if (fst / "done.json").is_file():
                jobs.append(eval_job(study, f"{task}/base-learned-s{seed}", task, cfg, best_instructions(fst)))
    return jobs


def best_instructions(results: Path) -> dict[str, str]:
    from fst_prompt.fast.population import Population

    return Population.from_json(RunDir(results).load_state().population).best().instructions


def eval_accuracy(results: Path) -> float | None:
    path = results / "eval.json"
    return json.loads(path.read_text())["accuracy"] if path.is_file() else None


def eval_n(results: Path) -> int | None:
    path = results / "eval.json"
    return json.loads(path.read_text()).get("n") if path.is_file() else None


def constant_baseline(study: Study, task: str, curves: dict) -> float | None:
    """The best constant answer's accuracy on the evaluated val problems, as the runs recorded it (the base
    evaluation's `majority_baseline`, else the cycle records'); None for runs older than that record: the
    splits have changed since, so today's task would give another split's figure."""
    path = study.folder / task / "base" / "eval.json"
    recorded = json.loads(path.read_text()).get("majority_baseline") if path.is_file() else None
    if recorded:
        return recorded["accuracy"]
    cycles = [p["constant"] for per in curves.values() for c in per.values() for p in c[1:]
              if p.get("constant") is not None]
    return cycles[-1] if cycles else None


def curve(study: Study, task: str, mode: str, seed: int, base_acc: float) -> list[dict] | None:
    """One point per evaluation: RL step, policy rollouts (RL + GEPA), seconds of fast + slow work, val
    accuracy (best and seed instruction), KL and its standard error; step 0 = base weights, seed instruction."""
    results = study.folder / task / f"{mode}-s{seed}"
    if not (results / "done.json").is_file():
        return None
    run = RunDir(results)
    T = run.config_data()["loop"]["steps_per_cycle"]  # the run's own
    points = [{"step": 0, "rollouts": 0, "seconds": 0.0, "acc": base_acc, "seed_acc": base_acc, "kl": 0.0,
               "kl_stderr": 0.0, "cycle": -1, "accepted": 0, "tried": 0, "n": None}]
    for c in run.cycles():
        step = c.rl_steps if mode != "gepa" else (c.cycle + 1) * T
        points.append({"step": step, "rollouts": c.total_rollouts,
                       "seconds": c.ledger.fast_seconds + c.ledger.slow_seconds,
                       "acc": c.val_accuracy_best, "seed_acc": c.val_accuracy_seed, "kl": c.kl,
                       "kl_stderr": c.kl_stderr, "cycle": c.cycle,
                       "accepted": c.ledger.proposals_accepted, "tried": c.ledger.proposals_tried,
                       "constant": c.val_majority_baseline, "n": c.eval_n})
    # evaluations between RL steps (loop.eval_every): accuracy on a fixed val subset, no KL
    between = {r.rl_steps: r for r in run.step_evals()}
    points += [{"step": r.rl_steps, "rollouts": r.total_rollouts, "seconds": r.seconds,
                "acc": r.val_accuracy_best, "kl": None, "kl_stderr": None, "cycle": r.cycle, "n": r.eval_n}
               for r in between.values()]
    points.sort(key=lambda p: (p["step"], p["kl"] is None))  # a cycle's full evaluation before a light one
    for r in run.rounds():  # a GEPA round runs before its cycle's RL steps: the first evaluation after it paid for it
        after = next((p for p in points if p["step"] > r.cycle * T), None) if mode != "gepa" else None
        if after is not None:
            after["gepa_before"] = {"rollouts": r.policy_rollouts, "seconds": r.seconds}
    return points


def smoothed(points: list[dict]) -> list[float]:
    """The accuracy curve averaged over 3 neighbouring evaluations (a lone evaluation is one problem's luck);
    step 0 stays the base accuracy every method starts from."""
    acc = [p["acc"] for p in points]
    return acc[:1] + smooth(acc, 3 if len(acc) >= 3 else 1)[1:]


def start_ceiling(rl: list[dict], n: int | None) -> float:
    """The upper end of RL's start's 95% Wilson interval (n val problems; without n, the start itself)."""
    return wilson(rl[0]["acc"], n)[1] if n else rl[0]["acc"]


def rose(rl: list[dict], n: int | None) -> bool:
    """Whether RL's smoothed peak clears its start's 95% interval. A rise inside it is a problem or two of luck,
    not a peak to race to: at n = 128 from 0.016, RL's 0.018 made FST "108x faster" at reaching what the base
    weights already scored."""
    return max(smoothed(rl)) > start_ceiling(rl, n) + 1e-9


def reach(rl: list[dict], other: list[dict], axis: str, n: int | None = None) -> dict:
    """Steps (or rollouts, or seconds) to reach RL's peak on the smoothed curves, interpolated between
    evaluations; ratio = RL's / the other method's (> 1: the other gets there sooner). No ratio where RL never
    rose clear of its start (`rose`) or the other method never reached RL's peak."""
    rl_acc = smoothed(rl)
    peak = max(rl_acc)
    x_rl = reach_at(rl, rl_acc, peak, axis)
    x_other = reach_at(other, smoothed(other), peak, axis)
    risen = rose(rl, n)
    ratio = x_rl / x_other if risen and x_rl and x_other else None
    return {"rl_peak": peak, "rose": risen, "start_ceiling": start_ceiling(rl, n), "rl": x_rl, "other": x_other,
            "ratio": ratio}


def reach_at(points: list[dict], acc: list[float], target: float, axis: str) -> float | None:
    """`first_reach` on `axis`, except that a GEPA round's rollouts and seconds count as spent before any of
    the gain measured after it: the round ran before the RL steps, not spread between the evaluations."""
    xs = [p[axis] for p in points]
    i = next((i for i, a in enumerate(acc) if a >= target - 1e-9), None)
    if i is None or i == 0:
        return None if i is None else float(xs[0])
    start = min(xs[i], xs[i - 1] + points[i].get("gepa_before", {}).get(axis, 0))
    return first_reach([start, xs[i]], acc[i - 1: i + 1], target)


def kl_at(points: list[dict], acc: float) -> float | None:
    """KL where the smoothed accuracy curve first reaches `acc`, linear in the step between the evaluations
    that measured KL (the full ones)."""
    x = first_reach([p["step"] for p in points], smoothed(points), acc)
    if x is None:
        return None
    measured = [(p["step"], p["kl"]) for p in points if p["kl"] is not None]
    for (s0, k0), (s1, k1) in zip(measured, measured[1:], strict=False):
        if s0 <= x <= s1:
            return k0 if s1 == s0 else k0 + (x - s0) / (s1 - s0) * (k1 - k0)
    return measured[0][1] if x <= measured[0][0] else measured[-1][1]


def auc(c: list[dict]) -> float:
    """A run's mean accuracy over its RL steps (area under its accuracy curve / steps)."""
    return mean_over_curve([p["step"] for p in c], [p["acc"] for p in c])


def paired(one: dict, other: dict) -> dict:
    """Per-seed differences one − other in final accuracy, area under the accuracy curve and final KL."""
    seeds = [s for s in other if s in one]
    return {"seeds": seeds, "final": summary([one[s][-1]["acc"] - other[s][-1]["acc"] for s in seeds]),
            "auc": summary([auc(one[s]) - auc(other[s]) for s in seeds]),
            "final_kl": summary([one[s][-1]["kl"] - other[s][-1]["kl"] for s in seeds
                                 if one[s][-1]["kl"] is not None and other[s][-1]["kl"] is not None])}


def analyse(study: Study, tasks: list[str], seeds: list[int]) -> dict:
    out: dict = {"tasks": {}, "seeds": seeds, "config": study.config}
    for task in tasks:
        base = eval_accuracy(study.folder / task / "base")
        if base is None:
            continue
        curves = {m: {s: curve(study, task, m, s, base) for s in seeds} for m in MODES}
        curves = {m: {s: c for s, c in per.items() if c} for m, per in curves.items()}
        n = eval_n(study.folder / task / "base")
        t: dict = {"base_accuracy": base, "eval_n": n, "constant": constant_baseline(study, task, curves),
                   "curves": curves,
                   "final": {}, "auc": {},
                   "paired": {}, "reach_rl_peak": {}, "kl": {}, "wall_minutes": {}}
        for m in MODES:
            t["final"][m] = summary([c[-1]["acc"] for c in curves[m].values()])
            t["auc"][m] = summary([auc(c) for c in curves[m].values()])
            t["wall_minutes"][m] = summary(uninterrupted_minutes([study.folder / task / f"{m}-s{s}"
                                                                  for s in curves[m]]))
        t["signal"] = {m: [{"seed": seed, **sig} for seed in curves[m]
                           if (sig := rl_signal(study.folder / task / f"{m}-s{seed}"))] for m in MODES}
        # FST against its halves: the same seeds, FST − method
        t["fst_vs"] = {m: paired(curves["fst"], curves[m]) for m in ("gepa-then-rl", "gepa")}
        for m in ("fst", "gepa-then-rl"):
            seeds_both = [s for s in curves["rl"] if s in curves[m]]
            rl, other = curves["rl"], curves[m]
            t["paired"][m] = paired(other, rl)
            t["reach_rl_peak"][m] = {}
            for axis in ("step", "rollouts", "seconds"):
                runs = [{"seed": s, **reach(rl[s], other[s], axis, n)} for s in seeds_both]
                t["reach_rl_peak"][m][axis] = {"runs": runs,
                                               "ratio": summary([r["ratio"] for r in runs], geometric=True),
                                               "reached": sum(r["other"] is not None for r in runs)}
        rows = []
        for s in (s for s in curves["rl"] if s in curves["fst"]):
            rl, fst = curves["rl"][s], curves["fst"][s]
            matched = min(max(smoothed(rl)), max(smoothed(fst)))  # both runs reach it
            kl_rl, kl_fst = kl_at(rl, matched), kl_at(fst, matched)
            rows.append({"seed": s, "acc": matched, "kl_rl": kl_rl, "kl_fst": kl_fst,  # at the start: no ratio
                         "ratio": kl_fst / kl_rl if kl_rl and rose(rl, n) else None, "final_kl_rl": rl[-1]["kl"],
                         "final_kl_rl_stderr": rl[-1]["kl_stderr"], "final_kl_fst": fst[-1]["kl"],
                         "final_kl_fst_stderr": fst[-1]["kl_stderr"]})
        # after the same steps, KL is compared as a paired difference (t["paired"]["fst"]["final_kl"]), which a
        # near-zero RL drift cannot blow up as a ratio
        t["kl"] = {"runs": rows, "matched_ratio": summary([r["ratio"] for r in rows], geometric=True)}
        learned = [eval_accuracy(study.folder / task / f"base-learned-s{s}") for s in curves["fst"]]
        t["two_by_two"] = {
            "base_seed": summary([base]),
            "base_learned": summary(learned),
            "fst_seed": summary([c[-1]["seed_acc"] for c in curves["fst"].values()]),
            "fst_learned": summary([c[-1]["acc"] for c in curves["fst"].values()]),
            "rl_seed": summary([c[-1]["acc"] for c in curves["rl"].values()]),
        }
        out["tasks"][task] = t
    out["paper"] = paper_table(out["tasks"])
    return out


PAPER = {"steps": "3.0x (CodeIO), 1.4x (Math), 3.0x (HoVer-hard) fewer RL steps to RL's peak",
         "kl": "up to ~70% lower KL at matched reward (FST/RL ≈ 0.3)"}


def paper_table(tasks: dict) -> list[dict]:
    """One row per claim and task: the paper's value, ours with its interval and n, and the reading."""
    rows = []
    for task, t in tasks.items():
        steps = t["reach_rl_peak"].get("fst", {}).get("step", {"ratio": {"n": 0}, "reached": 0, "runs": []})
        flat = sum(not r["rose"] for r in steps["runs"])  # RL's smoothed peak within its start's interval
        rows.append({"claim": "steps to RL's peak, RL/FST", "task": task, "paper": PAPER["steps"],
                     "ours": steps["ratio"], "reached": f"{steps['reached']}/{len(steps['runs'])}",
                     "reading": reading(steps["ratio"], better="above", null=1.0)
                     + (f"; in {flat} of {len(steps['runs'])} seeds RL never rose clear of its start"
                        if flat else "")})
        kl = t["kl"]["matched_ratio"]
        rows.append({"claim": "KL at matched accuracy, FST/RL", "task": task, "paper": PAPER["kl"], "ours": kl,
                     "reached": "", "reading": reading(kl, better="below", null=1.0)
                     + (f"; no ratio in the {flat} seed(s) where RL never rose clear of its start" if flat else "")})
    return rows


def markdown(a: dict) -> str:
    lines = ["Means over seeds with the 95% t-interval of the mean (n = runs, one a seed). Readings follow one rule "
             "(`fst_prompt.stats`): *confirmed* / *refuted* only where the t-interval excludes no effect over ≥ 5 "
             "seeds or the exact sign-flip test of the paired differences gives p < 0.05 (never with 3 seeds: its "
             "smallest p is 0.25); otherwise *undecided*, with the direction in k of n seeds. Val accuracy greedy; "
             "step 0 = base weights with the seed instruction. Steps to reach a level are read on curves smoothed "
             "over 3 evaluations and interpolated between evaluations. Ratios (RL steps to RL's peak, KL at matched "
             "accuracy) are geometric means over seeds, their intervals taken on the logarithms.", ""]
    for task, t in a["tasks"].items():
        n = t["eval_n"] or "?"
        base = f"{t['base_accuracy']:.3f}"
        if isinstance(t["eval_n"], int):
            base = with_interval(t["base_accuracy"], t["eval_n"])
        constant = "not recorded by these runs" if t["constant"] is None else f"{t['constant']:.3f}"
        lines += [f"### {task}", "",
                  f"Val n = {n}. Step 0 (base weights, seed instruction): {base}; constant answer: {constant}.", "",
                  "| method | final val accuracy | mean accuracy over the run (AUC / steps) "
                  "| wall minutes per run (runs not resumed) |",
                  "|---|---|---|---|"]
        lines += [f"| {LABELS[m]} | {fmt(t['final'][m])} | {fmt(t['auc'][m])} | {fmt(t['wall_minutes'][m], 1)} |"
                  for m in MODES]
        header = ["| method | final accuracy | AUC | final KL (nats) | seeds | reading: final accuracy > 0 | "
                  "reading: final KL < 0 |", "|---|---|---|---|---|---|---|"]
        lines += ["", "Paired per seed, method − RL:", "", *header]
        lines += [_paired_row(m, p) for m, p in t["paired"].items()]
        lines += ["", "FST against its halves, paired per seed, FST − method (GEPA-only's steps are its cycles' "
                      "positions; its weights do not move, KL 0):", "", *header]
        lines += [_paired_row(m, p) for m, p in t["fst_vs"].items()]
        lines += ["", "Reaching RL's (smoothed) peak: ratio RL / method (> 1: the method is faster), runs that "
                      "reached it:", "", "| method | in RL steps | in policy rollouts | in wall time |",
                  "|---|---|---|---|"]
        for m, r in t["reach_rl_peak"].items():
            lines.append(f"| {LABELS[m]} | " + " | ".join(
                f"{fmt(r[axis]['ratio'], 2)}, {r[axis]['reached']}/{len(r[axis]['runs'])}"
                for axis in ("step", "rollouts", "seconds")) + " |")
        fst_runs = t["reach_rl_peak"].get("fst", {}).get("step", {}).get("runs", [])
        lines += ["", "Per seed: " + "; ".join(
            f"s{r['seed']}: RL never rose above its start ({r['rl_peak']:.3f})" if r["rl"] == 0 else
            f"s{r['seed']}: RL's peak {r['rl_peak']:.3f} (step {_num(r['rl'], 1)}) stays inside its start's 95% "
            f"interval (≤ {r['start_ceiling']:.3f}): no ratio" if not r["rose"] else
            f"s{r['seed']}: RL peak {r['rl_peak']:.3f} at step {_num(r['rl'], 1)}, FST at {_num(r['other'], 1)}"
            + (f" (RL/FST {r['ratio']:.2f})" if r["ratio"] else "")
            for r in fst_runs)]
        kl = t["kl"]
        lines += ["", f"KL at matched accuracy, FST/RL: {fmt(kl['matched_ratio'], 2)}; final KL, FST − RL (nats, "
                      f"paired): {fmt(t['paired'].get('fst', {}).get('final_kl'), 2)}", ""]
        lines += ["Per seed: " + "; ".join(
            (f"s{r['seed']}: acc {r['acc']:.3f}, KL RL {_num(r['kl_rl'])} vs FST {_num(r['kl_fst'])} "
             f"(FST/RL {r['ratio']:.2f})" if r["ratio"] is not None else
             f"s{r['seed']}: no matched accuracy (RL never rose clear of its start; both reach {r['acc']:.3f})")
            + "; final KL "
            f"RL {r['final_kl_rl']:.3f} ± {r['final_kl_rl_stderr']:.3f} vs FST {r['final_kl_fst']:.3f} ± "
            f"{r['final_kl_fst_stderr']:.3f}" for r in kl["runs"]), ""]
        accepted = {m: ", ".join(f"s{s}: {c[-1]['accepted']}/{c[-1]['tried']}" for s, c in t["curves"][m].items())
                    or "–" for m in ("fst", "gepa-then-rl", "gepa")}
        lines += ["GEPA proposals accepted / evaluated over the run, per seed: "
                  + "; ".join(f"{LABELS[m]} {text}" for m, text in accepted.items()), ""]
        signal = [f"| {LABELS[m]} s{g['seed']} | {g['zero_std']:.0%} | {g['steps_with_signal']}/{g['steps']} | "
                  f"{g['reward']:.3f} |" for m in MODES for g in t["signal"][m]]
        if signal:  # runs older than steps.jsonl have none
            lines += ["What the RL steps had to learn from (steps.jsonl), per seed: groups whose rollouts all scored "
                      "the same (no gradient from the advantage); steps with a group that did not; mean reward per "
                      "rollout:", "", "| method | groups without signal | steps with signal | mean reward |",
                      "|---|---|---|---|", *signal, ""]
        tb = t["two_by_two"]
        lines += [f"2x2 (val accuracy, n = {n} each):", "", "| weights \\ instruction | seed | learned (FST's best) |",
                  "|---|---|---|",
                  f"| base | {base} | {fmt(tb['base_learned'])} |",
                  f"| FST-trained | {fmt(tb['fst_seed'])} | {fmt(tb['fst_learned'])} |",
                  f"| RL-trained | {fmt(tb['rl_seed'])} | – |", ""]
    lines += ["### Next to the paper", "", "| claim | task | paper | ours | reached | reading |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['task']} | {r['paper']} | {fmt(r['ours'], 2)} | {r['reached']} | {r['reading']} |"
              for r in a["paper"]]
    return "\n".join(lines) + "\n"


def _paired_row(m: str, p: dict) -> str:
    """A row of paired differences with the readings of the two directions a claim takes: ahead in final accuracy,
    less drift (KL) after the same steps."""
    kl = reading(p["final_kl"], better="below", null=0.0) if p["final_kl"].get("n") else "–"
    return (f"| {LABELS[m]} | {fmt(p['final'])} | {fmt(p['auc'])} | {fmt(p['final_kl'], 2)} | {p['seeds']} | "
            f"{reading(p['final'], better='above', null=0.0)} | {kl} |")


def _num(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def plot(a: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = list(a["tasks"])
    axes_of = (("step", "RL step (GEPA-only: the cycle's position)"), ("rollouts", "policy rollouts (RL + GEPA)"),
               ("seconds", "seconds of GEPA + RL work"))
    fig, axes = plt.subplots(len(tasks), 3, figsize=(15, 3.8 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks, strict=True):
        t = a["tasks"][task]
        for m in MODES:
            runs = list(t["curves"][m].values())
            if not runs:
                continue
            n = min(len(r) for r in runs)
            acc = np.array([[p["acc"] for p in r[:n]] for r in runs])
            for ax, (key, _) in zip(row, axes_of, strict=True):
                x = np.array([[p[key] for p in r[:n]] for r in runs]).mean(0)
                style = "--" if m == "gepa" else "-"
                ax.plot(x, acc.mean(0), style, marker="o", label=f"{LABELS[m]} (n={len(runs)})")
                ax.fill_between(x, acc.min(0), acc.max(0), alpha=0.15)
        for ax, (_, label) in zip(row, axes_of, strict=True):
            if t["constant"] is not None:
                ax.axhline(t["constant"], color="grey", ls=":", lw=1, label=f"constant answer {t['constant']:.3f}")
            ax.set(title=task, xlabel=label, ylabel="val accuracy (mean; band: min-max over seeds)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out / "accuracy.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for m in ("rl", "fst", "gepa-then-rl"):
            for i, run in enumerate(a["tasks"][task]["curves"][m].values()):
                r = [p for p in run if p["kl"] is not None]  # the full evaluations
                ax.errorbar([p["acc"] for p in r], [p["kl"] for p in r], yerr=[1.96 * p["kl_stderr"] for p in r],
                            marker="o", alpha=0.7, capsize=2, color={"rl": "C0", "fst": "C1", "gepa-then-rl": "C2"}[m],
                            label=LABELS[m] if i == 0 else None)
        ax.set(title=task, xlabel="val accuracy", ylabel="KL(π‖π_base), nats per sequence (±1.96 se)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "kl_vs_accuracy.png")
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


def main() -> None:
    offline_environment()
    ap = driver_parser(__doc__, seeds=[0, 1, 2])
    ap.add_argument("--study", choices=list(STUDIES), default="v2")
    ap.add_argument("--tasks", nargs="+", help="default: the study's")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = ap.parse_args()
    study = STUDIES[args.study]
    args.tasks = args.tasks or list(study.tasks)
    if not args.report_only:
        run_jobs(run_jobs_for(study, args.tasks, args.seeds, args.modes), parallel=args.jobs,
                 allow_dirty=args.allow_dirty)
        run_jobs(eval_jobs_for(study, args.tasks, args.seeds), parallel=args.jobs, allow_dirty=args.allow_dirty)
    # running a few jobs does not shrink the report
    a = analyse(study, *report_scope(study.tasks, [0, 1, 2], args))
    write_report(study, a, markdown(a), plot)


if __name__ == "__main__":
    main()
