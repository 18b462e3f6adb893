"""Constant-answer (majority) baseline of every shipped task: the accuracy a model must beat.

    python -m evals.baselines

Pure Python, no model. Writes evals/results/baselines.json and prints a Markdown table.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from fst_prompt.baselines import majority_baseline
from fst_prompt.cli import offline_environment
from fst_prompt.programs import available_tasks, load_task

COLUMNS = (("train", None), ("val", 64), ("val", None), ("test", None))


def main() -> None:
    offline_environment()
    rows = {}
    for name in available_tasks():
        task = load_task(name)
        rows[name] = {f"{split}@{n or 'all'}": asdict(majority_baseline(task, split, n)) for split, n in COLUMNS}
    out = Path("evals/results/baselines.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    keys = [f"{split}@{n or 'all'}" for split, n in COLUMNS]
    print("| task | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, row in rows.items():
        cells = [f"{row[k]['accuracy']:.3f} ({row[k]['answer']!r}, n={row[k]['n']})" for k in keys]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
