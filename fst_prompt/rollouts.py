"""The rollout store: every RL rollout of a run, kept in the run directory (`rollouts.jsonl`), so the fast loop
learns from the one stream of rollouts the slow loop draws instead of drawing its own.

    store = RunDir(path).rollouts
    store.append(rows)                                      # the trainer, after each generation batch
    served = serve(store.rows(task="date_normalize"), now=12, max_age=6)   # the fast step

A row (`StoredRollout`) is one rollout: the run's RL step it was generated at (`version`: the weights after that
many optimizer steps of the run), the task, the problem (`example_index` into the train split and `problem`,
the id of its inputs: a group's identity comes from the problem, never from the prompt text, which differs
inside a group by design), the candidate whose instructions rendered it and the rendered prompt's hash, the
completion (for a program of several predictors: each module call), its reward and the metric's feedback.

Rows are appended one generation batch per `write` (a crash costs at most that batch, and the reader skips a
torn line). On resume the rows of the steps being redone are dropped first (`drop_from`), so the store matches
the checkpoint the trainer resumes from. Size stays bounded: rows older than the last few cycles keep their
scores and ids but lose their text (`summarise_before`).

A reused score carries the oldest policy version it was measured under; `serve` refuses rows older than
`max_age` RL steps, so a score is never reused from weights that far back.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fst_prompt.atomic import append_jsonl, read_jsonl, write_text_atomic


@dataclass(frozen=True)
class StoredRollout:
    version: int  # the run's RL step the weights were at when this rollout was drawn
    task: str
    example_index: int  # into the task's train split
    problem: str  # the problem's id (fast.adapter.example_id): the same problem in every cycle and context
    candidate: str  # the id of the instructions that rendered it (fast.population.candidate_id)
    prompt_hash: str
    reward: float
    completion: str | None  # None once summarised (older than the kept cycles)
    feedback: str | None
    calls: list[dict[str, Any]] = field(default_factory=list)  # a program's module calls: module, inputs, text

    @property
    def summarised(self) -> bool:
        return self.completion is None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.calls:
            out.pop("calls")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredRollout:
        return cls(**{k: v for k, v in data.items() if k in _FIELDS})


_FIELDS = {f.name for f in StoredRollout.__dataclass_fields__.values()}


def prompt_hash(prompt: Any) -> str:
    """A short hash of a rendered prompt (a string or chat messages)."""
    return hashlib.sha1(json.dumps(prompt, sort_keys=True, default=str).encode()).hexdigest()[:12]


class RolloutStore:
    """`rollouts.jsonl`: append-only between resumes; rewritten atomically to drop or summarise rows."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def append(self, rows: list[StoredRollout]) -> None:
        if rows:
            append_jsonl(self.path, [r.to_json() for r in rows])

    def rows(self, task: str | None = None) -> list[StoredRollout]:
        if not self.path.is_file():
            return []
        rows = [StoredRollout.from_json(d) for d in read_jsonl(self.path)]
        return [r for r in rows if task is None or r.task == task]

    def __len__(self) -> int:
        return len(self.rows())

    def drop_from(self, version: int) -> int:
        """Remove the rows drawn at RL step `version` or later (the steps a resume redoes); how many went."""
        rows = self.rows()
        kept = [r for r in rows if r.version < version]
        if len(kept) != len(rows):
            self._rewrite(kept)
        return len(rows) - len(kept)

    def summarise_before(self, version: int) -> int:
        """Rows drawn before RL step `version` keep their scores and ids, not their text; how many changed."""
        rows = self.rows()
        old = [i for i, r in enumerate(rows) if r.version < version and not r.summarised]
        if old:
            for i in old:
                rows[i] = replace(rows[i], completion=None, feedback=None, calls=[])
            self._rewrite(rows)
        return len(old)

    def _rewrite(self, rows: list[StoredRollout]) -> None:
        write_text_atomic(self.path, "".join(json.dumps(r.to_json()) + "\n" for r in rows))


class StaleScore(ValueError):
    """A stored score measured under weights older than the staleness bound."""


@dataclass(frozen=True)
class StoredScore:
    """A candidate's score on one problem from the RL rollouts drawn under it: their mean reward, how many, and
    the oldest policy version among them."""

    score: float
    n: int
    version: int
    rows: list[StoredRollout] = field(repr=False, default_factory=list)

    def check(self, now: int, max_age: int) -> StoredScore:
        """This score, if it was measured at most `max_age` RL steps before step `now`; else `StaleScore`."""
        if now - self.version > max_age:
            raise StaleScore(f"score measured at RL step {self.version}, {now - self.version} steps before step "
                             f"{now}: older than the bound of {max_age} (gepa.max_staleness)")
        return self


def serve(rows: list[StoredRollout], *, now: int, max_age: int) -> dict[tuple[str, str], StoredScore]:
    """(candidate id, problem id) -> its score from the rows drawn at most `max_age` RL steps before `now`;
    older rows and summarised ones (no text to show reflection) are not used."""
    fresh: dict[tuple[str, str], list[StoredRollout]] = defaultdict(list)
    for r in rows:
        if now - r.version <= max_age and r.version < now and not r.summarised:
            fresh[(r.candidate, r.problem)].append(r)
    return {key: StoredScore(score=sum(r.reward for r in rs) / len(rs), n=len(rs), version=min(r.version for r in rs),
                             rows=rs).check(now, max_age)
            for key, rs in fresh.items()}


def recent_problems(rows: list[StoredRollout], *, now: int, max_age: int) -> list[int]:
    """The train problems (indices) of the rows drawn within `max_age` RL steps before `now`, in RL's order."""
    return list(dict.fromkeys(r.example_index for r in rows if 0 <= now - r.version - 1 < max_age))
