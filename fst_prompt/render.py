"""DSPy <-> chat: render a predictor with a candidate instruction into chat messages, parse a reply back.

All formatting and parsing is DSPy's own (`adapter.format` / `adapter.parse`), so what the policy sees
in RL is byte-for-byte what a DSPy program sends through the engine. A reply that does not parse is
data, not an error: `parse_failure_feedback` turns it into the text a metric would give.
"""

from __future__ import annotations

from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from fst_prompt.task import AdapterKind, Feedback, Task
from fst_prompt.text_adapter import TextAdapter


def make_adapter(kind: AdapterKind) -> dspy.Adapter:
    """DSPy's adapter for `kind`, with no hidden second LM call on a parse failure."""
    if kind == "text":
        return TextAdapter()
    if kind == "chat":
        return dspy.ChatAdapter(use_json_adapter_fallback=False)
    if kind == "json":
        # Native function calling would need a tool-calling server; a local model reads plain JSON.
        return dspy.JSONAdapter(use_native_function_calling=False)
    if kind == "xml":
        return dspy.XMLAdapter(use_json_adapter_fallback=False)
    raise ValueError(f"adapter must be 'text', 'chat', 'json' or 'xml', got {kind!r}")


def render(
    task: Task,
    example: dspy.Example,
    instruction: str | None = None,
    predictor: str | None = None,
) -> list[dict[str, str]]:
    """Chat messages for one predictor of `task` on `example`, under `instruction` (default: the seed's)."""
    name, pred = _predictor(task, predictor)
    signature = pred.signature if instruction is None else pred.signature.with_instructions(instruction)
    return make_adapter(task.adapter).format(
        signature, demos=list(pred.demos), inputs=example.inputs().toDict()
    )


def parse(task: Task, completion: str, predictor: str | None = None) -> dict[str, Any]:
    """The output fields of a completion; raises `AdapterParseError` when they cannot be read."""
    _, pred = _predictor(task, predictor)
    return make_adapter(task.adapter).parse(pred.signature, completion)


def score_completion(
    task: Task,
    example: dspy.Example,
    completion: str,
    predictor: str | None = None,
) -> tuple[Feedback, dict[str, Any] | None]:
    """Parse + metric in one step: the reward of a single-predictor rollout. Never raises on bad text."""
    _, pred = _predictor(task, predictor)
    try:
        fields = parse(task, completion, predictor)
    except AdapterParseError as e:
        return Feedback(0.0, parse_failure_feedback(task.adapter, pred.signature, completion, e)), None
    prediction = dspy.Prediction(**fields)
    return task.score(example, prediction), fields


def parse_failure_feedback(
    kind: AdapterKind, signature: type[dspy.Signature], completion: str, error: Exception | None = None
) -> str:
    """Feedback for an unparsable reply: what was expected, what was found, how to write it."""
    outputs = list(signature.output_fields)
    found = list(getattr(error, "parsed_result", None) or {})
    head = completion.strip().replace("\n", "\\n")
    head = head[:160] + ("..." if len(head) > 160 else "")
    if kind == "text":
        how = "the answer as plain text"
    elif kind == "chat":
        how = " then ".join(f"`[[ ## {f} ## ]]` followed by the {f}" for f in outputs)
        how += ", and end with `[[ ## completed ## ]]`"
    elif kind == "xml":
        how = ", ".join(f"`<{f}>...</{f}>`" for f in outputs)
    else:
        how = "a single JSON object with the key(s) " + ", ".join(f'"{f}"' for f in outputs)
    missing = [f for f in outputs if f not in found]
    return (
        f"Could not parse the reply: no {', '.join(missing) or 'valid'} field found "
        f"(found: {found or 'none'}). Write {how}. The reply was: '{head}'"
    )


def _predictor(task: Task, name: str | None) -> tuple[str, dspy.Predict]:
    predictors = dict(task.predictors)
    if name is None:
        if len(predictors) != 1:
            raise ValueError(f"task {task.name!r} has predictors {list(predictors)}: name the one to render")
        return next(iter(predictors.items()))
    if name not in predictors:
        raise ValueError(f"task {task.name!r} has no predictor {name!r}; it has {list(predictors)}")
    return name, predictors[name]
