"""Throughput of a DSPy program evaluated through the batching engine vs raw batched `model.generate`.

    python evals/bench_generate.py [--task chain_sum] [--model smollm2-135m-instruct] [--n 32] [--batch-size 8]
                                   [--reps 3]

Both sides generate greedily for the same rendered prompts, at the same batch size and token limit, in
this one process, interleaved: raw, engine, raw, engine, ... Each engine repetition is compared with the
mean of the raw runs just before and after it; the script prints the median ratio engine/raw over the
repetitions and its spread (min, max), and the median rollouts/s of each side: the cost of DSPy's
formatting, parsing, threads and the gathering of calls into batches.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import fst_prompt  # noqa: F401 - offline environment
from fst_prompt.evaluate import evaluate
from fst_prompt.policy import Policy, Sampling
from fst_prompt.programs import load_task
from fst_prompt.render import render


def raw_generate(policy: Policy, prompts: list[str], max_new_tokens: int) -> tuple[float, int]:
    """Plain HF batched generate on already-templated prompts: (seconds, new tokens)."""
    import torch

    tok, model = policy.tokenizer, policy.model
    t0, tokens = time.perf_counter(), 0
    for start in range(0, len(prompts), policy.batch_size):
        enc = tok(prompts[start:start + policy.batch_size], return_tensors="pt", padding=True,
                  add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
                                 eos_token_id=sorted(policy.stop_ids))
        tokens += int((out[:, enc["input_ids"].shape[1]:] != tok.pad_token_id).sum())
    return time.perf_counter() - t0, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="chain_sum")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3, help="engine repetitions, each between two raw runs")
    ap.add_argument("--out", type=Path, default=Path("evals/results/bench_generate.json"))
    args = ap.parse_args()

    task = load_task(args.task)
    policy = Policy.load(args.model, batch_size=args.batch_size, sampling=Sampling(max_new_tokens=args.max_new_tokens))
    prompts = [policy.prompt_text(render(task, ex)) for ex in task.val[: args.n]]
    raw_generate(policy, prompts[: args.batch_size], 8)  # warm-up

    raw = [raw_generate(policy, prompts, args.max_new_tokens)[0]]
    engine, calls = [], []
    for _ in range(args.reps):
        result = evaluate(task, policy, split="val", n=args.n, progress=False)
        engine.append(result.seconds)
        calls.append(result.generate_calls)
        raw.append(raw_generate(policy, prompts, args.max_new_tokens)[0])
    ratios = [(raw[i] + raw[i + 1]) / 2 / engine[i] for i in range(args.reps)]  # engine rollouts/s over raw's
    report = {
        "task": args.task, "model": args.model, "n": args.n, "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "raw_seconds": raw, "engine_seconds": engine,
        "raw_rollouts_per_s": args.n / statistics.median(raw),
        "engine_rollouts_per_s": args.n / statistics.median(engine),
        "engine_generate_calls": calls, "ratios": ratios, "ratio": statistics.median(ratios),
    }
    print(f"raw model.generate : {report['raw_rollouts_per_s']:6.2f} rollouts/s median  "
          f"(runs: {', '.join(f'{t:.1f}' for t in raw)} s)")
    print(f"DSPy via engine    : {report['engine_rollouts_per_s']:6.2f} rollouts/s median  "
          f"(runs: {', '.join(f'{t:.1f}' for t in engine)} s; {calls[0]} generate calls for n={args.n}, "
          f"batch {args.batch_size})")
    print(f"ratio engine/raw   : {report['ratio']:.3f} median of {args.reps} [{min(ratios):.3f}, {max(ratios):.3f}]")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
