"""`PopulationGRPOTrainer`: TRL's GRPOTrainer with the population of contexts mixed inside each group.

Each row of a generation batch is one rollout; TRL lays a problem's G rollouts out as G consecutive
rows. We rewrite every row's prompt just before TRL generates (`_generate_and_score_completions`, the
one hook TRL 1.16 gives for this; pinned `trl>=1.16,<1.17` and tested): row r gets context
`assign_contexts(...)` (see `contexts.py`) rendered through the task's DSPy adapter. TRL then computes
the group advantage once over all G rollouts of the problem, whatever context each used.

Paper defaults (`build_trainer`): CISPO loss with the importance weight truncated above at 4, KL to the
initial weights with beta = 1e-3, AdamW with a short warm-up. On CPU: no bf16, no gradient checkpointing.
With LoRA the reference model is the base with the adapter disabled (TRL), so no second copy is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback
from trl import GRPOConfig, GRPOTrainer

from fst_prompt.config import RLConfig
from fst_prompt.decoding import WeightFirstLinear
from fst_prompt.device import load_causal_lm, mixed_precision_flags, trainer_dtype
from fst_prompt.render import render
from fst_prompt.slow.contexts import assign_contexts
from fst_prompt.slow.reward import TaskReward
from fst_prompt.task import Task


@dataclass(frozen=True)
class SlowRecord:
    """What one slow step (a trainer's `train_until`) did, in this process."""

    first_step: int  # the trainer's global step before (after a resume: the checkpoint's)
    last_step: int
    contexts: int
    metric_errors: int  # completions on which the task's metric raised (each scored 0), this process
    last_error: str
    seconds: float  # wall time, evaluations between steps included


class PopulationGRPOTrainer(GRPOTrainer):
    def __init__(self, *, task: Task, contexts: list[dict[str, str]] | None = None, weight_first: bool = True,
                 **kwargs: Any) -> None:
        args = kwargs.get("args")
        if args is not None and args.use_vllm and args.vllm_mode == "server":
            raise ValueError(
                "vllm_mode='server' samples all G rollouts of a group from one prompt, but each rollout "
                "here has its own context; use vllm_mode='colocate' (one completion per rollout)"
            )
        self.task = task
        self.weight_first = weight_first
        self.last_batch: dict[str, Any] = {}  # the last generation batch: its problems and population, all processes
        self.modules = [name for name, _ in task.predictors]
        self.predictor = self.modules[0]
        self.contexts = [task.seed_instructions()]
        super().__init__(**kwargs)
        self.set_population(contexts or self.contexts)

    def set_population(self, contexts: list[dict[str, str]]) -> None:
        """Contexts for the next generation batch (best first). Every process gets the main one's."""
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            box = [contexts]
            broadcast_object_list(box, from_process=0)
            contexts = box[0]
        if not contexts:
            raise ValueError("the population is empty")
        for c in contexts:
            self.task.check_instructions(c)
        self.contexts = [dict(c) for c in contexts]

    def train_until(self, step: int, contexts: list[dict[str, str]], *, resume_from: str | None = None,
                    ) -> SlowRecord:
        """The slow step: train with `contexts` mixed into every group until optimizer step `step` (of this
        trainer), resuming TRL from `resume_from` (optimizer, RNG, data order) where given."""
        t0, first = time.perf_counter(), self.state.global_step
        reward = self.reward_funcs[0]
        errors0 = reward.errors
        self.set_population(contexts)
        self.args.max_steps = step
        self.train(resume_from_checkpoint=resume_from)
        return SlowRecord(first_step=first, last_step=self.state.global_step, contexts=len(self.contexts),
                          metric_errors=reward.errors - errors0, last_error=reward.last_error,
                          seconds=time.perf_counter() - t0)

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        group = self.num_generations if self.model.training else self.num_generations_eval
        first = self.accelerator.process_index * len(inputs)
        ks = assign_contexts(len(inputs), group, len(self.contexts), first_row=first)
        self.last_batch = self._batch_record(inputs)
        return self._generate_with_contexts(inputs, ks, group)

    def _generate_with_contexts(self, inputs: list[dict[str, Any]], ks: list[int], group: int) -> dict[str, Any]:
        """Row i is rendered with context ks[i], then TRL generates and scores as usual."""
        rows = []
        for row, k in zip(inputs, ks, strict=True):
            example = self.task.train[row["example_index"]]
            prompt = render(self.task, example, self.contexts[k].get(self.predictor))
            rows.append({**row, "prompt": prompt, "context_index": k})
        return super()._generate_and_score_completions(rows)

    def _batch_record(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """The problems of this generation batch over every process (in RL's order) and the population's
        fingerprint, which must be the same on every process."""
        problems = list(dict.fromkeys(row["example_index"] for row in inputs))
        fingerprint = hashlib.sha256(json.dumps(self.contexts, sort_keys=True).encode()).hexdigest()[:16]
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            parts = gather_object([(problems, fingerprint)])
            if len({f for _, f in parts}) > 1:
                raise RuntimeError(f"the processes train with different populations: {[f for _, f in parts]}")
            problems = [i for part, _ in parts for i in part]
        return {"problems": problems, "population": fingerprint}

    def _generate_single_turn(self, *args: Any, **kwargs: Any):
        # transformers' `generate` samples the rollouts (no vLLM): the same sampling, with the policy's faster
        # GEMMs at decode's few rows (decoding.WeightFirstLinear; PolicyConfig.weight_first)
        fast = self.weight_first and not self.use_vllm and self.accelerator.device.type == "cpu"  # measured on CPU
        with WeightFirstLinear() if fast else contextlib.nullcontext():
            return super()._generate_single_turn(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not torch.isfinite(loss if not isinstance(loss, tuple) else loss[0]).all():
            raise FloatingPointError(
                f"the loss is not finite at step {self.state.global_step}; training stopped before the update, "
                f"so the last checkpoint in {self.args.output_dir} is intact. Lower rl.learning_rate or check "
                "the rewards."
            )
        return loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.stack([g.detach().abs().amax() for g in grads])).all():
            raise FloatingPointError(
                f"the gradient is not finite at step {self.state.global_step} (the loss was finite); training "
                f"stopped before the update, so the last checkpoint in {self.args.output_dir} is intact. Lower "
                "rl.learning_rate or check the rewards."
            )
        return loss


def train_dataset(task: Task, order: list[int] | None = None):
    """One row per train problem, in `order` (default: as given): the seed-rendered prompt (replaced per
    rollout) and the problem's index in the train split."""
    from datasets import Dataset

    order = list(range(len(task.train))) if order is None else order
    first = task.predictors[0][0]  # a multi-predictor program's rows are rebuilt from its calls
    return Dataset.from_list([{"prompt": render(task, task.train[i], predictor=first), "example_index": i}
                              for i in order])


def grpo_args(rl: RLConfig, output_dir: Path, max_steps: int, dtype: str = "auto", **overrides: Any) -> GRPOConfig:
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir), max_steps=max_steps, learning_rate=rl.learning_rate,
        per_device_train_batch_size=rl.problems_per_step * rl.num_generations,
        num_generations=rl.num_generations, max_completion_length=rl.max_completion_length,
        temperature=rl.temperature, top_p=rl.top_p, loss_type=rl.loss_type, epsilon_high=rl.epsilon_high,
        beta=rl.beta, warmup_steps=rl.warmup_steps, lr_scheduler_type="constant_with_warmup",
        optim="adamw_torch", weight_decay=0.0, seed=rl.seed or 0, logging_steps=1, report_to=rl.report_to,
        disable_tqdm=True,  # the run's console shows its own step bar (console.py), not TRL's dict lines
        save_strategy="steps", save_steps=rl.save_every, save_total_limit=2, save_only_model=False,
        **mixed_precision_flags(dtype), gradient_checkpointing=False,
        log_completions=True, num_completions_to_print=0, dataloader_num_workers=0,
        use_vllm=rl.use_vllm, vllm_mode=rl.vllm_mode,
    )
    return GRPOConfig(**(kwargs | overrides))


