"""The run directory, and the one module that knows its layout: file names, typed records, readers, writers.

    run_dir/
      config.yaml            the run's config (secrets redacted)
      state.json             `RunState`: cycle, phase, population, ledger; written after every phase
      start.json             `CycleRecord` of the start: base weights, seed instruction (cycle -1: before cycle 0)
      metrics.jsonl          one `CycleRecord` per evaluated cycle
      rounds.jsonl           one `RoundRecord` per GEPA round
      steps.jsonl            one `StepRecord` per RL step (TRL's log dict, tagged)
      rollouts.jsonl         every RL rollout (`rollouts.RolloutStore`), which the fast loop reads
      evals.jsonl            one `StepEvalRecord` per light evaluation between RL steps (loop.eval_every)
      result.json            test accuracy of the seed vs the best instruction, at the end (loop.test_n)
      forgetting.json        a schedule's accuracy on task i after stage j
      program/               the student program of a run started from Python (`FST.compile`)
      checkpoints/[stage-i/] TRL checkpoints
      gepa/cycle-<c>/        gepa's own state of a round;  gepa.log, plots/, reflection_journal.jsonl

Everything else (the loop, plots, export, the API, evals/) goes through `RunDir` and the records here: nobody
else spells a file name or reads a record by its JSON key. Logs are JSONL appended one record per `write`
(a crash costs at most the line being written; readers skip a torn line) and a cycle or step written twice
(a crash and a resume) counts once, the last time.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fst_prompt.atomic import append_jsonl, read_jsonl, write_json_atomic, write_text_atomic
from fst_prompt.rollouts import RolloutStore

CONFIG, STATE, START, METRICS, ROUNDS = "config.yaml", "state.json", "start.json", "metrics.jsonl", "rounds.jsonl"
STEPS, EVALS, RESULT, FORGETTING = "steps.jsonl", "evals.jsonl", "result.json", "forgetting.json"
ROLLOUTS, DISTILL, DISTILL_STEPS = "rollouts.jsonl", "distill.jsonl", "distill_steps.jsonl"
PROGRAM, CHECKPOINTS, PLOTS, ERROR_LOG = "program", "checkpoints", "plots", "error.log"
# The run's record files (what a study keeps of a finished run besides its weights)
RECORDS = (METRICS, EVALS, ROUNDS, STEPS, STATE, CONFIG, FORGETTING, RESULT, START, ROLLOUTS, DISTILL, DISTILL_STEPS)
LOGS = (STEPS, EVALS, METRICS, ROUNDS, ROLLOUTS, DISTILL, DISTILL_STEPS)  # append-only logs
# What may already be in a new run's directory: the lock, a runner's log, and what an earlier start that
# stopped before the run began left (its error log, the reflection server's log and journal), and the program
# `FST.compile` saves before it starts the run.
FRESH_OK = {".lock", "log.txt", ERROR_LOG, "reflection_server.log", "reflection_journal.jsonl", PROGRAM}

STATE_VERSION = 1


@dataclass
class Ledger:
    """What a run has spent, so sample efficiency can be reported with and without GEPA's rollouts."""

    rl_steps: int = 0
    rl_rollouts: int = 0
    gepa_rollouts: int = 0  # completions the policy generated for the fast loop (its val checks included)
    gepa_val_rollouts: int = 0  # of those, the accepted proposals' held-out val checks (gepa.val_check_n)
    gepa_reused_rollouts: int = 0  # RL rollouts the fast loop read from the rollout store instead of drawing
    eval_rollouts: int = 0  # the cycle evaluations' (val accuracy best and seed, the KL probe's samples)
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
    distill_steps: int = 0  # FST-distill's optimizer steps (distill.steps at the end of each stage)
    distill_rollouts: int = 0  # the student's completions they trained on
    distill_seconds: float = 0.0

    @property
    def total_rollouts(self) -> int:
        """Every policy rollout that trained or chose something: RL's, the fast loop's new ones and distill's."""
        return self.rl_rollouts + self.gepa_rollouts + self.distill_rollouts

    @property
    def fast_new_rollouts(self) -> int:
        """The fast loop's own new rollouts, its val checks (a diagnostic) aside."""
        return self.gepa_rollouts - self.gepa_val_rollouts

    def add_round(self, record: RoundRecord) -> None:
        self.gepa_rollouts += record.policy_rollouts
        self.gepa_val_rollouts += record.val_rollouts
        self.gepa_reused_rollouts += record.reused_rollouts
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
    phase: str = "fast"  # the next phase of that cycle: fast, slow, eval or (a stage's last cycle) distill
    population: dict[str, Any] = field(default_factory=dict)  # Population.to_json()
    ledger: Ledger = field(default_factory=Ledger)
    version: int = STATE_VERSION
    config: dict[str, Any] | None = None  # the run's config, flattened (`config_fields`), checked on --resume
    # loop.archive: task -> the instruction its stage ended with ({id, instructions, stage}), outside the K slots
    archive: dict[str, dict[str, Any]] = field(default_factory=dict)

    def save(self, run_dir: Path) -> None:
        RunDir(run_dir).save_state(self)

    @classmethod
    def load(cls, run_dir: Path) -> RunState:
        return RunDir(run_dir).load_state()

    @classmethod
    def from_json(cls, data: dict[str, Any], source: Path | str = "state") -> RunState:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"{source} has state version {data.get('version')!r}; this fst-prompt reads "
                             f"{STATE_VERSION}")
        return cls(cycle=data["cycle"], phase=data["phase"], population=data["population"],
                   ledger=Ledger(**data["ledger"]), version=data["version"], config=data.get("config"),
                   archive=data.get("archive", {}))


