"""The FST loop: fast step (a GEPA round under the current weights), then T slow steps (GRPO with the
population mixed into every group), then an evaluation — cycle after cycle.

    fst run programs/chain_sum-fst.yaml [--set loop.mode=rl] [--resume]

Modes (`loop.mode`): `fst`; `rl` (slow only, seed instruction); `gepa` (fast only, frozen weights);
`gepa-then-rl` (one GEPA round on the base weights, then RL with its single best instruction).

The problems are visited in one seeded order; the anchor set of a fast step is exactly the problems the
next T RL steps will use (T x B of them; for gepa-then-rl's single round, all the problems of its RL
steps). After every phase the run state (cycle, phase, population, ledger) is written atomically to
`state.json`, and every slow phase ends on a TRL checkpoint, so `--resume` after a crash continues from
the last completed phase and counts nothing twice.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fst_prompt.config import RunConfig
from fst_prompt.plots import plot_runs
from fst_prompt.state import RunState, append_jsonl, write_json_atomic, write_text_atomic


def run_loop(config: RunConfig, *, resume: bool = False, progress: bool = True) -> RunState:
    from fst_prompt.fast.population import Population
    from fst_prompt.fast.reflection import Proposer, check_reflection_ready, open_reflection_lm
    from fst_prompt.fast.round import gepa_round

    mode, T = config.loop.mode, config.loop.steps_per_cycle
    tasks = _load_tasks(config)
    if mode != "rl":
        check_reflection_ready(config.reflection)
    run_dir = Path(config.run_dir)
    state = RunState.load(run_dir) if resume else _fresh_state(run_dir, config, seed_instructions(config, tasks[0]))
    stage: Stage | None = None
    with open_reflection_lm(config.reflection, run_dir) if mode != "rl" else contextlib.nullcontext() as lm:
        proposer = Proposer(lm, config.reflection.template) if lm else None
        while state.cycle < config.total_cycles:
            stage = _stage_for(state.cycle, config, tasks, run_dir, stage)
            step0 = (state.cycle - stage.first_cycle) * T  # RL steps already taken in this stage
            population = Population.from_json(state.population)
            if state.phase == "fast":
                if _fast_this_cycle(mode, state.cycle):
                    # the problems the next T RL steps use; before a whole RL run (gepa-then-rl), all of its steps'
                    steps = T * config.stages()[stage.index].cycles if mode == "gepa-then-rl" else T
                    anchor = [stage.task.train[i]
                              for i in upcoming(stage.order, step0, steps, config.rl.problems_per_step)]
                    population, record = gepa_round(population, stage.task, stage.policy, anchor, proposer,
                                                    config.gepa, cycle=state.cycle, log_path=run_dir / "gepa.log",
                                                    progress=progress)
                    state.ledger.add_round(record)
                    append_jsonl(run_dir / "rounds.jsonl", {"task": stage.task.name, **record.to_json()})
                _commit(state, run_dir, population, phase="slow" if stage.trainer else "eval")
            if state.phase == "slow":
                _slow_phase(stage, population, config, step0 + T, state)
                _commit(state, run_dir, population, phase="eval")
            record = _evaluate(stage, tasks, population, config, state)
            append_jsonl(run_dir / "metrics.jsonl", record)
            print(_cycle_line(record))
            state.cycle += 1
            _commit(state, run_dir, population, phase="fast")
    _finish(run_dir, config)
    return state


@dataclass
class Stage:
    """One task of the schedule, with the trainer and live policy working on it."""

    index: int
    first_cycle: int
    task: Any
    order: list[int]  # the seeded order in which RL visits this task's train problems
    trainer: Any  # None in gepa mode
    policy: Any
    kl_base: Any


def _stage_for(cycle: int, config: RunConfig, tasks: list[Any], run_dir: Path, current: Stage | None) -> Stage:
    """The stage of `cycle`: the current one, or the next task's, trained from the live weights."""
    starts = list(itertools.accumulate((spec.cycles for spec in config.stages()), initial=0))
    index = next(i for i in range(len(starts) - 1) if cycle < starts[i + 1])
    first = starts[index]
    if current is not None and current.index == index:
        return current
    return _build_stage(config, index, first, tasks[index], run_dir, current)


