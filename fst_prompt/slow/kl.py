"""KL(pi_theta || pi_base) on a fixed probe set: the drift the paper's headline compares.

TRL's logged `kl` is measured on the training prompts, which change as the population changes; this
probe uses fixed held-out prompts. Monte Carlo: sample completions y ~ pi_theta(.|x), sum the per-token
log-ratio log pi_theta(y_t|...) - log pi_base(y_t|...) over each completion, and average over sequences
(mean and standard error). The base is TRL's reference model when one exists, the same model with its
LoRA adapter disabled, or a model passed in — never a third copy.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase
    from trl import GRPOTrainer

import torch

from fst_prompt.decoding import WeightFirstLinear, completion_logps, decode, sampler, stop_ids
from fst_prompt.render import render
from fst_prompt.task import Task


@dataclass(frozen=True)
class KLEstimate:
    mean: float  # nats per sequence
    stderr: float
    n: int


def probe_conversations(task: Task, n: int, instructions: dict[str, str] | None = None) -> list[list[dict[str, str]]]:
    """The fixed probe set: the first n val prompts, rendered with the task's seed instruction (for a
    multi-predictor program, its first predictor's: the prompts the program's inputs alone determine), or with
    that predictor's instruction in `instructions`."""
    name = task.predictors[0][0]
    instruction = (instructions or {}).get(name)
    return [render(task, ex, instruction=instruction, predictor=name) for ex in task.val[:n]]


def probe_base(trainer: GRPOTrainer, model_path: Path) -> PreTrainedModel | None:
    """The probe's base model: TRL's reference model when beta > 0 (no second copy), None for LoRA (the
    adapter is disabled instead), else — beta = 0, where TRL keeps no reference — a copy loaded on the
    trained model's device, in its dtype."""
    if trainer.ref_model is not None or hasattr(trainer.model, "disable_adapter"):
        return trainer.ref_model
    from transformers import AutoModelForCausalLM

    model = trainer.model
    return AutoModelForCausalLM.from_pretrained(model_path, dtype=model.dtype).to(model.device).eval()


def kl_to_base(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, conversations: list[list[dict[str, str]]],
               *, base: PreTrainedModel | None = None,
               samples_per_prompt: int = 2, max_new_tokens: int = 64, batch_size: int = 32,
               seed: int = 0, weight_first: bool = True) -> KLEstimate:
    """Monte Carlo KL of `model` from `base` (or from `model` with its adapter disabled).

    Completions are sampled at temperature 1 by the policy's decoder (`decoding.decode`: finished rows leave
    the batch, the shared prompt prefix is computed once) with one generator per sequence, seeded by the
    sequence's place in the probe: the estimate does not depend on `batch_size`, which bounds memory only."""
    if base is None and not hasattr(model, "disable_adapter"):
        raise ValueError("give the base model, or a PEFT model whose adapter can be disabled")
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts for _ in range(samples_per_prompt)]
    per_sequence: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            seeds = [seed * 7919 + i for i in range(start, min(start + batch_size, len(prompts)))]
            per_sequence += _batch_log_ratios(model, base, tokenizer, prompts[start:start + batch_size], seeds,
                                              max_new_tokens, weight_first)
    finally:
        model.train(was_training)
    n = len(per_sequence)
    mean = sum(per_sequence) / n
    var = sum((v - mean) ** 2 for v in per_sequence) / (n - 1) if n > 1 else 0.0
    return KLEstimate(mean=mean, stderr=math.sqrt(var / n), n=n)


@torch.no_grad()
def _batch_log_ratios(model, base, tokenizer, prompts: list[list[int]], seeds: list[int], max_new_tokens: int,
                      weight_first: bool) -> list[float]:
    """Sum over each sampled completion (up to and including its end-of-turn token) of log pi - log pi_base,
    both scored by the same batched forward pass (so identical models give exactly 0)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    fast = weight_first and model.device.type == "cpu"  # as the policy decodes (PolicyConfig.weight_first)
    with WeightFirstLinear() if fast else contextlib.nullcontext():
        completions = decode(model, prompts, pick=sampler(1.0, 1.0, seeds), max_new_tokens=max_new_tokens,
                             stop_ids=stop_ids(model, tokenizer), pad_id=pad)
    logp = completion_logps(model, prompts, completions, pad)
    with model.disable_adapter() if base is None else contextlib.nullcontext():
        logq = completion_logps(base if base is not None else model, prompts, completions, pad)
    return [sum(p) - sum(q) for p, q in zip(logp, logq, strict=True)]
