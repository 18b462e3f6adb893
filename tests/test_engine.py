"""The batching engine: same outputs as unbatched generation, ceil(N/B) generate calls, no lost errors."""

import math

import dspy
import pytest

from fst_prompt.engine import BatchingEngine, policy_lm
from fst_prompt.evaluate import evaluate
from fst_prompt.policy import Policy, Sampling
from fst_prompt.render import make_adapter, render


@pytest.mark.parametrize("n", [10, 4, 1])
def test_eval_batches_and_matches_unbatched_greedy(qa_task, tiny_policy, n):
    result = evaluate(qa_task, tiny_policy, split="val", n=n, progress=False)
    assert result.generate_calls == math.ceil(n / tiny_policy.batch_size)
    assert tiny_policy.stats.rollouts == n

    one_by_one = Policy(tiny_policy.model, tiny_policy.tokenizer, batch_size=1, sampling=tiny_policy.sampling)
    for rollout in result.rollouts:
        expected = one_by_one.generate([render(qa_task, qa_task.val[rollout.index])])[0].text
        assert rollout.completions == [expected]
    assert len({r.completions[0] for r in result.rollouts}) > 1 or n == 1  # the tiny model's text varies


def test_eval_records_scores_and_feedback(qa_task, tiny_policy):
    result = evaluate(qa_task, tiny_policy, split="val", n=3, progress=False)
    assert result.n == 3 and result.accuracy == 0.0  # random weights cannot add
    assert all(r.feedback.startswith("Wrong: expected") for r in result.rollouts)
    assert result.mean_completion_tokens == 8 and result.rollouts_per_s > 0
    assert result.truncated_rate == 1.0  # 8 tokens never reach the end of a turn


def test_program_failure_is_a_zero_score_not_an_exception(qa_task, tiny_policy, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tiny_policy, "generate", broken)
    result = evaluate(qa_task, tiny_policy, split="val", n=2, progress=False)
    assert [r.score for r in result.rollouts] == [0.0, 0.0]
    assert "failed on this example" in result.rollouts[0].feedback and "boom" in result.rollouts[0].feedback


def test_engine_respects_per_call_sampling(qa_task, tiny_policy):
    lm = policy_lm(tiny_policy, engine=BatchingEngine(tiny_policy), max_tokens=3)
    with dspy.context(lm=lm, adapter=make_adapter("text")):
        dspy.Predict(qa_task.predictors[0][1].signature)(question="hi")
    assert tiny_policy.stats.completion_tokens == 3


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(tiny_path):
    import torch

    torch.manual_seed(123)
    untouched = torch.rand(1).item()
    convs = [[{"role": "user", "content": "Tell me a story."}]] * 3
    outs = []
    for _ in range(2):
        policy = Policy.load(tiny_path, batch_size=3, seed=7, sampling=Sampling(temperature=1.0, max_new_tokens=6))
        torch.manual_seed(123)
        outs.append([g.text for g in policy.generate(convs)])
        assert torch.rand(1).item() == untouched  # generation drew from its own seeded stream
    assert outs[0] == outs[1]
    assert len(set(outs[0])) > 1  # sampled, not greedy


class TwoStep(dspy.Module):
    """A two-predictor program: draft an answer, then restate it."""

    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> draft")
        self.final = dspy.Predict("question, draft -> answer")

    def forward(self, question):
        draft = self.draft(question=question).draft
        return self.final(question=question, draft=draft)


def test_multi_predictor_program_batches_each_stage(qa_task, tiny_policy):
    from fst_prompt import Task

    task = Task(name="two", program=TwoStep(), train=qa_task.train, val=qa_task.val, test=qa_task.test,
                metric=qa_task.metric, adapter="text")
    assert [n for n, _ in task.predictors] == ["draft", "final"]
    result = evaluate(task, tiny_policy, split="val", n=8, instructions={"final": "Restate the draft."},
                      progress=False)
    assert all(len(r.completions) == 2 for r in result.rollouts)
    assert result.generate_calls == 2 * math.ceil(8 / tiny_policy.batch_size)  # each stage in full batches
    assert result.instructions["final"] == "Restate the draft."


def test_idle_worker_exits_and_restarts(tiny_policy):
    import time
    from concurrent.futures import ThreadPoolExecutor

    engine = BatchingEngine(tiny_policy, idle_s=0.1)
    lm = policy_lm(tiny_policy, engine=engine)

    def ask(question):  # off the main thread, with nobody hosting: a worker thread serves the call
        with dspy.context(lm=lm, adapter=make_adapter("text")):
            dspy.Predict("question -> answer")(question=question)

    with ThreadPoolExecutor(1) as pool:
        pool.submit(ask, "hi").result()
        time.sleep(0.5)
        assert engine._worker is None  # no thread left behind
        pool.submit(ask, "again").result()  # a new worker starts on demand
    assert tiny_policy.stats.generate_calls == 2


def test_generation_runs_on_the_thread_that_evaluates(qa_task, tiny_policy, monkeypatch):
    # A worker thread would run torch on a second OpenMP pool (engine.py's docstring): evaluate's caller and
    # a direct call on the main thread generate themselves, and no worker thread is started.
    import threading

    threads, generate = [], tiny_policy.generate
    monkeypatch.setattr(tiny_policy, "generate", lambda *a, **k: threads.append(threading.current_thread())
                        or generate(*a, **k))
    evaluate(qa_task, tiny_policy, split="val", n=6, progress=False)
    engine = BatchingEngine(tiny_policy)
    with dspy.context(lm=policy_lm(tiny_policy, engine=engine), adapter=make_adapter("text")):
        dspy.Predict("question -> answer")(question="hi")
    assert threads == [threading.main_thread()] * 3 and engine._worker is None
