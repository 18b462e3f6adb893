"""Metric feedback for right, wrong and unparsable outputs, on a real reasoning-gym task."""

import dspy
import pytest

from fst_prompt import TaskError, gym_task
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
                           f"(it held 'It is {wrong}'). Worked solution: {ex.entry['metadata']['expression']} = "
                           f"{ex.answer}.")


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


@pytest.mark.parametrize(("name", "worked"), [
    ("chain_sum", "Worked solution: 84 - 12 = 72."),
    ("simple_equations", "Worked solution: move the constant to the right: 11*f = 43 - (10) = 33; divide by 11: "
                         "f = 3."),
    ("leg_counting", "Worked solution: 3 butterfly x 6 legs = 18; total 18."),
])
def test_wrong_answers_get_the_worked_solution(name, worked):
    from fst_prompt.programs import load_task

    task = load_task(name, sizes=(4, 4, 4))
    ex = task.val[1]
    assert task.score(ex, dspy.Prediction(answer="99999")).feedback.endswith(worked)
    assert "Worked solution" not in task.score(ex, dspy.Prediction(answer=ex.answer)).feedback


def test_a_solution_that_cannot_be_worked_out_leaves_the_plain_feedback():
    from fst_prompt.gym import _chain, _linear

    assert _chain("3 * 4", "12") == "3 * 4 = 12."
    assert _chain("1 + 2 - 4", "-1") == "1 + 2 = 3; then 3 - 4 = -1."
    assert _linear("7 - 2*x = 1", "x", "3") == ("move the constant to the right: -2*x = 1 - (7) = -6; divide by -2: "
                                                "x = 3.")
    assert _linear("x**2 = 4", "x", "2") == "x = 2."


def test_ticket_routing_splits_are_balanced_disjoint_and_deterministic():
    from collections import Counter

    from fst_prompt.baselines import majority_baseline
    from fst_prompt.programs import load_task

    task, again = load_task("ticket_routing", sizes=(50, 25, 25)), load_task("ticket_routing", sizes=(50, 25, 25))
    assert [e.message for e in task.val] == [e.message for e in again.val]
    assert [e.message for e in load_task("ticket_routing", seed=1, sizes=(50, 25, 25)).val] != \
        [e.message for e in task.val]
    texts = [{e.message for e in task.split(s)} for s in ("train", "val", "test")]
    assert sum(map(len, texts)) == 100 and len(set().union(*texts)) == 100  # no message twice, in or across splits
    for split in (task.train, task.val, task.test):
        for n in (5, 10, len(split)):  # every five consecutive problems hold one of each team
            assert max(Counter(e.team for e in split[:n]).values()) == -(-n // 5)
    assert majority_baseline(task, "val").accuracy == 0.2
    with pytest.raises(TaskError, match="ran out of new .* messages"):
        load_task("ticket_routing", sizes=(100_000, 5, 5))


@pytest.mark.parametrize(("reply", "score", "says"), [
    ("delivery", 1.0, "Correct: 'delivery'."),
    ("The DELIVERY team.", 1.0, "Correct"),
    ("Technical support", 0.0, "names none of the help desk's teams"),
    ("billing", 0.0, "expected 'delivery', the reply named 'billing'"),
    ("billing or delivery", 0.0, "names several teams (billing, delivery); give one"),
    ("", 0.0, "names none"),
])
def test_ticket_routing_metric(reply, score, says):
    from fst_prompt.programs import load_task

    task = load_task("ticket_routing", sizes=(5, 5, 5))
    gold = next(e for e in task.val if e.team == "delivery")
    feedback = task.score(gold, dspy.Prediction(team=reply))
    assert feedback.score == score and says in feedback.feedback
    assert feedback.feedback.endswith("go to the 'delivery' team.")  # the rule, right or wrong


def test_date_normalize_splits_are_disjoint_in_dates_and_deterministic():
    from fst_prompt.baselines import majority_baseline
    from fst_prompt.programs import load_task

    task, again = load_task("date_normalize", sizes=(50, 25, 25)), load_task("date_normalize", sizes=(50, 25, 25))
    assert [e.message for e in task.val] == [e.message for e in again.val]
    assert [e.date for e in load_task("date_normalize", seed=1, sizes=(50, 25, 25)).val] != [e.date for e in task.val]
    dates = [{e.date for e in task.split(s)} for s in ("train", "val", "test")]
    assert sum(map(len, dates)) == 100 and len(set().union(*dates)) == 100  # no answer twice, in or across splits
    for e in task.val:  # the message names its date in some spelling: the day's number is in it
        assert str(int(e.date[-2:])) in e.message and e.date not in e.message
    assert majority_baseline(task, "val").accuracy == 1 / 25
    with pytest.raises(TaskError, match="distinct dates"):
        load_task("date_normalize", sizes=(2000, 5, 5))


@pytest.mark.parametrize(("reply", "score", "says"), [
    ("2026-03-07", 1.0, "Correct: 2026-03-07."),
    ("The date is 2026-03-07.", 1.0, "Correct"),
    ("7 March 2026", 0.0, "has no date written as YYYY-MM-DD"),
    ("2026-07-03", 0.0, "expected 2026-03-07, the reply gave 2026-07-03"),
    ("2026-03-07 or 2026-07-03", 0.0, "gives several dates (2026-03-07, 2026-07-03); give one"),
    ("", 0.0, "has no date"),
])
def test_date_normalize_metric(reply, score, says):
    from fst_prompt.programs import load_task

    task = load_task("date_normalize", sizes=(5, 5, 5))
    gold = dspy.Example(message="Please deliver it on 07.03.2026.", date="2026-03-07").with_inputs("message")
    feedback = task.score(gold, dspy.Prediction(date=reply))
    assert feedback.score == score and says in feedback.feedback
    assert feedback.feedback.endswith("(03.04.2025 is 3 April 2025).")  # the convention, right or wrong
