"""Config fields validated at load: a wrong value names its field and the fix (more config cases: test_loop.py)."""

import pytest

from fst_prompt.config import ConfigError, load_config


def _write(tmp_path, base_url: str) -> object:
    path = tmp_path / "run.yaml"
    path.write_text(f"task: chain_sum\nreflection:\n  base_url: {base_url}\n")
    return path


@pytest.mark.parametrize("bad", ["not-a-url", "127.0.0.1:8080/v1", "ftp://example.org/v1", "http://", "'https:///v1'"])
def test_reflection_base_url_must_be_an_http_url(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"reflection\.base_url: .*http\(s\) URL.*e\.g\. http://127\.0\.0\.1"):
        load_config(_write(tmp_path, bad))


def test_a_bad_base_url_is_not_repeated_in_the_message(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(_write(tmp_path, "sk-proj-secret0123456789"))
    assert "sk-proj" not in str(e.value)


@pytest.mark.parametrize("good, expected", [
    ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
    ("https://api.example.org/v1", "https://api.example.org/v1"),
    ("null", None),
])
def test_http_urls_and_unset_are_accepted(tmp_path, good, expected):
    assert load_config(_write(tmp_path, good)).reflection.base_url == expected


def test_the_default_checkpoint_interval_follows_the_cycle_length():
    from fst_prompt.api import configure

    assert configure({"task": "chain_sum"}).rl.save_every == 6  # T = 6: the paper's
    assert configure({"task": "chain_sum"}, steps_per_cycle=4).rl.save_every == 2
    assert configure({"task": "chain_sum"}, steps_per_cycle=5).rl.save_every == 1
    with pytest.raises(ValueError, match="rl.save_every .* must divide"):  # a value the user set is kept, and checked
        configure({"task": "chain_sum"}, steps_per_cycle=4, save_every=3)
