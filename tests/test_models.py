"""Model resolution: the conversion cache is atomic and reused; bad names fail clearly."""

import json

import pytest

from fst_prompt import models


def test_crashed_build_publishes_nothing_and_is_retried(tmp_path):
    final = tmp_path / "m"

    def crash(out):
        (out / "model.safetensors").write_text("half written")
        raise RuntimeError("killed mid-conversion")

    with pytest.raises(RuntimeError):
        models._build_once(final, crash)
    assert not final.exists()
    assert not list(tmp_path.glob(".m.tmp-*"))  # the partial folder is gone too

    calls = []

    def build(out):
        calls.append(out)
        (out / "config.json").write_text("{}")

    assert models._build_once(final, build) == final
    assert models._build_once(final, build) == final  # second call: reused, not rebuilt
    assert len(calls) == 1
    assert json.loads((final / models.MARKER).read_text())["version"] == models.BUILD_VERSION
    assert (final / "LICENSE").read_text().startswith("                                 Apache License")


def test_folder_without_marker_is_never_trusted(tmp_path):
    final = tmp_path / "m"
    final.mkdir()
    (final / "config.json").write_text("{}")  # looks like a model, but no completion marker
    leftover = tmp_path / ".m.tmp-999999"
    leftover.mkdir()
    models._build_once(final, lambda out: (out / "config.json").write_text('{"fresh": 1}'))
    assert json.loads((final / "config.json").read_text()) == {"fresh": 1}
    assert not leftover.exists()


def test_outdated_cache_version_is_rebuilt(tmp_path):
    final = tmp_path / "m"
    final.mkdir()
    (final / models.MARKER).write_text(json.dumps({"version": models.BUILD_VERSION - 1}))
    assert not models.is_complete(final)


def test_resolve_model_reuses_cache_without_converting(tmp_path, monkeypatch):
    monkeypatch.setenv("FST_PROMPT_CACHE", str(tmp_path))
    built = []
    monkeypatch.setitem(models.GGUF_MODELS, "smollm2-135m-instruct", lambda: built.append(1) or tmp_path)
    monkeypatch.setattr(models, "convert_gguf", lambda gguf, out, name: (out / "config.json").write_text("{}"))
    first = models.resolve_model("smollm2-135m-instruct")
    second = models.resolve_model("smollm2-135m-instruct")
    assert first == second == tmp_path / "models" / "smollm2-135m-instruct"
    assert built == [1]


def test_existing_folder_and_unknown_name(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert models.resolve_model(tmp_path) == tmp_path
    with pytest.raises(ValueError, match="unknown model 'gpt-17'.*smollm2-135m-instruct"):
        models.resolve_model("gpt-17")


def test_tiny_model_has_smollm2_chat_template(tiny_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert len(tok) == 49152
