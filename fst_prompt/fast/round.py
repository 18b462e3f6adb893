"""One GEPA round on the live policy: re-score the carried population, evolve from all of it, keep top-K.

    population, record = gepa_round(population, task, policy, anchor, proposer, config, scoring=scoring)

The round runs under the *current* weights (a fresh `TaskAdapter`, scoring as `scoring` says: sampled as
RL samples, S rollouts a problem). Every carried candidate is re-scored on the anchor set and enters
gepa's state as a seed: scored, no parents, eligible as a parent, on the Pareto front — the semantics of
gepa's proposed multi-seed warm start, built with gepa's public state (`GEPAState`, saved to the round's
directory, which `gepa.optimize(run_dir=...)` resumes from). Each proposal is recorded with its
minibatch scores; each accepted one with its anchor gain over its parent and, as an overfitting check,
its gain on the first `val_check_n` held-out val problems. All candidates then compete for K places.

One rollout stream (`served`, `new_rollouts`): the carried candidates' scores and the rollouts reflection reads
are the RL rollouts the slow loop drew under them (`rollouts.serve`), so a parent's side costs nothing; only
what the store lacks (a new proposal's minibatch and anchor scores) is rolled out, and the round stops before a
proposal could take its new rollouts past `new_rollouts`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy

from fst_prompt.config import GEPAConfig
from fst_prompt.console import RoundProgress
from fst_prompt.fast.adapter import Scored, Scoring, TaskAdapter, example_id
from fst_prompt.fast.population import Candidate, Population, candidate_id
from fst_prompt.fast.reflection import Proposer
from fst_prompt.policy import Policy
from fst_prompt.rollouts import StoredScore
from fst_prompt.rundir import RoundRecord
from fst_prompt.task import Task

# Proposer outcomes that are not unusable proposals
NOT_FAILURES = ("proposed", "unchanged_asked_again", "task_statement_restored")


class _LogFile:
    """gepa's logger protocol (`.log(msg)`), into the run directory instead of stdout."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def log(self, message: str) -> None:
        if self.path:
            with self.path.open("a") as f:
                f.write(message.rstrip() + "\n")


class _ProposalLog:
    """A gepa callback: every evaluated proposal with its minibatch scores and whether gepa accepted it."""

    def __init__(self, proposer: Proposer, minibatch_size: int) -> None:
        self.proposer, self.size, self.entries = proposer, minibatch_size, []

    def on_candidate_rejected(self, event: dict[str, Any]) -> None:
        self.entries.append(self.proposer.last | {"accepted": False, "minibatch_before": event["old_score"] / self.size,
                                                  "minibatch_after": event["new_score"] / self.size})
        self.proposer.reject(self.proposer.last["instructions"])

    def on_candidate_accepted(self, event: dict[str, Any]) -> None:
        self.entries.append(self.proposer.last | {"accepted": True, "index": event["new_candidate_idx"]})


def gepa_round(population: Population, task: Task, policy: Policy, anchor: list[dspy.Example],
               proposer: Proposer, config: GEPAConfig, *, scoring: Scoring | None = None, cycle: int = 0,
               work_dir: Path | None = None, log_path: Path | None = None, progress: bool = True,
               served: dict[tuple[str, str], StoredScore] | None = None, new_rollouts: int | None = None,
               ) -> tuple[Population, RoundRecord]:
    """`served`: scores read from the RL rollouts (one stream); `new_rollouts`: the most the round may draw."""
    import gepa

    t0, reflection0, outcomes0 = time.perf_counter(), reflection_snapshot(proposer), dict(proposer.outcomes)
    proposer.task_statement = task.seed_instructions() if proposer.keep_task_statement else {}
    proposer.forget_last_failure()  # a round resumed in a fresh process starts without one either
    scoring = scoring or Scoring()
    adapter = TaskAdapter(task, policy, scoring=scoring, records=config.reflection_records, served=served)
    ids = [example_id(ex) for ex in anchor]
    scored = {c.id: adapter.score(anchor, c.instructions) for c in population.candidates}  # older scores are stale
    for c in population.candidates:
        c.scores = dict(zip(ids, (s.score for s in scored[c.id]), strict=True))
    carried = sorted(population.candidates, key=lambda c: -c.mean_score)  # stable: the oldest first among ties

    # The budget counts the first seed's anchor scoring, as for a single seed; the others' re-scoring is extra.
    budget = config.max_metric_calls + (len(carried) - 1) * len(anchor)
    bar, log = RoundProgress(budget, proposer, show=progress), _ProposalLog(proposer, config.reflection_minibatch_size)
    # a proposal costs at most its rollouts on the whole anchor (its minibatch first, then the rest if accepted)
    per_proposal = len(anchor) * (scoring.samples if scoring.sampled else 1)
    stops = [lambda _state: proposer.fatal is not None]  # a refused endpoint ends the round
    if new_rollouts is not None:
        stops.append(lambda _state: adapter.rollouts + per_proposal > new_rollouts)
    with _round_dir(work_dir) as gepa_dir:
        _warm_start(carried, scored).save(str(gepa_dir))
        try:
            result = gepa.optimize(
                seed_candidate=carried[0].instructions, trainset=anchor, valset=anchor, adapter=adapter,
                custom_candidate_proposer=proposer, max_metric_calls=budget,
                reflection_minibatch_size=config.reflection_minibatch_size, use_merge=config.use_merge,
                seed=(config.seed or 0) + cycle, display_progress_bar=False, logger=_LogFile(log_path),
                run_dir=str(gepa_dir), track_best_outputs=False, callbacks=[bar, log],
                stop_callbacks=stops,
                use_wandb=config.use_wandb, use_mlflow=config.use_mlflow,
            )
        finally:
            bar.close()
    if proposer.fatal is not None:
        raise proposer.fatal

    gepa_ids = [candidate_id(c) for c in result.candidates]
    known = {c.id: c for c in carried}
    merged = Population(k=population.k, candidates=[])
    for i, instructions in enumerate(result.candidates):
        scores = {ids[j]: float(s) for j, s in result.val_subscores[i].items()}
        old = known.get(gepa_ids[i])
        merged.add(Candidate(id=gepa_ids[i], instructions=dict(instructions), scores=scores,
                             parents=old.parents if old else [gepa_ids[p] for p in result.parents[i] if p is not None],
                             born_cycle=old.born_cycle if old else cycle))
    rollouts_before_val = adapter.rollouts
    proposals = _check_accepted(log.entries, result, adapter, task, config.val_check_n)
    population = merged.select_top_k()
    best = population.best()
    failures = {k: v - outcomes0.get(k, 0) for k, v in proposer.outcomes.items() if k not in NOT_FAILURES}
    lm_calls, lm_failures, lm_retried, p_tok, c_tok, lm_s = reflection_since(proposer, reflection0)
    record = RoundRecord(
        cycle=cycle, proposals_tried=proposer.outcomes["proposed"] - outcomes0.get("proposed", 0),
        proposals_accepted=sum(p["accepted"] for p in proposals),
        proposal_failures={k: v for k, v in failures.items() if v}, metric_calls=result.total_metric_calls,
        policy_rollouts=adapter.rollouts, reflection_calls=lm_calls, reflection_failures=lm_failures,
        reflection_prompt_tokens=p_tok, reflection_completion_tokens=c_tok, reflection_seconds=lm_s,
        seconds=time.perf_counter() - t0, best_id=best.id, best_score=best.mean_score,
        population=[{"id": c.id, "mean_score": c.mean_score, "parents": c.parents} for c in population.candidates],
        proposals=proposals, reflection_retried=lm_retried, task=task.name,
        judging="minibatch" if served is not None else "own", reused_rollouts=adapter.reused,
        val_rollouts=adapter.rollouts - rollouts_before_val,
    )
    return population, record


