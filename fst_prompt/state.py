"""Run state on disk: atomic writes (temp file + rename, the rule every writer follows), the run's
resumable state (cycle, phase, population, ledger), its ledger of what was spent, and which TRL
checkpoint a run (or a reader of it) may trust."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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
    """One JSON record per line (logs; a crash can cost at most the line being written)."""
    with Path(path).open("a") as f:
        f.write(json.dumps(record, default=str) + "\n")


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

    @property
    def total_rollouts(self) -> int:
        return self.rl_rollouts + self.gepa_rollouts

    def add_round(self, record: Any) -> None:
        self.gepa_rollouts += record.policy_rollouts
        self.gepa_metric_calls += record.metric_calls
        self.proposals_tried += record.proposals_tried
        self.proposals_accepted += record.proposals_accepted
        self.reflection_calls += record.reflection_calls
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

    def save(self, run_dir: Path) -> None:
        write_json_atomic(Path(run_dir) / "state.json", asdict(self))

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        path = Path(run_dir) / "state.json"
        if not path.is_file():
            raise FileNotFoundError(f"nothing to resume: {path} does not exist (start without --resume)")
        data = json.loads(path.read_text())
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"{path} has state version {data.get('version')!r}; this fst-prompt reads {STATE_VERSION}")
        return cls(cycle=data["cycle"], phase=data["phase"], population=data["population"],
                   ledger=Ledger(**data["ledger"]), version=data["version"])


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
