"""Fast weights with a scripted policy and reflection LM: acceptance, rejection, ledger, failures, JSON."""

import json

import pytest

from fst_prompt.config import GEPAConfig, ReflectionConfig
from fst_prompt.fast.adapter import Scoring, TaskAdapter
from fst_prompt.fast.population import Candidate, Population, candidate_id
from fst_prompt.fast.reflection import Proposer, ReflectionLM, clean_proposal
from fst_prompt.fast.round import gepa_round
from fst_prompt.policy import Generation, Sampling
from tests.scripted import GOOD, ScriptedClient, ScriptedPolicy

FAST = ReflectionConfig(base_url="http://unused", retries=1, backoff_s=0)


class ParityPolicy(ScriptedPolicy):
    """Answers 'What is i + i?' right when the system prompt says EVEN and i is even, or ODD and i is odd."""

    def _generate_batch(self, conversations, sampling, seeds=None):
        gens = super()._generate_batch(conversations, sampling, seeds)
        out = []
        for conv, gen in zip(conversations, gens, strict=True):
            i = int(conv[-1]["content"].split()[2])
            word = "EVEN" if i % 2 == 0 else "ODD"
            text = str(2 * i) if word in conv[0]["content"] else gen.text
            out.append(Generation(text, gen.prompt_tokens, gen.completion_tokens, gen.finish_reason))
        return out


def run_round(qa_task, replies, budget=30, population=None, work_dir=None, policy=None, keep_task_statement=False):
    policy = policy or ScriptedPolicy()
    client = ScriptedClient(replies)
    proposer = Proposer(ReflectionLM(FAST, client=client), FAST.template, keep_task_statement=keep_task_statement)
    population = population or Population.seed(qa_task.seed_instructions(), k=4)
    config = GEPAConfig(max_metric_calls=budget, anchor_size=6, reflection_minibatch_size=3, val_check_n=4)
    new, record = gepa_round(population, qa_task, policy, qa_task.train[:4] + qa_task.test[:2], proposer, config,
                             work_dir=work_dir, progress=False)
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
    # the proposal is recorded with its gain on the anchor and, as an overfitting check, on held-out val
    (accepted,) = [p for p in record.proposals if p["accepted"]]
    assert accepted["instructions"] == best.instructions and accepted["parent"] == seed.id
    assert accepted["anchor_gain"] == 1.0 and accepted["val_gain"] == 1.0 and accepted["val_n"] == 4


def test_warm_start_puts_every_carried_candidate_in_gepas_state(qa_task, tmp_path):
    from gepa.core.state import GEPAState

    carried = [{"self": "Answer the question."}, {"self": "EVEN numbers."}, {"self": "ODD numbers."}]
    population = Population(k=4, candidates=[Candidate(candidate_id(c), c) for c in carried])
    replies = [f"```\nBe vague, take {i}.\n```" for i in range(8)]
    new, record, *_ = run_round(qa_task, replies, budget=6 + 8 * 3, population=population,
                                work_dir=tmp_path / "round", policy=ParityPolicy())
    state = GEPAState.load(str(tmp_path / "round"))
    # All carried candidates are seeds (best first, then in carried order): scored on the anchor, no parents ...
    assert state.program_candidates[:3] == [carried[1], carried[2], carried[0]]
    assert state.parent_program_for_candidate[:3] == [[None], [], []]
    assert all(len(state.prog_candidate_val_subscores[i]) == 6 for i in range(3))
    assert {c.id for c in new.candidates} == {candidate_id(c) for c in carried}  # no proposal beat them
    # ... and any on the Pareto front can be a parent (EVEN and ODD each win some problems), not only the first.
    parents = {p["parent"] for p in record.proposals}
    assert len(parents) >= 2 and parents <= {candidate_id(c) for c in carried}


