"""The GPU path end to end, in under 10 minutes on one CUDA device:

    python -m evals.gpu_check [--model smollm2-135m-instruct | --random-from DIR] [--out DIR]

1. Placement: `fst eval`'s policy, the trainer's weights, the live policy, TRL's reference model and the KL
   probe's own base copy (rl.beta = 0) are on the GPU in `policy.dtype` (auto: bf16 there), and the trainer's
   bf16/fp16 flags follow; each check prints ok/FAILED.
2. A short `fst run` (mode fst: GEPA rounds, RL steps with the population, evaluations, the KL probe) on the
   GPU, then the same config on the CPU (CUDA hidden, fewer steps) in a subprocess: seconds per RL step and
   per phase on each, and their ratio.
The reflection LM is a scripted OpenAI-compatible endpoint on loopback (tests/scripted.py): the check is about
the policy side. `--random-from DIR` builds a model with random weights from DIR's config.json and tokenizer
files (for a machine that has the architecture but not the weights; its completions are noise, so every one
runs to the length limit: the slowest case). Prints one JSON summary line last; exit status 1 if a check failed.
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
import time
from pathlib import Path

from fst_prompt.cli import offline_environment
from fst_prompt.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]


def run_config(model: str, endpoint: str, run_dir: Path, *, cycles: int, steps: int, beta: float = 1e-3) -> dict:
    return {"task": "chain_sum",
            "policy": {"model": model, "batch_size": 64, "max_new_tokens": 64},
            "gepa": {"max_metric_calls": 48, "population_size": 4, "reflection_minibatch_size": 8,
                     "samples_per_problem": 2, "val_check_n": 0},
            "reflection": {"model": "scripted", "base_url": endpoint, "retries": 0},
            "rl": {"problems_per_step": 4, "num_generations": 8, "max_completion_length": 64, "save_every": steps,
                   "beta": beta, "kl_probe_n": 16, "kl_samples": 2},
            "loop": {"mode": "fst", "cycles": cycles, "steps_per_cycle": steps, "eval_n": 64},
            "run_dir": str(run_dir)}


def random_model(source: Path, out: Path) -> Path:
    """A model with `source`'s architecture and tokenizer and random weights (seed 0)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
    model.save_pretrained(out)
    for f in source.iterdir():
        if f.name != "config.json" and f.suffix in {".json", ".jinja"} and not (out / f.name).exists():
            shutil.copy(f, out / f.name)
    return out


def placement(model_path: Path, tmp: Path) -> list[tuple[str, bool, str]]:
    """(what, ok, detail) for every place the weights live."""
    import torch

    from fst_prompt.config import RLConfig
    from fst_prompt.policy import Policy
    from fst_prompt.programs import load_task
    from fst_prompt.slow.build import build_trainer
    from fst_prompt.slow.kl import probe_base

    def where(m) -> str:
        p = next(m.parameters())
        return f"{p.device.type} {str(p.dtype).removeprefix('torch.')}"

    want = "cuda bfloat16" if torch.cuda.is_bf16_supported() else "cuda float16"
    out = []
    policy = Policy.load(model_path, batch_size=8)  # what `fst eval` and gepa mode load
    out.append(("fst eval / gepa-mode policy", where(policy.model) == want, where(policy.model)))
    gens = policy.generate([[{"role": "user", "content": "What is 2 + 3?"}]] * 4)
    out.append(("generation on the GPU", len(gens) == 4, f"{gens[0].completion_tokens} tokens"))
    del policy
    task = load_task("chain_sum", sizes=(16, 8, 8))
    for beta in (1e-3, 0.0):
        rl = RLConfig(problems_per_step=2, num_generations=4, beta=beta, max_completion_length=16)
        trainer = build_trainer(task, model_path, rl, tmp / f"ck-{beta}", max_steps=1)
        trainer.train()  # one step: the trainer has placed its model
        out.append((f"trainer weights after a step (beta {beta})", where(trainer.model) == want, where(trainer.model)))
        flags = f"bf16={trainer.args.bf16} fp16={trainer.args.fp16}"
        out.append(("trainer precision flags", (trainer.args.bf16 or trainer.args.fp16), flags))
        base = probe_base(trainer, model_path)
        label = "TRL reference model (KL probe base)" if beta else "KL probe's own base copy (beta 0)"
        out.append((label, base is not None and where(base) == where(trainer.model),
                    where(base) if base is not None else "none"))
        del trainer, base
        torch.cuda.empty_cache()
    return out