def build_trainer(task: Task, model_path: Path, rl: RLConfig, output_dir: Path, *, max_steps: int,
                  contexts: list[dict[str, str]] | None = None, callbacks: list | None = None,
                  trainer_class: type[GRPOTrainer] = PopulationGRPOTrainer, order: list[int] | None = None,
                  model: Any = None, weight_first: bool = True, dtype: str = "auto", **overrides: Any) -> GRPOTrainer:
    """A trainer with paper defaults, training for `max_steps` optimizer steps in all (the loop trains it
    in slices of T steps). `trainer_class=GRPOTrainer` gives the plain baseline (bench).

    It prints nothing per step: TRL's printer callback is removed; pass a callback (console.StepLog) to see
    and keep the per-step metrics.

    `model`: train these weights (e.g. the live model of a previous continual stage) instead of loading
    `model_path`; the KL reference is still the model at `model_path`. `weight_first`: see
    `PolicyConfig.weight_first` (ours only; the plain baseline generates as TRL does). `dtype`: see
    `PolicyConfig.dtype` (device.py). `overrides`: more GRPOConfig settings (`RLConfig.trainer_args`).
    """
    from transformers import AutoTokenizer

    if model is None:  # loaded on the CPU: the trainer places it (this process's GPU under a launcher)
        model = load_causal_lm(model_path, trainer_dtype(dtype), device="cpu")
    model.config._name_or_path = str(model_path)  # TRL loads the reference (beta > 0) from here
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    peft_config = None
    if rl.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=rl.lora_r, lora_alpha=2 * rl.lora_r, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    args = grpo_args(rl, output_dir, max_steps, dtype, **overrides)
    kwargs: dict[str, Any] = dict(model=model, reward_funcs=TaskReward(task), args=args,
                                  train_dataset=train_dataset(task, order),
                                  processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks)
    if trainer_class is PopulationGRPOTrainer and len(task.predictors) > 1:
        from fst_prompt.slow.program_trainer import ProgramGRPOTrainer

        trainer_class = ProgramGRPOTrainer
    if issubclass(trainer_class, PopulationGRPOTrainer):
        kwargs |= {"task": task, "contexts": contexts, "weight_first": weight_first}
    trainer = trainer_class(**kwargs)
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to the terminal
    return trainer
