"""The run's schedule: which task each cycle works on, in which order RL visits its problems, and the
trainer and live policy of that stage.

A plain run is one stage. A continual run (`schedule:` in the config) switches task after each stage's
cycles, training on from the live weights (the KL reference stays the base model); resuming into a
later stage starts from the previous stage's last complete checkpoint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from fst_prompt.config import RunConfig
from fst_prompt.device import load_causal_lm, trainer_dtype
from fst_prompt.models import resolve_model
from fst_prompt.modes import Mode
from fst_prompt.policy import Policy, Sampling
from fst_prompt.programs import load_task
from fst_prompt.rundir import CycleRecord, RunDir
from fst_prompt.slow.build import build_trainer
from fst_prompt.slow.kl import probe_base
from fst_prompt.slow.trainer import PopulationGRPOTrainer
from fst_prompt.state import last_complete_checkpoint
from fst_prompt.task import Task

if TYPE_CHECKING:
    from transformers import PreTrainedModel


@dataclass
class Stage:
    """One task of the schedule, with the trainer and live policy working on it."""

    index: int
    first_cycle: int
    cycles: int
    task: Task
    order: list[int]  # the seeded order in which RL visits this task's train problems
    trainer: PopulationGRPOTrainer | None  # None when the weights do not train (gepa mode)
    policy: Policy
    kl_base: PreTrainedModel | None  # the KL probe's base model (None: LoRA adapter disabled, or no trainer)
    problems_per_step: int  # problems one optimizer step uses, over all processes and accumulated micro-batches


def load_tasks(config: RunConfig) -> list[Task]:
    """Every task of the schedule, validated before any model loads."""
    tasks = [load_task(spec.task, **spec.task_kwargs) for spec in config.stages()]
    names = [sorted(t.seed_instructions()) for t in tasks]
    if any(n != names[0] for n in names):
        raise ValueError(f"every task of a schedule needs the same predictors (one population serves them all); "
                         f"got {names}")
    return tasks


def seed_instructions(config: RunConfig, task: Task) -> dict[str, str]:
    """The task's own seed instructions, or the config's task-agnostic one for every predictor."""
    if config.seed_instruction:
        return {name: config.seed_instruction for name in task.seed_instructions()}
    return task.seed_instructions()


def problem_order(n: int, seed: int) -> list[int]:
    """The seeded order in which RL visits the train problems (repeated epoch after epoch)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def upcoming_problems(order: list[int], start: int, n: int) -> list[int]:
    """n problems in RL's order from position `start` on (wrapping into the next epoch)."""
    return [order[(start + i) % len(order)] for i in range(n)]


def checkpoint_dir(run_dir: RunDir, config: RunConfig, index: int) -> Path:
    """Where stage `index` keeps its TRL checkpoints."""
    return run_dir.checkpoints(index if config.schedule else None)


def distill_dir(run_dir: RunDir, config: RunConfig, index: int) -> Path:
    """Where stage `index`'s distill phase keeps its checkpoints."""
    return run_dir.distill_checkpoints(index if config.schedule else None)


def stage_weights(run_dir: RunDir, config: RunConfig, index: int) -> str | None:
    """Stage `index`'s trained weights as they stand: its distill phase's last complete checkpoint if it has one,
    else its RL's (None: nothing trained yet). Read only: nothing is cleaned up."""
    for folder in (distill_dir(run_dir, config, index), checkpoint_dir(run_dir, config, index)):
        last = last_complete_checkpoint(folder, remove_partial=False) if folder.is_dir() else None
        if last:
            return last
    return None


def final_checkpoint(run_dir: RunDir, config: RunConfig) -> str | None:
    """The run's trained weights: those of the last stage that has a complete checkpoint (its distill phase's
    first; None: gepa mode). Read only: nothing is cleaned up, so it works on a run that is still going."""
    for index in reversed(range(len(config.stages()))):
        last = stage_weights(run_dir, config, index)
        if last:
            return last
    return None


