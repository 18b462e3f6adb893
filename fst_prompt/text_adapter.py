"""`TextAdapter`: a DSPy adapter for small models that cannot follow DSPy's field markers.

DSPy's Chat/JSON/XML adapters describe every field in a long system prompt and expect the reply in
markers (`[[ ## answer ## ]]`, JSON, `<answer>`). SmolLM2-135M parses 0% of the time under all three
on our tasks (measured; see README). This adapter sends what such a model can use — the instruction as
the system message, the inputs as plain text — and reads the whole reply as the one output field.
It is a real `dspy.Adapter`: programs, demos and `with_instructions` work as with any adapter, and an
empty reply raises `AdapterParseError` like the others. Only single-output signatures are supported.
"""

from __future__ import annotations

from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError


class TextAdapter(dspy.Adapter):
    def format_system_message(self, signature: type[dspy.Signature]) -> str:
        return self.format_task_description(signature)

    def format_task_description(self, signature: type[dspy.Signature]) -> str:
        return signature.instructions.strip()

    def format_field_description(self, signature: type[dspy.Signature]) -> str:
        return ""

    def format_field_structure(self, signature: type[dspy.Signature]) -> str:
        return ""

    def format_user_message_content(
        self,
        signature: type[dspy.Signature],
        inputs: dict[str, Any],
        prefix: str = "",
        suffix: str = "",
        main_request: bool = False,
    ) -> str:
        names = [n for n in signature.input_fields if n in inputs]
        if len(names) == 1:  # a lone input is shown as it is: "What is 2 + 3?"
            body = str(inputs[names[0]])
        else:
            body = "\n".join(
                f"{signature.input_fields[n].json_schema_extra['prefix']} {inputs[n]}" for n in names
            )
        return "\n".join(part for part in (prefix, body, suffix) if part).strip()

    def format_assistant_message_content(
        self,
        signature: type[dspy.Signature],
        outputs: dict[str, Any],
        missing_field_message: str | None = None,
    ) -> str:
        (name,) = signature.output_fields
        return str(outputs.get(name, missing_field_message or ""))

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        if len(signature.output_fields) != 1:
            raise ValueError("TextAdapter supports signatures with exactly one output field")
        (name,) = signature.output_fields
        text = completion.strip()
        if not text:
            raise AdapterParseError(
                adapter_name="TextAdapter",
                signature=signature,
                lm_response=completion,
                message="The reply was empty.",
                parsed_result={},
            )
        return {name: text}
