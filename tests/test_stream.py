"""One rollout stream: the rollout store, scores and reflection read from RL's rollouts, staleness, online judging."""

import json

import pytest

from fst_prompt.config import GEPAConfig
from fst_prompt.fast.adapter import TaskAdapter, example_id
from fst_prompt.fast.online import online_round
from fst_prompt.fast.population import Candidate, Population, candidate_id
from fst_prompt.fast.reflection import Proposer, ReflectionLM
from fst_prompt.fast.round import gepa_round
from fst_prompt.rollouts import RolloutStore, StaleScore, StoredRollout, recent_problems, serve
from tests.scripted import GOOD, ScriptedClient, ScriptedPolicy
from tests.test_fast import FAST


def row(version, index, candidate="c1", reward=0.0, problem=None, text="I am not sure.", task="qa"):
    return StoredRollout(version=version, task=task, example_index=index, problem=problem or f"p{index}",
                         candidate=candidate, prompt_hash="h", reward=reward, completion=text,
                         feedback=f"feedback {index} at {version}")


def test_the_store_round_trips_survives_a_torn_line_drops_and_summarises(tmp_path, capsys):
    store = RolloutStore(tmp_path / "rollouts.jsonl")
    first = [row(0, 0), row(0, 1, reward=1.0)]
    store.append(first)
    with store.path.open("a") as f:
        f.write('{"version": 1, "task": "qa", "exam')  # a crash in the middle of a write
    second = [row(1, 2), row(2, 3)]
    store.append(second)
    assert store.rows() == first + second
    assert "skipped 1 unreadable line" in capsys.readouterr().err
    assert store.drop_from(2) == 1 and store.rows() == first + second[:1]  # a resume redoing step 2 on
    assert store.summarise_before(1) == 2
    rows = store.rows()
    assert [(r.version, r.reward, r.summarised) for r in rows] == [(0, 0.0, True), (0, 1.0, True), (1, 0.0, False)]
    assert rows[0].completion is None and rows[0].feedback is None and rows[0].problem == "p0"
    assert store.rows(task="other") == [] and len(store) == 3


def test_reused_scores_carry_their_policy_version_and_stale_ones_are_refused():
    rows = [row(3, 0, reward=0.0), row(5, 0, reward=1.0), row(5, 1, candidate="c2", reward=1.0), row(9, 2)]
    served = serve(rows, now=9, max_age=6)  # step 9's own rows are the next steps', not read yet
    assert set(served) == {("c1", "p0"), ("c2", "p1")}
    p0 = served[("c1", "p0")]
    assert (p0.score, p0.n, p0.version) == (0.5, 2, 3)  # the mean of both rollouts, the older version kept
    assert [r.feedback for r in p0.rows] == ["feedback 0 at 3", "feedback 0 at 5"]
    assert set(serve(rows, now=10, max_age=6)) == {("c1", "p0"), ("c2", "p1"), ("c1", "p2")}
    assert [(k, s.version) for k, s in serve(rows, now=10, max_age=6).items()][0] == (("c1", "p0"), 5)  # 3: too old
    assert serve(rows, now=20, max_age=6) == {}
    with pytest.raises(StaleScore, match="older than the bound of 6"):
        p0.check(now=10, max_age=6)
    assert p0.check(now=9, max_age=6) is p0
    assert recent_problems(rows, now=9, max_age=6) == [0, 1]


class CountingPolicy(ScriptedPolicy):
    """The scripted policy, counting the rollouts it was asked for."""

    def __init__(self):
        super().__init__()
        self.asked = 0

    def _generate_batch(self, conversations, sampling, seeds=None):
        self.asked += len(conversations)
        return super()._generate_batch(conversations, sampling, seeds)


def stored_rows(qa_task, candidate, examples, reward, version=4):
    """What RL drew under `candidate` on `examples` (one rollout each), as the trainer stores it."""
    return [StoredRollout(version=version, task=qa_task.name, example_index=i, problem=example_id(ex),
                          candidate=candidate, prompt_hash="h", reward=reward,
                          completion=f"RL reply {i}" if reward < 1 else str(2 * i), feedback=f"RL feedback {i}")
            for i, ex in enumerate(examples)]


