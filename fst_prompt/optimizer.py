"""`FST`: Fast-Slow Training as a DSPy optimizer, for a program you already have.

    import dspy
    from fst_prompt import FST

    def metric(gold, pred, trace=None, pred_name=None, pred_trace=None):  # dspy.GEPA's convention
        ok = pred.answer.strip() == gold.answer
        return dspy.Prediction(score=float(ok), feedback="Correct." if ok else f"Expected {gold.answer}.")

    trained = FST(metric, reflection_lm=dspy.LM("openai/gpt-4.1-mini"), cycles=2, run_dir="runs/qa").compile(
        dspy.Predict("question -> answer"), trainset=train, valset=val)
    trained(question="...")        # the learned instructions, answered by the trained weights in-process
    trained.fst_result             # RunResult: cycle records, population, weights

`compile` runs the same driver as `fst run` (api.run) on a task made of the student, the sets and the
metric, and returns a copy of the student with the best instructions, bound to an LM that serves the trained
weights in this process (the batching engine). The run directory is a normal one: `fst plot`, `fst export`
and `load_run` read it; it also keeps the student program (`program/`, dspy's `save_program`), so `fst export`
can write the DSPy program without a task file.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import dspy
from dspy.teleprompt import Teleprompter

from fst_prompt.api import RunResult, configure, run
from fst_prompt.engine import policy_lm
from fst_prompt.render import make_adapter
from fst_prompt.rundir import RunDir
from fst_prompt.task import Feedback, Task, TaskError

DSPyMetric = Callable[..., Any]  # (gold, pred[, trace, pred_name, pred_trace]) -> float | Prediction | Feedback


class FST(Teleprompter):
    """Fast-Slow Training of a DSPy program: GEPA-evolved instructions and GRPO-trained weights, interleaved.

    `metric`: dspy.GEPA's convention (`metric(gold, pred, trace, pred_name, pred_trace)` returning a float in
    [0, 1] or `dspy.Prediction(score=..., feedback=...)`), a 2-argument metric, or one returning
    `fst_prompt.Feedback`. `reflection_lm`: a `dspy.LM` (any provider DSPy supports), or None for the offline
    local reflection model (`reflection.model`). `model`: the policy to train: a built-in name (`fst models`),
    a Hugging Face id or a local folder. `mode`: fst, rl, gepa or gepa-then-rl. `settings`: config fields by
    leaf name (`cycles=2`, `learning_rate=5e-6`) or dotted (`**{"rl.beta": 0.0}`)."""

    def __init__(self, metric: DSPyMetric, *, reflection_lm: dspy.LM | None = None,
                 model: str = "smollm2-135m-instruct", mode: str = "fst", run_dir: str = "runs/fst",
                 adapter: str | None = None, resume: bool = False, progress: bool = True, **settings: Any) -> None:
        if not callable(metric):
            raise TypeError(f"metric must be callable, got {type(metric).__name__}")
        if reflection_lm is not None and not isinstance(reflection_lm, dspy.BaseLM):
            raise TypeError(f"reflection_lm must be a dspy.LM (or None for the offline local model), got "
                            f"{type(reflection_lm).__name__}")
        self.metric, self.reflection_lm, self.adapter = metric, reflection_lm, adapter
        self.resume, self.progress = resume, progress
        self.fields = {"policy.model": model, "loop.mode": mode, "run_dir": run_dir} | settings
        configure({"task": "program"}, **self.fields)  # a bad setting fails here, before anything loads

    def compile(self, student: dspy.Module, *, trainset: list[dspy.Example], teacher: dspy.Module | None = None,
                valset: list[dspy.Example] | None = None, **kwargs: Any) -> dspy.Module:
        if teacher is not None:
            raise ValueError("FST trains the student's own weights; it takes no teacher")
        name = kwargs.pop("name", None) or type(student).__name__.lower()
        if kwargs:
            raise TypeError(f"compile() got unexpected arguments {sorted(kwargs)}")
        task = program_task(student, trainset, valset, self.metric, name=name, adapter=self.adapter)
        config = configure({"task": name}, **self.fields)
        if not self.resume:
            _save_program(student, RunDir(config.run_dir))
        result = run(config, resume=self.resume, progress=self.progress, tasks=[task],
                     reflection_lm=self.reflection_lm)
        return trained_program(task, result)


def trained_program(task: Task, result: RunResult) -> dspy.Module:
    """A copy of the task's program with the run's best instructions, answering through its final weights."""
    program = task.with_instructions(result.best_instructions)
    program.set_lm(policy_lm(result.policy()))
    program.fst_result = result
    return with_adapter(program, make_adapter(task.adapter))


def with_adapter(program: dspy.Module, adapter: dspy.Adapter) -> dspy.Module:
    """`program`, made to format and parse with `adapter` wherever it is called. DSPy takes the adapter from its
    global settings, not per predictor, so the program's class is swapped for a subclass whose calls run in
    `dspy.context(adapter=...)`; it is still an instance of the student's class and saves as before."""
    cls = type(program)

    def __call__(self: dspy.Module, *args: Any, **kwargs: Any) -> Any:
        with dspy.context(adapter=adapter):
            return cls.__call__(self, *args, **kwargs)

    async def acall(self: dspy.Module, *args: Any, **kwargs: Any) -> Any:
        with dspy.context(adapter=adapter):
            return await cls.acall(self, *args, **kwargs)

    program.__class__ = type(cls.__name__, (cls,), {"__call__": __call__, "acall": acall, "__module__": cls.__module__,
                                                    "__qualname__": cls.__qualname__})
    return program


