"""One GEPA round on the live policy: re-score the carried population, evolve, fold back, keep top-K.

    population, record = gepa_round(population, task, policy, anchor, proposer, config, cycle=c)

The round runs under the *current* weights (a fresh `TaskAdapter`). gepa accepts a single seed, so we
seed it with the population's best on the anchor set; every candidate gepa accepts is scored on the
same anchor set, then all of them join the carried ones and `Population.select_top_k` keeps K by Pareto.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dspy

from fst_prompt.config import GEPAConfig
from fst_prompt.console import RoundProgress
from fst_prompt.fast.adapter import TaskAdapter, example_id
from fst_prompt.fast.population import Candidate, Population, candidate_id
from fst_prompt.fast.reflection import Proposer
from fst_prompt.policy import Policy
from fst_prompt.task import Task


@dataclass(frozen=True)
class RoundRecord:
    cycle: int
    proposals_tried: int  # usable proposals gepa evaluated
    proposals_accepted: int  # new candidates gepa kept
    proposal_failures: dict[str, int]  # lm_failed / empty / unchanged / too_long
    metric_calls: int  # gepa's count plus our re-scoring (cache hits included)
    policy_rollouts: int  # completions the policy actually generated this round
    reflection_calls: int
    reflection_failures: int
    reflection_prompt_tokens: int
    reflection_completion_tokens: int
    reflection_seconds: float
    seconds: float
    best_id: str
    best_score: float
    population: list[dict[str, Any]] = field(default_factory=list)  # id, mean score, parents

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _LogFile:
    """gepa's logger protocol (`.log(msg)`), into the run directory instead of stdout."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def log(self, message: str) -> None:
        if self.path:
            with self.path.open("a") as f:
                f.write(message.rstrip() + "\n")


def gepa_round(population: Population, task: Task, policy: Policy, anchor: list[dspy.Example],
               proposer: Proposer, config: GEPAConfig, *, cycle: int = 0, log_path: Path | None = None,
               progress: bool = True) -> tuple[Population, RoundRecord]:
    import gepa

    t0, reflection0 = time.perf_counter(), _snapshot(proposer)
    adapter = TaskAdapter(task, policy)
    ids = [example_id(ex) for ex in anchor]
    for cand in population.candidates:  # scores from older weights are stale
        cand.scores = dict(zip(ids, adapter.evaluate(anchor, cand.instructions).scores, strict=True))
    rescoring_calls = len(population) * len(anchor)
    seed = population.best()
    outcomes0 = dict(proposer.outcomes)

    adapter.observer = RoundProgress(config.max_metric_calls, len(anchor), seed.instructions, proposer, show=progress)
    try:
        result = gepa.optimize(
            seed_candidate=seed.instructions, trainset=anchor, valset=anchor, adapter=adapter,
            custom_candidate_proposer=proposer, max_metric_calls=config.max_metric_calls,
            reflection_minibatch_size=config.reflection_minibatch_size, use_merge=config.use_merge,
            seed=(config.seed or 0) + cycle, display_progress_bar=False, logger=_LogFile(log_path),
            use_wandb=config.use_wandb, use_mlflow=config.use_mlflow,
        )
    finally:
        adapter.observer.close()

    gepa_ids = [candidate_id(c) for c in result.candidates]
    for i, instructions in enumerate(result.candidates):
        parents = [gepa_ids[p] for p in result.parents[i] if p is not None]
        scores = {ids[j]: float(s) for j, s in result.val_subscores[i].items()}
        # add() only refreshes the scores of a candidate already carried (the seed, at index 0).
        population.add(Candidate(id=gepa_ids[i], instructions=dict(instructions), scores=scores,
                                 parents=parents, born_cycle=cycle))
    population = population.select_top_k()
    best = population.best()
    tried = proposer.outcomes["proposed"] - outcomes0.get("proposed", 0)
    failures = {k: v - outcomes0.get(k, 0) for k, v in proposer.outcomes.items() if k != "proposed"}
    lm_calls, lm_failures, p_tok, c_tok, lm_s = (a - b for a, b in zip(_snapshot(proposer), reflection0, strict=True))
    record = RoundRecord(
        cycle=cycle, proposals_tried=tried, proposals_accepted=len(result.candidates) - 1,
        proposal_failures={k: v for k, v in failures.items() if v}, metric_calls=result.total_metric_calls
        + rescoring_calls, policy_rollouts=adapter.rollouts, reflection_calls=lm_calls,
        reflection_failures=lm_failures, reflection_prompt_tokens=p_tok, reflection_completion_tokens=c_tok,
        reflection_seconds=lm_s, seconds=time.perf_counter() - t0, best_id=best.id, best_score=best.mean_score,
        population=[{"id": c.id, "mean_score": c.mean_score, "parents": c.parents} for c in population.candidates],
    )
    return population, record


def _snapshot(proposer: Proposer) -> tuple:
    s = proposer.lm.stats
    return (s.calls, s.failures, s.prompt_tokens, s.completion_tokens, s.seconds)
