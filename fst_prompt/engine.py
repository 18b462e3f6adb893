"""The policy as a DSPy engine: concurrent DSPy calls are gathered into one batched `generate`.

DSPy evaluates a program on many examples by calling the LM from many threads, one request each.
`BatchingEngine.complete` (called in those threads) queues its request and waits; one worker thread
takes the first request, keeps gathering until the batch is full or no new request arrived for
`gather_s` seconds, and runs them as one `Policy.generate`. With `num_threads == batch_size`,
evaluating N examples costs about ceil(N / batch_size) generate calls instead of N.

The thread that generates matters. torch's CPU kernels run on an OpenMP pool that belongs to the thread
that calls them; a second thread running torch makes a second pool, and once libgomp manages more
threads than there are cores it stops spin-waiting between parallel regions and sleeps on a futex in
each of them (~1,500 per decode step of SmolLM2). Measured on the 2-core host: 23,600 voluntary context
switches per 16x16-token generate with a second pool alive against ~50 with one, and engine/policy
0.67 when a worker thread generated. So whoever runs the DSPy threads serves their batches itself
(`serve_while`, as `evaluate.run_rollouts` does), and a call made on the main thread is served there;
the worker thread is only the fallback for calls from other threads that nobody serves.

Use it through `policy_lm(policy)`, a `dspy.LM` with DSPy's cache off: a cache would keep returning
the old weights' answers after a training step.
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events
from dspy.utils.callback import BaseCallback

from fst_prompt.policy import Conversation, Generation, Policy, Sampling

# Completions made inside `capture()` are appended here (per thread / context), so an evaluator can
# attach every completion of a program call to the example that caused it.
_captured: contextvars.ContextVar[list[Generation] | None] = contextvars.ContextVar(
    "fst_captured", default=None
)


# Inside `seeded(seed)`, the n-th LM call of this thread / context samples with seed `seed + n`: a sampled
# rollout is then reproducible whatever batch the engine puts it in (see `Policy.generate`).
_seed: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("fst_seed", default=None)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    token = _seed.set(None if seed is None else [seed])
    try:
        yield
    finally:
        _seed.reset(token)


def _next_seed() -> int | None:
    box = _seed.get()
    if box is None:
        return None
    box[0] += 1
    return box[0] - 1


# The predictor whose call is running (set by `ModuleNames`, a DSPy callback), so that each captured
# completion says which module of a multi-predictor program wrote it.
_module: contextvars.ContextVar[tuple[str, dict] | None] = contextvars.ContextVar("fst_module", default=None)


class ModuleNames(BaseCallback):
    """A DSPy callback naming the running predictor of `program` (its `named_predictors` name)."""

    def __init__(self, program: dspy.Module) -> None:
        self.names = {id(p): name for name, p in program.named_predictors()}
        self.tokens: dict[str, contextvars.Token] = {}

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if id(instance) in self.names:
            given = inputs.get("kwargs", inputs)  # Predict.__call__(self, **kwargs): the predictor's input fields
            self.tokens[call_id] = _module.set((self.names[id(instance)], {k: v for k, v in given.items()
                                                                          if k not in ("self", "args")}))

    def on_module_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        token = self.tokens.pop(call_id, None)
        if token is not None:
            _module.reset(token)


@contextlib.contextmanager
def capture() -> Iterator[list[Generation]]:
    calls: list[Generation] = []
    token = _captured.set(calls)
    try:
        yield calls
    finally:
        _captured.reset(token)


@dataclass
class _Pending:
    conversation: Conversation
    sampling: Sampling
    seed: int | None
    future: Future


class BatchingEngine:
    """A DSPy engine (`complete(Request) -> Response`) backed by a `Policy`, batching across threads."""

    def __init__(self, policy: Policy, *, max_batch: int | None = None, gather_s: float = 0.05,
                 idle_s: float = 2.0) -> None:
        self.policy = policy
        self.max_batch = max_batch or policy.batch_size
        self.gather_s, self.idle_s = gather_s, idle_s
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._hosts = 0  # threads inside hosting(): while one serves, no worker thread is started
        self._start_lock = threading.Lock()

    # -- DSPy engine protocol ----------------------------------------------------------------------

    def complete(self, request) -> Response:
        conversation = _to_conversation(request)
        sampling = _sampling(self.policy.sampling, request.config)
        pending = _Pending(conversation, sampling, _next_seed(), Future())
        if threading.current_thread() is threading.main_thread() and not self._hosts:
            with self.hosting():  # the main thread generates itself: see the module docstring
                self._queue.put(pending)
                self.serve_while(lambda: not pending.future.done())
        else:
            with self._start_lock:  # see _run: a queued request always has a live server
                self._queue.put(pending)
                if self._worker is None and not self._hosts:
                    self._worker = threading.Thread(target=self._run, name="fst-batching-engine", daemon=True)
                    self._worker.start()
        gen: Generation = pending.future.result()
        calls = _captured.get()
        if calls is not None:
            module = _module.get()
            calls.append(replace(gen, module=module[0], module_inputs=module[1]) if module else gen)
        return Response(
            id=None,
            model=self.policy.name,
            message=Message.assistant([TextPart(gen.text)]),
            finish_reason="stop" if gen.finish_reason == "stop" else "length",
            usage=Usage(input_tokens=gen.prompt_tokens, output_tokens=gen.completion_tokens),
        )

    def stream(self, request):
        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass

    # -- batching ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def hosting(self) -> Iterator[None]:
        """While inside, requests wait for this thread's `serve_while` instead of starting a worker thread.

        Enter it before starting the DSPy threads, so that no early request starts a worker. Requests
        still queued on leaving get a worker, so none waits forever."""
        with self._start_lock:
            self._hosts += 1
        try:
            yield
        finally:
            with self._start_lock:
                self._hosts -= 1
                if not self._hosts and self._worker is None and not self._queue.empty():
                    self._worker = threading.Thread(target=self._run, name="fst-batching-engine", daemon=True)
                    self._worker.start()

    def serve_while(self, busy: Callable[[], bool], poll_s: float = 0.01) -> None:
        """Generate the queued requests' batches in the calling thread until `busy()` is false.

        Call it, inside `hosting()`, from the thread that runs torch anyway (the one that started the DSPy
        threads): the generation then uses that thread's OpenMP pool instead of making a second one (see
        the module docstring). `busy` is checked after each batch and every `poll_s` while the queue is empty."""
        while busy():
            try:
                first = self._queue.get(timeout=poll_s)
            except queue.Empty:
                continue
            self._serve(self._gather(first))

    def _run(self) -> None:
        # The worker exits after `idle_s` without requests (engines are made per evaluation; idle threads
        # must not pile up). It checks the queue under the lock `complete` queues under, so a request is
        # either seen here or finds no server and starts one.
        while True:
            try:
                first = self._queue.get(timeout=self.idle_s)
            except queue.Empty:
                with self._start_lock:
                    if self._queue.empty():
                        self._worker = None
                        return
                continue
            self._serve(self._gather(first))

    def _gather(self, first: _Pending) -> list[_Pending]:
        """`first` and the requests that follow it, until the batch is full or none came for `gather_s`."""
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get(timeout=self.gather_s))
            except queue.Empty:
                break
        return batch

    def _serve(self, batch: list[_Pending]) -> None:
        # Requests with different sampling settings cannot share one generate call; seeded and unseeded
        # requests neither.
        groups: dict[tuple[Sampling, bool], list[_Pending]] = {}
        for p in batch:
            groups.setdefault((p.sampling, p.seed is not None), []).append(p)
        for (sampling, has_seeds), group in groups.items():
            try:
                gens = self.policy.generate([p.conversation for p in group], sampling,
                                            seeds=[p.seed for p in group] if has_seeds else None)
            except BaseException as e:  # noqa: BLE001 - hand the failure to every waiting caller
                for p in group:
                    p.future.set_exception(e)
                continue
            for p, g in zip(group, gens, strict=True):
                p.future.set_result(g)


def policy_lm(policy: Policy, *, engine: BatchingEngine | None = None, **kwargs) -> dspy.LM:
    """A `dspy.LM` that runs on the live policy, with DSPy's cache off."""
    engine = engine or BatchingEngine(policy)
    s = policy.sampling
    settings = {"temperature": s.temperature, "max_tokens": s.max_new_tokens} | kwargs
    return dspy.LM(f"local/{policy.name}", engine=engine, cache=False, num_retries=0, **settings)


def _to_conversation(request) -> Conversation:
    messages: Conversation = []
    if request.system is not None:
        system = (
            request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        )
        messages.append({"role": "system", "content": system})
    messages += [{"role": m.role, "content": m.text or ""} for m in request.messages]
    return messages


def _sampling(default: Sampling, config) -> Sampling:
    return Sampling(
        temperature=default.temperature if config.temperature is None else float(config.temperature),
        top_p=default.top_p if config.top_p is None else float(config.top_p),
        max_new_tokens=default.max_new_tokens if config.max_tokens is None else int(config.max_tokens),
    )