def test_a_proposal_rejected_before_is_not_evaluated_again(qa_task):
    _, record, _, _, proposer = run_round(qa_task, ["```\nBe vague.\n```"] * 6, budget=40)
    assert record.proposals_tried == 1 and record.proposal_failures.get("duplicate", 0) >= 1
    assert [p["accepted"] for p in record.proposals] == [False]
    assert proposer.outcomes["duplicate"] >= 1


def test_gepas_retry_of_a_failed_proposal_is_skipped_by_content_not_by_object():
    from fst_prompt.fast.reflection import ProposalError

    client = ScriptedClient(["```\nAnswer.\n```"] * 4)  # the candidate handed back: unusable ("unchanged")
    proposer = Proposer(ReflectionLM(FAST, client=client), FAST.template, keep_task_statement=False)
    candidate = {"self": "Answer."}

    def dataset(answer):  # a fresh object each time, as gepa builds one per iteration
        return {"self": [{"Inputs": {"question": "1 + 1"}, "Generated Outputs": answer, "Feedback": "wrong"}]}

    first = dataset("3")  # kept alive, so the retry's object has another id
    with pytest.raises(ProposalError):
        proposer(candidate, first, ["self"])
    assert len(client.prompts) == 2  # asked, then asked again with the nudge
    with pytest.raises(ProposalError, match="failed a moment ago"):  # gepa's retry: equal content, a new object
        proposer(candidate, dataset("3"), ["self"])
    assert len(client.prompts) == 2
    with pytest.raises(ProposalError, match="unchanged"):  # another minibatch is asked, wherever it is allocated
        proposer(candidate, dataset("4"), ["self"])
    assert len(client.prompts) == 4


@pytest.mark.parametrize(("reply", "expected"), [
    ("Here is the improved instruction:\nAdd the numbers.", "Add the numbers."),
    ("Improved Instruction:\n\"Add them.\"", "Add them."),
    ("Add.\n```\n```text\nSomething else", "Add."),
    ("New instructions for the assistant: Do X.\n\n\n\nEnd with Answer: <n>", "Do X.\n\nEnd with Answer: <n>"),
    ("Instructions matter: add the numbers.", "Instructions matter: add the numbers."),
])
def test_proposals_are_cleaned_of_residue(reply, expected):
    assert clean_proposal(reply) == expected


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


def test_unchanged_proposal_is_asked_again_once_then_not_evaluated(qa_task):
    seed = qa_task.seed_instructions()["self"]
    _, record, _, client, proposer = run_round(qa_task, [f"```\n{seed}\n```"] * 2, budget=12)
    assert record.proposal_failures.get("unchanged") == 1 and proposer.outcomes["unchanged_asked_again"] >= 1
    assert "must be different" in client.prompts[1] and "must be different" not in client.prompts[0]


def test_an_unchanged_proposal_asked_again_can_succeed(qa_task):
    seed = qa_task.seed_instructions()["self"]
    population, record, *_ = run_round(qa_task, [f"```\n{seed}\n```", f"```\n{GOOD}\n```"], budget=30)
    assert "unchanged" not in record.proposal_failures and population.best().mean_score == 1.0


def test_a_proposal_that_drops_the_task_statement_gets_it_back(qa_task):
    seed = qa_task.seed_instructions()["self"]
    reply = f"```\n{GOOD}: reply with the sum only.\n```"
    population, record, _, client, proposer = run_round(qa_task, [reply], keep_task_statement=True)
    assert population.best().instructions == {"self": f"{seed}\n{GOOD}: reply with the sum only."}
    assert proposer.outcomes["task_statement_restored"] >= 1 and not record.proposal_failures
    # a proposal that already carries it is left alone
    kept = f"{GOOD}. {seed} Reply with the sum only."
    population, *_ = run_round(qa_task, [f"```\n{kept}\n```"], keep_task_statement=True)
    assert population.best().instructions == {"self": kept}


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


