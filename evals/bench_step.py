"""Step time of our trainer vs plain TRL `GRPOTrainer` on the same config, data and (fixed) prompts.

    python -m evals.bench_step [--model smollm2-135m-instruct] [--steps 4] [--task chain_sum]
    python -m evals.bench_step --compare checkpointing --model qwen2.5-coder-0.5b-instruct --task ticket_routing \
        --modes full --steps 2 --repeats 1 --out evals/results/bench_checkpointing.json

`--compare checkpointing`: our trainer without vs with gradient checkpointing (`rl.trainer_args:
{gradient_checkpointing: true}`), for the memory peak of a full fine-tune's RL step (and what it costs in time).

Each (trainer, full/LoRA) case runs in its own subprocess so that its peak RSS is its own; the
population is the seed instruction alone, so both trainers see identical prompts, and both are seeded
alike. The first step (warm-up) is excluded from the means. Prints the ratio ours/plain per mode (target
<= 1.10), peak RSS, and where a step's time goes (seconds per step, mean over both runs of a case):
sampling the rollouts (transformers `generate`), the reference model's and the policy's no-grad log-prob
passes, the loss's forward pass, the backward pass, our prompt hook (rendering each row's context), and
the rest (rewards, optimizer, logging).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from fst_prompt.cli import offline_environment

ROOT = Path(__file__).resolve().parents[1]
PHASES = ["generate", "reference logps", "policy logps (no grad)", "loss (forward)", "backward", "our hook",
          "rest"]


class Phases:
    """Seconds per phase of the steps after the first: the trainer's methods wrapped with timers."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, obj, name: str, key) -> None:
        inner = getattr(obj, name)

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                self.seconds[key(*a) if callable(key) else key] += time.perf_counter() - t0

        setattr(obj, name, timed)

    def instrument(self, trainer) -> None:
        import torch
        from trl import GRPOTrainer

        def logps(model, *a):
            if trainer.ref_model is not None and model is trainer.ref_model:
                return "reference logps"
            return "loss logps" if torch.is_grad_enabled() else "policy logps (no grad)"

        self.wrap(trainer, "_generate_single_turn", "generate")
        self.wrap(trainer, "_get_per_token_logps_and_entropies", logps)
        self.wrap(trainer, "compute_loss", "loss (forward)")
        self.wrap(trainer.accelerator, "backward", "backward")
        # Our hook = our `_generate_and_score_completions` minus TRL's, which it calls through super().
        self.wrap(GRPOTrainer, "_generate_and_score_completions", "trl score")  # before the instance's wrap
        self.wrap(trainer, "_generate_and_score_completions", "ours+trl score")

    def per_step(self, steps: list[float]) -> dict[str, float]:
        s = self.seconds
        out = {k: s[k] for k in PHASES[:5]} | {"our hook": s["ours+trl score"] - s["trl score"]}
        out["rest"] = sum(steps) - sum(out.values())
        return {k: v / len(steps) for k, v in out.items()}


def one_case(args: argparse.Namespace) -> None:
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from fst_prompt.config import RLConfig
    from fst_prompt.models import resolve_model
    from fst_prompt.programs import load_task
    from fst_prompt.slow.build import build_trainer
    from fst_prompt.slow.trainer import PopulationGRPOTrainer

    phases = Phases()

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], 0.0

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.t0)
            if len(self.times) == 1:  # the warm-up step is left out of the breakdown too
                phases.seconds.clear()

    task = load_task(args.task)
    rl = RLConfig(problems_per_step=2, num_generations=4, max_completion_length=args.tokens, lora=args.lora,
                  save_every=10_000, warmup_steps=0)
    timer = Timer()
    cls = GRPOTrainer if args.case == "plain" else PopulationGRPOTrainer
    extra = {"gradient_checkpointing": True} if args.case == "ours+checkpointing" else {}
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(task, resolve_model(args.model), rl, Path(out), max_steps=args.steps,
                                callbacks=[timer], trainer_class=cls, log_completions=False, **extra)
        phases.instrument(trainer)
        trainer.train()
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"case": args.case, "lora": args.lora, "step_times": timer.times,
                      "checkpointing": bool(getattr(trainer.model, "is_gradient_checkpointing", False)),
                      "mean_step_s": sum(timer.times[1:]) / max(len(timer.times) - 1, 1), "peak_rss_gib": rss_gib,
                      "phases_s_per_step": phases.per_step(timer.times[1:])}))


def main() -> None:
    offline_environment()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--task", default="chain_sum")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=48, help="max completion length")
    ap.add_argument("--case", choices=["ours", "plain", "ours+checkpointing"])
    ap.add_argument("--compare", choices=["plain", "checkpointing"], default="plain",
                    help="ours vs plain TRL (default), or ours without vs with gradient checkpointing")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each case, interleaved")
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--modes", default="full,lora", help="which of full,lora to compare")
    ap.add_argument("--out", type=Path, default=Path("evals/results/bench_step.json"))
    args = ap.parse_args()
    if args.case:
        return one_case(args)

    results = []
    loras = [m == "lora" for m in args.modes.split(",")]
    base, other = ("plain", "ours") if args.compare == "plain" else ("ours", "ours+checkpointing")
    for lora in loras:
        for case in (base, other) * args.repeats:  # interleaved: drift hits both alike
            cmd = [sys.executable, "-m", "evals.bench_step", "--case", case, "--model", args.model, "--task", args.task,
                   "--steps", str(args.steps), "--tokens", str(args.tokens)] + (["--lora"] if lora else [])
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    report = {"model": args.model, "task": args.task, "tokens": args.tokens, "steps": args.steps, "runs": results}
    for lora in loras:
        mode = "LoRA" if lora else "full"
        mine = {c: [r for r in results if r["case"] == c and r["lora"] == lora] for c in (base, other)}
        mean = {c: sum(r["mean_step_s"] for r in runs) / len(runs) for c, runs in mine.items()}
        rss = {c: max(r["peak_rss_gib"] for r in runs) for c, runs in mine.items()}
        report[mode] = {f"{base}_step_s": mean[base], f"{other}_step_s": mean[other],
                        "ratio": mean[other] / mean[base], "peak_rss_gib": rss}
        target = " (target <= 1.10)" if args.compare == "plain" else ""
        print(f"{mode:4s}: {base} {mean[base]:.2f} s/step, {other} {mean[other]:.2f} s/step, "
              f"ratio {mean[other] / mean[base]:.3f}{target}; peak RSS {base} {rss[base]:.2f} GiB, "
              f"{other} {rss[other]:.2f} GiB (runs of each: {len(mine[base])})")
        for phase in PHASES:
            per = {c: sum(r["phases_s_per_step"][phase] for r in runs) / len(runs) for c, runs in mine.items()}
            report[mode].setdefault("phases_s_per_step", {})[phase] = per
            print(f"      {phase:24s} {base} {per[base]:6.2f} s/step   {other} {per[other]:6.2f} s/step")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