def test_reflection_reads_only_stored_rl_rollouts(qa_task):
    seed = Population.seed(qa_task.seed_instructions(), k=2).candidates[0]
    anchor = qa_task.train[:4]
    rows = stored_rows(qa_task, seed.id, anchor, 0.0)
    served = serve(rows, now=5, max_age=2)
    adapter = TaskAdapter(qa_task, None, served=served, records=2)  # no policy: a call would raise
    batch = adapter.evaluate(anchor, seed.instructions, capture_traces=True)
    dataset = adapter.make_reflective_dataset(seed.instructions, batch, ["self"])
    assert [r["Generated Outputs"] for r in dataset["self"]] == ["RL reply 0", "RL reply 1"]
    assert [r["Feedback"] for r in dataset["self"]] == ["RL feedback 0", "RL feedback 1"]
    assert adapter.rollouts == 0 and adapter.reused == 4

    # a whole round: the parent's side and reflection come from the store; only the child is rolled out
    policy, client = CountingPolicy(), ScriptedClient([f"```\n{GOOD}: reply with the sum only.\n```"])
    proposer = Proposer(ReflectionLM(FAST, client=client), FAST.template, keep_task_statement=False)
    config = GEPAConfig(max_metric_calls=100, reflection_minibatch_size=2, val_check_n=0)
    population, record = gepa_round(Population(k=2, candidates=[seed]), qa_task, policy, anchor, proposer, config,
                                    progress=False, served=served, new_rollouts=4)
    assert "RL reply" in client.prompts[0] and "RL feedback" in client.prompts[0]
    assert record.judging == "minibatch" and record.reused_rollouts == 4
    assert record.policy_rollouts == policy.asked == 4  # the child on its minibatch (2), then on the rest (2)
    assert population.best().instructions == {"self": f"{GOOD}: reply with the sum only."}
    # the budget is kept: a proposal that could cost more than what is left is not made
    _, none = gepa_round(Population(k=2, candidates=[seed]), qa_task, CountingPolicy(), anchor, proposer, config,
                         progress=False, served=served, new_rollouts=3)
    assert none.proposals_tried == 0 and none.policy_rollouts == 0


def test_online_judging_puts_proposals_on_trial_and_rates_them_by_rl_rollouts(qa_task):
    anchor = qa_task.train[:4]
    seed = Candidate(id=candidate_id(qa_task.seed_instructions()), instructions=qa_task.seed_instructions())
    replies = [f"```\n{GOOD}: reply with the sum only.\n```", "```\nSay anything.\n```"]
    client = ScriptedClient(replies)
    proposer = Proposer(ReflectionLM(FAST, client=client), FAST.template, keep_task_statement=False)
    config = GEPAConfig(population_size=1, trials=2, reflection_minibatch_size=2)
    served = serve(stored_rows(qa_task, seed.id, anchor, 0.0), now=5, max_age=2)
    population, record = online_round(Population(k=1, candidates=[seed]), qa_task, served, anchor, proposer, config,
                                      cycle=1)
    good, vague = population.trials
    assert good.instructions["self"].startswith(GOOD) and good.parents == [seed.id]
    assert population.contexts == [seed.instructions, good.instructions, vague.instructions]  # the next T steps'
    assert record.judging == "online" and record.policy_rollouts == 0 and record.reused_rollouts == 4
    assert [t["id"] for t in record.trials] == [good.id, vague.id] and "RL reply" in client.prompts[0]

    # the next T RL steps drew rollouts under all three: the scripted policy's answers, scored as RL scores them
    policy, rows = ScriptedPolicy(), []
    for candidate in population.candidates + population.trials:
        rollouts = TaskAdapter(qa_task, policy).score(anchor, candidate.instructions)
        rows += [StoredRollout(version=6, task=qa_task.name, example_index=i, problem=example_id(ex),
                               candidate=candidate.id, prompt_hash="h", reward=r.score,
                               completion=r.rollouts[0].completions[0], feedback=r.rollouts[0].feedback)
                 for i, (ex, r) in enumerate(zip(anchor, rollouts, strict=True))]
    assert {r.candidate: r.reward for r in rows if r.example_index == 0} == {seed.id: 0.0, good.id: 1.0, vague.id: 0.0}
    client.replies = ["```\nAnother idea.\n```"]
    config = GEPAConfig(population_size=1, trials=1, reflection_minibatch_size=2)
    judged, record = online_round(population, qa_task, serve(rows, now=7, max_age=2), anchor, proposer, config,
                                  cycle=2)
    assert [c.id for c in judged.candidates] == [good.id]  # K = 1: the trial that scored 1.0 took the place
    assert {(p["instructions"]["self"][:12], p["accepted"], p["trial_score"]) for p in record.proposals} == {
        (good.instructions["self"][:12], True, 1.0), (vague.instructions["self"][:12], False, 0.0)}
    assert record.proposals_accepted == 1 and vague.instructions in [p for p in record.rejected]
    assert [t.parents for t in judged.trials] == [[good.id]]  # the next trial grows from the kept one
    assert json.loads(json.dumps(judged.to_json()))["trials"][0]["id"] == judged.trials[0].id
    assert Population.from_json(judged.to_json()).contexts == judged.contexts


