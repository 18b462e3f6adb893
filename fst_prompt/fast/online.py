"""Online judging (one rollout stream, `gepa.judging: online`): proposals are rated by the RL rollouts drawn under
them, as E-SPL (arXiv 2602.14697) rates its system prompts, and the fast step draws no policy rollout at all.

    population, record = online_round(population, task, served, anchor, proposer, config, cycle=c)

A fast step (1) scores the carried candidates and the proposals on trial since the last step from the RL
rollouts of the last T steps (`served`: every context of the population has rollouts there by construction of
the mixed groups); (2) keeps at most K of them by the population's Pareto rule (gepa's), so a trial is kept
or dropped like any candidate; (3) puts `config.trials` new proposals on trial: each from a parent chosen by
gepa's Pareto sampler, made by the reflection LM from that parent's own stored rollouts on a minibatch of
the anchor (the worst-scored problems first and one right one, as `TaskAdapter.make_reflective_dataset`
presents them). The trials join
the next T RL steps' contexts beside the K candidates; the best candidate is evaluated and exported only once
it has been kept.
"""

from __future__ import annotations

import random
import time
from typing import Any

import dspy

from fst_prompt.config import GEPAConfig
from fst_prompt.fast.adapter import TaskAdapter, example_id
from fst_prompt.fast.population import Candidate, Population, candidate_id
from fst_prompt.fast.reflection import ProposalError, Proposer
from fst_prompt.fast.round import NOT_FAILURES, reflection_since, reflection_snapshot
from fst_prompt.rollouts import StoredScore
from fst_prompt.rundir import RoundRecord
from fst_prompt.task import Task


def online_round(population: Population, task: Task, served: dict[tuple[str, str], StoredScore],
                 anchor: list[dspy.Example], proposer: Proposer, config: GEPAConfig, *, cycle: int,
                 ) -> tuple[Population, RoundRecord]:
    t0, reflection0, outcomes0 = time.perf_counter(), reflection_snapshot(proposer), dict(proposer.outcomes)
    proposer.task_statement = task.seed_instructions() if proposer.keep_task_statement else {}
    proposer.forget_last_failure()
    ids = [example_id(ex) for ex in anchor]
    reused = 0
    everyone = Population(k=population.k, candidates=[])
    for c in population.candidates + population.trials:
        scores = {pid: served[(c.id, pid)] for pid in ids if (c.id, pid) in served}
        reused += sum(s.n for s in scores.values())
        everyone.add(Candidate(id=c.id, instructions=c.instructions, scores={p: s.score for p, s in scores.items()},
                               parents=c.parents, born_cycle=c.born_cycle))
    kept = everyone.select_top_k()
    kept_ids = {c.id for c in kept.candidates}
    judged = []
    for trial in population.trials:
        scored = next(c for c in everyone.candidates if c.id == trial.id)
        parent = next((c for c in everyone.candidates if trial.parents and c.id == trial.parents[0]), None)
        entry: dict[str, Any] = {"parent": trial.parents[0] if trial.parents else None,
                                 "instructions": trial.instructions, "accepted": trial.id in kept_ids,
                                 "trial_score": scored.mean_score, "problems": len(scored.scores)}
        if parent is not None:
            shared = [p for p in scored.scores if p in parent.scores]
            if shared:
                entry["anchor_gain"] = (sum(scored.scores[p] - parent.scores[p] for p in shared) / len(shared))
        if not entry["accepted"]:
            proposer.reject(trial.instructions)
        judged.append(entry)

    trials = _propose(kept, served, anchor, task, proposer, config, cycle)
    population = Population(k=population.k, candidates=kept.candidates, trials=trials)
    best = population.best()
    failures = {k: v - outcomes0.get(k, 0) for k, v in proposer.outcomes.items() if k not in NOT_FAILURES}
    lm_calls, lm_failures, lm_retried, p_tok, c_tok, lm_s = reflection_since(proposer, reflection0)
    record = RoundRecord(
        cycle=cycle, proposals_tried=len(trials), proposals_accepted=sum(e["accepted"] for e in judged),
        proposal_failures={k: v for k, v in failures.items() if v}, metric_calls=0, policy_rollouts=0,
        reflection_calls=lm_calls, reflection_failures=lm_failures, reflection_prompt_tokens=p_tok,
        reflection_completion_tokens=c_tok, reflection_seconds=lm_s, seconds=time.perf_counter() - t0,
        best_id=best.id, best_score=best.mean_score,
        population=[{"id": c.id, "mean_score": c.mean_score, "parents": c.parents} for c in population.candidates],
        proposals=judged, reflection_retried=lm_retried, task=task.name, judging="online", reused_rollouts=reused,
        trials=[{"id": t.id, "parent": t.parents[0], "instructions": t.instructions} for t in trials],
    )
    return population, record


def _propose(population: Population, served: dict[tuple[str, str], StoredScore], anchor: list[dspy.Example],
             task: Task, proposer: Proposer, config: GEPAConfig, cycle: int) -> list[Candidate]:
    """`config.trials` proposals, each from a Pareto-sampled parent's stored rollouts (no policy call)."""
    from gepa.gepa_utils import select_program_candidate_from_pareto_front

    rng = random.Random((config.seed or 0) * 1_000_003 + cycle)
    adapter = TaskAdapter(task, None, records=config.reflection_records, served=served)
    fronts = population._instance_fronts()
    means = [c.mean_score for c in population.candidates]
    modules = [name for name, _ in task.predictors]
    trials: list[Candidate] = []
    for j in range(config.trials):
        i = select_program_candidate_from_pareto_front(fronts, means, rng) if fronts else 0
        parent = population.candidates[i]
        rows = [ex for ex in anchor if (parent.id, example_id(ex)) in served]
        if not rows:
            continue  # nothing stored under this parent: nothing to reflect on
        # each proposal reflects on a minibatch of them, as in gepa (the same rows would ask the same question)
        picked = set(rng.sample(range(len(rows)), min(config.reflection_minibatch_size, len(rows))))
        rows = [ex for i, ex in enumerate(rows) if i in picked]
        batch = adapter.evaluate(rows, parent.instructions, capture_traces=True)
        component = modules[(cycle + j) % len(modules)]
        dataset = adapter.make_reflective_dataset(parent.instructions, batch, [component])
        try:
            new_texts = proposer(parent.instructions, dataset, [component])
        except ProposalError:
            continue
        child = parent.instructions | new_texts
        cid = candidate_id(child)
        if cid in {c.id for c in population.candidates + trials}:
            continue
        trials.append(Candidate(id=cid, instructions=child, parents=[parent.id], born_cycle=cycle))
    return trials
