"""Bad task definitions fail at construction with a message that names the fix."""

import dspy
import pytest

from fst_prompt import Feedback, Task, TaskError
from fst_prompt.programs import available_tasks, load_task
from tests.conftest import QA, exact_metric, make_examples


def build(**changes):
    kwargs = dict(name="t", program=dspy.Predict(QA), train=make_examples(2), val=make_examples(2),
                  test=make_examples(2), metric=exact_metric, adapter="text")
    return Task(**(kwargs | changes))


class NoOutput(dspy.Signature):
    """Nothing comes out."""

    question: str = dspy.InputField()


class TwoOutputs(dspy.Signature):
    """Two answers."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()
    reason: str = dspy.OutputField()


@pytest.mark.parametrize("changes, message", [
    ({"metric": None}, "metric must be callable"),
    ({"val": []}, "the val split is empty"),
    ({"program": dspy.Predict(NoOutput)}, "has no output field; add one"),
    ({"program": "not a module"}, "program must be a dspy.Module"),
    ({"metric": lambda gold, pred: 1.0}, "the metric returned float; it must return fst_prompt.Feedback"),
    ({"metric": lambda gold, pred: 1 / 0}, "the metric raised ZeroDivisionError"),
    ({"train": [dspy.Example(question="q", answer="a")]}, r"with_inputs\('question'\)"),
    ({"test": [{"question": "q"}]}, "is dict, not a dspy.Example"),
    ({"program": dspy.Predict(TwoOutputs)}, "use adapter 'xml' or 'chat'"),
    ({"adapter": "yaml"}, "adapter must be one of"),
])
def test_bad_definitions(changes, message):
    with pytest.raises(TaskError, match=message):
        build(**changes)


def test_feedback_validates_score():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Feedback(1.5, "too good")
    with pytest.raises(ValueError):
        Feedback(float("nan"), "nan")


def test_instructions_are_checked_and_applied():
    task = build()
    assert task.seed_instructions() == {"self": "Answer the question."}
    program = task.with_instructions({"self": "New words."})
    assert dict(program.named_predictors())["self"].signature.instructions == "New words."
    assert task.seed_instructions() == {"self": "Answer the question."}  # the task itself is unchanged
    with pytest.raises(TaskError, match="the prompt names \\['other'\\]"):
        task.with_instructions({"other": "x"})


def test_shipped_programs_load():
    names = available_tasks()
    assert {"basic_arithmetic", "chain_sum", "leg_counting", "letter_counting"} <= set(names)
    for name in names:
        task = load_task(name, sizes=(4, 4, 4))
        assert task.adapter == "text" and len(task.val) == 4


def test_unknown_task_lists_the_available_ones():
    with pytest.raises(TaskError, match="unknown task 'nope'; available: \\['basic_arithmetic'"):
        load_task("nope")


def test_task_file_without_make_task(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text("x = 1\n")
    with pytest.raises(TaskError, match="must define `make_task"):
        load_task(str(f))


def test_reflection_template_by_name():
    from pydantic import ValidationError

    from fst_prompt.config import CONVENTION_TEMPLATE, DIRECTIVE_TEMPLATE, ReflectionConfig

    assert ReflectionConfig().template == DIRECTIVE_TEMPLATE
    assert ReflectionConfig(template="convention").template == CONVENTION_TEMPLATE
    assert ReflectionConfig(template="procedure").template == DIRECTIVE_TEMPLATE
    with pytest.raises(ValidationError, match="'conventon' is not a built-in template \\(procedure, convention\\)"):
        ReflectionConfig(template="conventon")
    with pytest.raises(ValidationError, match="must contain \\['<side_info>'\\]"):
        ReflectionConfig(template="Improve this instruction:\n<curr_param>")