def _slow_phase(stage: Stage, population: Any, config: RunConfig, target_step: int, state: RunState) -> None:
    """Train to `target_step` of the stage, resuming TRL from its last checkpoint (optimizer, RNG, data)."""
    t0 = time.perf_counter()
    trainer, mode = stage.trainer, config.loop.mode
    if mode == "fst":
        contexts = [c.instructions for c in population.candidates]  # best first, K at most
    elif mode == "rl":
        contexts = [seed_instructions(config, stage.task)]
    else:  # gepa-then-rl: the single best instruction
        contexts = [population.best().instructions]
    trainer.set_population(contexts)
    trainer.args.max_steps = target_step
    trainer.train(resume_from_checkpoint=last_complete_checkpoint(Path(trainer.args.output_dir)))
    args = trainer.args
    state.ledger.rl_steps = stage.first_cycle * config.loop.steps_per_cycle + trainer.state.global_step
    state.ledger.rl_rollouts = state.ledger.rl_steps * args.per_device_train_batch_size * args.world_size
    state.ledger.slow_seconds += time.perf_counter() - t0


def _fast_this_cycle(mode: str, cycle: int) -> bool:
    return mode in ("fst", "gepa") or (mode == "gepa-then-rl" and cycle == 0)


def last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest TRL checkpoint that was fully written; half-written ones (a kill mid-save) are removed.

    The Trainer writes `trainer_state.json` last, so a checkpoint without it never finished.
    """
    import shutil

    found = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for path in [p for p in found if not (p / "trainer_state.json").is_file()]:
        shutil.rmtree(path)
    complete = [p for p in found if p.exists()]
    return str(complete[-1]) if complete else None


def problem_order(n: int, seed: int) -> list[int]:
    """The seeded order in which RL visits the train problems (repeated epoch after epoch)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def upcoming(order: list[int], first_step: int, steps: int, per_step: int) -> list[int]:
    """The problems RL steps [first_step, first_step + steps) will use: the anchor set of a fast step."""
    start = first_step * per_step
    return [order[(start + i) % len(order)] for i in range(steps * per_step)]


def seed_instructions(config: RunConfig, task: Any) -> dict[str, str]:
    """The task's own seed instructions, or the config's task-agnostic one for every predictor."""
    if config.seed_instruction:
        return {name: config.seed_instruction for name in task.seed_instructions()}
    return task.seed_instructions()


def _load_tasks(config: RunConfig) -> list[Any]:
    """Every task of the schedule, validated before any model loads."""
    from fst_prompt.programs import load_task

    tasks = [load_task(spec.task, **spec.task_kwargs) for spec in config.stages()]
    names = [sorted(t.seed_instructions()) for t in tasks]
    if any(n != names[0] for n in names):
        raise ValueError(f"every task of a schedule needs the same predictors (one population serves them all); "
                         f"got {names}")
    return tasks


def _fresh_state(run_dir: Path, config: RunConfig, seed: dict[str, str]) -> RunState:
    from fst_prompt.fast.population import Population

    if (run_dir / "state.json").exists():
        raise FileExistsError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another "
                              "run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config.model_dump(), sort_keys=False))
    state = RunState(population=Population.seed(seed, config.gepa.population_size).to_json())
    state.save(run_dir)
    return state


def _build_stage(config: RunConfig, index: int, first_cycle: int, task: Any, run_dir: Path,
                 previous: Stage | None) -> Stage:
    """A stage's trainer (None in gepa mode) and the live policy sharing its weights.

    The weights come from the previous stage's live model, or, when resuming into a later stage, from the
    previous stage's last checkpoint (this stage's own checkpoint, if any, is loaded by TRL on resume).
    """
    from fst_prompt.models import resolve_model
    from fst_prompt.policy import Policy, Sampling

    pc, T = config.policy, config.loop.steps_per_cycle
    sampling = Sampling(temperature=pc.temperature, max_new_tokens=pc.max_new_tokens)
    order = problem_order(len(task.train), config.rl.seed + index)
    if config.loop.mode == "gepa":
        policy = previous.policy if previous else Policy.load(pc.model, batch_size=pc.batch_size, seed=pc.seed,
                                                               sampling=sampling)
        return Stage(index, first_cycle, task, order, None, policy, None)
    from fst_prompt.slow.trainer import build_trainer

    base = resolve_model(pc.model)
    model = previous.trainer.model if previous else _weights_before_stage(run_dir, index)
    rl = config.rl.model_copy(update={"steps": config.stages()[index].cycles * T})
    trainer = build_trainer(task, base, rl, _checkpoint_dir(run_dir, config, index), order=order, model=model,
                            shuffle_dataset=False)
    policy = Policy(trainer.model, trainer.processing_class, batch_size=pc.batch_size, seed=pc.seed,
                    sampling=sampling, name=pc.model)
    kl_base = previous.kl_base if previous else _kl_base(trainer, config)
    return Stage(index, first_cycle, task, order, trainer, policy, kl_base)


