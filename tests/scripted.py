"""Scripted stand-ins for tests: a policy whose answers depend on its instruction, a reflection client."""

from __future__ import annotations

import re
from types import SimpleNamespace

from fst_prompt.policy import Generation, Policy, Sampling

GOOD = "ADD CORRECTLY"


class ScriptedPolicy(Policy):
    """Answers 'What is i + i?' correctly only when the system prompt contains GOOD."""

    def __init__(self, batch_size: int = 4) -> None:
        tok = SimpleNamespace(padding_side="left", pad_token="<pad>", eos_token="<eos>", eos_token_id=0)
        super().__init__(SimpleNamespace(), tok, batch_size=batch_size, sampling=Sampling(max_new_tokens=8),
                         name="scripted")

    def _generate_batch(self, conversations, sampling):
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
