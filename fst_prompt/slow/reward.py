"""The reward: the task's metric on the parsed completion (TRL reward-function signature).

Rows carry `example_index` (into the task's train split) and `context_index` (which population context
rendered the prompt). A reply that does not parse scores 0 (`render.score_completion`). The mean reward
per context is logged as `reward/context_<k>`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from fst_prompt.render import score_completion
from fst_prompt.task import Task


class TaskReward:
    def __init__(self, task: Task) -> None:
        self.task = task
        self.__name__ = f"{task.name}_metric"  # TRL names the reward's logged columns after it

    def __call__(self, prompts: list, completions: list, example_index: list[int],
                 context_index: list[int] | None = None, log_metric: Any = None, **_: Any) -> list[float]:
        scores = []
        for completion, idx in zip(completions, example_index, strict=True):
            text = completion[-1]["content"] if isinstance(completion, list) else str(completion)
            feedback, _ = score_completion(self.task, self.task.train[idx], text)
            if not math.isfinite(feedback.score):
                raise FloatingPointError(f"reward is {feedback.score} for train example {idx}")
            scores.append(feedback.score)
        if log_metric is not None and context_index is not None:
            by_context: dict[int, list[float]] = defaultdict(list)
            for k, s in zip(context_index, scores, strict=True):
                by_context[k].append(s)
            for k, values in sorted(by_context.items()):
                log_metric(f"reward/context_{k}", sum(values) / len(values))
        return scores
