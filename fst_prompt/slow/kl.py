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
from typing import Any

import torch

from fst_prompt.render import render
from fst_prompt.task import Task


@dataclass(frozen=True)
class KLEstimate:
    mean: float  # nats per sequence
    stderr: float
    n: int


def probe_conversations(task: Task, n: int) -> list[list[dict[str, str]]]:
    """The fixed probe set: the first n val prompts, rendered with the task's seed instruction (for a
    multi-predictor program, its first predictor's: the prompts the program's inputs alone determine)."""
    return [render(task, ex, predictor=task.predictors[0][0]) for ex in task.val[:n]]


def probe_base(trainer: Any, model_path: Path) -> Any:
    """The probe's base model: TRL's reference model when beta > 0 (no second copy), None for LoRA (the
    adapter is disabled instead), else — beta = 0, where TRL keeps no reference — a copy loaded on the
    trained model's device, in its dtype."""
    if trainer.ref_model is not None or hasattr(trainer.model, "disable_adapter"):
        return trainer.ref_model
    from transformers import AutoModelForCausalLM

    model = trainer.model
    return AutoModelForCausalLM.from_pretrained(model_path, dtype=model.dtype).to(model.device).eval()


def kl_to_base(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], *, base: Any = None,
               samples_per_prompt: int = 2, max_new_tokens: int = 64, batch_size: int = 8,
               seed: int = 0) -> KLEstimate:
    """Monte Carlo KL of `model` from `base` (or from `model` with its adapter disabled)."""
    if base is None and not hasattr(model, "disable_adapter"):
        raise ValueError("give the base model, or a PEFT model whose adapter can be disabled")
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    texts = [t for t in texts for _ in range(samples_per_prompt)]
    per_sequence: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            per_sequence += _batch_log_ratios(model, base, tokenizer, chunk, max_new_tokens, seed * 7919 + start)
    finally:
        model.train(was_training)
    n = len(per_sequence)
    mean = sum(per_sequence) / n
    var = sum((v - mean) ** 2 for v in per_sequence) / (n - 1) if n > 1 else 0.0
    return KLEstimate(mean=mean, stderr=math.sqrt(var / n), n=n)


@torch.no_grad()
def _batch_log_ratios(model, base, tokenizer, texts, max_new_tokens, seed) -> list[float]:
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        seqs = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                              max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    prompt_len = enc["input_ids"].shape[1]
    completion = seqs[:, prompt_len:]  # [B, T]
    mask = _completion_mask(completion, tokenizer.eos_token_id)  # [B, T]: tokens up to and incl. EOS
    attention = torch.cat([enc["attention_mask"], mask], dim=1)  # [B, P+T]
    logp = _token_logps(model, seqs, attention, prompt_len)  # [B, T]
    ctx = model.disable_adapter() if base is None else contextlib.nullcontext()
    with ctx:
        logq = _token_logps(base if base is not None else model, seqs, attention, prompt_len)
    return ((logp - logq) * mask).sum(dim=1).tolist()


def _completion_mask(completion: torch.Tensor, eos_id: int) -> torch.Tensor:
    is_eos = completion == eos_id
    # position of the first EOS (or T when none); keep tokens at positions <= it
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], completion.shape[1],
                                                                                dtype=torch.long))
    positions = torch.arange(completion.shape[1], device=completion.device).expand_as(completion)
    return (positions <= first.unsqueeze(1)).float()


def _token_logps(model, seqs: torch.Tensor, attention: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """log p(token) of each completion token. Only the T + 1 positions that predict the completion get
    logits (`logits_to_keep`), and no [B, T, V] log-softmax copy is made: the probe's memory peak was
    two full-sequence logit tensors per model."""
    positions = (attention.long().cumsum(-1) - 1).clamp(min=0)  # left padding: count real tokens only
    targets = seqs[:, prompt_len:]  # [B, T]
    logits = model(input_ids=seqs, attention_mask=attention, position_ids=positions,
                   logits_to_keep=targets.shape[1] + 1).logits[:, :-1].float()  # [B, T, V]
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
