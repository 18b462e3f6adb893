"""Seed-instruction accuracy of a model on every shipped task (the starting point FST improves on).

    python -m evals.seed_accuracy [--model smollm2-135m-instruct] [--split val] [--n 64]

Writes evals/results/seed_accuracy-<model>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fst_prompt.cli import offline_environment
from fst_prompt.evaluate import evaluate
from fst_prompt.policy import Policy, Sampling
from fst_prompt.programs import available_tasks, load_task


def main() -> None:
    offline_environment()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--split", default="val")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--tasks", nargs="*", default=None)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    args = ap.parse_args()

    policy = Policy.load(args.model, batch_size=8, sampling=Sampling(max_new_tokens=args.max_new_tokens))
    rows = []
    for name in args.tasks or available_tasks():
        r = evaluate(load_task(name), policy, split=args.split, n=args.n).summary()
        rows.append(r)
        print(f"{name}: accuracy {r['accuracy']:.3f} (n={r['n']})", flush=True)
    out = Path("evals/results") / f"seed_accuracy-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "split": args.split, "rows": rows}, indent=2) + "\n")
    print("\n| task | n | accuracy | parse failures | cut at max tokens | tokens | rollouts/s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['n']} | {r['accuracy']:.3f} | {r['parse_failure_rate']:.3f} | "
              f"{r['truncated_rate']:.3f} | {r['mean_completion_tokens']:.1f} | {r['rollouts_per_s']:.2f} |")


if __name__ == "__main__":
    main()
