"""Shared fixtures: small real tasks and models, built once per session (cached across sessions)."""

import os

# Tests are offline: the environment the `fst` command sets for itself (cli.OFFLINE_ENV) and no HF hub. Set before
# dspy/litellm and huggingface_hub are imported (both read it once, at import); importing fst_prompt sets nothing.
for _name, _value in {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1",
                      "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_name, _value)

import dspy  # noqa: E402
import pytest  # noqa: E402

from fst_prompt import Feedback, Task  # noqa: E402


class QA(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


def exact_metric(gold: dspy.Example, pred: dspy.Prediction) -> Feedback:
    ok = str(pred.answer).strip() == gold.answer
    return Feedback(float(ok), "Correct." if ok else f"Wrong: expected {gold.answer!r}, got {pred.answer!r}.")


def make_examples(n: int, offset: int = 0) -> list[dspy.Example]:
    return [dspy.Example(question=f"What is {i} + {i}?", answer=str(2 * i)).with_inputs("question")
            for i in range(offset, offset + n)]


@pytest.fixture
def qa_task() -> Task:
    return Task(name="qa", program=dspy.Predict(QA), train=make_examples(4), val=make_examples(10, 100),
                test=make_examples(4, 200), metric=exact_metric, adapter="text")


@pytest.fixture(scope="session")
def tiny_path():
    from fst_prompt.models import resolve_model

    return resolve_model("tiny")


@pytest.fixture
def tiny_policy(tiny_path):
    from fst_prompt.policy import Policy, Sampling

    return Policy.load(tiny_path, batch_size=4, sampling=Sampling(max_new_tokens=8))


@pytest.fixture
def endpoint():
    from tests.scripted import FakeOpenAI, start_fake_openai

    FakeOpenAI.reset()
    url, server = start_fake_openai()
    yield url
    server.shutdown()
