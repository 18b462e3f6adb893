"""Scripted stand-ins for tests: a policy whose answers depend on its instruction, a reflection client."""

from __future__ import annotations

import json
import random
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

from fst_prompt.policy import Generation, Policy, Sampling

GOOD = "ADD CORRECTLY"


class ScriptedPolicy(Policy):
    """Answers 'What is i + i?' correctly only when the system prompt contains GOOD."""

    def __init__(self, batch_size: int = 4) -> None:
        tok = SimpleNamespace(padding_side="left", pad_token="<pad>", eos_token="<eos>", eos_token_id=0)
        super().__init__(SimpleNamespace(), tok, batch_size=batch_size, sampling=Sampling(max_new_tokens=8),
                         name="scripted")

    def _generate_batch(self, conversations, sampling, seeds=None):
        gens = []
        for conv in conversations:
            system = conv[0]["content"] if conv[0]["role"] == "system" else ""
            a, b = map(int, re.findall(r"\d+", conv[-1]["content"])[:2])
            text = str(a + b) if GOOD in system else "I am not sure."
            gens.append(Generation(text=text, prompt_tokens=10, completion_tokens=3, finish_reason="stop"))
        self.stats.generate_calls += 1
        self.stats.rollouts += len(gens)
        return gens


class ScriptedClient:
    """An OpenAI-client look-alike: each create() pops the next scripted reply (or raises it)."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.prompts: list[str] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, model, messages, **kwargs):
        self.prompts.append(messages[0]["content"])
        reply = self.replies.pop(0) if self.replies else "```\nBe vague.\n```"
        if isinstance(reply, BaseException):
            raise reply
        usage = SimpleNamespace(prompt_tokens=100, completion_tokens=20)
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=reply))], usage=usage)


class FakeOpenAI(BaseHTTPRequestHandler):
    auth_headers: list[str] = []
    # Faults, for the tests that need them: every request answered with this status (e.g. 401), or with
    # probability `fault_rate` one of: a 500, an empty reply, a body that is not JSON. With `first_clean` the
    # first request (the start-up check) is answered well. `numbered`: each reply names its request's number, so
    # no two proposals are alike. Reset with `FakeOpenAI.reset()`.
    status: int = 200
    numbered: bool = False
    fault_rate: float = 0.0
    first_clean: bool = True
    faults: list[str] = []
    rng = random.Random(0)

    @classmethod
    def reset(cls) -> None:
        cls.auth_headers, cls.status, cls.fault_rate, cls.first_clean, cls.numbered = [], 200, 0.0, True, False
        cls.faults, cls.rng = [], random.Random(0)

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers["Content-Length"])
        json.loads(self.rfile.read(length))
        FakeOpenAI.auth_headers.append(self.headers.get("Authorization", ""))
        fault, clean = None, FakeOpenAI.first_clean and len(FakeOpenAI.auth_headers) == 1
        if not clean and FakeOpenAI.rng.random() < FakeOpenAI.fault_rate:
            fault = FakeOpenAI.rng.choice(["500", "empty", "garbage"])
            FakeOpenAI.faults.append(fault)
        if (FakeOpenAI.status != 200 and not clean) or fault == "500":
            status = 500 if fault == "500" else FakeOpenAI.status
            self._send(status, json.dumps({"error": {"message": f"status {status}", "type": "x"}}).encode())
            return
        number = f" (proposal {len(FakeOpenAI.auth_headers)})" if FakeOpenAI.numbered else ""
        content = "" if fault == "empty" else f"```\nAdd the numbers. Reply with digits.{number}\n```"
        body = b"<html>garbage" if fault == "garbage" else json.dumps({
            "id": "x", "object": "chat.completion", "created": 0, "model": "fake",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59},
        }).encode()
        self._send(200, body)

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def start_fake_openai() -> tuple[str, HTTPServer]:
    """A scripted OpenAI-compatible chat endpoint on loopback; returns (base_url, server)."""
    server = HTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/v1", server
