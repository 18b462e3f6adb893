"""The constant-answer (majority) baseline: what a model scores by always giving the same answer.

The candidates are the most frequent gold answers of the split, each scored with the task's own metric
(so "-2" and "-2.0" count as one answer where the metric says so); the best one is the baseline any
reported accuracy should beat. Pure Python, no model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import dspy

from fst_prompt.task import Task

MAX_CANDIDATES = 20


@dataclass(frozen=True)
class Baseline:
    answer: str
    accuracy: float
    n: int


def majority_baseline(task: Task, split: str, n: int | None = None) -> Baseline:
    """The best accuracy a single constant answer reaches on the first n examples of a split (ties: the
    more frequent gold answer, then the smaller string)."""
    examples = task.split(split)[: n or None]
    outputs = list(task.predictors[-1][1].signature.output_fields)
    field = outputs[-1]
    counts = Counter(str(v) for ex in examples if (v := ex.get(field)) is not None)
    candidates = sorted(counts, key=lambda a: (-counts[a], a))[:MAX_CANDIDATES]
    best = Baseline(candidates[0] if candidates else "", 0.0, len(examples))
    for answer in candidates:
        pred = dspy.Prediction(**({k: "" for k in outputs} | {field: answer}))
        correct = sum(task.score(ex, pred).score >= 1.0 for ex in examples)
        if correct / len(examples) > best.accuracy:
            best = Baseline(answer, correct / len(examples), len(examples))
    return best