class Schedule:
    """Hands out the stage of each cycle, building a stage's trainer and policy when the task changes."""

    def __init__(self, config: RunConfig, tasks: list[Task], mode: Mode, run_dir: RunDir,
                 callbacks: list[TrainerCallback] | None = None, processes: int = 1) -> None:
        self.config, self.tasks, self.mode, self.run_dir = config, tasks, mode, run_dir
        self.callbacks = callbacks or []
        accumulation = config.rl.trainer_args.get("gradient_accumulation_steps", 1)
        self.problems_per_step = config.rl.problems_per_step * processes * accumulation
        self.current: Stage | None = None
        self.starts = [0]
        for spec in config.stages():
            self.starts.append(self.starts[-1] + spec.cycles)

    def stage_for(self, cycle: int) -> Stage:
        index = next(i for i in range(len(self.tasks)) if cycle < self.starts[i + 1])
        if self.current is None or self.current.index != index:
            self.current = self._build(index, self.current)
        return self.current

    def _build(self, index: int, previous: Stage | None) -> Stage:
        config, T = self.config, self.config.loop.steps_per_cycle
        pc, task, cycles = config.policy, self.tasks[index], config.stages()[index].cycles
        sampling = Sampling(temperature=pc.temperature, max_new_tokens=pc.max_new_tokens)
        order = problem_order(len(task.train), config.rl.seed + index)
        if not self.mode.trains:
            policy = previous.policy if previous else Policy.load(pc.model, batch_size=pc.batch_size, seed=pc.seed,
                                                                   sampling=sampling, weight_first=pc.weight_first,
                                                                   dtype=pc.dtype)
            return Stage(index, self.starts[index], cycles, task, order, None, policy, None, self.problems_per_step)
        base = resolve_model(pc.model)
        model = previous.trainer.model if previous else self._weights_before(index)
        trainer = build_trainer(task, base, config.rl, checkpoint_dir(self.run_dir, config, index),
                                max_steps=cycles * T, order=order, model=model, callbacks=self.callbacks,
                                weight_first=pc.weight_first, dtype=pc.dtype, shuffle_dataset=False,
                                ddp_timeout=config.loop.wait_minutes * 60, **config.rl.trainer_args)
        trainer.keep_rollouts(self.run_dir.rollouts, step_offset=self.starts[index] * T)  # the fast loop reads them
        resumed = last_complete_checkpoint(checkpoint_dir(self.run_dir, config, index), remove_partial=False)
        if resumed:  # a resumed stage: its next GEPA round and evaluation must see the trained weights, not the
            trainer._load_from_checkpoint(resumed)  # base's (TRL's own loader: full weights or the LoRA adapter)
        policy = Policy(trainer.model, trainer.processing_class, batch_size=pc.batch_size, seed=pc.seed,
                        sampling=sampling, name=pc.model, weight_first=pc.weight_first)
        # the probe's base is this trainer's reference model where it has one (the previous stage's is freed
        # with its trainer: one copy of the base, not two); a loaded copy is kept from stage to stage
        kl_base = previous.kl_base if previous and trainer.ref_model is None else probe_base(trainer, base)
        return Stage(index, self.starts[index], cycles, task, order, trainer, policy, kl_base, self.problems_per_step)

    def _weights_before(self, index: int) -> PreTrainedModel | None:
        """None (the base model) for the first stage; else the previous stage's last complete checkpoint (its
        distill phase's, where it had one)."""
        if index == 0:
            return None
        last = stage_weights(self.run_dir, self.config, index - 1)  # distilled, where the stage ended so
        if last is None:
            raise FileNotFoundError(f"cannot resume stage {index}: stage {index - 1} left no complete checkpoint")
        return load_causal_lm(last, trainer_dtype(self.config.policy.dtype), device="cpu")  # the trainer places it


def forgetting_matrix(cycles: list[CycleRecord]) -> dict[str, Any]:
    """Accuracy on task i (best instruction) at the end of stage j; None for tasks not yet seen."""
    names = list(dict.fromkeys(c.task for c in cycles))
    ends = [max((c for c in cycles if c.stage == j), key=lambda c: c.cycle) for j in range(len(names))]
    return {"tasks": names, "after_stage": [[end.val_accuracy_by_task.get(name) for name in names] for end in ends]}
