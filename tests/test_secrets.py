"""Secrets: an API key is read from the environment variable the config names and is written nowhere (every
file of a run in fst and rl modes, its export, the console); a key pasted where the NAME belongs is refused
without being echoed."""

import pytest
import yaml

from fst_prompt.cli import main
from fst_prompt.config import looks_like_env_name, redacted
from tests.scripted import FakeOpenAI

CANARY = "sk-canary-7Qz3-written-nowhere"


def write_config(tmp_path, tiny_path, endpoint, mode):
    config = {"task": "chain_sum", "task_kwargs": {"sizes": [16, 4, 4]},
              "policy": {"model": str(tiny_path), "batch_size": 4, "max_new_tokens": 4},
              "gepa": {"max_metric_calls": 10, "population_size": 2, "reflection_minibatch_size": 2},
              "reflection": {"model": "fake", "base_url": endpoint, "api_key_env": "FST_CANARY_KEY", "retries": 0},
              "rl": {"problems_per_step": 2, "num_generations": 2, "max_completion_length": 4, "save_every": 1,
                     "warmup_steps": 0, "kl_probe_n": 2, "kl_samples": 1},
              "loop": {"mode": mode, "cycles": 1, "steps_per_cycle": 1, "eval_n": 4, "test_n": 4},
              "run_dir": str(tmp_path / "run")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def assert_nowhere(secret, root, console):
    assert secret not in console
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("mode", ["fst", "rl"])
def test_the_key_is_written_nowhere(tmp_path, tiny_path, endpoint, monkeypatch, capsys, mode):
    monkeypatch.setenv("FST_CANARY_KEY", CANARY)
    FakeOpenAI.auth_headers.clear()
    config = write_config(tmp_path, tiny_path, endpoint, mode)
    assert main(["run", str(config)]) == 0
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "exported")]) == 0
    if mode == "fst":  # the key did reach the endpoint
        assert FakeOpenAI.auth_headers and all(h == f"Bearer {CANARY}" for h in FakeOpenAI.auth_headers)
    out = capsys.readouterr()
    assert_nowhere(CANARY, tmp_path, out.out + out.err)


@pytest.mark.parametrize("pasted", ["sk_live_4f9aA83kd93", "sk-abc 123", "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
                                    "Zx8Qw2Er5Ty7Ui9Op1As3Df", "hf_abcdefghijklmnop"])
@pytest.mark.parametrize("mode", ["fst", "rl"])
def test_a_key_pasted_as_the_variable_name_is_refused_and_never_echoed(tmp_path, capsys, pasted, mode):
    config = write_config(tmp_path, "no-such-model", "http://127.0.0.1:9/v1", mode)
    assert main(["run", str(config), "--set", f"reflection.api_key_env={pasted}"]) == 2
    out = capsys.readouterr()
    assert "never the key itself" in out.err
    assert_nowhere(pasted, tmp_path, out.out + out.err)  # the config file holds the name only
    assert not (tmp_path / "run").exists()


def test_names_that_look_like_names_pass():
    for name in ("OPENAI_API_KEY", "FST_TEST_KEY", "HF_TOKEN", "my_key", "_X1"):
        assert looks_like_env_name(name), name
    for value in ("1ABC", "A-B", "A B", "x" * 65, "sk_live_4f9aA83kd93", "AKIAIOSFODNN7EXAMPLE"):
        assert not looks_like_env_name(value), value


def test_endpoint_credentials_are_not_written():
    dump = {"reflection": {"base_url": "https://user:s3cr3t@api.example.com/v1?key=s3cr3t2"}, "seed": 0}
    assert redacted(dump)["reflection"]["base_url"] == "https://***@api.example.com/v1?***"
    assert redacted({"reflection": {"base_url": "http://127.0.0.1:8080/v1"}})["reflection"]["base_url"] == \
        "http://127.0.0.1:8080/v1"
    assert dump["reflection"]["base_url"].startswith("https://user:")  # the config itself is left alone
