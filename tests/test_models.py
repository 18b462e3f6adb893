"""Model resolution: the conversion cache is atomic and reused; hub ids come from the HF cache; bad names fail
clearly."""

import json
import shutil

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


def test_outdated_cache_version_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("FST_PROMPT_CACHE", str(tmp_path))
    final = tmp_path / "models" / "smollm2-135m-instruct"
    final.mkdir(parents=True)
    (final / models.MARKER).write_text(json.dumps({"version": models.BUILD_VERSION - 1}))
    (final / "stale.bin").write_text("from the old conversion")
    assert not models.is_complete(final)
    built = []
    monkeypatch.setitem(models.GGUF_MODELS, "smollm2-135m-instruct", lambda: built.append(1) or tmp_path)
    monkeypatch.setattr(models, "convert_gguf", lambda gguf, out, name: (out / "config.json").write_text("{}"))
    assert models.resolve_model("smollm2-135m-instruct") == final
    assert built == [1] and models.is_complete(final) and not (final / "stale.bin").exists()
    assert json.loads((final / models.MARKER).read_text())["version"] == models.BUILD_VERSION
    models.resolve_model("smollm2-135m-instruct")
    assert built == [1]  # rebuilt once, then reused


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
    with pytest.raises(ValueError, match="unknown model 'gpt-17'.*smollm2-135m-instruct.*hub id"):
        models.resolve_model("gpt-17")
    (tmp_path / "runs" / "x").mkdir(parents=True)  # an existing folder that holds no model is not a hub id
    with pytest.raises(ValueError, match="unknown model"):
        models.resolve_model(tmp_path / "runs" / "x")


SHA = "0123456789abcdef0123456789abcdef01234567"


def _fake_hub_cache(tmp_path, monkeypatch, files_from=None):
    """An HF_HOME whose hub cache holds `org/name` the way huggingface_hub lays it out (refs/main -> snapshot)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "hf" / "hub" / "models--org--name"
    snapshot = repo / "snapshots" / SHA
    if files_from is not None:
        shutil.copytree(files_from, snapshot)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(SHA)
    return snapshot


def test_hub_id_resolves_to_its_cached_snapshot_and_loads(tiny_path, tmp_path, monkeypatch):
    from fst_prompt.policy import Policy

    snapshot = _fake_hub_cache(tmp_path, monkeypatch, files_from=tiny_path)
    assert models.resolve_model("org/name") == snapshot
    policy = Policy.load("org/name", batch_size=2)
    assert policy.name == "org/name" and policy.model.config.num_hidden_layers == 2


def test_hub_id_neither_cached_nor_on_the_hub_is_one_clear_error(tmp_path, monkeypatch):
    _fake_hub_cache(tmp_path, monkeypatch)
    with pytest.raises(FileNotFoundError, match=r"model 'nobody/nothing' is not in the Hugging Face cache \(.*hf/hub\) "
                       r"and the hub could not provide it: HF_HUB_OFFLINE is set.*hf download nobody/nothing"):
        models.resolve_model("nobody/nothing")


def test_hub_id_when_the_hub_is_unreachable(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    _fake_hub_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(models, "_hub_offline", lambda: False)
    calls = []

    def snapshot_download(repo_id, *, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        if local_files_only:
            raise LocalEntryNotFoundError("not cached")
        raise ConnectionError("Failed to resolve 'huggingface.co'\nmore detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(FileNotFoundError, match=r"provide it: ConnectionError: Failed to resolve 'huggingface.co'\. "):
        models.resolve_model("org/name")
    assert calls == [True, False]  # the cache first, then the hub


def test_tiny_model_has_smollm2_chat_template(tiny_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_path)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert len(tok) == 49152
