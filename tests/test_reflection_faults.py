"""The reflection endpoint: checked at start-up, refusals (401/403/404) stop the run with one line,
transient faults are retried by the OpenAI client and counted, and a run on a 30%-fault endpoint completes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fst_prompt import loop
from fst_prompt.cli import main
from fst_prompt.fast.reflection import ReflectionEndpointError
from fst_prompt.state import RunState
from tests.scripted import FakeOpenAI
from tests.test_loop import config

KEY = "sk-fault-test-3b9c-never-printed"


@pytest.mark.parametrize("status, reason", [(401, "the API key was refused"), (404, "not found")])
def test_a_refusing_endpoint_fails_at_start_up_in_one_line(tmp_path, tiny_path, endpoint, monkeypatch, capsys,
                                                             status, reason):
    monkeypatch.setenv("FST_FAULT_KEY", KEY)
    FakeOpenAI.status, FakeOpenAI.first_clean = status, False
    config(tmp_path, tiny_path, endpoint, reflection__api_key_env="FST_FAULT_KEY")
    assert main(["run", str(tmp_path / "config.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"the reflection endpoint {endpoint} (model 'fake') failed the start-up check" in err
    assert f"{status} ({reason}" in err and KEY not in err and len(err.strip().splitlines()) == 1
    assert len(FakeOpenAI.auth_headers) == 1  # one request, not retried
    assert not (tmp_path / "run" / "state.json").exists()  # nothing started


def test_a_refusal_mid_run_stops_the_round_and_the_run_resumes_once_fixed(tmp_path, tiny_path, endpoint):
    FakeOpenAI.status = 401  # the start-up check passes, every later request is refused
    cfg = config(tmp_path, tiny_path, endpoint, reflection__retries=2)
    with pytest.raises(ReflectionEndpointError, match="401 \\(the API key was refused\\)"):
        loop.run_loop(cfg, progress=False)
    assert len(FakeOpenAI.auth_headers) == 2  # the check, then one refused call: no retries, no further calls
    assert (RunState.load(tmp_path / "run").cycle, RunState.load(tmp_path / "run").phase) == (0, "fast")
    FakeOpenAI.status = 200
    assert loop.run_loop(cfg, resume=True, progress=False).cycle == 2


def test_a_30_percent_fault_endpoint_still_completes_an_fst_run(tmp_path, tiny_path, endpoint, capsys):
    FakeOpenAI.fault_rate = 0.3
    cfg = config(tmp_path, tiny_path, endpoint, reflection__retries=2, gepa__max_metric_calls=40)
    state = loop.run_loop(cfg, progress=False)
    assert state.cycle == 2 and FakeOpenAI.faults  # faults were injected, the run completed
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert sum(r["reflection_retried"] for r in rounds) == FakeOpenAI.faults.count("500")  # each 500 retried once
    assert state.ledger.reflection_faults == sum(r["reflection_faults"] for r in rounds) >= len(FakeOpenAI.faults)
    assert f"reflection faults {state.ledger.reflection_faults}" in capsys.readouterr().out


_CRASHING_SERVER = """
import os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # /v1/models: the readiness probe passes
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"object": "list", "data": []}')

    def do_POST(self):  # the first chat request kills it, as llama.cpp's AMX kernel does on some Xeons
        os.kill(os.getpid(), signal.SIGSEGV)

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_a_local_server_that_dies_at_the_first_request_is_named_with_its_signal(tmp_path, monkeypatch):
    from fst_prompt.config import ReflectionConfig
    from fst_prompt.fast import reflection

    class CrashingServer(reflection.LocalServer):
        def command(self) -> list[str]:
            return [sys.executable, "-c", _CRASHING_SERVER, str(self.port)]

    monkeypatch.setattr(reflection, "LocalServer", CrashingServer)
    monkeypatch.setattr(reflection, "assemble_gguf", lambda model: tmp_path / "model.gguf")
    with pytest.raises(ReflectionEndpointError) as e, reflection.open_reflection_lm(
            ReflectionConfig(retries=0, timeout_s=20), tmp_path):
        pass
    message = str(e.value)
    assert "failed the start-up check" in message and "the llama.cpp server was killed by SIGSEGV" in message
    assert str(tmp_path / "reflection_server.log") in message and "make clean setup-reflect" in message


_ONCE_CRASHING_SERVER = """
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

posts = Path(sys.argv[2])  # requests answered so far, over every process started with this file

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"object": "list", "data": []}')

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        n = int(posts.read_text()) + 1 if posts.exists() else 1
        posts.write_text(str(n))
        if n == 2:  # the start-up check is answered; the first real request kills the server
            os.kill(os.getpid(), signal.SIGSEGV)
        body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": f"answer {n}"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_a_local_server_that_dies_mid_run_is_started_again_and_asked_again(tmp_path, monkeypatch, capsys):
    from fst_prompt.config import ReflectionConfig
    from fst_prompt.fast import reflection

    class OnceCrashingServer(reflection.LocalServer):
        def command(self) -> list[str]:
            return [sys.executable, "-c", _ONCE_CRASHING_SERVER, str(self.port), str(tmp_path / "posts")]

    monkeypatch.setattr(reflection, "LocalServer", OnceCrashingServer)
    monkeypatch.setattr(reflection, "assemble_gguf", lambda model: tmp_path / "model.gguf")
    with reflection.open_reflection_lm(ReflectionConfig(retries=1, timeout_s=20), tmp_path) as lm:
        first_url = lm.base_url
        assert lm("a prompt") == "answer 3"  # request 2 killed the server; request 3 went to the new one
        assert lm.base_url != first_url and lm.stats.retried == 1 and lm.stats.failures == 0
        assert lm("another prompt") == "answer 4"
    assert "the llama.cpp server was killed by SIGSEGV" in capsys.readouterr().err


_RUN_HOLDING_A_SERVER = """
import sys, time
from pathlib import Path
from fst_prompt.fast import reflection

class Server(reflection.LocalServer):
    def command(self):
        return [sys.executable, "-c", sys.argv[2], str(self.port), sys.argv[3]]

with Server(Path("model.gguf"), start_timeout_s=60) as server:
    Path(sys.argv[1]).write_text(str(server.process.pid))
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_local_server_ends_when_its_run_is_killed(tmp_path):
    """A SIGKILLed run (the OOM killer) runs no `with` block; its llama.cpp server must not outlive it."""
    pid_file = tmp_path / "server.pid"
    run = subprocess.Popen([sys.executable, "-c", _RUN_HOLDING_A_SERVER, str(pid_file), _ONCE_CRASHING_SERVER,
                            str(tmp_path / "posts")])
    deadline = time.monotonic() + 60
    while not pid_file.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    server = int(pid_file.read_text())
    assert _alive(server)
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 10
    while _alive(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(server)
    if alive:
        os.kill(server, signal.SIGKILL)
    assert not alive, "the server outlived the run that started it"
