"""Count the legs of 1-2 kinds of animals, 1-3 of each (reasoning-gym `leg_counting`)."""

import dspy

from fst_prompt import Task, gym_task


class LegCounting(dspy.Signature):
    """Count the total number of legs of all the animals. Give the final answer as a single integer."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="the total number of legs, digits only")


CONFIG = {"min_animals": 1, "max_animals": 2, "max_instances": 3}


def make_task(seed: int = 0, adapter: str = "text", **kwargs) -> Task:
    return gym_task(
        "leg_counting",
        LegCounting,
        "leg_counting",
        CONFIG,
        seed=seed,
        adapter=adapter,
        numeric=True,
        **kwargs,
    )
