"""The whole pipeline, this tree against a baseline revision: eval, GEPA round, RL step, a short `fst run`.

    python -m evals.bench_pipeline [--baseline 5659be3] [--config programs/chain_sum-fst.yaml] [--cycles 3]
                                   [--eval-n 64]

The baseline revision is exported (`git archive`) to a temporary folder; each tree runs with its own code
and its own copy of the config (so each with its own shipped defaults) in subprocesses, one after the
other, under the same Python environment:

  eval   `fst eval --task chain_sum --n N` (the seed instruction): rollouts/s
  run    `fst run CONFIG --set loop.cycles=C` (the `make demo` run): wall time, peak RSS of the process
         tree (policy, trainer and the reflection server, sampled every second), and from the run
         directory (read with `RunDir`, which reads the baseline's older records too): the GEPA rounds' policy
         rollouts/s (rollouts over round time minus reflection time), reflection seconds, RL seconds per step,
         the final val accuracy and KL.

Prints one table with the ratio new/baseline per line (for times: baseline/new, so > 1 is faster), and
keeps each side's logs and small run files (metrics, rounds, steps) beside `--out`, in bench_pipeline/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fst_prompt.cli import offline_environment
from fst_prompt.rundir import METRICS, ROUNDS, STEPS, RunDir, StepRecord

ROOT = Path(__file__).resolve().parents[1]


def tree_rss(pid: int) -> int:
    """Summed RSS (bytes) of a process and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += int(next(line for line in Path(f"/proc/{p}/status").read_text().splitlines()
                              if line.startswith("VmRSS:")).split()[1]) * 1024
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return total


def run_measured(argv: list[str], cwd: Path, log: Path) -> tuple[float, float]:
    """Run a command in `cwd` with that tree's code first on the path: (wall seconds, peak tree RSS GiB)."""
    env = os.environ | {"PYTHONPATH": str(cwd)}
    t0, peak = time.perf_counter(), 0
    with log.open("w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(1.0):
                peak = max(peak, tree_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait()
        done.set()
        sampler.join()
    if rc != 0:
        raise SystemExit(f"{' '.join(argv)} failed in {cwd} (exit {rc}); see {log}")
    return time.perf_counter() - t0, peak / 2**30


def rl_step_seconds(steps: list[StepRecord]) -> list[float]:
    """Seconds of each RL step: time between consecutive steps' logs within one cycle (a cycle's first step,
    which follows the evaluation and the GEPA round, has no such pair)."""
    return [b.time - a.time for a, b in zip(steps, steps[1:], strict=False)
            if b.step == a.step + 1 and b.cycle == a.cycle and "loss" in b.logs]


def measure(tree: Path, args: argparse.Namespace, work: Path, name: str) -> dict[str, float]:
    fst = [sys.executable, "-m", "fst_prompt.cli"]
    eval_out = work / f"{name}-eval.json"
    print(f"  {name}: fst eval (n={args.eval_n}), log {work / f'{name}-eval.log'}", flush=True)
    wall, _ = run_measured(fst + ["eval", "--task", "chain_sum", "--n", str(args.eval_n), "--split", "val",
                                 "--out", str(eval_out)], tree, work / f"{name}-eval.log")
    ev = json.loads(eval_out.read_text())
    run_dir = work / f"{name}-run"
    print(f"  {name}: fst run {args.config} ({args.cycles} cycles), log {work / f'{name}-run.log'}", flush=True)
    wall, peak = run_measured(fst + ["run", args.config, "--set", f"run_dir={run_dir}",
                                     "--set", f"loop.cycles={args.cycles}"], tree, work / f"{name}-run.log")
    run = RunDir(run_dir)
    rounds, cycles = run.rounds(), run.cycles()
    step_times = rl_step_seconds(run.steps())
    policy_s = sum(r.seconds - r.reflection_seconds for r in rounds)
    return {
        "eval rollouts/s": ev["rollouts_per_s"],
        "eval accuracy": ev["accuracy"],
        "run wall s": wall,
        "run peak RSS GiB": peak,
        "GEPA policy rollouts/s": sum(r.policy_rollouts for r in rounds) / policy_s,
        "GEPA reflection s": sum(r.reflection_seconds for r in rounds),
        "RL s/step (median)": statistics.median(step_times) if step_times else float("nan"),
        "final val accuracy": cycles[-1].val_accuracy_best,
        "final KL": cycles[-1].kl,
    }


FASTER_IS_LOWER = {"run wall s", "run peak RSS GiB", "GEPA reflection s", "RL s/step (median)"}


def main() -> None:
    offline_environment()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", default="5659be3", help="git revision to compare against")
    ap.add_argument("--config", default="programs/chain_sum-fst.yaml", help="relative to each tree")
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--eval-n", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path("evals/results/bench_pipeline.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="fst-bench-") as tmp:
        work, base = Path(tmp), Path(tmp) / "baseline"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline], capture_output=True)
        if archive.returncode != 0:
            raise SystemExit(f"--baseline {args.baseline!r} is not a revision of {ROOT}: "
                             f"{archive.stderr.decode().strip()}")
        archive = archive.stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        results = {}
        for name, tree in (("baseline", base), ("new", ROOT)):
            print(f"measuring {name} ({tree}) ...", flush=True)
            results[name] = measure(tree, args, work, name)
            keep = args.out.parent / "bench_pipeline" / name
            keep.mkdir(parents=True, exist_ok=True)
            for f in [work / f"{name}-eval.json", work / f"{name}-eval.log", work / f"{name}-run.log",
                      *(work / f"{name}-run" / k for k in (METRICS, ROUNDS, STEPS))]:
                shutil.copy(f, keep / f.name)
    print(f"\n{'':26s} {'baseline':>10s} {'new':>10s}  new vs baseline")
    for key, old in results["baseline"].items():
        new = results["new"][key]
        ratio = (old / new if key in FASTER_IS_LOWER else new / old) if old and new else float("nan")
        print(f"{key:26s} {old:10.3f} {new:10.3f}  {ratio:.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"baseline": args.baseline, "cycles": args.cycles, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
