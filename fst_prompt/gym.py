"""Tasks from reasoning-gym: procedural, verifiable, offline data with a feedback metric.

`gym_task` turns a reasoning-gym generator into a `Task`: disjoint deterministic splits (one generator
seed per split, duplicates of train questions removed from val/test) and a metric that scores with the
generator's own `score_answer` and says, in words, what was expected and what was given.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import dspy

from fst_prompt.task import AdapterKind, Feedback, Metric, Task

DEFAULT_SIZES = (256, 128, 128)  # train / val / test (n >= 128 for a claim: DESIGN.md §6)


def gym_splits(
    dataset: str,
    config: dict[str, Any],
    sizes: tuple[int, int, int],
    seed: int,
    max_answer_share: float | None = None,
) -> tuple[list[dspy.Example], list[dspy.Example], list[dspy.Example]]:
    """Deterministic train/val/test examples with fields `question`, `answer` and the raw `entry`.

    `max_answer_share` caps the fraction any one answer may take of every prefix of a split, so that the
    first n problems of a split are balanced too (letter_counting's answer is "1" three times in four as
    generated): generation goes on until every split is full under the cap."""
    import reasoning_gym

    seen: set[str] = set()
    splits: dict[int, list[dspy.Example]] = {}
    # Test first, then val, then train: on a small problem space the held-out splits stay full and
    # train gets what is left, never a question that is also held out.
    for offset in (2, 1, 0):
        size = sizes[offset]
        share = 1.0 if max_answer_share is None else max_answer_share
        # Item i of a generator uses seed + i, so the splits' seeds lie far apart; over-generate so that
        # dropping repeats (and answers over the cap) still leaves `size` examples.
        split_seed = seed * 10_000_000 + offset * 1_000_000
        factor = 2 if max_answer_share is None else 20
        ds = reasoning_gym.create_dataset(dataset, size=factor * size + 8, seed=split_seed, **config)
        examples, answers = [], Counter()
        for entry in ds:
            over = answers[str(entry["answer"])] + 1 > max(1, math.ceil(share * (len(examples) + 1)))
            if entry["question"] in seen or over:
                continue
            seen.add(entry["question"])
            answers[str(entry["answer"])] += 1
            examples.append(
                dspy.Example(
                    question=entry["question"], answer=str(entry["answer"]), entry=entry
                ).with_inputs("question")
            )
            if len(examples) == size:
                break
        if len(examples) < size:
            raise ValueError(f"{dataset}: only {len(examples)} of {size} examples fit max_answer_share="
                             f"{max_answer_share}; raise the cap or lower the split size")
        splits[offset] = examples
    return splits[0], splits[1], splits[2]


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number(text: str) -> str | None:
    """The last number written in `text` ("The sum is 1,234." -> "1234"), or None."""
    found = _NUMBER.findall(text.replace(",", ""))
    return found[-1] if found else None


def _chain(expression: str, answer: str) -> str:
    terms = expression.split()
    if len(terms) < 3 or any(op not in "+-" for op in terms[1::2]):
        return f"{expression} = {answer}."
    steps, value = [], int(terms[0])
    for op, num in zip(terms[1::2], terms[2::2], strict=True):
        new = value + int(num) if op == "+" else value - int(num)
        steps.append(f"{value} {op} {num} = {new}")
        value = new
    return "; then ".join(steps) + "."


def _linear(equation: str, variable: str, answer: str) -> str:
    left, _, right = equation.partition(" = ")
    terms = re.findall(r"([+-]?)\s*(\d+)(\*" + re.escape(variable) + r")?", left.replace(" ", ""))
    if not right.lstrip("-").isdigit() or not terms:
        return f"{variable} = {answer}."
    a = sum(int(sign + n) for sign, n, v in terms if v)
    b = sum(int(sign + n) for sign, n, v in terms if not v)
    c = int(right)
    if a == 0 or (c - b) % a:
        return f"{variable} = {answer}."
    return (f"move the constant to the right: {a}*{variable} = {c} - ({b}) = {c - b}; divide by {a}: "
            f"{variable} = {(c - b) // a}.")


def _letters(meta: dict[str, Any], answer: str) -> str:
    text, letter = " ".join(meta["span"]), meta["target_letter"]
    return (f"the letters of {text!r} are {' '.join(ch for ch in text if ch != ' ')}; {letter!r} is among them "
            f"{answer} time(s).")


def _legs(meta: dict[str, Any], answer: str) -> str:
    from reasoning_gym.arithmetic.leg_counting import ANIMALS

    parts = [f"{n} {name} x {ANIMALS[name]} legs = {n * ANIMALS[name]}" for name, n in meta["animals"].items()]
    return "; ".join(parts) + f"; total {answer}."


# The worked solution of a problem, from its generator's metadata, shown in the feedback of a wrong answer.
SOLUTIONS: dict[str, Callable[[dict[str, Any], str], str]] = {
    "chain_sum": lambda m, a: _chain(m["expression"], a),
    "basic_arithmetic": lambda m, a: f"{m['expression']} = {a} (multiplications first, then left to right).",
    "simple_equations": lambda m, a: _linear(m["equation"], m["variable"], a),
    "letter_counting": _letters,
    "leg_counting": _legs,
}


def gym_metric(dataset: str, config: dict[str, Any], field: str = "answer", numeric: bool = False) -> Metric:
    """Score with reasoning-gym's own checker; feedback names the expected and the given answer and, for the
    generators in `SOLUTIONS`, how to get the expected one.

    With `numeric=True` the answer is the last number in the field, so "The total is 12." counts as 12:
    a small model's wording is not held against it, and the feedback still asks for the bare number.
    """
    import reasoning_gym

    checker = reasoning_gym.create_dataset(dataset, size=1, seed=0, **config)
    solution = SOLUTIONS.get(dataset)

    def metric(gold: dspy.Example, pred: dspy.Prediction) -> Feedback:
        feedback = _judge(gold, pred)
        if feedback.score >= 1.0 or solution is None:
            return feedback
        try:
            worked = solution(gold.entry["metadata"], gold.answer)
        except (KeyError, TypeError, ValueError):  # metadata of another shape: the plain feedback stands
            return feedback
        return Feedback(feedback.score, f"{feedback.feedback} Worked solution: {worked}")

    def _judge(gold: dspy.Example, pred: dspy.Prediction) -> Feedback:
        given = pred.get(field) if hasattr(pred, "get") else getattr(pred, field, None)
        given = "" if given is None else str(given).strip()
        if not given:
            return Feedback(
                0.0,
                f"The {field} field was empty. Expected {gold.answer!r}; "
                f"put only the final answer in the {field} field.",
            )
        if numeric:
            return _numeric_feedback(checker, gold, given, field)
        score = min(max(float(checker.score_answer(given, gold.entry)), 0.0), 1.0)
        if score >= 1.0:
            return Feedback(1.0, f"Correct: the {field} field held {given!r}, the expected answer.")
        extra = (
            " It contains more than the answer; give the bare answer only." if gold.answer in given else ""
        )
        return Feedback(score, f"Wrong: expected {gold.answer!r}; your {field} field held {given!r}.{extra}")

    return metric


def _numeric_feedback(checker: Any, gold: dspy.Example, given: str, field: str) -> Feedback:
    shown = given if len(given) <= 200 else given[:200] + "..."
    number = last_number(given)
    if number is None:
        return Feedback(
            0.0,
            f"Wrong: expected {gold.answer!r}, but your {field} held no number: {shown!r}. "
            "End the reply with the final number.",
        )
    if checker.score_answer(number, gold.entry) >= 1.0:
        if number == given:
            return Feedback(1.0, f"Correct: {number} is the expected answer.")
        return Feedback(
            1.0,
            f"Correct: the final number, {number}, is the expected answer "
            f"(the {field} also held other text: {shown!r}; the bare number is enough).",
        )
    return Feedback(
        0.0,
        f"Wrong: expected {gold.answer}, but the final number in your {field} was {number} "
        f"(it held {shown!r}).",
    )


def gym_task(
    name: str,
    signature: type[dspy.Signature],
    dataset: str,
    config: dict[str, Any] | None = None,
    *,
    sizes: tuple[int, int, int] = DEFAULT_SIZES,
    seed: int = 0,
    adapter: AdapterKind = "text",
    chain_of_thought: bool = False,
    numeric: bool = False,
    max_answer_share: float | None = None,
) -> Task:
    """A single-predictor task on a reasoning-gym generator (answer field: `answer`).

    `numeric=True`: the answer is the last number in the reply (for generators with integer answers).
    """
    config = dict(config or {})
    train, val, test = gym_splits(dataset, config, sizes, seed, max_answer_share)
    program = dspy.ChainOfThought(signature) if chain_of_thought else dspy.Predict(signature)
    return Task(
        name=name,
        program=program,
        train=train,
        val=val,
        test=test,
        metric=gym_metric(dataset, config, numeric=numeric),
        adapter=adapter,
        extra={"dataset": dataset, "config": config, "seed": seed, "sizes": list(sizes), "numeric": numeric,
               "max_answer_share": max_answer_share},
    )
