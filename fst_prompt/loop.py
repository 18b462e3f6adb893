"""The FST loop: fast step (a GEPA round under the current weights), then T slow steps (GRPO with the
population mixed into every group), then an evaluation — cycle after cycle. It is the only driver: every
mode writes the same run directory, which `fst plot` and `fst export` read.

    fst run programs/chain_sum-fst.yaml [--set loop.mode=rl] [--resume]

Modes (`loop.mode`, see `modes.py`): `fst`; `rl` (slow only, seed instruction; `fst train`); `gepa` (fast
only, frozen weights; `fst optimize`); `gepa-then-rl` (one GEPA round on the base weights, then RL with its
single best instruction).

The problems are visited in one seeded order; the anchor set of a fast step is exactly the problems the
next T RL steps will use (T x B of them; for gepa-then-rl's single round, all the problems of its RL
steps). After every phase the run state (cycle, phase, population, ledger) is written atomically to
`state.json`, and every slow phase ends on a TRL checkpoint, so `--resume` after a crash continues from
the last completed phase and counts nothing twice.

Under a launcher (`torchrun`, `accelerate launch`) every process runs this loop and trains; the main one alone
holds the lock, runs the fast step and the evaluations and writes, and the state is shared from it after
every phase (distributed.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from fst_prompt.baselines import majority_baseline
from fst_prompt.config import RunConfig, redacted
from fst_prompt.console import StepLog, quiet_third_party, say, to_tracker
from fst_prompt.device import release_memory
from fst_prompt.distributed import Processes, generating
from fst_prompt.evaluate import evaluate
from fst_prompt.fast.adapter import Scoring
from fst_prompt.fast.population import Population
from fst_prompt.fast.reflection import Proposer, check_reflection_ready, open_reflection_lm
from fst_prompt.fast.round import gepa_round
from fst_prompt.modes import Mode, resolve_mode
from fst_prompt.plots import load_cycles, plot_runs
from fst_prompt.policy import Sampling
from fst_prompt.slow.kl import kl_to_base, probe_conversations
from fst_prompt.stages import Schedule, Stage, forgetting_matrix, load_tasks, seed_instructions, upcoming_problems
from fst_prompt.state import (
    RunState,
    append_jsonl,
    changed_fields,
    config_fields,
    last_complete_checkpoint,
    read_jsonl,
    run_lock,
    write_json_atomic,
    write_text_atomic,
)
from fst_prompt.step_eval import StepEval
from fst_prompt.task import Task


def run_loop(config: RunConfig, *, resume: bool = False, progress: bool = True) -> RunState:
    mode = resolve_mode(config.loop.mode)
    tasks = load_tasks(config)  # before any model loads: a broken task is a config error
    if mode.fast != "never":
        check_reflection_ready(config.reflection)
    quiet_third_party()
    run_dir = Path(config.run_dir)
    # main_only: what the main process alone holds; its errors stop every process
    with Processes(config.loop.wait_minutes) as procs, contextlib.ExitStack() as main_only:
        progress = progress and procs.main
        procs.only_main(lambda: main_only.enter_context(run_lock(run_dir)))  # one job per run directory
        seed = seed_instructions(config, tasks[0])
        state = (procs.on_main(_resumed_state, run_dir, config) if resume else
                 procs.on_main(_fresh_state, run_dir, config, seed))
        # the reflection endpoint answers before anything starts; only the main process runs fast steps
        proposer = procs.only_main(lambda: main_only.enter_context(_proposer(config, mode, run_dir)))
        if not resume:
            procs.on_main(_start, run_dir, config, state)
        elif proposer is not None:
            _recall_rejected(proposer, run_dir, state)
        steps = StepLog(run_dir / "steps.jsonl", progress=progress)
        step_eval = StepEval(run_dir / "evals.jsonl", config, procs)  # light evaluations inside a slow step
        schedule = Schedule(config, tasks, mode, run_dir, callbacks=[steps, step_eval], processes=procs.count)
        while state.cycle < config.total_cycles:
            stage = schedule.stage_for(state.cycle)
            steps.tags = {"cycle": state.cycle, "stage": stage.index, "task": stage.task.name}
            steps.trainer = stage.trainer
            if state.cycle == stage.first_cycle:  # a new stage: the previous one's trainer (its optimizer state and
                release_memory()  # reference model, gigabytes) is freed now, before this stage's GEPA round
            population = Population.from_json(state.population)
            if state.phase == "fast":
                if mode.fast_step_in(state.cycle):
                    with generating(stage.trainer):
                        population = procs.on_main(_fast_step, stage, population, proposer, config, mode,
                                                   state, progress)
                state = _commit(procs, state, run_dir, population, phase="slow" if mode.trains else "eval")
            if state.phase == "slow":
                step_eval.begin(stage, population.best().instructions, state)
                _slow_step(stage, mode.train_contexts(population, seed_instructions(config, stage.task)), config,
                           state, procs, step_eval)
                step_eval.end()
                state = _commit(procs, state, run_dir, population, phase="eval")
            with generating(stage.trainer):
                procs.on_main(_evaluate_and_log, stage, tasks, population, config, state, run_dir)
            state.cycle += 1
            state = _commit(procs, state, run_dir, population, phase="fast")
        procs.on_main(_finish, run_dir, config)
    return state


def _evaluate_and_log(stage: Stage, tasks: list[Task], population: Population, config: RunConfig, state: RunState,
                      run_dir: Path) -> None:
    record = _evaluate(stage, tasks, population, config, state)
    append_jsonl(run_dir / "metrics.jsonl", record)
    to_tracker(stage.trainer, record)
    say(_cycle_line(record, config.total_cycles))
    if state.cycle == config.total_cycles - 1 and config.loop.test_n:
        _test(stage, tasks, population, config, run_dir)


def _fast_step(stage: Stage, population: Population, proposer: Proposer, config: RunConfig, mode: Mode,
               state: RunState, progress: bool) -> Population:
    """A GEPA round under the current weights, anchored on the problems the next RL steps use."""
    T, B = config.loop.steps_per_cycle, stage.problems_per_step  # B: over all processes
    first = (state.cycle - stage.first_cycle) * T * B  # position in the stage's problem order
    n = config.gepa.anchor_size or mode.anchor_steps(T, stage.cycles) * B
    indices = upcoming_problems(stage.order, first, n)
    anchor = [stage.task.train[i] for i in indices]
    say(f"cycle {state.cycle + 1}/{config.total_cycles} · fast step: GEPA round on {n} {stage.task.name} problems")
    run_dir = Path(config.run_dir)
    population, record = gepa_round(population, stage.task, stage.policy, anchor, proposer, config.gepa,
                                    scoring=gepa_scoring(config, mode, state.cycle), cycle=state.cycle,
                                    work_dir=run_dir / "gepa" / f"cycle-{state.cycle}", log_path=run_dir / "gepa.log",
                                    progress=progress)
    state.ledger.add_round(record)
    append_jsonl(run_dir / "rounds.jsonl", {"task": stage.task.name, "anchor": indices, **record.to_json()})
    say(f"  {record.proposals_accepted}/{record.proposals_tried} proposals accepted "
        f"({sum(record.proposal_failures.values())} unusable); {record.policy_rollouts} rollouts; best anchor "
        f"score {record.best_score:.3f}; {record.seconds:.0f} s")
    if record.all_reflection_failed:
        say(f"  every reflection call of this round failed ({record.reflection_calls}): the fast step changed "
            "nothing; see gepa.log and check reflection.base_url")
    gains = [f"{p['anchor_gain']:+.3f} / " + (f"{p['val_gain']:+.3f}" if "val_gain" in p else "-")
             for p in record.proposals if p["accepted"] and "anchor_gain" in p]
    if gains:
        say(f"  accepted proposals' gain over their parent, anchor / held-out val: {', '.join(gains)}")
    return population


def gepa_scoring(config: RunConfig, mode: Mode, cycle: int) -> Scoring:
    """How a fast step scores candidates: as RL samples (`rl.temperature`, `rl.top_p`,
    `rl.max_completion_length`, S rollouts a problem) in the modes that train, greedily in gepa mode; seeded
    by the run's GEPA seed and the cycle. `gepa.temperature` overrides the temperature (0: greedy)."""
    g, rl = config.gepa, config.rl
    temperature = g.temperature if g.temperature is not None else rl.temperature if mode.trains else 0.0
    if temperature == 0:
        return Scoring()
    length = rl.max_completion_length if mode.trains else config.policy.max_new_tokens
    return Scoring(samples=g.samples_per_problem, sampling=Sampling(temperature, rl.top_p, length),
                   seed=(g.seed or 0) * 100_003 + cycle)


