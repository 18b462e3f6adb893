"""The Python API over the one driver: `run(config, **settings) -> RunResult` and `load_run(run_dir)`.

    import fst_prompt
    result = fst_prompt.run("programs/chain_sum-fst.yaml", cycles=1, run_dir="runs/try")
    result.best_instructions, result.cycles[-1].val_accuracy_best, result.weights

`fst run` is a thin shell over `run`; `FST(...).compile(...)` (optimizer.py) runs it on a DSPy program.
Settings are config fields by their leaf name where that is unambiguous (`cycles=1`, `learning_rate=5e-6`)
or dotted (`**{"rl.beta": 0.0}`); a leaf several sections share (`temperature`, `model`) must be dotted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from transformers import AutoTokenizer

from fst_prompt.config import ConfigError, RunConfig, load_config, validate_config
from fst_prompt.device import load_causal_lm
from fst_prompt.fast.population import Population
from fst_prompt.loop import run_loop
from fst_prompt.policy import Policy, Sampling
from fst_prompt.rundir import CycleRecord, Ledger, RunDir, RunState, TaskResult
from fst_prompt.stages import final_checkpoint
from fst_prompt.task import Task


@dataclass(frozen=True)
class RunResult:
    """What a run left in its directory, typed: its config, cycle records, population and files."""

    run_dir: RunDir
    config: RunConfig
    state: RunState
    start: CycleRecord | None  # the evaluation before any step (base weights, seed instruction)
    cycles: list[CycleRecord]
    population: Population
    test: dict[str, TaskResult]  # result.json, when the run measured test accuracy (loop.test_n)

    @property
    def best_instructions(self) -> dict[str, str]:
        return self.population.best().instructions

    @property
    def ledger(self) -> Ledger:
        return self.state.ledger

    @property
    def finished(self) -> bool:
        return self.state.cycle >= self.config.total_cycles

    @property
    def weights(self) -> Path | None:
        """The trained weights: the last complete checkpoint of the last stage that trained (None: gepa mode)."""
        last = final_checkpoint(self.run_dir, self.config)
        return Path(last) if last else None

    def policy(self, **kwargs: Any) -> Policy:
        """The run's final policy, loaded in this process: the trained weights, or the base model in gepa mode.
        `kwargs`: `Policy` settings (batch_size, sampling, ...); the run's policy settings by default."""
        pc = self.config.policy
        settings = {"batch_size": pc.batch_size, "seed": pc.seed or 0, "weight_first": pc.weight_first,
                    "sampling": Sampling(temperature=pc.temperature, max_new_tokens=pc.max_new_tokens)} | kwargs
        if self.weights is None:
            return Policy.load(pc.model, dtype=pc.dtype, **settings)
        model = load_causal_lm(self.weights, pc.dtype)  # a full model or a LoRA adapter (peft loads its base)
        return Policy(model, AutoTokenizer.from_pretrained(self.weights), name=f"{pc.model}@{self.weights.name}",
                      **settings)


def load_run(run_dir: str | Path) -> RunResult:
    """The result of the run in `run_dir` (finished or not: what it has written so far)."""
    run = RunDir(run_dir)
    if not run.is_run():
        raise FileNotFoundError(f"{run.config_path} does not exist: is {run.path} a `fst run` directory?")
    state = run.load_state()
    return RunResult(run_dir=run, config=load_config(run.config_path), state=state, start=run.start(),
                     cycles=run.cycles() if run.has_cycles() else [], population=Population.from_json(state.population),
                     test=run.result())


def run(config: RunConfig | str | Path | dict[str, Any], *, resume: bool = False, progress: bool = True,
        tasks: list[Task] | None = None, reflection_lm: Any = None, **settings: Any) -> RunResult:
    """Run the FST loop (or a baseline: `mode="rl"`, `"gepa"`, `"gepa-then-rl"`) and return its result.

    `config`: a `RunConfig`, a YAML file or a dict of fields; `settings` override its fields (see the module
    docstring). `tasks`: in-memory tasks instead of the config's task files; `reflection_lm`: a `dspy.LM`
    to reflect with instead of `reflection.*`. `resume`: continue the run in `run_dir`."""
    config = configure(config, **settings)
    run_loop(config, resume=resume, progress=progress, tasks=tasks, reflection_lm=reflection_lm)
    return load_run(config.run_dir)


def configure(config: RunConfig | str | Path | dict[str, Any] | None = None, **settings: Any) -> RunConfig:
    """A validated `RunConfig` from a config (object, YAML file or dict) and settings by leaf or dotted name."""
    if isinstance(config, RunConfig) and not settings:
        return config
    if isinstance(config, RunConfig):
        data, source = config.model_dump(exclude_unset=True), "the config"
    elif isinstance(config, str | Path):
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data, source = yaml.safe_load(path.read_text()) or {}, str(path)
    else:
        data, source = copy.deepcopy(config or {}), "the config"
    for key, value in settings.items():
        _set(data, field_path(key), value)
    return validate_config(data, source=source + (" with the settings given" if settings else ""))


def field_path(key: str) -> str:
    """The dotted config path a setting names: itself if dotted, a top-level field, or the one field whose
    leaf name it is. The distill phase's settings that share a name with RL's (`learning_rate`,
    `num_generations`, ...) are reached dotted only (`distill.learning_rate`): the plain name stays RL's."""
    if "." in key:
        return key
    leaves = _leaves()
    if key in RunConfig.model_fields:
        return key
    paths = leaves.get(key, [])
    if len(paths) > 1:
        paths = [p for p in paths if not p.startswith("distill.")] or paths
    if len(paths) == 1:
        return paths[0]
    if paths:
        raise ConfigError(f"setting {key!r} is ambiguous: it names {', '.join(paths)}; pass it dotted, e.g. "
                          f"**{{{paths[0]!r}: ...}}")
    import difflib

    close = difflib.get_close_matches(key, [*leaves, *RunConfig.model_fields], n=3)
    raise ConfigError(f"unknown setting {key!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                     "; see RunConfig's fields (or `fst run --help`)"))


def _leaves() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for section, info in RunConfig.model_fields.items():
        sub = getattr(info.annotation, "model_fields", None)
        for leaf in sub or {}:
            out.setdefault(leaf, []).append(f"{section}.{leaf}")
    return out


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"setting {path}: {part} is a value, not a section")
    node[leaf] = value
