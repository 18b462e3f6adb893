"""`PopulationGRPOTrainer`: TRL's GRPOTrainer with the population of contexts mixed inside each group.

Each row of a generation batch is one rollout; TRL lays a problem's G rollouts out as G consecutive
rows. We rewrite every row's prompt just before TRL generates (`_generate_and_score_completions`, the
one hook TRL 1.16 gives for this; pinned `trl>=1.16,<1.17` and tested): row r gets context
`assign_contexts(...)` (see `contexts.py`) rendered through the task's DSPy adapter. TRL then computes
the group advantage once over all G rollouts of the problem, whatever context each used.

Every rollout drawn for training goes to the run's rollout store (`rollouts.py`) when one is set
(`keep_rollouts`): its policy version, problem, candidate, completion, reward and feedback, which the fast
loop reads instead of sampling its own.

The slow step is `train_until(step, contexts)`, which returns a `SlowRecord`. A trainer with the paper's
defaults is built by `slow/build.py`; a program of several predictors gets `ProgramGRPOTrainer`
(`slow/program_trainer.py`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import torch
from trl import GRPOTrainer

from fst_prompt.decoding import WeightFirstLinear
from fst_prompt.fast.adapter import example_id
from fst_prompt.fast.population import candidate_id
from fst_prompt.render import render
from fst_prompt.rollouts import RolloutStore, StoredRollout, prompt_hash
from fst_prompt.slow.contexts import assign_contexts
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
        self.store: RolloutStore | None = None  # where this trainer's rollouts are kept (the main process writes)
        self.step_offset = 0  # the run's RL steps before this trainer's first (a schedule's earlier stages)
        super().__init__(**kwargs)
        self.set_population(contexts or self.contexts)

    def keep_rollouts(self, store: RolloutStore | None, step_offset: int = 0) -> None:
        """Keep every training rollout in `store`, versioned by the run's RL step (`step_offset` + this trainer's)."""
        self.store, self.step_offset = store, step_offset

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
        reward = self.reward_funcs[0]
        reward.scored = []
        out = super()._generate_and_score_completions(rows)
        if self.model.training:
            self._keep([self._stored(row, *scored) for row, scored in zip(rows, reward.scored, strict=True)])
        return out

    def _stored(self, row: dict[str, Any], index: int, completion: str, reward: float, feedback: str,
                calls: list[dict[str, Any]] | None = None) -> StoredRollout:
        """One rollout as the store keeps it, versioned by the weights it was drawn from."""
        return StoredRollout(
            version=self.step_offset + self.state.global_step, task=self.task.name, example_index=index,
            problem=example_id(self.task.train[index]), candidate=candidate_id(self.contexts[row["context_index"]]),
            prompt_hash=prompt_hash(row["prompt"]), reward=float(reward), completion=completion, feedback=feedback,
            calls=calls or [])

    def _keep(self, rows: list[StoredRollout]) -> None:
        """The main process appends every process's rollouts of this generation batch to the store."""
        if self.store is None:
            return
        if self.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            rows = gather_object(rows)
        if self.accelerator.is_main_process:
            self.store.append(rows)

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
