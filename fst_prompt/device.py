"""Where the weights live and in which dtype: one policy for the trainer, the live policy, the KL probe's
base model and `fst eval`.

`policy.dtype: auto` is fp32 on CPU (bf16 matmuls are slow there and fp32 keeps runs reproducible) and bf16
on a GPU that supports it (fp16 on one that does not). The device is this process's GPU (`LOCAL_RANK` under
`torchrun`/`accelerate launch`) when CUDA is available, else the CPU. The trainer trains in the same dtype:
its `bf16`/`fp16` flags follow it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from pathlib import Path
from typing import Any, Literal

import torch

DType = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_device() -> torch.device:
    """This process's GPU when CUDA is available (its `LOCAL_RANK` under a launcher), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def resolve_dtype(name: str, device: torch.device | str | None = None) -> torch.dtype:
    """`auto`: fp32 on CPU, bf16 on a GPU that has it, else fp16; otherwise the named dtype."""
    if name != "auto":
        if name not in DTYPES:
            raise ValueError(f"dtype must be one of {['auto', *DTYPES]}, got {name!r}")
        return DTYPES[name]
    device = torch.device(device) if device is not None else default_device()
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_causal_lm(path: str | Path, dtype: str = "auto", device: torch.device | str | None = None,
                   **kwargs: Any) -> Any:
    """A causal LM in the policy's dtype, on `device` (default: `default_device()`)."""
    from transformers import AutoModelForCausalLM

    device = torch.device(device) if device is not None else default_device()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device), **kwargs)
    return model.to(device)


def trainer_dtype(dtype: str) -> str:
    """The dtype the trainer holds its weights in: the policy's, except that fp16 trains fp32 weights under
    fp16 autocast (pure fp16 weights cannot be trained with a gradient scaler)."""
    resolved = resolve_dtype(dtype)
    return "float32" if resolved == torch.float16 else next(k for k, v in DTYPES.items() if v == resolved)


def mixed_precision_flags(dtype: str) -> dict[str, bool]:
    """The trainer's `bf16`/`fp16`/`use_cpu` flags for the policy's dtype, on the device it will use."""
    resolved = resolve_dtype(dtype)
    return {"bf16": resolved == torch.bfloat16, "fp16": resolved == torch.float16,
            "use_cpu": not torch.cuda.is_available()}


def release_memory() -> bool:
    """Between the loop's phases: collect garbage, empty the CUDA cache, and hand the C heap's free pages back to
    the system (glibc's `malloc_trim`). A GEPA round's tensors are freed but glibc may keep their pages, so without
    this the RL step after it can start gigabytes higher (Qwen-0.5B on a 24 GiB CPU machine was OOM-killed there).
    True when the heap was trimmed (glibc only; elsewhere the collection alone)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    name = ctypes.util.find_library("c")
    try:
        return bool(ctypes.CDLL(name).malloc_trim(0)) if name else False
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return False
