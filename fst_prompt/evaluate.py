"""Evaluate a task's DSPy program on the live policy: accuracy, parse failures, length, throughput.

The program runs as plain DSPy, one example per thread, with the policy as its LM; the batching engine
gathers the threads' calls into batched `generate`s. A reply that does not parse, or a program call that
fails, is a score of 0 with feedback naming the failure, never an exception.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError
from tqdm.auto import tqdm

from fst_prompt.engine import BatchingEngine, ModuleNames, capture, policy_lm, seeded
from fst_prompt.policy import Generation, Policy, Sampling
from fst_prompt.render import make_adapter, parse_failure_feedback
from fst_prompt.task import Feedback, Task


class _NoTruncationWarning(logging.Filter):
    """DSPy warns once per truncated reply; we count them in `truncated_rate` instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "truncated" not in record.getMessage()


logging.getLogger("dspy.clients.lm").addFilter(_NoTruncationWarning())


@dataclass(frozen=True)
class Rollout:
    index: int  # position in the evaluated split
    score: float
    feedback: str
    parsed: bool
    prediction: dict[str, Any] | None
    completions: list[str]  # every LM call the program made for this example, in order
    completion_tokens: int
    truncated: bool  # some call hit max_new_tokens before the end of its turn
    calls: list[Generation] = field(default_factory=list, repr=False)  # with token ids and module: not in to_json


@dataclass(frozen=True)
class EvalResult:
    task: str
    split: str
    n: int
    accuracy: float  # fraction scored 1.0 (fully correct)
    mean_score: float
    parse_failure_rate: float
    truncated_rate: float  # fraction of examples with a reply cut at max_new_tokens
    mean_completion_tokens: float
    rollouts_per_s: float
    seconds: float
    generate_calls: int
    instructions: dict[str, str]
    rollouts: list[Rollout] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "rollouts"}

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for r in out["rollouts"]:
            r.pop("calls", None)
        return out


def evaluate(
    task: Task,
    policy: Policy,
    *,
    split: str = "val",
    n: int | None = None,
    instructions: dict[str, str] | None = None,
    progress: bool = True,
) -> EvalResult:
    """Run the task's program (with `instructions`, default the seed ones) on the first n of a split."""
    examples = task.split(split)[: n or None]
    calls0, t0 = policy.stats.generate_calls, time.perf_counter()
    rollouts = run_rollouts(
        task, policy, examples, instructions, desc=f"eval {task.name}/{split}" if progress else None
    )
    seconds = time.perf_counter() - t0
    k = max(len(rollouts), 1)
    return EvalResult(
        task=task.name,
        split=split,
        n=len(rollouts),
        accuracy=sum(r.score >= 1.0 for r in rollouts) / k,
        mean_score=sum(r.score for r in rollouts) / k,
        parse_failure_rate=sum(not r.parsed for r in rollouts) / k,
        truncated_rate=sum(r.truncated for r in rollouts) / k,
        mean_completion_tokens=sum(r.completion_tokens for r in rollouts) / k,
        rollouts_per_s=len(rollouts) / seconds if seconds > 0 else 0.0,
        seconds=seconds,
        generate_calls=policy.stats.generate_calls - calls0,
        instructions=task.seed_instructions() | (instructions or {}),
        rollouts=rollouts,
    )


def run_rollouts(
    task: Task,
    policy: Policy,
    examples: list[dspy.Example],
    instructions: dict[str, str] | None = None,
    desc: str | None = None,
    *,
    sampling: Sampling | None = None,
    seeds: list[int] | None = None,
    per_example: list[dict[str, str]] | None = None,
) -> list[Rollout]:
    """One rollout per example (in order), the program run as plain DSPy on the live policy.

    One thread per batch slot: the engine turns their concurrent calls into batched generates, which
    run in the calling thread (`BatchingEngine.serve_while`).
    `desc` shows a progress bar with that label; None shows none. `sampling` replaces the policy's own
    settings; `seeds` (one per example) makes each sampled rollout depend only on its example and seed;
    `per_example` gives each example its own instructions (RL's population mixing) instead of `instructions`.
    """
    if seeds is not None and len(seeds) != len(examples):
        raise ValueError(f"{len(seeds)} seeds for {len(examples)} examples")
    if per_example is not None and len(per_example) != len(examples):
        raise ValueError(f"{len(per_example)} instruction sets for {len(examples)} examples")
    programs: dict[str, dspy.Module] = {}

    def program_for(i: int) -> dspy.Module:
        chosen = instructions if per_example is None else per_example[i]
        key = json.dumps(chosen, sort_keys=True)
        if key not in programs:
            programs[key] = task.with_instructions(chosen)
        return programs[key]

    settings = {} if sampling is None else {"temperature": sampling.temperature, "top_p": sampling.top_p,
                                            "max_tokens": sampling.max_new_tokens}
    engine = BatchingEngine(policy)
    lm = policy_lm(policy, engine=engine, **settings)
    adapter = make_adapter(task.adapter)
    seeds = seeds or [None] * len(examples)
    # hosting() inside the pool: if serving fails, leaving it hands what is queued to a worker thread before
    # the pool waits for its threads.
    with (ThreadPoolExecutor(max_workers=policy.batch_size) as pool, engine.hosting(),
          tqdm(total=len(examples), disable=desc is None, desc=desc, unit="ex") as bar):
        futures = [pool.submit(_rollout, task, program_for(i), lm, adapter, ex, i, seed)
                   for i, (ex, seed) in enumerate(zip(examples, seeds, strict=True))]
        for f in futures:
            f.add_done_callback(lambda _: bar.update(1))
        # This thread generates the batches itself: a worker thread would run torch on a second OpenMP
        # pool, which on a 2-core host cost a third of the throughput (see engine.py's docstring).
        engine.serve_while(lambda: not all(f.done() for f in futures))
        return [f.result() for f in futures]  # in example order


def _rollout(
    task: Task, program: dspy.Module, lm: dspy.LM, adapter: dspy.Adapter, example: dspy.Example, index: int,
    seed: int | None = None,
) -> Rollout:
    prediction, parsed = None, True
    with (dspy.context(lm=lm, adapter=adapter, callbacks=[ModuleNames(program)]), capture() as calls,
          seeded(seed)):
        try:
            pred = program(**example.inputs())
            feedback = task.score(example, pred)
            prediction = dict(pred.items())
        except AdapterParseError as e:
            parsed = False
            feedback = Feedback(0.0, parse_failure_feedback(task.adapter, e.signature, e.lm_response or "", e))
        except Exception as e:  # noqa: BLE001 - one failing example is data, the evaluation goes on
            parsed = False
            feedback = Feedback(0.0, f"The program failed on this example: {type(e).__name__}: {e}")
    return Rollout(
        index=index,
        score=feedback.score,
        feedback=feedback.feedback,
        parsed=parsed,
        prediction=prediction,
        completions=[c.text for c in calls],
        completion_tokens=sum(c.completion_tokens for c in calls),
        truncated=any(c.finish_reason == "length" for c in calls),
        calls=list(calls),
    )