def _slow_step(stage: Stage, contexts: list[dict[str, str]], config: RunConfig, state: RunState,
               procs: Processes, step_eval: StepEval) -> None:
    """Train to the end of this cycle's T steps, resuming TRL from its last checkpoint (optimizer, RNG, data)."""
    t0, trainer, T = time.perf_counter(), stage.trainer, config.loop.steps_per_cycle
    target = (state.cycle - stage.first_cycle + 1) * T
    say(f"cycle {state.cycle + 1}/{config.total_cycles} · slow step: RL steps {target - T + 1}-{target} of "
        f"{stage.task.name} with {len(contexts)} context(s)" + (f", {procs.count} processes" * (procs.count > 1)))
    trainer.set_population(contexts)
    trainer.args.max_steps = target
    reward, errors0 = trainer.reward_funcs[0], getattr(trainer.reward_funcs[0], "errors", 0)
    # the main process removes a checkpoint a crash left half-written; every process resumes from the same one
    checkpoint = procs.on_main(last_complete_checkpoint, Path(trainer.args.output_dir))
    trainer.train(resume_from_checkpoint=checkpoint)
    errors = procs.sum(getattr(reward, "errors", 0) - errors0)  # every process scores its own rollouts
    if errors:
        state.ledger.rl_metric_errors += errors
        say(f"  the metric raised on {errors} RL completions (scored 0); last: {getattr(reward, 'last_error', None)}")
    state.ledger.rl_steps = stage.first_cycle * T + trainer.state.global_step
    state.ledger.rl_rollouts = state.ledger.rl_steps * stage.problems_per_step * config.rl.num_generations
    state.ledger.slow_seconds += time.perf_counter() - t0 - step_eval.seconds  # RL time only


