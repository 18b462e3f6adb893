"""Generation throughput: a DSPy program evaluated through the batching engine, against the model alone.

    python -m evals.bench_generate [--task chain_sum] [--model smollm2-135m-instruct] [--n 32]
                                   [--batch-size B] [--max-new-tokens T] [--reps 3]

B and T default to the shipped `policy` defaults (config.PolicyConfig). Four ways to greedily complete the
same n rendered prompts, in this one process, interleaved in each repetition:

  hf-8      transformers `model.generate`, batch 8: the generation under the old default (batch 8,
            `generate`); the engine used to reach 0.63-0.69 of it
  hf-B      `model.generate` at batch B: what a larger batch alone buys
  policy-B  `Policy.generate` at batch B (fst_prompt/decoding.py: finished rows leave the batch, the
            shared prompt prefix is computed once, weight-first GEMMs), called directly
  engine-B  the task's DSPy program through the batching engine (`evaluate`): policy-B plus DSPy's
            formatting, parsing, threads and the gathering of calls into batches

It prints each side's median rollouts/s, the median and spread over repetitions of engine/policy (what
DSPy and the engine cost) and of engine/hf-8 (the speed-up over the old default's generation), and how
many of the engine's completions equal hf-8's (greedy: they should all).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from fst_prompt.cli import offline_environment
from fst_prompt.config import PolicyConfig
from fst_prompt.evaluate import evaluate
from fst_prompt.policy import Policy, Sampling
from fst_prompt.programs import load_task
from fst_prompt.render import render

SHIPPED = PolicyConfig()


def hf_generate(policy: Policy, prompts: list[str], batch_size: int, max_new_tokens: int) -> list[str]:
    """Plain transformers batched greedy `generate` on already-templated prompts (left padding)."""
    import torch

    tok, model = policy.tokenizer, policy.model
    texts = []
    for start in range(0, len(prompts), batch_size):
        enc = tok(prompts[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
                                 eos_token_id=sorted(policy.stop_ids))
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            stop = next((i for i, t in enumerate(row) if t in policy.stop_ids), len(row) - 1)
            texts.append(tok.decode(row[: stop + 1], skip_special_tokens=True))
    return texts


def timed(fn) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    texts = fn()
    return time.perf_counter() - t0, texts


def main() -> None:
    offline_environment()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="chain_sum")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=SHIPPED.batch_size)
    ap.add_argument("--max-new-tokens", type=int, default=SHIPPED.max_new_tokens)
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions of all four sides")
    ap.add_argument("--out", type=Path, default=Path("evals/results/bench_generate.json"))
    args = ap.parse_args()

    task = load_task(args.task)
    b, t = args.batch_size, args.max_new_tokens
    policy = Policy.load(args.model, batch_size=b, sampling=Sampling(max_new_tokens=t))
    conversations = [render(task, ex) for ex in task.val[: args.n]]
    prompts = [policy.prompt_text(c) for c in conversations]
    hf_generate(policy, prompts[:8], 8, 8)  # warm-up
    sides = {
        "hf-8": lambda: hf_generate(policy, prompts, 8, t),
        f"hf-{b}": lambda: hf_generate(policy, prompts, b, t),
        f"policy-{b}": lambda: [g.text for g in policy.generate(conversations)],
        f"engine-{b}": lambda: [r.completions[0] for r in evaluate(task, policy, split="val", n=args.n,
                                                                    progress=False).rollouts],
    }
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    texts: dict[str, list[str]] = {}
    for rep in range(args.reps):
        for name, fn in sides.items():
            s, texts[name] = timed(fn)
            seconds[name].append(s)
            print(f"  rep {rep + 1}/{args.reps} {name:>10}: {s:6.1f} s", flush=True)

    hf8, engine, direct = seconds["hf-8"], seconds[f"engine-{b}"], seconds[f"policy-{b}"]
    overhead = [d / e for d, e in zip(direct, engine, strict=True)]  # engine rollouts/s over policy's
    speedup = [h / e for h, e in zip(hf8, engine, strict=True)]
    same = sum(a == c for a, c in zip(texts["hf-8"], texts[f"engine-{b}"], strict=True))
    report = {
        "task": args.task, "model": args.model, "n": args.n, "batch_size": b, "max_new_tokens": t,
        "seconds": seconds, "rollouts_per_s": {k: args.n / statistics.median(v) for k, v in seconds.items()},
        "engine_over_policy": overhead, "engine_over_hf8": speedup, "identical_to_hf8": same,
    }
    for name, rate in report["rollouts_per_s"].items():
        print(f"{name:>10}: {rate:6.2f} rollouts/s (median of {args.reps})")
    print(f"ratio engine/policy (DSPy + engine cost): {statistics.median(overhead):.3f} median "
          f"[{min(overhead):.3f}, {max(overhead):.3f}]")
    print(f"speed-up engine-{b} over hf-8 (old default): {statistics.median(speedup):.2f}x median "
          f"[{min(speedup):.2f}, {max(speedup):.2f}]")
    print(f"greedy completions identical to hf-8: {same}/{args.n}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
