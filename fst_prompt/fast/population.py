"""The carried population of instructions (fast weights): records, Pareto front, top-K, JSON.

A candidate is `{predictor_name: instruction}` plus its per-instance scores on the current anchor set,
its parents and the cycle it was born in. Selection uses gepa's own Pareto helpers: per anchor
instance, the candidates tied at the best score form that instance's front; gepa removes dominated
candidates; we keep up to K survivors (most fronts covered, then mean score) and fill any free places
by mean score.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class Candidate:
    id: str
    instructions: dict[str, str]
    scores: dict[str, float] = field(default_factory=dict)  # anchor instance id -> score, current weights
    parents: list[str] = field(default_factory=list)
    born_cycle: int = 0

    @property
    def mean_score(self) -> float:
        return sum(self.scores.values()) / len(self.scores) if self.scores else 0.0


def candidate_id(instructions: dict[str, str]) -> str:
    """A content hash: the same instructions always get the same id."""
    return hashlib.sha1(json.dumps(instructions, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class Population:
    k: int
    candidates: list[Candidate]
    trials: list[Candidate] = field(default_factory=list)  # online judging: proposals on trial, outside the K

    @property
    def contexts(self) -> list[dict[str, str]]:
        """The instructions RL rolls out with: the K candidates (best first as carried), then any on trial."""
        return [c.instructions for c in self.candidates + self.trials]

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"population size k must be >= 1, got {self.k}")
        ids = [c.id for c in self.candidates]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate candidate ids in population: {ids}")

    @classmethod
    def seed(cls, instructions: dict[str, str], k: int) -> Population:
        return cls(k=k, candidates=[Candidate(id=candidate_id(instructions), instructions=dict(instructions))])

    def __len__(self) -> int:
        return len(self.candidates)

    def best(self) -> Candidate:
        """Highest mean score on the anchor set; the oldest wins ties (stable)."""
        return max(self.candidates, key=lambda c: c.mean_score)

    def add(self, candidate: Candidate) -> None:
        """Add a candidate, or refresh the scores of one with the same instructions."""
        for existing in self.candidates:
            if existing.id == candidate.id:
                existing.scores = dict(candidate.scores)
                return
        self.candidates.append(candidate)

    def pareto_front(self) -> list[Candidate]:
        """Candidates not dominated on the shared anchor instances (gepa's rule)."""
        from gepa.gepa_utils import find_dominator_programs

        fronts = self._instance_fronts()
        if not fronts:
            return list(self.candidates)
        survivors = find_dominator_programs(fronts, [c.mean_score for c in self.candidates])
        return [self.candidates[i] for i in sorted(survivors)]

    def select_top_k(self) -> Population:
        """At most K candidates: the Pareto front ranked by fronts covered then mean, then the best rest."""
        fronts = self._instance_fronts()
        coverage = {i: sum(i in f for f in fronts.values()) for i in range(len(self.candidates))}
        front_ids = {c.id for c in self.pareto_front()}
        order = sorted(range(len(self.candidates)),
                       key=lambda i: (self.candidates[i].id not in front_ids, -coverage[i],
                                      -self.candidates[i].mean_score, i))
        return Population(k=self.k, candidates=[self.candidates[i] for i in order[: self.k]], trials=list(self.trials))

    def _instance_fronts(self) -> dict[str, set[int]]:
        instances = set().union(*(c.scores for c in self.candidates)) if self.candidates else set()
        fronts: dict[str, set[int]] = {}
        for inst in sorted(instances):
            scores = [c.scores.get(inst, float("-inf")) for c in self.candidates]
            top = max(scores)
            fronts[inst] = {i for i, s in enumerate(scores) if s == top}
        return fronts

    # -- persistence -------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        out = {"schema_version": SCHEMA_VERSION, "k": self.k, "candidates": [asdict(c) for c in self.candidates]}
        return out | ({"trials": [asdict(c) for c in self.trials]} if self.trials else {})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Population:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"population schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
        return cls(k=data["k"], candidates=[Candidate(**c) for c in data["candidates"]],
                   trials=[Candidate(**c) for c in data.get("trials", [])])