_LEDGER = [f.name for f in dataclasses.fields(Ledger)]


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass(frozen=True)
class CycleRecord:
    """A cycle's evaluation (metrics.jsonl): val accuracy with the best and the seed instruction, on this task
    and every task seen before, the KL probe, and the ledger at the end of the cycle."""

    cycle: int
    mode: str
    stage: int
    task: str
    val_accuracy_best: float
    val_accuracy_seed: float
    val_accuracy_by_task: dict[str, float]
    val_majority_baseline: float | None  # the constant answer's accuracy (None: runs older than it)
    eval_n: int | None  # val problems scored (None: older runs; they scored loop.eval_n)
    kl: float
    kl_stderr: float | None
    best_id: str
    population: int
    ledger: Ledger
    time: float
    # KL to the base on the same probe problems rendered with the best instruction instead of the seed's: measured
    # where a distill phase follows (it moves the seed instruction's behaviour, which the probe above measures)
    kl_best: float | None = None
    kl_best_stderr: float | None = None

    @property
    def total_rollouts(self) -> int:
        return self.ledger.total_rollouts

    @property
    def rl_steps(self) -> int:
        return self.ledger.rl_steps

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("ledger")
        ledger = asdict(self.ledger)
        out = {k: data[k] for k in ("cycle", "mode", "stage", "task", "val_accuracy_best", "val_accuracy_seed",
                                    "val_accuracy_by_task", "val_majority_baseline", "eval_n", "kl", "kl_stderr",
                                    "best_id", "population")}
        best = {"kl_best": self.kl_best, "kl_best_stderr": self.kl_best_stderr} if self.kl_best is not None else {}
        return out | best | ledger | {"total_rollouts": self.total_rollouts, "time": self.time}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CycleRecord:
        """A metrics.jsonl line, of this version or an older one (fields it lacks take their neutral value)."""
        task = data.get("task", "")
        return cls(cycle=data["cycle"], mode=data["mode"], stage=data.get("stage", 0), task=task,
                   val_accuracy_best=data["val_accuracy_best"], val_accuracy_seed=data["val_accuracy_seed"],
                   val_accuracy_by_task=data.get("val_accuracy_by_task", {task: data["val_accuracy_best"]}),
                   val_majority_baseline=data.get("val_majority_baseline"), eval_n=data.get("eval_n"),
                   kl=data["kl"], kl_stderr=data.get("kl_stderr"), best_id=data["best_id"],
                   population=data["population"], ledger=Ledger(**{k: data[k] for k in _LEDGER if k in data}),
                   time=data.get("time", 0.0), kl_best=data.get("kl_best"), kl_best_stderr=data.get("kl_best_stderr"))


