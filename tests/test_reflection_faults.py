"""The reflection endpoint: checked at start-up, refusals (401/403/404) stop the run with one line,
transient faults are retried by the OpenAI client and counted, and a run on a 30%-fault endpoint completes."""

import json

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
