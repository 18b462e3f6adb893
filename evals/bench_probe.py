"""KL probe cost: our probe (`fst_prompt.slow.kl.kl_to_base`) against the probe it replaced, in one process.

    python -m evals.bench_probe [--model qwen2.5-coder-0.5b-instruct] [--task date_normalize]
                                [--prompts 32] [--samples 4] [--max-new-tokens 48] [--reps 2]

The defaults are the v2 study's probe (evals/configs/compare_v2.yaml: 32 val prompts x 4 samples, 48 tokens,
Qwen2.5-Coder-0.5B), run after every cycle of every run. Two sides, interleaved in each repetition:

  old   the probe before commit 0ffad9a, kept here as the baseline: transformers `generate` in batches of 8
        (one seed per batch), then each model scores the whole padded sequences
  ours  `kl_to_base`: the policy's decoder (finished rows leave the batch, the shared prompt prefix computed
        once, one generator per sequence) in batches of 32, each model scoring only the completions

The "trained" model is the base with a small fixed perturbation of its weights, so the KL is not zero; the
two sides sample differently, so their estimates are compared against their standard errors, not for
equality. Prints each side's median seconds, the median and spread of old/ours, and both estimates.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from fst_prompt.cli import offline_environment
from fst_prompt.policy import Policy
from fst_prompt.programs import load_task
from fst_prompt.slow.kl import kl_to_base, probe_conversations


def old_probe(model, base, tokenizer, conversations, *, samples_per_prompt: int, max_new_tokens: int,
              batch_size: int = 8, seed: int = 0) -> tuple[float, float]:
    """The probe as it was before 0ffad9a (fst_prompt/slow/kl.py): mean and standard error, nats/sequence."""
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    texts = [t for t in texts for _ in range(samples_per_prompt)]
    values: list[float] = []
    for start in range(0, len(texts), batch_size):
        values += _old_batch(model, base, tokenizer, texts[start:start + batch_size], max_new_tokens,
                             seed * 7919 + start)
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


@torch.no_grad()
def _old_batch(model, base, tokenizer, texts, max_new_tokens, seed) -> list[float]:
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        seqs = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                              max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    prompt_len = enc["input_ids"].shape[1]
    completion = seqs[:, prompt_len:]
    is_eos = completion == tokenizer.eos_token_id
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1), torch.full_like(is_eos[:, 0], completion.shape[1],
                                                                                dtype=torch.long))
    positions = torch.arange(completion.shape[1]).expand_as(completion)
    mask = (positions <= first.unsqueeze(1)).float()
    attention = torch.cat([enc["attention_mask"], mask], dim=1)
    logp, logq = (_old_token_logps(m, seqs, attention, prompt_len) for m in (model, base))
    return ((logp - logq) * mask).sum(dim=1).tolist()


def _old_token_logps(model, seqs, attention, prompt_len):
    positions = (attention.long().cumsum(-1) - 1).clamp(min=0)
    targets = seqs[:, prompt_len:]
    logits = model(input_ids=seqs, attention_mask=attention, position_ids=positions,
                   logits_to_keep=targets.shape[1] + 1).logits[:, :-1].float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)


def perturbed_copy(policy: Policy, scale: float, seed: int = 0):
    """A second copy of the model with every weight matrix moved by scale x its own std (fixed noise)."""
    from transformers import AutoModelForCausalLM

    from fst_prompt.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model(policy.name), dtype=policy.model.dtype).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.add_(torch.randn(p.shape, generator=gen) * p.std() * scale)
    return model


def main() -> None:
    offline_environment()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--task", default="date_normalize")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--reps", type=int, default=2, help="interleaved repetitions of both sides")
    ap.add_argument("--scale", type=float, default=0.02, help="weight perturbation of the 'trained' copy")
    ap.add_argument("--out", type=Path, default=Path("evals/results/bench_probe.json"))
    args = ap.parse_args()
    if args.prompts * args.samples < 2:
        ap.error("the probe needs at least 2 sequences (--prompts x --samples)")

    torch.set_grad_enabled(False)
    base = Policy.load(args.model)
    trained = perturbed_copy(base, args.scale)
    conversations = probe_conversations(load_task(args.task), args.prompts)
    kw = {"samples_per_prompt": args.samples, "max_new_tokens": args.max_new_tokens}
    sides = {
        "old": lambda: old_probe(trained, base.model, base.tokenizer, conversations, **kw),
        "ours": lambda: (lambda e: (e.mean, e.stderr))(kl_to_base(trained, base.tokenizer, conversations,
                                                                  base=base.model, **kw)),
    }
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    estimates: dict[str, tuple[float, float]] = {}
    for rep in range(args.reps):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            estimates[name] = fn()
            seconds[name].append(time.perf_counter() - t0)
            print(f"  rep {rep + 1}/{args.reps} {name:>4}: {seconds[name][-1]:6.1f} s, "
                  f"KL {estimates[name][0]:.3f} ± {estimates[name][1]:.3f}", flush=True)

    ratios = [o / n for o, n in zip(seconds["old"], seconds["ours"], strict=True)]
    (m_old, s_old), (m_ours, s_ours) = estimates["old"], estimates["ours"]
    gap = abs(m_old - m_ours) / math.hypot(s_old, s_ours)
    report = {"model": args.model, "task": args.task, "prompts": args.prompts, "samples": args.samples,
              "max_new_tokens": args.max_new_tokens, "scale": args.scale, "seconds": seconds,
              "old_over_ours": ratios, "kl": {k: {"mean": m, "stderr": s} for k, (m, s) in estimates.items()},
              "gap_in_stderrs": gap}
    for name, s in seconds.items():
        print(f"{name:>4}: {statistics.median(s):6.1f} s median of {args.reps}")
    print(f"speed-up old/ours: {statistics.median(ratios):.2f}x median [{min(ratios):.2f}, {max(ratios):.2f}]")
    print(f"KL old {m_old:.3f} ± {s_old:.3f}, ours {m_ours:.3f} ± {s_ours:.3f}: {gap:.1f} combined stderrs apart")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
