"""The fast step of a cycle: one GEPA round under the current weights, logged to the run directory; and the
reflection LM's proposer, which lives as long as the run.

    with open_proposer(config.reflection, run_dir) as proposer:
        population, record = fast_step(task, policy, population, proposer, config.gepa, scoring, anchor=...)

With one rollout stream (`served`: scores from the RL rollouts of the last T steps, which are then the anchor)
the round reads RL's rollouts and judges new proposals on a minibatch (`round.py`) or online, in the next T
RL steps (`online.py`); otherwise it samples its own, anchored on the problems the next T RL steps use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from fst_prompt.config import GEPAConfig, ReflectionConfig, RLConfig
from fst_prompt.console import say
from fst_prompt.fast.adapter import Scoring
from fst_prompt.fast.online import online_round
from fst_prompt.fast.population import Population
from fst_prompt.fast.reflection import Proposer, open_reflection_lm
from fst_prompt.fast.round import gepa_round
from fst_prompt.policy import Policy, Sampling
from fst_prompt.rollouts import StoredScore
from fst_prompt.rundir import RoundRecord, RunDir
from fst_prompt.task import Task


def fast_step(task: Task, policy: Policy, population: Population, proposer: Proposer, gepa: GEPAConfig,
              scoring: Scoring, *, anchor: list[int], cycle: int, run_dir: RunDir, progress: bool = True,
              served: dict[tuple[str, str], StoredScore] | None = None, new_rollouts: int | None = None,
              judging: str = "minibatch") -> tuple[Population, RoundRecord]:
    """A GEPA round on the train problems `anchor` (indices), its record appended to rounds.jsonl. `served`:
    scores read from the stored RL rollouts (one stream), `new_rollouts`: the most it may draw; `judging`:
    minibatch or online (with `served` only)."""
    examples = [task.train[i] for i in anchor]
    if judging == "online" and served:
        population, record = online_round(population, task, served, examples, proposer, gepa, cycle=cycle)
    else:
        population, record = gepa_round(population, task, policy, examples, proposer, gepa, scoring=scoring,
                                        cycle=cycle, work_dir=run_dir.gepa_dir(cycle), log_path=run_dir.gepa_log,
                                        progress=progress, served=served, new_rollouts=new_rollouts)
    record = replace(record, anchor=list(anchor))
    run_dir.append_round(record)
    _report(record)
    return population, record


def _report(record: RoundRecord) -> None:
    unusable = sum(record.proposal_failures.values())
    if record.judging == "online":
        say(f"  {record.proposals_accepted}/{len(record.proposals)} trials kept; {len(record.trials)} new on trial "
            f"({unusable} unusable); 0 new rollouts, {record.reused_rollouts} RL rollouts read; best anchor score "
            f"{record.best_score:.3f}; {record.seconds:.0f} s")
    else:
        read = f", {record.reused_rollouts} RL rollouts read" if record.judging == "minibatch" else ""
        checks = f" ({record.val_rollouts} of them val checks)" if record.val_rollouts else ""
        say(f"  {record.proposals_accepted}/{record.proposals_tried} proposals accepted ({unusable} unusable); "
            f"{record.policy_rollouts} new rollouts{checks}{read}; best anchor score {record.best_score:.3f}; "
            f"{record.seconds:.0f} s")
    if record.all_reflection_failed:
        say(f"  every reflection call of this round failed ({record.reflection_calls}): the fast step changed "
            "nothing; see gepa.log and check reflection.base_url")
    gains = [f"{anchor:+.3f} / " + (f"{val:+.3f}" if val is not None else "-") for anchor, val in record.accepted_gains]
    if gains:
        say(f"  accepted proposals' gain over their parent, anchor / held-out val: {', '.join(gains)}")


def scoring_for(gepa: GEPAConfig, rl: RLConfig, *, trains: bool, max_new_tokens: int, cycle: int,
                stream: bool = False) -> Scoring:
    """How a fast step scores candidates: as RL samples (`rl.temperature`, `rl.top_p`,
    `rl.max_completion_length`, S rollouts a problem: 4, or 1 with one rollout `stream`, unless
    `gepa.samples_per_problem` says) in the modes that train, greedily (up to the policy's `max_new_tokens`) in
    gepa mode; seeded by the run's GEPA seed and the cycle. `gepa.temperature` overrides the temperature (0:
    greedy)."""
    temperature = gepa.temperature if gepa.temperature is not None else rl.temperature if trains else 0.0
    if temperature == 0:
        return Scoring()
    length = rl.max_completion_length if trains else max_new_tokens
    samples = gepa.samples_per_problem or (1 if stream else 4)
    return Scoring(samples=samples, sampling=Sampling(temperature, rl.top_p, length),
                   seed=(gepa.seed or 0) * 100_003 + cycle)


@contextlib.contextmanager
def open_proposer(reflection: ReflectionConfig, run_dir: RunDir, *, lm: Any = None) -> Iterator[Proposer]:
    """The reflection LM's proposer (a local server lives this long). `lm`: a `dspy.LM` to reflect with
    instead of the configured endpoint."""
    with open_reflection_lm(reflection, run_dir.path, dspy_lm=lm) as client:
        yield Proposer(client, reflection.template, max_chars=reflection.max_instruction_chars,
                       keep_task_statement=reflection.keep_task_statement)


def recall_rejected(proposer: Proposer, run_dir: RunDir, cycle: int, phase: str) -> None:
    """The proposals that earlier committed rounds rejected, as an uninterrupted run's proposer remembers them
    (a repeat is skipped, not evaluated again). `cycle`, `phase`: where the resumed run stands."""
    for record in run_dir.rounds():
        if record.cycle < cycle or (record.cycle == cycle and phase != "fast"):
            for instructions in record.rejected:
                proposer.reject(instructions)