@dataclass(frozen=True)
class DistillRecord:
    """A distill phase (distill.jsonl): what it cost, and the stage's evaluation before and after it (val accuracy
    with the best and the seed instruction on every task seen, KL to the base)."""

    stage: int
    task: str
    cycle: int  # the stage's last cycle, after whose evaluation it ran
    student: str  # what the student was shown: seed / none
    teacher_id: str  # the candidate whose instruction the teacher was shown
    steps: int
    rollouts: int
    seconds: float
    eval_n: int | None
    before: dict[str, Any]  # val_accuracy_best/_seed/_by_task, kl(_stderr), kl_best(_stderr) (the probe, best instr.)
    after: dict[str, Any]
    time: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DistillRecord:
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class RoundRecord:
    """A GEPA round (rounds.jsonl): what it tried, kept and spent."""

    cycle: int
    proposals_tried: int  # usable proposals gepa evaluated
    proposals_accepted: int  # new candidates gepa kept
    proposal_failures: dict[str, int]  # lm_failed / empty / unchanged / too_long / template_echo / duplicate
    metric_calls: int  # gepa's count (problems scored, each with S rollouts), all re-scoring included
    policy_rollouts: int  # completions the policy actually generated this round
    reflection_calls: int
    reflection_failures: int
    reflection_prompt_tokens: int
    reflection_completion_tokens: int
    reflection_seconds: float
    seconds: float
    best_id: str
    best_score: float
    population: list[dict[str, Any]] = field(default_factory=list)  # id, mean score, parents
    proposals: list[dict[str, Any]] = field(default_factory=list)  # text, scores, accepted, gains
    reflection_retried: int = 0  # transient error responses (408, 409, 429, 5xx) received from the endpoint
    task: str = ""  # the task of the round's stage
    anchor: list[int] = field(default_factory=list)  # the train problems it was anchored on
    judging: str = "own"  # own: sampled its own rollouts; minibatch / online: read RL's (gepa.rollouts = rl)
    reused_rollouts: int = 0  # RL rollouts read from the store (scores and reflection), not drawn
    val_rollouts: int = 0  # of policy_rollouts, the held-out val checks of accepted proposals
    trials: list[dict[str, Any]] = field(default_factory=list)  # online: proposals put on trial for the next T steps

    @property
    def reflection_faults(self) -> int:
        """Everything that went wrong with the reflection LM: retried errors, failed requests, unusable replies."""
        unusable = sum(v for k, v in self.proposal_failures.items() if k in ("empty", "too_long", "template_echo"))
        return self.reflection_retried + self.reflection_failures + unusable

    @property
    def all_reflection_failed(self) -> bool:
        return self.reflection_calls > 0 and self.reflection_failures == self.reflection_calls

    @property
    def rejected(self) -> list[dict[str, str]]:
        """The instructions of the proposals gepa evaluated and rejected."""
        return [p["instructions"] for p in self.proposals if not p["accepted"]]

    @property
    def accepted_gains(self) -> list[tuple[float, float | None]]:
        """Each accepted proposal's gain over its parent: on the anchor, and on held-out val (None: not checked)."""
        return [(p["anchor_gain"], p.get("val_gain")) for p in self.proposals if p["accepted"] and "anchor_gain" in p]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        head = {"task": data.pop("task"), "anchor": data.pop("anchor")}
        return head | data | {"reflection_faults": self.reflection_faults}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundRecord:
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class StepRecord:
    """An RL step (steps.jsonl): TRL's log dict, tagged with the cycle, stage and task, and the problems and
    population fingerprint of its generation batch."""

    step: int
    cycle: int
    stage: int
    task: str
    reward: float
    time: float
    frac_reward_zero_std: float | None = None  # groups whose rollouts all scored alike (no gradient)
    kl: float | None = None  # TRL's train KL (under the changing prompts; not the probe's)
    problems: list[int] = field(default_factory=list)
    logs: dict[str, Any] = field(default_factory=dict)  # every number TRL logged

    @property
    def context_rewards(self) -> dict[str, float]:
        """Mean reward per context of the population ("context_0", ...), as logged."""
        return {k.split("/")[-1]: v for k, v in self.logs.items() if k.startswith("reward/context_")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepRecord:
        return cls(step=data["step"], cycle=data.get("cycle", 0), stage=data.get("stage", 0), task=data.get("task", ""),
                   reward=data["reward"], time=data.get("time", 0.0),
                   frac_reward_zero_std=data.get("frac_reward_zero_std"), kl=data.get("kl"),
                   problems=data.get("problems", []), logs=data)


@dataclass(frozen=True)
class StepEvalRecord:
    """A light evaluation between RL steps (evals.jsonl): the best instruction on the first eval_every_n val
    problems, with the work done so far."""

    cycle: int
    stage: int
    task: str
    rl_steps: int
    val_accuracy_best: float
    eval_n: int
    total_rollouts: int
    seconds: float  # GEPA + RL work so far
    time: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepEvalRecord:
        return cls(**_known(cls, data))


@dataclass(frozen=True)
class TaskResult:
    """result.json, per task: test accuracy of the seed vs the best instruction."""

    test_n: int
    seed_test_accuracy: float
    best_test_accuracy: float
    seed_instructions: dict[str, str]
    best_instructions: dict[str, str]


class RunDir:
    """A run directory: where each file is, how each record is written and read."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and self.path.resolve() == other.path.resolve()

    def __hash__(self) -> int:
        return hash(self.path.resolve())

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- where things are ---------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def program_dir(self) -> Path:
        return self.path / PROGRAM

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS

    def checkpoints(self, stage: int | None = None) -> Path:
        """Where TRL keeps the checkpoints of a run (stage=None) or of one stage of a schedule."""
        return self.path / CHECKPOINTS / (f"stage-{stage}" if stage is not None else "")

    def distill_checkpoints(self, stage: int | None = None) -> Path:
        """Where the distill phase at the end of a run (or of one stage of a schedule) keeps its checkpoints."""
        return self.checkpoints(stage) / "distill"

    @property
    def distill_steps_path(self) -> Path:
        return self.path / DISTILL_STEPS

    def gepa_dir(self, cycle: int) -> Path:
        return self.path / "gepa" / f"cycle-{cycle}"

    @property
    def gepa_root(self) -> Path:
        """gepa's own state of every round (the `gepa_dir`s)."""
        return self.path / "gepa"

    @property
    def gepa_log(self) -> Path:
        return self.path / "gepa.log"

    @property
    def steps_path(self) -> Path:
        return self.path / STEPS

    @property
    def evals_path(self) -> Path:
        return self.path / EVALS

    @property
    def rollouts(self) -> RolloutStore:
        """Every RL rollout of the run, which the fast loop reads (`rollouts.py`)."""
        return RolloutStore(self.path / ROLLOUTS)

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def has_cycles(self) -> bool:
        return (self.path / METRICS).is_file()

    def is_started(self) -> bool:
        return (self.path / STATE).exists()

    def leftovers(self) -> list[str]:
        """Files a fresh run would not expect here."""
        return sorted(p.name for p in self.path.iterdir() if p.name not in FRESH_OK) if self.path.is_dir() else []

    # -- writers -----------------------------------------------------------------------------------

    def write_config(self, text: str) -> None:
        write_text_atomic(self.config_path, text)

    def save_state(self, state: RunState) -> None:
        write_json_atomic(self.path / STATE, asdict(state))

    def write_start(self, record: CycleRecord) -> None:
        write_json_atomic(self.path / START, record.to_json())

    def append_cycle(self, record: CycleRecord) -> None:
        append_jsonl(self.path / METRICS, record.to_json())

    def append_round(self, record: RoundRecord) -> None:
        append_jsonl(self.path / ROUNDS, record.to_json())

    def append_step(self, record: dict[str, Any]) -> None:
        """TRL's log dict of a step (or its end-of-training summary), tagged."""
        append_jsonl(self.path / STEPS, record)

    def append_step_eval(self, record: StepEvalRecord) -> None:
        append_jsonl(self.path / EVALS, record.to_json())

    def append_distill(self, record: DistillRecord) -> None:
        append_jsonl(self.path / DISTILL, record.to_json())

    def write_result(self, mode: str, model: str, tasks: dict[str, TaskResult]) -> None:
        write_json_atomic(self.path / RESULT, {"mode": mode, "model": model,
                                               "tasks": {k: asdict(v) for k, v in tasks.items()}})

    def write_forgetting(self, matrix: dict[str, Any]) -> None:
        write_json_atomic(self.path / FORGETTING, matrix)

    # -- readers -----------------------------------------------------------------------------------

    def load_state(self) -> RunState:
        path = self.path / STATE
        if not path.is_file():
            raise FileNotFoundError(f"nothing to resume: {path} does not exist (start without --resume)")
        return RunState.from_json(json.loads(path.read_text()), path)

    def cycles(self) -> list[CycleRecord]:
        """The evaluated cycles in order (a cycle evaluated twice, by a crash and a resume: the last one)."""
        path = self.path / METRICS
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: is {self.path} a `fst run` directory (one that "
                                    "finished a cycle)?")
        by_cycle = {r["cycle"]: r for r in read_jsonl(path)}
        return [CycleRecord.from_json(by_cycle[c]) for c in sorted(by_cycle)]

    def start(self) -> CycleRecord | None:
        """The evaluation before any step (runs older than it: None)."""
        path = self.path / START
        return CycleRecord.from_json(json.loads(path.read_text())) if path.is_file() else None

    def rounds(self) -> list[RoundRecord]:
        """The GEPA rounds in the order they were committed (a round re-run after a crash: the last one)."""
        path = self.path / ROUNDS
        by_cycle = {r["cycle"]: r for r in read_jsonl(path)} if path.is_file() else {}
        return [RoundRecord.from_json(by_cycle[c]) for c in sorted(by_cycle)]

    def steps(self) -> list[StepRecord]:
        """The RL steps in order (a step logged twice after a resume: the last one)."""
        path = self.path / STEPS
        by_step = {}
        for record in read_jsonl(path) if path.is_file() else []:
            if "reward" in record:  # the end-of-training summary has no reward
                by_step[(record.get("stage", 0), record["step"])] = record
        return [StepRecord.from_json(by_step[k]) for k in sorted(by_step)]

    def step_evals(self) -> list[StepEvalRecord]:
        path = self.path / EVALS
        return [StepEvalRecord.from_json(r) for r in read_jsonl(path)] if path.is_file() else []

    def distills(self) -> list[DistillRecord]:
        """The distill phases by stage (one run twice, by a crash and a resume: the last one)."""
        path = self.path / DISTILL
        by_stage = {r["stage"]: r for r in read_jsonl(path)} if path.is_file() else {}
        return [DistillRecord.from_json(by_stage[k]) for k in sorted(by_stage)]

    def result(self) -> dict[str, TaskResult]:
        path = self.path / RESULT
        if not path.is_file():
            return {}
        return {k: TaskResult(**v) for k, v in json.loads(path.read_text())["tasks"].items()}

    def forgetting(self) -> dict[str, Any] | None:
        path = self.path / FORGETTING
        return json.loads(path.read_text()) if path.is_file() else None

    def config_data(self) -> dict[str, Any]:
        """The run's config.yaml as written, a plain dict: an older run's config may not load into today's
        config tree (fields renamed or added since), and a report needs only a value or two of it."""
        import yaml

        return yaml.safe_load(self.config_path.read_text())
