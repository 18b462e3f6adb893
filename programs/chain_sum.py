"""Sums and differences of 2 one-or-two-digit numbers (reasoning-gym `chain_sum`)."""

import dspy

from fst_prompt import Task, gym_task


class ChainSum(dspy.Signature):
    """Add and subtract the numbers. Give the final answer as a single integer."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="the integer result, digits only")


CONFIG = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def make_task(seed: int = 0, adapter: str = "text", **kwargs) -> Task:
    return gym_task(
        "chain_sum", ChainSum, "chain_sum", CONFIG, seed=seed, adapter=adapter, numeric=True, **kwargs
    )