def _evaluate(stage: Stage, tasks: list[Task], population: Population, config: RunConfig, state: RunState,
              ) -> dict[str, Any]:
    """Val accuracy with the best and the seed instruction, on this task and every task seen before;
    KL to the base on the fixed probe set."""
    best, n, task = population.best(), config.loop.eval_n, stage.task
    say(f"cycle {state.cycle + 1}/{config.total_cycles} · evaluation: val accuracy (n={n}), best and seed "
        f"instruction{', KL probe' if stage.trainer else ''}")
    seed = seed_instructions(config, task)
    seed_acc = evaluate(task, stage.policy, split="val", n=n, instructions=seed, progress=False).accuracy
    by_task = {t.name: seed_acc if t is task and best.instructions == seed else  # same instructions: one evaluation
               evaluate(t, stage.policy, split="val", n=n, instructions=best.instructions, progress=False).accuracy
               for t in tasks[: stage.index + 1]}
    kl = {"kl": 0.0, "kl_stderr": 0.0}  # gepa mode: the weights never move
    if stage.trainer is not None:
        rl, trainer = config.rl, stage.trainer
        estimate = kl_to_base(trainer.model, trainer.processing_class, probe_conversations(task, rl.kl_probe_n),
                              base=stage.kl_base, samples_per_prompt=rl.kl_samples,
                              max_new_tokens=rl.max_completion_length, seed=rl.seed,
                              weight_first=config.policy.weight_first)
        kl = {"kl": estimate.mean, "kl_stderr": estimate.stderr}
    return {"cycle": state.cycle, "mode": config.loop.mode, "stage": stage.index, "task": task.name,
            "val_accuracy_best": by_task[task.name], "val_accuracy_seed": seed_acc, "val_accuracy_by_task": by_task,
            "val_majority_baseline": majority_baseline(task, "val", n).accuracy, "eval_n": min(n, len(task.val)),
            **kl, "best_id": best.id, "population": len(population), **asdict(state.ledger),
            "total_rollouts": state.ledger.total_rollouts, "time": time.time()}


def _test(stage: Stage, tasks: list[Task], population: Population, config: RunConfig, run_dir: Path) -> None:
    """result.json: test accuracy of the seed vs the best instruction, on every task of the run."""
    best, n, result = population.best().instructions, config.loop.test_n, {}
    for task in tasks:
        seed = seed_instructions(config, task)
        acc = {name: evaluate(task, stage.policy, split="test", n=n, instructions=inst, progress=False)
               for name, inst in (("seed", seed), ("best", best))}
        result[task.name] = {"test_n": acc["seed"].n, "seed_test_accuracy": acc["seed"].accuracy,
                             "best_test_accuracy": acc["best"].accuracy, "seed_instructions": seed,
                             "best_instructions": best}
        say(f"test accuracy on {task.name} (n={acc['seed'].n}): seed {acc['seed'].accuracy:.3f} -> best "
            f"{acc['best'].accuracy:.3f}")
    write_json_atomic(run_dir / "result.json", {"mode": config.loop.mode, "model": config.policy.model,
                                                "tasks": result})


@contextlib.contextmanager
def _proposer(config: RunConfig, mode: Mode, run_dir: Path) -> Iterator[Proposer | None]:
    """The reflection LM's proposer for the modes that run fast steps (a local server lives this long)."""
    if mode.fast == "never":
        yield None
        return
    with open_reflection_lm(config.reflection, run_dir) as lm:
        yield Proposer(lm, config.reflection.template, max_chars=config.reflection.max_instruction_chars,
                       keep_task_statement=config.reflection.keep_task_statement)


