"""Fast weights with a scripted policy and reflection LM: acceptance, rejection, ledger, failures, JSON."""

import json

import pytest

from fst_prompt.config import GEPAConfig, ReflectionConfig
from fst_prompt.fast.adapter import TaskAdapter
from fst_prompt.fast.population import Candidate, Population
from fst_prompt.fast.reflection import Proposer, ReflectionLM
from fst_prompt.fast.round import gepa_round
from tests.scripted import GOOD, ScriptedClient, ScriptedPolicy

FAST = ReflectionConfig(base_url="http://unused", retries=1, backoff_s=0)


def run_round(qa_task, replies, budget=30, population=None):
    policy = ScriptedPolicy()
    client = ScriptedClient(replies)
    proposer = Proposer(ReflectionLM(FAST, client=client), FAST.template)
    population = population or Population.seed(qa_task.seed_instructions(), k=4)
    config = GEPAConfig(max_metric_calls=budget, anchor_size=6, reflection_minibatch_size=3)
    new, record = gepa_round(population, qa_task, policy, qa_task.val[:6], proposer, config, progress=False)
    return new, record, policy, client, proposer


def test_better_proposal_is_accepted_and_joins_the_population(qa_task):
    population, record, _, client, _ = run_round(qa_task, [f"```\n{GOOD}: reply with the sum only.\n```"])
    assert record.proposals_accepted >= 1
    best = population.best()
    assert best.instructions == {"self": f"{GOOD}: reply with the sum only."}
    assert best.mean_score == 1.0 and len(best.scores) == 6
    seed = next(c for c in population.candidates if c.instructions == qa_task.seed_instructions())
    assert best.parents == [seed.id] and seed.mean_score == 0.0
    assert "What is" in client.prompts[0]  # the rollouts reach the reflection LM
    assert "Wrong: expected" in client.prompts[0]  # and so does the metric's feedback


def test_worse_proposal_is_rejected(qa_task):
    population, record, *_ = run_round(qa_task, ["```\nBe vague.\n```"] * 20, budget=20)
    assert record.proposals_tried >= 1 and record.proposals_accepted == 0
    assert [c.instructions for c in population.candidates] == [qa_task.seed_instructions()]


def test_ledger_equals_rollouts_the_policy_generated(qa_task):
    _, record, policy, *_ = run_round(qa_task, [f"```\n{GOOD}\n```"], budget=30)
    assert record.policy_rollouts == policy.stats.rollouts > 0
    # gepa counts cache hits (re-evaluating a scored pair) as metric calls; the policy never saw them twice.
    assert record.metric_calls >= record.policy_rollouts


@pytest.mark.parametrize("failure", [TimeoutError("timed out"), RuntimeError("server down"), "", "```\n\n```"])
def test_reflection_failures_are_counted_and_the_round_completes(qa_task, failure):
    # Two failures per proposal (1 retry) for raised errors; one for a bad text. Then a good proposal.
    replies = [failure, failure] if isinstance(failure, BaseException) else [failure]
    population, record, *_ = run_round(qa_task, [*replies, f"```\n{GOOD}\n```"], budget=40)
    key = "lm_failed" if isinstance(failure, BaseException) else "empty"
    assert record.proposal_failures == {key: 1}
    if isinstance(failure, BaseException):
        assert record.reflection_failures == 2
    assert population.best().mean_score == 1.0  # the run went on and learned


def test_unchanged_proposal_is_not_evaluated(qa_task):
    seed = qa_task.seed_instructions()["self"]
    _, record, *_ = run_round(qa_task, [f"```\n{seed}\n```"], budget=12)
    assert record.proposal_failures.get("unchanged") == 1


def test_adapter_caches_within_a_round(qa_task):
    policy = ScriptedPolicy()
    adapter = TaskAdapter(qa_task, policy)
    first = adapter.evaluate(qa_task.val[:4], {"self": GOOD})
    again = adapter.evaluate(qa_task.val[:4], {"self": GOOD}, capture_traces=True)
    assert first.scores == again.scores == [1.0] * 4
    assert policy.stats.rollouts == 4 and adapter.cache_hits == 4
    dataset = adapter.make_reflective_dataset({"self": GOOD}, again, ["self"])
    assert dataset["self"][0] == {"Inputs": {"question": "What is 100 + 100?"}, "Generated Outputs": "200",
                                  "Feedback": "Correct."}


def test_population_json_round_trip_and_top_k():
    pop = Population(k=2, candidates=[
        Candidate("a", {"p": "A"}, {"x": 1.0, "y": 0.0}, [], 0),
        Candidate("b", {"p": "B"}, {"x": 0.0, "y": 1.0}, ["a"], 1),
        Candidate("c", {"p": "C"}, {"x": 0.5, "y": 0.5}, ["a"], 1),  # best on no instance: dominated
        Candidate("d", {"p": "D"}, {"x": 0.0, "y": 0.0}, ["b"], 2),
    ])
    text = json.dumps(pop.to_json())
    assert Population.from_json(json.loads(text)).to_json() == pop.to_json()
    assert {c.id for c in pop.pareto_front()} == {"a", "b"}
    assert [c.id for c in pop.select_top_k().candidates] == ["a", "b"]
    with pytest.raises(ValueError, match="schema_version"):
        Population.from_json({**pop.to_json(), "schema_version": 99})