def test_sampled_scoring_is_the_mean_of_s_seeded_rollouts(qa_task):
    policy = ScriptedPolicy()
    adapter = TaskAdapter(qa_task, policy, scoring=Scoring(samples=3, sampling=Sampling(1.0, 1.0, 8), seed=7))
    batch = adapter.evaluate(qa_task.val[:2], {"self": GOOD}, capture_traces=True)
    assert batch.scores == [1.0, 1.0] and policy.stats.rollouts == 6
    assert adapter.scoring.seeds(qa_task.val[0]) == Scoring(samples=3, seed=7, sampling=Sampling(1.0)).seeds(
        qa_task.val[0])  # the same seeds for every candidate: common random numbers
    assert adapter.scoring.seeds(qa_task.val[0]) != adapter.scoring.seeds(qa_task.val[1])
    dataset = adapter.make_reflective_dataset({"self": GOOD}, batch, ["self"])
    assert dataset["self"][0]["Feedback"].startswith("3 of 3 sampled replies were correct.")


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


def test_reflection_sees_the_wrong_problems_first_and_one_right_one():
    from fst_prompt.fast.adapter import Scored, shown_to_reflection

    scores = [1.0, 0.0, 0.5, 1.0, 0.0, 0.25, 0.0]
    trajectories = [{"example": i, "scored": Scored(s, [])} for i, s in enumerate(scores)]
    shown = [t["example"] for t in shown_to_reflection(trajectories, 4)]
    assert shown == [0, 1, 4, 6]  # the three worst (0.0s), then the first right one; in minibatch order
    assert [t["example"] for t in shown_to_reflection(trajectories, 5)] == [0, 1, 4, 5, 6]
    assert shown_to_reflection(trajectories, None) == trajectories == shown_to_reflection(trajectories, 7)
    all_wrong = [{"example": i, "scored": Scored(0.0, [])} for i in range(5)]
    assert [t["example"] for t in shown_to_reflection(all_wrong, 2)] == [0, 1]


def test_reflection_sees_as_many_expected_answers_as_fit():
    from fst_prompt.fast.adapter import Scored, shown_to_reflection

    gold = ["a", "a", "a", "b", "a", "c", "b", "a"]
    scores = [0.0, 0.0, 0.0, 0.25, 0.0, 0.5, 0.0, 1.0]
    trajectories = [{"example": i, "scored": Scored(s, []), "gold": g}
                    for i, (g, s) in enumerate(zip(gold, scores, strict=True))]
    shown = [t["example"] for t in shown_to_reflection(trajectories, 4, key=lambda t: t["gold"])]
    assert shown == [0, 5, 6, 7]  # the worst "a" and "b", then "c" (worse than a second "a"), then the right one
    assert [t["example"] for t in shown_to_reflection(trajectories, 4)] == [0, 1, 2, 7]  # no key: the worst first
    # answers that never repeat (chain_sum) keep the worst-first order
    assert shown_to_reflection(trajectories, 4) == shown_to_reflection(trajectories, 4, key=lambda t: t["example"])


def test_reflection_answers_are_journaled_and_replayed(tmp_path):
    journal = tmp_path / "reflection_journal.jsonl"
    first = ScriptedClient(["```\nA\n```", "```\nB\n```"])
    lm = ReflectionLM(FAST, client=first, journal=journal)
    assert lm("prompt 1") == "```\nA\n```" and lm("prompt 2") == "```\nB\n```" and lm.stats.calls == 2
    again = ScriptedClient([RuntimeError("must not be called")])
    replay = ReflectionLM(FAST, client=again, journal=journal)  # a new process, after a crash
    assert replay("prompt 2") == "```\nB\n```" and replay("prompt 1") == "```\nA\n```"
    assert again.prompts == [] and replay.stats.calls == 0 and replay.stats.replayed == 2
    other_seed = ReflectionLM(FAST.model_copy(update={"seed": 7}), client=ScriptedClient(["```\nC\n```"]),
                              journal=journal)
    assert other_seed("prompt 1") == "```\nC\n```"  # another request (seed, model, prompt ...) is asked anew
