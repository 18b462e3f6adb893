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
        self.scored: list[tuple[int, str, float, str]] = []  # (example index, completion, reward, feedback) of
        # every completion scored since the trainer last took them (its rollout store)

    def __call__(self, prompts: list, completions: list, example_index: list[int],
                 context_index: list[int] | None = None, log_metric: Any = None,
                 rollout_score: list[float] | None = None, module: list[str] | None = None,
                 module_ran: list[bool] | None = None, **_: Any) -> list[float]:
        if rollout_score is not None:  # a module call of a multi-predictor program: its rollout's reward
            self._log_modules(log_metric, rollout_score, module, module_ran)
            self._log_contexts(log_metric, context_index, rollout_score)
            return [float(s) for s in rollout_score]
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
            self.scored.append((idx, text, feedback.score, feedback.feedback))
        self._log_contexts(log_metric, context_index, scores)
        return scores

    @staticmethod
    def _log_contexts(log_metric: Any, context_index: list[int] | None, scores: list[float]) -> None:
        if log_metric is None or context_index is None:
            return
        by_context: dict[int, list[float]] = defaultdict(list)
        for k, s in zip(context_index, scores, strict=True):
            by_context[k].append(s)
        for k, values in sorted(by_context.items()):
            log_metric(f"reward/context_{k}", sum(values) / len(values))

    @staticmethod
    def _log_modules(log_metric: Any, scores: list[float], module: list[str] | None,
                     ran: list[bool] | None) -> None:
        """Per module: the mean reward of the rollouts whose call of it is trained on, and the share of
        rollouts that reached it."""
        if log_metric is None or module is None or ran is None:
            return
        for name in dict.fromkeys(module):
            rows = [(s, r) for s, m, r in zip(scores, module, ran, strict=True) if m == name]
            trained = [s for s, r in rows if r]
            log_metric(f"module/{name}/reached", sum(r for _, r in rows) / len(rows))
            if trained:
                log_metric(f"module/{name}/reward", sum(trained) / len(trained))
