"""`Task`: the one seam between users and the library.

A task is a DSPy program, deterministic train/val/test splits of `dspy.Example`s, and a metric
`(gold, pred) -> Feedback(score, feedback)`. GRPO reads `score` as the reward; GEPA reads `feedback`
as the text its reflection LM learns from. Everything is validated at construction, before any model
loads, and every error says how to fix it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import dspy

AdapterKind = Literal["text", "chat", "json", "xml"]
ADAPTER_KINDS: tuple[str, ...] = ("text", "chat", "json", "xml")
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Feedback:
    """A metric's verdict on one prediction: a score in [0, 1] and text saying what was right or wrong."""

    score: float
    feedback: str

    def __post_init__(self) -> None:
        if (
            not isinstance(self.score, (int, float))
            or not math.isfinite(self.score)
            or not 0 <= self.score <= 1
        ):
            raise ValueError(f"Feedback.score must be a finite number in [0, 1], got {self.score!r}")
        if not isinstance(self.feedback, str):
            raise TypeError(f"Feedback.feedback must be a str, got {type(self.feedback).__name__}")


Metric = Callable[[dspy.Example, dspy.Prediction], Feedback]


class TaskError(ValueError):
    """A task definition that cannot work; the message says what to change."""


@dataclass
class Task:
    """A DSPy program + data splits + a feedback metric. See README for a 20-line example."""

    name: str
    program: dspy.Module
    train: list[dspy.Example]
    val: list[dspy.Example]
    test: list[dspy.Example]
    metric: Metric
    adapter: AdapterKind = "text"  # what small models can follow (text_adapter.py); "chat" for DSPy's markers
    description: str = ""
    extra: dict = field(default_factory=dict)  # free-form (e.g. the generator config), kept in results

    def __post_init__(self) -> None:
        self._check_program()
        for split in SPLITS:
            self._check_split(split)
        if self.adapter not in ADAPTER_KINDS:
            raise TaskError(
                f"task {self.name!r}: adapter must be one of {ADAPTER_KINDS}, got {self.adapter!r}"
            )
        self._check_metric()

    # -- accessors -------------------------------------------------------------------------------

    @property
    def predictors(self) -> list[tuple[str, dspy.Predict]]:
        return list(self.program.named_predictors())

    def seed_instructions(self) -> dict[str, str]:
        """The instruction each predictor starts from (its signature's docstring)."""
        return {name: p.signature.instructions for name, p in self.predictors}

    def split(self, name: str) -> list[dspy.Example]:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    def with_instructions(self, instructions: dict[str, str] | None) -> dspy.Module:
        """A copy of the program whose predictors carry the given instructions (others unchanged)."""
        program = copy.deepcopy(self.program)
        if not instructions:
            return program
        self.check_instructions(instructions)
        for name, predictor in program.named_predictors():
            if name in instructions:
                predictor.signature = predictor.signature.with_instructions(instructions[name])
        return program

    def check_instructions(self, instructions: dict[str, str]) -> None:
        names = {n for n, _ in self.predictors}
        unknown = set(instructions) - names
        if unknown:
            raise TaskError(
                f"task {self.name!r} has predictors {sorted(names)}; the prompt names {sorted(unknown)}. "
                "Use the predictor names from `program.named_predictors()`."
            )
        bad = [n for n, v in instructions.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise TaskError(f"instructions for {bad} must be non-empty strings")

    def score(self, gold: dspy.Example, pred: dspy.Prediction) -> Feedback:
        """Call the metric and insist on its contract (a `Feedback`)."""
        out = self.metric(gold, pred)
        if not isinstance(out, Feedback):
            raise TaskError(
                f"task {self.name!r}: the metric returned {type(out).__name__}; it must return "
                "fst_prompt.Feedback(score=<float in [0,1]>, feedback=<str>)"
            )
        return out

    # -- validation ------------------------------------------------------------------------------

    def _check_program(self) -> None:
        if not isinstance(self.program, dspy.Module):
            raise TaskError(
                f"task {self.name!r}: program must be a dspy.Module (e.g. dspy.Predict(MySignature))"
            )
        if not self.predictors:
            raise TaskError(
                f"task {self.name!r}: the program has no predictors (dspy.Predict / ChainOfThought)"
            )
        for name, p in self.predictors:
            if not p.signature.output_fields:
                raise TaskError(
                    f"task {self.name!r}: predictor {name!r} has no output field; add one, e.g. "
                    "`answer: str = dspy.OutputField()`"
                )
            if not p.signature.input_fields:
                raise TaskError(f"task {self.name!r}: predictor {name!r} has no input field")
            if self.adapter == "text" and len(p.signature.output_fields) != 1:
                raise TaskError(
                    f"task {self.name!r}: adapter 'text' reads the whole reply as one field, but predictor "
                    f"{name!r} has outputs {list(p.signature.output_fields)}; use adapter 'xml' or 'chat'"
                )

    def _check_split(self, split: str) -> None:
        examples = getattr(self, split)
        if not isinstance(examples, list) or not examples:
            raise TaskError(f"task {self.name!r}: the {split} split is empty; give at least one dspy.Example")
        first_inputs = set(self.predictors[0][1].signature.input_fields)
        for i, ex in enumerate(examples):
            if not isinstance(ex, dspy.Example):
                raise TaskError(
                    f"task {self.name!r}: {split}[{i}] is {type(ex).__name__}, not a dspy.Example"
                )
            if not ex._input_keys:
                raise TaskError(
                    f"task {self.name!r}: {split}[{i}] has no input keys; build it with "
                    f"dspy.Example(...).with_inputs({', '.join(map(repr, sorted(first_inputs)))})"
                )
            missing = first_inputs - set(ex.inputs().keys())
            if missing:
                raise TaskError(f"task {self.name!r}: {split}[{i}] lacks input field(s) {sorted(missing)}")

    def _check_metric(self) -> None:
        """Run the metric once on a gold prediction, so a broken metric fails now, not mid-training."""
        if not callable(self.metric):
            raise TaskError(f"task {self.name!r}: metric must be callable (gold, pred) -> Feedback")
        gold = self.val[0]
        outputs = self.predictors[-1][1].signature.output_fields
        pred = dspy.Prediction(**{k: gold.get(k, "") for k in outputs})
        try:
            self.score(gold, pred)
        except TaskError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure here is a definition error to report
            raise TaskError(
                f"task {self.name!r}: the metric raised {type(e).__name__}: {e} when scoring val[0]'s own "
                "labels; a metric must return Feedback for any prediction, never raise"
            ) from e
