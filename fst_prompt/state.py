"""Run state on disk: atomic writes (temp file + rename, the rule every writer follows), the run's
resumable state (cycle, phase, population, ledger), its ledger of what was spent, and which TRL
checkpoint a run (or a reader of it) may trust."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fst_prompt.rundir import RoundRecord


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """One JSON record per line, in one `write` (logs; a crash can cost at most the line being written). A
    torn last line left by an earlier crash is ended first, so the new record starts a line of its own."""
    data = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file; lines that do not parse (a write cut short by a crash or a full disk) are
    skipped, and said so on stderr."""
    records, torn = [], 0
    for line in Path(path).read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            torn += 1
    if torn:
        print(f"note: skipped {torn} unreadable line(s) in {path} (a write cut short by a crash?)", file=sys.stderr)
    return records


STATE_VERSION = 1


@dataclass
class Ledger:
    """What a run has spent, so sample efficiency can be reported with and without GEPA's rollouts."""

    rl_steps: int = 0
    rl_rollouts: int = 0
    gepa_rollouts: int = 0  # completions the policy generated for GEPA
    gepa_metric_calls: int = 0  # gepa's count (cache hits included)
    proposals_tried: int = 0
    proposals_accepted: int = 0
    reflection_calls: int = 0
    reflection_tokens: int = 0
    reflection_seconds: float = 0.0
    fast_seconds: float = 0.0
    slow_seconds: float = 0.0
    rl_metric_errors: int = 0  # RL completions on which the task's metric raised (each scored 0)
    reflection_faults: int = 0  # retried error responses, failed requests and unusable replies

    @property
    def total_rollouts(self) -> int:
        return self.rl_rollouts + self.gepa_rollouts

    def add_round(self, record: RoundRecord) -> None:
        self.gepa_rollouts += record.policy_rollouts
        self.gepa_metric_calls += record.metric_calls
        self.proposals_tried += record.proposals_tried
        self.proposals_accepted += record.proposals_accepted
        self.reflection_calls += record.reflection_calls
        self.reflection_faults += record.reflection_faults
        self.reflection_tokens += record.reflection_prompt_tokens + record.reflection_completion_tokens
        self.reflection_seconds += record.reflection_seconds
        self.fast_seconds += record.seconds


@dataclass
class RunState:
    """Everything a resumed run needs besides the TRL checkpoint: written after every phase."""

    cycle: int = 0  # the cycle in progress
    phase: str = "fast"  # the next phase of that cycle: fast, slow or eval
    population: dict[str, Any] = field(default_factory=dict)  # Population.to_json()
    ledger: Ledger = field(default_factory=Ledger)
    version: int = STATE_VERSION
    config: dict[str, Any] | None = None  # the run's config, flattened (`config_fields`), checked on --resume

    def save(self, run_dir: Path) -> None:
        from fst_prompt.rundir import RunDir  # the run directory's layout has one owner

        RunDir(run_dir).save_state(self)

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        from fst_prompt.rundir import RunDir

        return RunDir(run_dir).load_state()

    @classmethod
    def from_json(cls, data: dict[str, Any], source: Path | str = "state") -> RunState:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"{source} has state version {data.get('version')!r}; this fst-prompt reads "
                             f"{STATE_VERSION}")
        return cls(cycle=data["cycle"], phase=data["phase"], population=data["population"],
                   ledger=Ledger(**data["ledger"]), version=data["version"], config=data.get("config"))


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
