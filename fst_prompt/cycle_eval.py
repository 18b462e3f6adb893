"""The evaluations a run records: at the start (start.json), after every cycle (metrics.jsonl) and, at the end,
on the test split (result.json). Each runs on the main process, under the current weights, greedily.

- val accuracy with the seed and the best instruction, on the stage's task and every task seen before;
- KL(pi || pi_base) on a fixed probe set of held-out prompts (the seed instruction), against the base;
- the constant-answer baseline beside every accuracy, and the n actually scored.
"""

from __future__ import annotations

import time
from dataclasses import replace

from fst_prompt.baselines import majority_baseline
from fst_prompt.config import RunConfig
from fst_prompt.console import say
from fst_prompt.evaluate import evaluate
from fst_prompt.fast.population import Population
from fst_prompt.rundir import CycleRecord, Ledger, RunDir, RunState, TaskResult
from fst_prompt.slow.kl import KLEstimate, kl_to_base, probe_conversations
from fst_prompt.stages import Stage, seed_instructions
from fst_prompt.task import Task


def evaluate_start(stage: Stage, config: RunConfig, run_dir: RunDir) -> None:
    """start.json: val accuracy before any step (base weights, seed instruction; KL 0 by definition), the
    first point of every accuracy curve."""
    n, task = config.loop.eval_n, stage.task
    say(f"start · evaluation: val accuracy (n={min(n, len(task.val))}), base weights and seed instruction")
    seed = seed_instructions(config, task)
    acc = evaluate(task, stage.policy, split="val", n=n, instructions=seed, progress=False).accuracy
    run_dir.write_start(CycleRecord(
        cycle=-1, mode=config.loop.mode, stage=0, task=task.name, val_accuracy_best=acc, val_accuracy_seed=acc,
        val_accuracy_by_task={task.name: acc}, val_majority_baseline=majority_baseline(task, "val", n).accuracy,
        eval_n=min(n, len(task.val)), kl=0.0, kl_stderr=0.0, best_id=Population.seed(seed, 1).best().id,
        population=1, ledger=Ledger(), time=time.time()))


def evaluate_cycle(stage: Stage, tasks: list[Task], population: Population, config: RunConfig, state: RunState,
                   *, kl_under_best: bool = False) -> CycleRecord:
    """Val accuracy with the best and the seed instruction, on this task and every task seen before (an earlier
    task under its archived instruction, with `loop.archive`); KL to the base on the fixed probe set, and with
    `kl_under_best` (around a distill phase) also on its problems rendered with the best instruction."""
    best, n, task = population.best(), config.loop.eval_n, stage.task
    say(f"cycle {state.cycle + 1}/{config.total_cycles} · evaluation: val accuracy (n={min(n, len(task.val))}), "
        f"best and seed instruction{', KL probe' if stage.trainer else ''}")
    seed = seed_instructions(config, task)
    seed_eval = evaluate(task, stage.policy, split="val", n=n, instructions=seed, progress=False)
    evaluations = {t.name: seed_eval if t is task and best.instructions == seed else  # same instructions: one
                   evaluate(t, stage.policy, split="val", n=n, instructions=instructions_for(t, best.instructions,
                                                                                              state, config, task),
                            progress=False)
                   for t in tasks[: stage.index + 1]}
    seed_acc, by_task = seed_eval.accuracy, {name: e.accuracy for name, e in evaluations.items()}
    state.ledger.eval_rollouts += seed_eval.n + sum(e.n for e in evaluations.values() if e is not seed_eval)
    kl, kl_stderr, under_best = 0.0, 0.0, None  # gepa mode: the weights never move
    if stage.trainer is not None:
        estimate = _probe(stage, config, state)
        kl, kl_stderr = estimate.mean, estimate.stderr
        if kl_under_best:
            under_best = _probe(stage, config, state, best.instructions)
    return CycleRecord(cycle=state.cycle, mode=config.loop.mode, stage=stage.index, task=task.name,
                       val_accuracy_best=by_task[task.name], val_accuracy_seed=seed_acc, val_accuracy_by_task=by_task,
                       val_majority_baseline=majority_baseline(task, "val", n).accuracy, eval_n=min(n, len(task.val)),
                       kl=kl, kl_stderr=kl_stderr, best_id=best.id, population=len(population),
                       ledger=replace(state.ledger), time=time.time(),
                       kl_best=None if under_best is None else under_best.mean,
                       kl_best_stderr=None if under_best is None else under_best.stderr)


def _probe(stage: Stage, config: RunConfig, state: RunState, instructions: dict[str, str] | None = None) -> KLEstimate:
    """KL to the base on the fixed probe problems, rendered with the seed instruction or `instructions`."""
    rl, trainer = config.rl, stage.trainer
    assert trainer is not None
    state.ledger.eval_rollouts += rl.kl_probe_n * rl.kl_samples
    return kl_to_base(trainer.model, trainer.processing_class, probe_conversations(stage.task, rl.kl_probe_n,
                                                                                   instructions),
                      base=stage.kl_base, samples_per_prompt=rl.kl_samples, max_new_tokens=rl.max_completion_length,
                      seed=rl.seed, weight_first=config.policy.weight_first)


def instructions_for(task: Task, best: dict[str, str], state: RunState, config: RunConfig, current: Task,
                     ) -> dict[str, str]:
    """The instructions `task` is evaluated (and exported) with: an earlier task's archived one (`loop.archive`),
    else the population's best."""
    if config.loop.archive and task is not current and task.name in state.archive:
        return state.archive[task.name]["instructions"]
    return best


def evaluate_test(stage: Stage, tasks: list[Task], population: Population, config: RunConfig, run_dir: RunDir) -> None:
    """result.json: test accuracy of the seed vs the best instruction, on every task of the run."""
    best, n, result = population.best().instructions, config.loop.test_n, {}
    for task in tasks:
        seed = seed_instructions(config, task)
        acc = {name: evaluate(task, stage.policy, split="test", n=n, instructions=inst, progress=False)
               for name, inst in (("seed", seed), ("best", best))}
        result[task.name] = TaskResult(test_n=acc["seed"].n, seed_test_accuracy=acc["seed"].accuracy,
                                       best_test_accuracy=acc["best"].accuracy, seed_instructions=seed,
                                       best_instructions=best)
        say(f"test accuracy on {task.name} (n={acc['seed'].n}): seed {acc['seed'].accuracy:.3f} -> best "
            f"{acc['best'].accuracy:.3f}")
    run_dir.write_result(config.loop.mode, config.policy.model, result)
