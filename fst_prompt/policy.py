"""The live policy: the model being trained, generating in batches.

One `Policy` owns the model and tokenizer. Everything that samples from the policy goes through
`Policy.generate` — GEPA's evaluations (through the DSPy engine in `engine.py`), `fst eval`, and later
RL — so prompts are always scored under the *current* weights. Generation is batched (`decoding.py`:
finished rows leave the batch, the shared prompt prefix is computed once), chunked by prompt length, and
seeded per call from the policy's own counter, so a run is reproducible without touching the process's
global RNG.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fst_prompt.decoding import WeightFirstLinear, decode, greedy, sampler, stop_ids
from fst_prompt.device import load_causal_lm
from fst_prompt.models import resolve_model

Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 128  # = PolicyConfig.max_new_tokens

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1:
            raise ValueError(f"invalid sampling settings: {self}")


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length" (hit max_new_tokens)
    prompt_ids: tuple[int, ...] = ()  # the tokens the model saw and wrote (RL trains on them)
    ids: tuple[int, ...] = ()
    module: str | None = None  # the predictor that made the call, and its inputs (set by engine.capture)
    module_inputs: dict | None = None


@dataclass
class PolicyStats:
    generate_calls: int = 0  # batched model.generate calls
    rollouts: int = 0  # completions produced
    completion_tokens: int = 0
    seconds: float = 0.0


class Policy:
    """A causal LM + tokenizer that generates chat completions in batches."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = 8,
        seed: int = 0,
        sampling: Sampling = Sampling(),
        name: str = "policy",
        weight_first: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer = model, tokenizer
        self.batch_size, self.seed, self.sampling, self.name = batch_size, seed, sampling, name
        self.weight_first = weight_first  # see decoding.WeightFirstLinear
        self.stats = PolicyStats()
        self.stop_ids = stop_ids(model, tokenizer)
        self._lock = threading.Lock()  # one generate at a time: the model is not re-entrant

    @classmethod
    def load(cls, name_or_path: str | Path, *, device: str | None = None, dtype: str = "auto",
             **kwargs: Any) -> Policy:
        """Resolve a model name (see `models.py`) and load it on `device` (default: the GPU when there is one)
        in `dtype` (`PolicyConfig.dtype`; auto: fp32 on CPU, bf16 on GPU)."""
        from transformers import AutoTokenizer

        path = resolve_model(name_or_path)
        model = load_causal_lm(path, dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model, tokenizer, name=str(name_or_path), **kwargs)

    def prompt_text(self, conversation: Conversation) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def generate(
        self,
        conversations: list[Conversation],
        sampling: Sampling | None = None,
        seeds: list[int] | None = None,
    ) -> list[Generation]:
        """One completion per conversation, in order; generated in chunks of `batch_size` conversations of
        similar length (characters: less padding). With `seeds` (one per conversation), each sampled
        completion depends only on its conversation and its seed, not on the batch it lands in."""
        sampling = sampling or self.sampling
        if seeds is not None and len(seeds) != len(conversations):
            raise ValueError(f"{len(seeds)} seeds for {len(conversations)} conversations")
        order = sorted(range(len(conversations)), key=lambda i: sum(len(m["content"]) for m in conversations[i]))
        out: dict[int, Generation] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            chunk_seeds = None if seeds is None else [seeds[i] for i in chunk]
            out |= zip(chunk, self._generate_batch([conversations[i] for i in chunk], sampling, chunk_seeds),
                       strict=True)
        return [out[i] for i in range(len(conversations))]

    def _generate_batch(self, conversations: list[Conversation], sampling: Sampling,
                        seeds: list[int] | None = None) -> list[Generation]:
        import torch

        prompts = [self.tokenizer(self.prompt_text(c), add_special_tokens=False)["input_ids"] for c in conversations]
        pick = sampler(sampling.temperature, sampling.top_p, seeds) if sampling.temperature > 0 else greedy()
        with self._lock:
            t0 = time.perf_counter()
            was_training = self.model.training
            self.model.eval()
            with (torch.random.fork_rng(devices=[]), torch.inference_mode(),
                  WeightFirstLinear() if self.weight_first and self.model.device.type == "cpu"  # measured on CPU
                  else contextlib.nullcontext()):
                torch.manual_seed(self.seed * 1_000_003 + self.stats.generate_calls)
                completions = decode(self.model, prompts, pick=pick, max_new_tokens=sampling.max_new_tokens,
                                     stop_ids=self.stop_ids, pad_id=self.tokenizer.pad_token_id)
            self.model.train(was_training)
            gens = [self._generation(ids, prompt) for ids, prompt in zip(completions, prompts, strict=True)]
            self.stats.generate_calls += 1
            self.stats.rollouts += len(gens)
            self.stats.completion_tokens += sum(g.completion_tokens for g in gens)
            self.stats.seconds += time.perf_counter() - t0
        return gens

    def _generation(self, ids: list[int], prompt: list[int]) -> Generation:
        stopped = ids[-1] in self.stop_ids
        return Generation(
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            prompt_tokens=len(prompt),
            completion_tokens=len(ids),
            finish_reason="stop" if stopped else "length",
            prompt_ids=tuple(prompt),
            ids=tuple(ids),
        )