def timed_run(cfg: dict, env: dict | None = None) -> dict:
    """`fst run` in a subprocess; seconds per RL step (TRL's step_time) and per phase."""
    path = Path(cfg["run_dir"]).with_suffix(".yaml")
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fst_prompt.cli", "run", str(path)], capture_output=True, text=True,
                          env=(os.environ | (env or {})), cwd=ROOT)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        return {"ok": False, "error": (done.stdout + done.stderr)[-3000:]}
    run = RunDir(cfg["run_dir"])
    step_times = [s.logs["step_time"] for s in run.steps() if "step_time" in s.logs]
    last = run.cycles()[-1]
    return {"ok": True, "wall_s": round(wall, 1), "rl_steps": len(step_times),
            "step_s_mean": round(statistics.mean(step_times), 3),
            "step_s_after_first": round(statistics.mean(step_times[1:]), 3) if len(step_times) > 1 else None,
            "fast_s": round(last.ledger.fast_seconds, 1), "slow_s": round(last.ledger.slow_seconds, 1),
            "val_accuracy_best": last.val_accuracy_best, "kl": last.kl, "console_tail": done.stdout[-1500:]}


def main() -> int:
    offline_environment()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--random-from", type=Path, help="build random weights from this folder's config + tokenizer")
    ap.add_argument("--out", type=Path, help="keep the runs here (default: a temp folder)")
    ap.add_argument("--cpu-steps", type=int, default=2)
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: this check needs one")
        return 2
    work = args.out or Path(tempfile.mkdtemp(prefix="fst-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; work in {work}", flush=True)
    if args.random_from:
        model = random_model(args.random_from, work / "model")
    else:
        from fst_prompt.models import resolve_model

        model = resolve_model(args.model)
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    n_params = sum(p.numel() for p in skeleton.parameters())
    print(f"model: {model} ({n_params / 1e6:.0f}M parameters{', random weights' if args.random_from else ''})")

    from tests.scripted import start_fake_openai

    endpoint, server = start_fake_openai()
    checks = placement(Path(model), work)
    for what, ok, detail in checks:
        print(f"  {'ok' if ok else 'FAILED':6} {what}: {detail}", flush=True)

    gpu = timed_run(run_config(str(model), endpoint, work / "gpu-run", cycles=2, steps=4))
    print("GPU run:", json.dumps({k: v for k, v in gpu.items() if k != "console_tail"}), flush=True)
    cpu = timed_run(run_config(str(model), endpoint, work / "cpu-run", cycles=1, steps=args.cpu_steps),
                    env={"CUDA_VISIBLE_DEVICES": ""})
    print("CPU run:", json.dumps({k: v for k, v in cpu.items() if k != "console_tail"}), flush=True)
    server.shutdown()
    summary = {"device": torch.cuda.get_device_name(0), "cpu_cores": os.cpu_count(), "model": str(model),
               "params_m": round(n_params / 1e6), "random_weights": bool(args.random_from),
               "placement_ok": all(ok for _, ok, _ in checks), "gpu_run_ok": gpu["ok"], "cpu_run_ok": cpu["ok"]}
    if gpu["ok"] and cpu["ok"]:
        summary |= {"gpu_step_s": gpu["step_s_after_first"] or gpu["step_s_mean"],
                    "cpu_step_s": cpu["step_s_after_first"] or cpu["step_s_mean"]}
        summary["cpu_over_gpu_step"] = round(summary["cpu_step_s"] / summary["gpu_step_s"], 2)
    else:
        print((gpu if not gpu["ok"] else cpu)["error"])
    print(json.dumps(summary))
    return 0 if summary["placement_ok"] and gpu["ok"] and cpu["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
