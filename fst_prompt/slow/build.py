"""Building a GRPO trainer with the paper's defaults for a task: the dataset of train problems, TRL's config,
and the trainer class its program needs (`PopulationGRPOTrainer`, or `ProgramGRPOTrainer` for a program of
several predictors).

Paper defaults (`build_trainer`): CISPO loss with the importance weight truncated above at 4, KL to the
initial weights with beta = 1e-3, AdamW with a short warm-up. On CPU: no bf16, no gradient checkpointing.
With LoRA the reference model is the base with the adapter disabled (TRL), so no second copy is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PrinterCallback
from trl import GRPOConfig, GRPOTrainer

from fst_prompt.config import RLConfig
from fst_prompt.device import load_causal_lm, mixed_precision_flags, trainer_dtype
from fst_prompt.render import render
from fst_prompt.slow.program_trainer import ProgramGRPOTrainer
from fst_prompt.slow.reward import TaskReward
from fst_prompt.slow.trainer import PopulationGRPOTrainer
from fst_prompt.task import Task


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
        trainer_class = ProgramGRPOTrainer
    if issubclass(trainer_class, PopulationGRPOTrainer):
        kwargs |= {"task": task, "contexts": contexts, "weight_first": weight_first}
    trainer = trainer_class(**kwargs)
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to the terminal
    return trainer
