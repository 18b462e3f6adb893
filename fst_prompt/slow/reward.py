"""The reward: the task's metric on the parsed completion (TRL reward-function signature).

Rows carry `example_index` (into the task's train split) and `context_index` (which population context
rendered the prompt). A reply that does not parse scores 0 (`render.score_completion`), and so does one on
which the metric raises (counted in `errors`; the loop adds them to the ledger), as in evaluation and GEPA.
The mean reward per context is logged as `reward/context_<k>`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from fst_prompt.render import score_completion
from fst_prompt.task import Feedback, Task, TaskError


class TaskReward:
    def __init__(self, task: Task) -> None:
        self.task = task
        self.__name__ = f"{task.name}_metric"  # TRL names the reward's logged columns after it
        self.errors = 0  # completions on which the metric raised (scored 0), in this process
        self.last_error = ""

    def __call__(self, prompts: list, completions: list, example_index: list[int],
                 context_index: list[int] | None = None, log_metric: Any = None, **_: Any) -> list[float]:
        scores = []
        for completion, idx in zip(completions, example_index, strict=True):
            text = completion[-1]["content"] if isinstance(completion, list) else str(completion)
            try:
                feedback, _ = score_completion(self.task, self.task.train[idx], text)
            except TaskError:
                raise  # a metric that breaks its contract (returns no Feedback) is a definition error
            except Exception as e:  # noqa: BLE001 - the metric failing on free text is a wrong answer, not a crash
                self.errors += 1
                self.last_error = f"{type(e).__name__}: {e}"
                feedback = Feedback(0.0, f"The metric raised {self.last_error}")
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
