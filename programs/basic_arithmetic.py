"""Arithmetic on small integers (reasoning-gym `basic_arithmetic`): 2-3 terms of 1-2 digits, + - *."""

import dspy

from fst_prompt import Task, gym_task


class Arithmetic(dspy.Signature):
    """Compute the value of the arithmetic expression. Give the final answer as a single integer."""

    question: str = dspy.InputField(desc="an arithmetic expression")
    answer: str = dspy.OutputField(desc="the integer value, digits only")


CONFIG = {
    "min_terms": 2,
    "max_terms": 3,
    "min_digits": 1,
    "max_digits": 2,
    "operators": ["+", "-", "*"],
    "allow_parentheses": False,
    "allow_negation": False,
}


def make_task(seed: int = 0, adapter: str = "text", **kwargs) -> Task:
    return gym_task(
        "basic_arithmetic",
        Arithmetic,
        "basic_arithmetic",
        CONFIG,
        seed=seed,
        adapter=adapter,
        numeric=True,
        **kwargs,
    )