def program_task(student: dspy.Module, trainset: list[dspy.Example], valset: list[dspy.Example] | None,
                 metric: DSPyMetric, *, name: str, adapter: str | None = None) -> Task:
    """The `Task` FST trains on: the student (its own instructions are the seed), the sets, the metric."""
    if not trainset:
        raise TaskError("compile() needs a non-empty trainset")
    val = list(valset) if valset else list(trainset)
    single = all(len(p.signature.output_fields) == 1 for _, p in student.named_predictors())
    program = student.deepcopy()
    program.set_lm(None)
    return Task(name=name, program=program, train=list(trainset), val=val, test=val, metric=feedback_metric(metric),
                adapter=adapter or ("text" if single else "xml"))


def feedback_metric(metric: DSPyMetric) -> Callable[[dspy.Example, dspy.Prediction], Feedback]:
    """`metric` as the (gold, pred) -> Feedback the task seam expects."""
    arity = _positional(metric)

    def scored(gold: dspy.Example, pred: dspy.Prediction) -> Feedback:
        out = metric(gold, pred, *[None] * (arity - 2))
        return to_feedback(out)

    scored.__name__ = getattr(metric, "__name__", "metric")
    return scored


def to_feedback(out: Any) -> Feedback:
    """A metric's verdict as `Feedback`: kept as is, or from dspy.GEPA's `Prediction(score, feedback)` or a number."""
    if isinstance(out, Feedback):
        return out
    if isinstance(out, bool | int | float):
        return Feedback(float(out), f"Score {float(out):.3g}.")
    score = getattr(out, "score", None)
    if score is None and isinstance(out, dict):
        score = out.get("score")
    if not isinstance(score, bool | int | float):
        raise TaskError(f"the metric returned {type(out).__name__}; return a float in [0, 1], "
                        "dspy.Prediction(score=..., feedback=...) or fst_prompt.Feedback")
    feedback = getattr(out, "feedback", None) if not isinstance(out, dict) else out.get("feedback")
    return Feedback(float(score), str(feedback) if feedback is not None else f"Score {float(score):.3g}.")


def _positional(metric: DSPyMetric) -> int:
    """How many arguments to pass: 5 for dspy.GEPA's convention, 3 for (gold, pred, trace), else 2."""
    try:
        params = inspect.signature(metric).parameters.values()
    except (TypeError, ValueError):
        return 2
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return 5
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return 5 if len(positional) >= 5 else 3 if len(positional) >= 3 else 2


def _save_program(student: dspy.Module, run_dir: RunDir) -> None:
    """The student, whole (dspy's `save_program`), so the run directory can be exported without a task file."""
    if run_dir.is_started():
        return  # the loop refuses it with the fix ("pass resume=True")
    program = student.deepcopy()
    program.set_lm(None)
    program.save(str(run_dir.program_dir), save_program=True)
