"""Figures from one or several run directories (PNG, matplotlib):

- accuracy.png: val accuracy (best instruction) vs RL step, and vs total policy rollouts (RL + GEPA), with
  the constant-answer baseline of each task as a dashed line (runs that record it);
- kl_vs_accuracy.png: KL(pi || pi_base) on the probe set vs val accuracy, one point per cycle;
- fast_weights.png: accepted proposals and population size per cycle;
- rl_steps.png (runs that train): reward per RL step, overall and per context of the population, and the
  fraction of zero-variance groups (which give no gradient), from `steps.jsonl`.

    fst plot runs/fst runs/rl --out runs/plots

It only reads the run directories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fst_prompt.state import read_jsonl


def load_cycles(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a `fst run` directory (one that finished a "
                                "cycle)?")
    by_cycle = {}
    for record in read_jsonl(path):
        by_cycle[record["cycle"]] = record  # a cycle evaluated twice (crash + resume): the last one counts
    return [by_cycle[c] for c in sorted(by_cycle)]


def load_steps(run_dir: Path) -> list[dict[str, Any]]:
    """TRL's per-step log records of a run, in RL-step order (a step logged twice after a resume: the last)."""
    path = Path(run_dir) / "steps.jsonl"
    if not path.is_file():
        return []
    by_step = {}
    for record in read_jsonl(path):
        if "reward" in record:  # the end-of-training summary has no reward
            by_step[(record.get("stage", 0), record["step"])] = record
    return [by_step[k] for k in sorted(by_step)]


def plot_runs(run_dirs: list[Path], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [_label(Path(d)) for d in run_dirs]
    labels = [f"{label} #{i + 1}" if labels.count(label) > 1 else label for i, label in enumerate(labels)]
    runs = {label: load_cycles(Path(d)) for label, d in zip(labels, run_dirs, strict=True)}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, cycles in runs.items():
        acc = [c["val_accuracy_best"] for c in cycles]
        ax1.plot([c["rl_steps"] for c in cycles], acc, marker="o", label=label)
        ax2.plot([c["total_rollouts"] for c in cycles], acc, marker="o", label=label)
    baselines = {c["task"]: c["val_majority_baseline"] for cycles in runs.values() for c in cycles
                 if "val_majority_baseline" in c}
    for i, (task, value) in enumerate(sorted(baselines.items())):
        name = "constant answer" if len(baselines) == 1 else f"constant answer ({task})"
        for ax in (ax1, ax2):
            ax.axhline(value, color=f"C{(len(runs) + i) % 10}", ls="--", lw=1, label=name)
    _axes(ax1, "RL steps", "val accuracy (best instruction)")
    _axes(ax2, "policy rollouts (RL + GEPA)", "val accuracy (best instruction)")
    written.append(_save(fig, out_dir / "accuracy.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, cycles in runs.items():
        ax.plot([c["val_accuracy_best"] for c in cycles], [c["kl"] for c in cycles], marker="o", label=label)
    _axes(ax, "val accuracy (best instruction)", "KL(π‖π_base), nats per sequence")
    written.append(_save(fig, out_dir / "kl_vs_accuracy.png"))

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, cycles in runs.items():
        xs = [c["cycle"] for c in cycles]
        accepted = [c["proposals_accepted"] for c in cycles]
        ax1.plot(xs, [b - a for a, b in zip([0, *accepted[:-1]], accepted, strict=True)], marker="o", label=label)
        ax2.plot(xs, [c["population"] for c in cycles], marker="o", label=label)
    _axes(ax1, "cycle", "proposals accepted in the cycle")
    _axes(ax2, "cycle", "population size")
    written.append(_save(fig, out_dir / "fast_weights.png"))

    steps = {label: load_steps(Path(d)) for label, d in zip(labels, run_dirs, strict=True)}
    if any(steps.values()):
        written.append(_plot_steps(steps, out_dir / "rl_steps.png"))
    return written


def _plot_steps(runs: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, steps) in enumerate(runs.items()):
        xs = list(range(1, len(steps) + 1))  # global RL step (stages follow each other)
        ax1.plot(xs, [s["reward"] for s in steps], color=f"C{i}", label=f"{label}: all rollouts")
        contexts = sorted({k for s in steps for k in s if k.startswith("reward/context_")})
        for j, key in enumerate(contexts):
            ax1.plot(xs, [s.get(key, float("nan")) for s in steps], color=f"C{i}", alpha=0.4, lw=1,
                     ls=("--", ":", "-.")[j % 3], label=f"{label}: {key.split('/')[-1]}")
        ax2.plot(xs, [s.get("frac_reward_zero_std", float("nan")) for s in steps], color=f"C{i}", label=label)
    _axes(ax1, "RL step", "mean reward")
    _axes(ax2, "RL step", "fraction of zero-variance groups")
    return _save(fig, path)


def _label(run_dir: Path) -> str:
    cycles = load_cycles(run_dir)
    return f"{run_dir.name} ({cycles[0]['mode']})" if cycles else run_dir.name


def _axes(ax: Any, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
