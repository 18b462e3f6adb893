"""Solve a linear equation in one variable, `a*x + b = c` with small numbers (reasoning-gym `simple_equations`).

A task where an instruction can carry a procedure the model can follow within its token budget: move the
constant, then divide by the coefficient.
"""

import dspy

from fst_prompt import Task, gym_task


class SimpleEquation(dspy.Signature):
    """Solve the equation for the variable. Give the final answer as a single integer."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="the value of the variable, an integer")


CONFIG = {"min_terms": 2, "max_terms": 2, "min_value": 1, "max_value": 12}


def make_task(seed: int = 0, adapter: str = "text", **kwargs) -> Task:
    return gym_task(
        "simple_equations", SimpleEquation, "simple_equations", CONFIG, seed=seed, adapter=adapter, numeric=True,
        **kwargs,
    )