# What may already be in a new run's directory: the lock, the evals runner's log, and what an earlier start
# that stopped before the run began left (its error log, the reflection server's log and journal).
_FRESH_OK = {".lock", "log.txt", "error.log", "reflection_server.log", "reflection_journal.jsonl"}


def _recall_rejected(proposer: Proposer, run_dir: Path, state: RunState) -> None:
    """The proposals earlier committed rounds rejected, as an uninterrupted run's proposer remembers them (a
    repeat is skipped, not evaluated again)."""
    path = run_dir / "rounds.jsonl"
    for record in read_jsonl(path) if path.is_file() else []:
        if record["cycle"] < state.cycle or (record["cycle"] == state.cycle and state.phase != "fast"):
            for p in record.get("proposals", []):
                if not p["accepted"]:
                    proposer.reject(p["instructions"])


def _fresh_state(run_dir: Path, config: RunConfig, seed: dict[str, str]) -> RunState:
    """A new run's state, once `run_dir` is known to hold no other run or files (nothing is written yet)."""
    if (run_dir / "state.json").exists():
        raise FileExistsError(f"{run_dir} already holds a run: pass --resume to continue it, or choose another "
                              "run_dir")
    found = sorted(p.name for p in run_dir.iterdir() if p.name not in _FRESH_OK) if run_dir.is_dir() else []
    if found:
        raise FileExistsError(f"{run_dir} is not empty ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''}) "
                              "and holds no run to resume: choose another run_dir, or empty it")
    return RunState(population=Population.seed(seed, config.gepa.population_size).to_json(),
                    config=config_fields(redacted(config.model_dump())))


def _start(run_dir: Path, config: RunConfig, state: RunState) -> None:
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(redacted(config.model_dump()), sort_keys=False))
    state.save(run_dir)


def _resumed_state(run_dir: Path, config: RunConfig) -> RunState:
    """The run's state, if `config` differs from the run's own only in fields that are safe to change."""
    state = RunState.load(run_dir)
    now = config_fields(redacted(config.model_dump()))
    if state.config is not None:
        changed = changed_fields(state.config, now, config_fields(redacted(RunConfig.model_construct().model_dump())))
        if changed:
            shown = "; ".join(f"{k}: {_short(state.config.get(k))} -> {_short(now.get(k))}" for k in changed[:5])
            raise ValueError(f"cannot resume {run_dir} with a changed config ({shown}): these decide which problems, "
                             "candidates or steps the run uses. Resume with the run's own config.yaml, or start a new "
                             "run_dir. Safe to change: loop.cycles, the evaluations (loop.eval_n, loop.eval_every(_n), "
                             "loop.test_n), the reflection endpoint")
    state.config = now
    return state


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _finish(run_dir: Path, config: RunConfig) -> None:
    """Plots, and for a schedule the forgetting matrix: accuracy on task i after stage j."""
    if config.schedule:
        write_json_atomic(run_dir / "forgetting.json", forgetting_matrix(load_cycles(run_dir)))
    for path in plot_runs([run_dir], run_dir / "plots"):
        say(f"wrote {path}")


def _commit(procs: Processes, state: RunState, run_dir: Path, population: Population, *, phase: str) -> RunState:
    """The main process writes the state; every process goes on with the main one's (population, ledger).
    Memory the finished phase freed goes back to the system before the next one starts."""
    state.population, state.phase = population.to_json(), phase
    release_memory()
    if procs.main:
        state.save(run_dir)
    return procs.share(state)


def _cycle_line(r: dict[str, Any], total: int) -> str:
    baseline = f" (constant baseline {r['val_majority_baseline']:.3f})" if "val_majority_baseline" in r else ""
    return (f"cycle {r['cycle'] + 1}/{total} [{r['mode']}]: val accuracy best {r['val_accuracy_best']:.3f} "
            f"(seed {r['val_accuracy_seed']:.3f}){baseline}; KL {r['kl']:.3f}; RL steps {r['rl_steps']}; "
            f"rollouts RL {r['rl_rollouts']} + GEPA {r['gepa_rollouts']}; "
            f"proposals {r['proposals_accepted']}/{r['proposals_tried']}; "
            f"fast {r['fast_seconds']:.0f} s, slow {r['slow_seconds']:.0f} s"
            + (f"; metric errors {r['rl_metric_errors']}" if r.get("rl_metric_errors") else "")
            + (f"; reflection faults {r['reflection_faults']}" if r.get("reflection_faults") else ""))
