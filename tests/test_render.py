"""Rendering through DSPy's adapters: round trips, instruction override, identical to the DSPy call path."""

import dspy
import pytest
from dspy.lm15 import Message, Response, TextPart, Usage

from fst_prompt.render import make_adapter, parse, render, score_completion

KINDS = ["text", "chat", "json", "xml"]


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(qa_task, kind):
    qa_task.adapter = kind
    example = qa_task.val[0]
    messages = render(qa_task, example, "Add the numbers carefully.")
    assert messages[0]["role"] == "system" and "Add the numbers carefully." in messages[0]["content"]
    assert messages[-1]["role"] == "user" and "What is 100 + 100?" in messages[-1]["content"]
    signature = qa_task.predictors[0][1].signature
    reply = make_adapter(kind).format_assistant_message_content(signature, {"answer": "200"})
    assert parse(qa_task, reply) == {"answer": "200"}
    feedback, fields = score_completion(qa_task, example, reply)
    assert feedback.score == 1.0 and fields == {"answer": "200"}


def test_seed_instruction_is_default(qa_task):
    assert "Answer the question." in render(qa_task, qa_task.val[0])[0]["content"]


class RecordingEngine:
    """Scripted engine that records the conversation DSPy sends."""

    def __init__(self, reply):
        self.reply, self.seen = reply, []

    def complete(self, request):
        self.seen.append([{"role": "system", "content": request.system}]
                         + [{"role": m.role, "content": m.text} for m in request.messages])
        return Response(id=None, model="rec", message=Message.assistant([TextPart(self.reply)]),
                        finish_reason="stop", usage=Usage(input_tokens=1, output_tokens=1))

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self):
        pass


@pytest.mark.parametrize("kind", KINDS)
def test_render_matches_what_a_dspy_program_sends(qa_task, kind):
    qa_task.adapter = kind
    example = qa_task.val[1]
    signature = qa_task.predictors[0][1].signature
    engine = RecordingEngine(make_adapter(kind).format_assistant_message_content(signature, {"answer": "202"}))
    program = qa_task.with_instructions({"self": "Be exact."})
    with dspy.context(lm=dspy.LM("local/rec", engine=engine, cache=False), adapter=make_adapter(kind)):
        pred = program(**example.inputs())
    assert pred.answer == "202"
    assert engine.seen == [render(qa_task, example, "Be exact.")]
