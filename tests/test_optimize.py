"""`fst optimize` (= `fst run` in gepa mode) end to end against an OpenAI-compatible endpoint on loopback
(scripted replies).

The policy is the tiny random model, so nothing is learned; what is tested is the wiring: config,
run directory, per-round files, result.json, the API key used but written nowhere.
"""

import json

import pytest
import yaml

from fst_prompt.cli import main
from tests.scripted import FakeOpenAI

SECRET = "sk-test-5f3c9a1e-do-not-write-me"


def write_config(tmp_path, tiny_path, endpoint, **extra):
    config = {"task": "chain_sum", "task_kwargs": {"sizes": [12, 4, 4]},
              "policy": {"model": str(tiny_path), "batch_size": 4, "max_new_tokens": 4},
              "gepa": {"max_metric_calls": 16, "anchor_size": 4, "population_size": 2},
              "reflection": {"model": "fake", "base_url": endpoint, "api_key_env": "FST_TEST_KEY", "retries": 0},
              "loop": {"mode": "gepa", "cycles": 2, "eval_n": 4, "test_n": 4}, "run_dir": str(tmp_path / "run")} | extra
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_optimize_writes_run_dir_and_never_the_key(tmp_path, tiny_path, endpoint, monkeypatch, capsys):
    monkeypatch.setenv("FST_TEST_KEY", SECRET)
    FakeOpenAI.auth_headers.clear()
    assert main(["optimize", str(write_config(tmp_path, tiny_path, endpoint))]) == 0
    run = tmp_path / "run"
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "state.json", "metrics.jsonl", "rounds.jsonl", "result.json", "gepa.log"} <= names
    assert FakeOpenAI.auth_headers and all(h == f"Bearer {SECRET}" for h in FakeOpenAI.auth_headers)
    for path in run.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="ignore"), path
    rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    assert [r["cycle"] for r in rounds] == [0, 1] and rounds[0]["reflection_calls"] >= 1
    result = json.loads((run / "result.json").read_text())
    assert result["mode"] == "gepa" and result["tasks"]["chain_sum"]["test_n"] == 4
    assert set(result["tasks"]["chain_sum"]["best_instructions"]) == {"self"}
    assert "test accuracy on chain_sum (n=4): seed" in capsys.readouterr().out


@pytest.mark.parametrize("change, message", [
    ({"gepa": {"max_metric_calls": 0}}, "gepa.max_metric_calls: Input should be greater than or equal to 1"),
    ({"loop": {"cycles": "many"}}, "loop.cycles: Input should be a valid integer"),
    ({"rl": {"report_to": "slack"}}, "unknown tracker 'slack'"),
    ({"colour": "blue"}, "colour: unknown field"),
    ({"reflection": {"api_key_env": "sk-abc 123"}}, "never the key itself"),
    ({"reflection": {"template": "no placeholders"}}, "not a built-in template"),
    ({"reflection": {"template": "Improve:\n<curr_param>"}}, "the template must contain"),
])
def test_invalid_config_fails_before_any_model_loads(tmp_path, change, message, capsys):
    path = write_config(tmp_path, "no-such-model", "http://127.0.0.1:9/v1", **change)
    assert main(["optimize", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_missing_key_variable_is_reported(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FST_TEST_KEY", raising=False)
    path = write_config(tmp_path, "no-such-model", "http://127.0.0.1:9/v1")
    assert main(["optimize", str(path)]) == 2
    assert "'FST_TEST_KEY', which is not set" in capsys.readouterr().err


def test_set_overrides(tmp_path, capsys):
    path = write_config(tmp_path, "no-such-model", "http://127.0.0.1:9/v1")
    assert main(["optimize", str(path), "--set", "gepa.population_size=zero"]) == 2
    assert "gepa.population_size" in capsys.readouterr().err