def _checkpoint_dir(run_dir: Path, config: RunConfig, index: int) -> Path:
    return run_dir / "checkpoints" / (f"stage-{index}" if config.schedule else "")


def _weights_before_stage(run_dir: Path, index: int) -> Any:
    """None (the base model) for the first stage; else the previous stage's last complete checkpoint."""
    if index == 0:
        return None
    import torch
    from transformers import AutoModelForCausalLM

    last = last_complete_checkpoint(run_dir / "checkpoints" / f"stage-{index - 1}")
    if last is None:
        raise FileNotFoundError(f"cannot resume stage {index}: stage {index - 1} left no complete checkpoint")
    return AutoModelForCausalLM.from_pretrained(last, dtype=torch.float32)


def _kl_base(trainer: Any, config: RunConfig) -> Any:
    if trainer is None:
        return None
    from fst_prompt.models import resolve_model
    from fst_prompt.train import probe_base

    return probe_base(trainer, resolve_model(config.policy.model))


def _evaluate(stage: Stage, tasks: list[Any], population: Any, config: RunConfig, state: RunState,
              ) -> dict[str, Any]:
    """Val accuracy with the best and the seed instruction, on this task and every task seen before;
    KL to the base on the fixed probe set."""
    from dataclasses import asdict

    from fst_prompt.evaluate import evaluate
    from fst_prompt.slow.kl import kl_to_base
    from fst_prompt.train import probe_conversations

    best, n, task = population.best(), config.loop.eval_n, stage.task
    seed = seed_instructions(config, task)
    seed_acc = evaluate(task, stage.policy, split="val", n=n, instructions=seed, progress=False).accuracy
    by_task = {t.name: seed_acc if t is task and best.instructions == seed else  # same instructions: one evaluation
               evaluate(t, stage.policy, split="val", n=n, instructions=best.instructions, progress=False).accuracy
               for t in tasks[: stage.index + 1]}
    kl = {"kl": 0.0, "kl_stderr": 0.0}  # gepa mode: the weights never move
    if stage.trainer is not None:
        rl, trainer = config.rl, stage.trainer
        estimate = kl_to_base(trainer.model, trainer.processing_class, probe_conversations(task, rl.kl_probe_n)[0],
                              base=stage.kl_base, samples_per_prompt=rl.kl_samples,
                              max_new_tokens=rl.max_completion_length, batch_size=config.policy.batch_size,
                              seed=rl.seed)
        kl = {"kl": estimate.mean, "kl_stderr": estimate.stderr}
    return {"cycle": state.cycle, "mode": config.loop.mode, "stage": stage.index, "task": task.name,
            "val_accuracy_best": by_task[task.name], "val_accuracy_seed": seed_acc, "val_accuracy_by_task": by_task,
            **kl, "best_id": best.id, "population": len(population), **asdict(state.ledger),
            "total_rollouts": state.ledger.total_rollouts, "time": time.time()}


def _finish(run_dir: Path, config: RunConfig) -> None:
    """Plots, and for a schedule the forgetting matrix: accuracy on task i after stage j."""
    from fst_prompt.plots import load_cycles

    if config.schedule:
        cycles = load_cycles(run_dir)
        names = list(dict.fromkeys(c["task"] for c in cycles))
        ends = [max((c for c in cycles if c["stage"] == j), key=lambda c: c["cycle"]) for j in range(len(names))]
        matrix = [[end["val_accuracy_by_task"].get(name) for name in names] for end in ends]
        write_json_atomic(run_dir / "forgetting.json", {"tasks": names, "after_stage": matrix})
    for path in plot_runs([run_dir], run_dir / "plots"):
        print(f"wrote {path}")


def _commit(state: RunState, run_dir: Path, population: Any, *, phase: str) -> None:
    state.population, state.phase = population.to_json(), phase
    state.save(run_dir)


def _cycle_line(r: dict[str, Any]) -> str:
    return (f"cycle {r['cycle']} [{r['mode']}]: val accuracy best {r['val_accuracy_best']:.3f} "
            f"(seed {r['val_accuracy_seed']:.3f}); KL {r['kl']:.3f}; RL steps {r['rl_steps']}; "
            f"rollouts RL {r['rl_rollouts']} + GEPA {r['gepa_rollouts']}; "
            f"proposals {r['proposals_accepted']}/{r['proposals_tried']}; "
            f"fast {r['fast_seconds']:.0f} s, slow {r['slow_seconds']:.0f} s")

