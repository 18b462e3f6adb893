"""`fst train`: RL-only mode. The population is the seed instruction; only the weights learn.

Writes to the run directory: `config.yaml`, `metrics.jsonl` (every TRL log line, plus an `eval` record
every `rl.eval_every` steps and at step 0: val accuracy with the seed instruction and the KL probe),
`checkpoints/` (TRL checkpoints every `rl.save_every` steps) and `completions/` (TRL's logged rollouts).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback

from fst_prompt.config import TrainConfig
from fst_prompt.state import append_jsonl, write_json_atomic, write_text_atomic


class EvalCallback(TrainerCallback):
    """Val accuracy (seed instruction) and KL to the base every E steps; every log line to JSONL."""

    def __init__(self, evaluate_fn, metrics_path: Path, every: int) -> None:
        self.evaluate_fn, self.metrics_path, self.every = evaluate_fn, metrics_path, every

    def _write(self, record: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, record)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self._write({"kind": "eval", "step": 0, **self.evaluate_fn()})

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            record = {"kind": "eval", "step": state.global_step, **self.evaluate_fn()}
            self._write(record)
            print(f"step {record['step']}: val accuracy {record['val_accuracy']:.3f}, "
                  f"KL to base {record['kl_seed']:.3f} ± {record['kl_seed_stderr']:.3f}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self._write({"kind": "train", "step": state.global_step, "time": time.time(), **logs})


def run_train(config: TrainConfig, *, resume: bool = False) -> dict[str, Any]:
    from fst_prompt.models import resolve_model
    from fst_prompt.programs import load_task
    from fst_prompt.slow.trainer import build_trainer

    task = load_task(config.task, **config.task_kwargs)
    if len(task.predictors) != 1:
        raise ValueError(f"fst train needs a single-predictor program; {task.name!r} has {len(task.predictors)}")
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config.model_dump(), sort_keys=False))
    model_path = resolve_model(config.policy.model)

    holder: dict[str, Any] = {}
    callback = EvalCallback(lambda: evaluate_now(holder["trainer"], holder["base"], task, config),
                            run_dir / "metrics.jsonl", config.rl.eval_every)
    trainer = build_trainer(task, model_path, config.rl, run_dir / "checkpoints", callbacks=[callback])
    holder["trainer"], holder["base"] = trainer, probe_base(trainer, model_path)
    from fst_prompt.loop import last_complete_checkpoint

    checkpoint = last_complete_checkpoint(run_dir / "checkpoints") if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"nothing to resume: no complete checkpoint in {run_dir / 'checkpoints'}")
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(run_dir / "model"))
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["kind"] == "eval"]
    summary = {"task": task.name, "steps": trainer.state.global_step, "first_eval": evals[0], "last_eval": evals[-1]}
    write_json_atomic(run_dir / "summary.json", summary)
    print(f"val accuracy {evals[0]['val_accuracy']:.3f} -> {evals[-1]['val_accuracy']:.3f}; KL to base "
          f"{evals[0]['kl_seed']:.3f} -> {evals[-1]['kl_seed']:.3f} (seed-instruction probe)")
    return summary


def probe_base(trainer: Any, model_path: Path) -> Any:
    """The KL probe's base: TRL's reference model, else None for LoRA (adapter disabled), else a loaded copy."""
    if trainer.ref_model is not None or hasattr(trainer.model, "disable_adapter"):
        return trainer.ref_model
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()  # beta = 0: no ref kept


def evaluate_now(trainer: Any, base: Any, task: Any, config: TrainConfig) -> dict[str, Any]:
    """Val accuracy with the seed instruction and the KL probe, on the trainer's live weights."""
    from fst_prompt.evaluate import evaluate
    from fst_prompt.policy import Policy, Sampling
    from fst_prompt.slow.kl import kl_to_base

    pc, rl = config.policy, config.rl
    policy = Policy(trainer.model, trainer.processing_class, batch_size=pc.batch_size, seed=pc.seed,
                    sampling=Sampling(temperature=0.0, max_new_tokens=pc.max_new_tokens), name=pc.model)
    result = evaluate(task, policy, split="val", n=rl.eval_n, progress=False)
    seeded, bare = probe_conversations(task, rl.kl_probe_n)
    kw = dict(base=base, samples_per_prompt=rl.kl_samples, max_new_tokens=rl.max_completion_length,
              batch_size=pc.batch_size, seed=rl.seed)
    kl_seed = kl_to_base(trainer.model, trainer.processing_class, seeded, **kw)
    kl_bare = kl_to_base(trainer.model, trainer.processing_class, bare, **kw)
    return {"val_accuracy": result.accuracy, "val_mean_score": result.mean_score, "kl_seed": kl_seed.mean,
            "kl_seed_stderr": kl_seed.stderr, "kl_bare": kl_bare.mean, "kl_bare_stderr": kl_bare.stderr}


def probe_conversations(task: Any, n: int) -> tuple[list, list]:
    """The fixed KL probe: the first n val prompts with the seed instruction, and with no instruction."""
    from fst_prompt.render import render

    seeded = [render(task, ex) for ex in task.val[:n]]
    bare = [[m for m in conv if m["role"] != "system"] for conv in seeded]
    return seeded, bare