def test_online_trials_roll_out_in_the_next_rl_steps_and_own_keeps_the_old_fast_loop(tmp_path, tiny_path, endpoint):
    from fst_prompt import loop
    from fst_prompt.rundir import RunDir
    from tests.scripted import FakeOpenAI
    from tests.test_loop import PARITY, config

    FakeOpenAI.numbered = True  # every proposal new: none is refused as a repeat of a rejected one
    cfg = config(tmp_path / "online", tiny_path, endpoint, task=PARITY, gepa__judging="online", loop__cycles=3)
    state = loop.run_loop(cfg, progress=False)
    run = RunDir(cfg.run_dir)
    rounds, rows = run.rounds(), run.rollouts.rows()
    assert [r.judging for r in rounds] == ["minibatch", "online", "online"]  # the first: no RL rollouts yet
    trials = {t["id"] for t in rounds[1].trials}
    assert trials and rounds[1].policy_rollouts == rounds[2].policy_rollouts == 0
    # the trials rolled out in cycle 1's RL steps (versions 2-3), beside the population, and nowhere before
    assert trials <= {r.candidate for r in rows if r.version in (2, 3)}
    assert not trials & {r.candidate for r in rows if r.version < 2}
    # round 2 rated each trial by exactly those rollouts: its mean reward over the problems RL drew it on
    for judged in rounds[2].proposals:
        mine = [r for r in rows if r.version in (2, 3) and r.candidate == candidate_id(judged["instructions"])]
        by_problem = {}
        for r in mine:
            by_problem.setdefault(r.problem, []).append(r.reward)
        expected = sum(sum(v) / len(v) for v in by_problem.values()) / len(by_problem)
        assert judged["trial_score"] == pytest.approx(expected) and judged["problems"] == len(by_problem)
    assert state.ledger.gepa_rollouts == rounds[0].policy_rollouts  # only the first round drew its own

    own = config(tmp_path / "own", tiny_path, endpoint, task=PARITY, gepa__rollouts="own")
    loop.run_loop(own, progress=False)
    assert {(r.judging, r.reused_rollouts) for r in RunDir(own.run_dir).rounds()} == {("own", 0)}
    assert len(RunDir(own.run_dir).rollouts.rows()) == 16  # RL's rollouts are kept either way


def test_online_judging_without_the_stream_is_a_config_error(tmp_path, tiny_path, endpoint):
    from fst_prompt.config import ConfigError
    from tests.test_loop import config

    with pytest.raises(ConfigError, match="needs gepa.rollouts: rl"):
        config(tmp_path, tiny_path, endpoint, gepa__judging="online", gepa__rollouts="own")