def _warm_start(carried: list[Candidate], scored: dict[str, list[Scored]]):
    """gepa's state with every carried candidate as a seed: scored on the anchor, no parents."""
    from gepa.core.state import GEPAState, ValsetEvaluation

    def evaluation(c: Candidate) -> ValsetEvaluation:
        rows = scored[c.id]
        return ValsetEvaluation(outputs_by_val_id={j: r.rollouts[0].prediction or {} for j, r in enumerate(rows)},
                                scores_by_val_id={j: r.score for j, r in enumerate(rows)})

    state = GEPAState(carried[0].instructions, evaluation(carried[0]), track_best_outputs=False)
    for c in carried[1:]:
        state.update_state_with_new_program([], c.instructions, evaluation(c), None, 0)
    state.num_full_ds_evals = len(carried)
    state.total_num_evals = len(carried) * len(scored[carried[0].id])
    return state


def _check_accepted(entries: list[dict[str, Any]], result: Any, adapter: TaskAdapter, task: Task, val_n: int,
                    ) -> list[dict[str, Any]]:
    """Each accepted proposal's anchor gain over its parent, and its gain on held-out val (same scoring)."""
    val = task.val[:val_n]
    val_score: dict[str, float] = {}

    def on_val(instructions: dict[str, str]) -> float:
        key = candidate_id(instructions)
        if key not in val_score:
            rows = adapter.score(val, instructions)
            val_score[key] = sum(r.score for r in rows) / len(rows)
        return val_score[key]

    out = []
    for entry in entries:
        entry = dict(entry)
        if entry.pop("accepted"):
            i = entry.pop("index")
            parent = next((p for p in result.parents[i] if p is not None), None)
            entry.update(accepted=True, anchor_score=result.val_aggregate_scores[i])
            if parent is not None:
                entry["anchor_gain"] = result.val_aggregate_scores[i] - result.val_aggregate_scores[parent]
                if val:
                    entry["val_gain"] = on_val(result.candidates[i]) - on_val(result.candidates[parent])
                    entry["val_n"] = len(val)
        else:
            entry["accepted"] = False
        out.append(entry)
    return out


@contextlib.contextmanager
def _round_dir(work_dir: Path | None) -> Iterator[Path]:
    """Where gepa keeps its state this round: `work_dir`, emptied first (a round cut off starts over), or a
    temporary directory."""
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="fst-gepa-") as tmp:
            yield Path(tmp)
        return
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    yield work_dir


def reflection_since(proposer: Proposer, snapshot: tuple) -> tuple:
    """What the reflection LM spent since `snapshot` (`reflection_snapshot`): calls, failures, retried, prompt and
    completion tokens, seconds."""
    return tuple(a - b for a, b in zip(reflection_snapshot(proposer), snapshot, strict=True))


def reflection_snapshot(proposer: Proposer) -> tuple:
    s = proposer.lm.stats
    # a journal replay counts as the call it stands for: a re-run round's record equals the uninterrupted one's
    return (s.calls + s.replayed, s.failures, s.retried, s.prompt_tokens, s.completion_tokens, s.seconds)
