"""Arbitrary text (unicode, control characters, up to 100 kB) through every shipped task's scoring path
(parse + metric, as RL and GEPA score a completion): always a Feedback with a score in [0, 1], never an
exception."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fst_prompt import Feedback
from fst_prompt.programs import available_tasks, load_task
from fst_prompt.render import score_completion

TASKS = {name: load_task(name, sizes=(4, 4, 4)) for name in available_tasks()}

# Free text, text that looks like an answer (numbers, "Answer:" lines, field markers), and very long text.
answer_like = st.builds(lambda pre, n, post: f"{pre}Answer: {n}{post}", st.text(max_size=50),
                        st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=10)), st.text(max_size=50))
markers = st.sampled_from(["[[ ## answer ## ]]", "[[ ## completed ## ]]", "<answer>", "</answer>", "{\"answer\":",
                           "```", "\x00", "\r\n", "\u202e", "9" * 400, "-0", "1e309", "NaN"])
texts = st.one_of(st.text(), st.text(alphabet=st.characters(codec="utf-8"), max_size=2000), answer_like,
                  st.lists(st.one_of(markers, st.text(max_size=20)), max_size=30).map("".join),
                  st.builds(lambda t, k: (t or "x") * k, st.text(max_size=10), st.integers(1, 100_000 // 10)))


@pytest.mark.parametrize("name", sorted(TASKS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts)
def test_any_text_scores_without_raising(name, text):
    task = TASKS[name]  # a multi-predictor program's reply to score is its last predictor's
    feedback, _ = score_completion(task, task.train[0], text, predictor=task.predictors[-1][0])
    assert isinstance(feedback, Feedback) and isinstance(feedback.feedback, str)
    assert math.isfinite(feedback.score) and 0.0 <= feedback.score <= 1.0
