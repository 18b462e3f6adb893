"""A run's process-level safeguards and config bookkeeping: the run directory's lock (one job at a time), the
flattened config a resume is checked against, and which TRL checkpoint a run (or a reader of it) may trust.

`RunState` and `Ledger` (the run's resumable state and what it spent) live with the run directory's other
records in `rundir.py`, and the atomic writers in `atomic.py`; they are importable from here too, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fst_prompt.atomic import append_jsonl, read_jsonl, write_json_atomic, write_text_atomic
from fst_prompt.rundir import STATE_VERSION, Ledger, RunState

__all__ = ["STATE_VERSION", "Ledger", "RunDirInUse", "RunState", "SAFE_TO_CHANGE", "append_jsonl", "changed_fields",
           "config_fields", "last_complete_checkpoint", "read_jsonl", "run_lock", "write_json_atomic",
           "write_text_atomic"]


class RunDirInUse(FileExistsError):
    """Another process holds the run directory's lock."""


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir/.lock` (an OS lock, released when the process ends, however it ends) for the block; a
    second process on the same directory gets `RunDirInUse` naming the holder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunDirInUse(f"{run_dir} is in use by another fst process (pid {holder}): wait for it to end, or "
                          "choose another run_dir") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def config_fields(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config dump flattened to dotted paths: {"gepa.max_metric_calls": 200, ...}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat |= config_fields(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Fields a resumed run may change: they decide how long it runs, what is shown or logged, how much memory a
# step takes (gradient checkpointing recomputes the same activations) and how the reflection endpoint is
# reached, never which problems, candidates or steps the run uses.
SAFE_TO_CHANGE = ("loop.cycles", "loop.eval_n", "loop.eval_every", "loop.eval_every_n", "loop.test_n",
                  "policy.batch_size", "policy.weight_first", "rl.trainer_args.gradient_checkpointing",
                  "reflection.base_url", "reflection.api_key_env", "reflection.timeout_s", "reflection.retries",
                  "reflection.backoff_s", "reflection.threads", "rl.report_to", "gepa.use_wandb", "gepa.use_mlflow",
                  "loop.wait_minutes", "run_dir")


def changed_fields(old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[str]:
    """Dotted paths whose values differ between two `config_fields` dumps, except the safe ones. A field the
    old dump lacks (added to fst-prompt since the run started) counts as changed only when `new` sets it to
    something other than its default."""
    defaults = defaults or {}
    def differs(k: str) -> bool:
        if k not in old and k in defaults:
            return new.get(k) != defaults[k]
        return old.get(k) != new.get(k)
    return sorted(k for k in set(old) | set(new) if k not in SAFE_TO_CHANGE and differs(k))


def last_complete_checkpoint(checkpoints: Path, *, remove_partial: bool = True) -> str | None:
    """The newest TRL checkpoint in `checkpoints/` that was fully written, or None.

    The Trainer writes `trainer_state.json` last, so a checkpoint without it never finished (a kill
    mid-save). The run that owns the folder removes such leftovers before resuming (`remove_partial`);
    readers (`fst export`) pass False and change nothing.
    """
    found = sorted(Path(checkpoints).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [p for p in found if (p / "trainer_state.json").is_file()]
    if remove_partial:
        for path in set(found) - set(complete):
            shutil.rmtree(path)
    return str(complete[-1]) if complete else None
