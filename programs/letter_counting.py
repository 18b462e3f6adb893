"""Count one letter in a short phrase of 1-3 words (reasoning-gym `letter_counting`).

As generated, three answers in four are "1" (always answering "1" scores 0.74 on val): the splits are
rebalanced so that no answer takes more than a third of a split (constant baseline 0.34 on val).
`max_answer_share=None` gives the generator's own distribution."""

import dspy

from fst_prompt import Task, gym_task


class LetterCounting(dspy.Signature):
    """Count how many times the letter appears in the text. Give the final answer as a single integer."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="the count, digits only")


CONFIG = {"min_words": 1, "max_words": 3}


def make_task(seed: int = 0, adapter: str = "text", max_answer_share: float | None = 1 / 3, **kwargs) -> Task:
    return gym_task(
        "letter_counting",
        LetterCounting,
        "letter_counting",
        CONFIG,
        seed=seed,
        adapter=adapter,
        numeric=True,
        max_answer_share=max_answer_share,
        **kwargs,
    )
