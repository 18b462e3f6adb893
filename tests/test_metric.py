"""Metric feedback for right, wrong and unparsable outputs, on a real reasoning-gym task."""

import pytest

from fst_prompt import gym_task
from fst_prompt.gym import last_number
from fst_prompt.render import score_completion
from tests.conftest import QA


@pytest.fixture(scope="module")
def chain_sum():
    return gym_task("chain_sum", QA, "chain_sum", {"min_terms": 2, "max_terms": 2, "max_digits": 2},
                    sizes=(8, 8, 8), adapter="text", numeric=True)


def test_right_answer(chain_sum):
    ex = chain_sum.val[0]
    fb, _ = score_completion(chain_sum, ex, ex.answer)
    assert fb.score == 1.0 and fb.feedback == f"Correct: {ex.answer} is the expected answer."


def test_right_number_in_a_sentence(chain_sum):
    ex = chain_sum.val[0]
    fb, _ = score_completion(chain_sum, ex, f"The final answer is {ex.answer}.")
    assert fb.score == 1.0 and "bare number is enough" in fb.feedback


def test_wrong_answer_names_expected_and_given(chain_sum):
    ex = chain_sum.val[0]
    wrong = str(int(ex.answer) + 1)
    fb, _ = score_completion(chain_sum, ex, f"It is {wrong}")
    assert fb.score == 0.0
    assert fb.feedback == (f"Wrong: expected {ex.answer}, but the final number in your answer was {wrong} "
                           f"(it held 'It is {wrong}').")


def test_no_number(chain_sum):
    fb, _ = score_completion(chain_sum, chain_sum.val[0], "I do not know")
    assert fb.score == 0.0 and "held no number" in fb.feedback


@pytest.mark.parametrize("kind, marker", [("chat", "[[ ## answer ## ]]"), ("xml", "<answer>"), ("json", '"answer"'),
                                          ("text", "plain text")])
def test_unparsable_reply_is_score_zero_with_feedback(chain_sum, kind, marker):
    chain_sum.adapter = kind
    reply = "" if kind == "text" else "The answer is 5"
    fb, fields = score_completion(chain_sum, chain_sum.val[0], reply)
    assert fb.score == 0.0 and fields is None
    assert fb.feedback.startswith("Could not parse the reply") and marker in fb.feedback


def test_strict_gym_scoring_without_numeric(chain_sum):
    task = gym_task("chain_sum", QA, "chain_sum", {"min_terms": 2, "max_terms": 2}, sizes=(2, 2, 2), adapter="text")
    ex = task.val[0]
    fb, _ = score_completion(task, ex, f"The answer is {ex.answer}")
    assert 0 < fb.score < 1 and "give the bare answer only" in fb.feedback


def test_last_number():
    assert last_number("The sum is 1,234.") == "1234"
    assert last_number("from -3 to -7") == "-7"
    assert last_number("none") is None


def test_splits_are_disjoint_and_deterministic(chain_sum):
    again = gym_task("chain_sum", QA, "chain_sum", {"min_terms": 2, "max_terms": 2, "max_digits": 2},
                     sizes=(8, 8, 8), adapter="text", numeric=True)
    qs = [{e.question for e in chain_sum.split(s)} for s in ("train", "val", "test")]
    assert not (qs[0] & qs[1]) and not (qs[0] & qs[2]) and not (qs[1] & qs[2])
    assert [e.question for e in again.val] == [e.question for e in chain_sum.val]


def test_max_answer_share_balances_every_prefix_of_every_split():
    from collections import Counter

    from fst_prompt.programs import load_task

    skewed = load_task("letter_counting", sizes=(60, 30, 30), max_answer_share=None)
    task = load_task("letter_counting", sizes=(60, 30, 30))  # the shipped default: at most a third
    assert Counter(e.answer for e in skewed.val).most_common(1)[0][1] > 15  # "1" dominates as generated
    for split in (task.train, task.val, task.test):
        for n in range(1, len(split) + 1):
            assert max(Counter(e.answer for e in split[:n]).values()) <= max(1, -(-n // 3))
    assert not {e.question for e in task.val} & {e.question for e in task.train}
    with pytest.raises(ValueError, match="max_answer_share"):
        load_task("letter_counting", sizes=(8, 8, 8), max_answer_share=0.01)
