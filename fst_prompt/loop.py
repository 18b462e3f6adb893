"""The FST loop: fast step (a GEPA round under the current weights), then T slow steps (GRPO with the
population mixed into every group), then an evaluation — cycle after cycle.

    fst run programs/chain_sum-fst.yaml [--set loop.mode=rl] [--resume]

Modes (`loop.mode`): `fst`; `rl` (slow only, seed instruction); `gepa` (fast only, frozen weights);
`gepa-then-rl` (one GEPA round on the base weights, then RL with its single best instruction).

The problems are visited in one seeded order; the anchor set of a fast step is exactly the problems the
next T RL steps will use (T x B of them). After every phase the run state (cycle, phase, population,
ledger) is written atomically to `state.json`, and every slow phase ends on a TRL checkpoint, so
`--resume` after a crash continues from the last completed phase and counts nothing twice.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from pathlib import Path
from typing import Any

import yaml

from fst_prompt.config import RunConfig
from fst_prompt.plots import plot_runs
from fst_prompt.state import RunState, write_text_atomic


def run_loop(config: RunConfig, *, resume: bool = False, progress: bool = True) -> RunState:
    from fst_prompt.fast.population import Population
    from fst_prompt.fast.reflection import Proposer, check_reflection_ready, open_reflection_lm
    from fst_prompt.fast.round import gepa_round
    from fst_prompt.programs import load_task

    mode, T = config.loop.mode, config.loop.steps_per_cycle
    task = load_task(config.task, **config.task_kwargs)
    if mode != "rl":
        check_reflection_ready(config.reflection)
    run_dir = Path(config.run_dir)
    state = RunState.load(run_dir) if resume else _fresh_state(run_dir, config, task)
    order = problem_order(len(task.train), config.rl.seed)
    trainer, policy = _build(config, task, order, run_dir)
    kl_base = _kl_base(trainer, config)
    with open_reflection_lm(config.reflection, run_dir) if mode != "rl" else contextlib.nullcontext() as lm:
        proposer = Proposer(lm, config.reflection.template) if lm else None
        while state.cycle < config.loop.cycles:
            population = Population.from_json(state.population)
            if state.phase == "fast":
                if _fast_this_cycle(mode, state.cycle):
                    anchor = [task.train[i] for i in upcoming(order, state.cycle * T, T, config.rl.problems_per_step)]
                    population, record = gepa_round(population, task, policy, anchor, proposer, config.gepa,
                                                    cycle=state.cycle, log_path=run_dir / "gepa.log",
                                                    progress=progress)
                    state.ledger.add_round(record)
                    _append(run_dir / "rounds.jsonl", record.to_json())
                _commit(state, run_dir, population, phase="slow" if trainer else "eval")
            if state.phase == "slow":
                _slow_phase(trainer, population, mode, (state.cycle + 1) * T, state)
                _commit(state, run_dir, population, phase="eval")
            record = _evaluate(task, policy, population, config, state, trainer, kl_base)
            _append(run_dir / "metrics.jsonl", record)
            print(_cycle_line(record))
            state.cycle += 1
            _commit(state, run_dir, population, phase="fast")
    for path in plot_runs([run_dir], run_dir / "plots"):
        print(f"wrote {path}")
    return state


def _fast_this_cycle(mode: str, cycle: int) -> bool:
    return mode in ("fst", "gepa") or (mode == "gepa-then-rl" and cycle == 0)


def _slow_phase(trainer: Any, population: Any, mode: str, target_step: int, state: RunState) -> None:
    """Train to `target_step`, resuming TRL from its last checkpoint (optimizer, RNG, data position)."""
    t0 = time.perf_counter()
    if mode == "fst":
        contexts = [c.instructions for c in population.candidates]  # best first, K at most
    else:  # rl: the seed; gepa-then-rl: the single best instruction
        contexts = [population.best().instructions]
    trainer.set_population(contexts)
    trainer.args.max_steps = target_step
    trainer.train(resume_from_checkpoint=last_complete_checkpoint(Path(trainer.args.output_dir)))
    args = trainer.args
    state.ledger.rl_steps = trainer.state.global_step
    state.ledger.rl_rollouts = trainer.state.global_step * args.per_device_train_batch_size * args.world_size
    state.ledger.slow_seconds += time.perf_counter() - t0


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


def _fresh_state(run_dir: Path, config: RunConfig, task: Any) -> RunState:
    from fst_prompt.fast.population import Population

    if (run_dir / "state.json").exists():
        raise FileExistsError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another "
                              "run_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config.model_dump(), sort_keys=False))
    population = Population.seed(task.seed_instructions(), config.gepa.population_size)
    state = RunState(population=population.to_json())
    state.save(run_dir)
    return state


def _build(config: RunConfig, task: Any, order: list[int], run_dir: Path) -> tuple[Any, Any]:
    """The trainer (None in gepa mode) and the live policy that shares its weights."""
    from fst_prompt.models import resolve_model
    from fst_prompt.policy import Policy, Sampling

    pc = config.policy
    sampling = Sampling(temperature=pc.temperature, max_new_tokens=pc.max_new_tokens)
    if config.loop.mode == "gepa":
        return None, Policy.load(pc.model, batch_size=pc.batch_size, seed=pc.seed, sampling=sampling)
    from fst_prompt.slow.trainer import build_trainer

    rl = config.rl.model_copy(update={"steps": config.loop.cycles * config.loop.steps_per_cycle})
    trainer = build_trainer(task, resolve_model(pc.model), rl, run_dir / "checkpoints", order=order,
                            shuffle_dataset=False)
    policy = Policy(trainer.model, trainer.processing_class, batch_size=pc.batch_size, seed=pc.seed,
                    sampling=sampling, name=pc.model)
    return trainer, policy


def _kl_base(trainer: Any, config: RunConfig) -> Any:
    if trainer is None:
        return None
    from fst_prompt.models import resolve_model
    from fst_prompt.train import probe_base

    return probe_base(trainer, resolve_model(config.policy.model))


def _evaluate(task: Any, policy: Any, population: Any, config: RunConfig, state: RunState, trainer: Any,
              kl_base: Any) -> dict[str, Any]:
    """Val accuracy with the best and the seed instruction; KL to the base on the fixed probe set."""
    from dataclasses import asdict

    from fst_prompt.evaluate import evaluate
    from fst_prompt.slow.kl import kl_to_base
    from fst_prompt.train import probe_conversations

    best = population.best()
    n = config.loop.eval_n
    seed_acc = evaluate(task, policy, split="val", n=n, progress=False).accuracy
    best_acc = seed_acc if best.instructions == task.seed_instructions() else evaluate(
        task, policy, split="val", n=n, instructions=best.instructions, progress=False).accuracy
    kl = {"kl": 0.0, "kl_stderr": 0.0}  # gepa mode: the weights never move
    if trainer is not None:
        rl = config.rl
        estimate = kl_to_base(trainer.model, trainer.processing_class, probe_conversations(task, rl.kl_probe_n)[0],
                              base=kl_base, samples_per_prompt=rl.kl_samples, max_new_tokens=rl.max_completion_length,
                              batch_size=config.policy.batch_size, seed=rl.seed)
        kl = {"kl": estimate.mean, "kl_stderr": estimate.stderr}
    return {"cycle": state.cycle, "mode": config.loop.mode, "val_accuracy_best": best_acc,
            "val_accuracy_seed": seed_acc, **kl, "best_id": best.id, "population": len(population),
            **asdict(state.ledger), "total_rollouts": state.ledger.total_rollouts, "time": time.time()}


def _commit(state: RunState, run_dir: Path, population: Any, *, phase: str) -> None:
    state.population, state.phase = population.to_json(), phase
    state.save(run_dir)


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _cycle_line(r: dict[str, Any]) -> str:
    return (f"cycle {r['cycle']} [{r['mode']}]: val accuracy best {r['val_accuracy_best']:.3f} "
            f"(seed {r['val_accuracy_seed']:.3f}); KL {r['kl']:.3f}; RL steps {r['rl_steps']}; "
            f"rollouts RL {r['rl_rollouts']} + GEPA {r['gepa_rollouts']}; "
            f"proposals {r['proposals_accepted']}/{r['proposals_tried']}; "
            f"fast {r['fast_seconds']:.0f} s, slow {r['slow_seconds']:.0f} s")

