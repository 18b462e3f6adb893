"""The FST loop: an evaluation of the start, then cycle after cycle a fast step (a GEPA round under the current
weights, fast/step.py), T slow steps (GRPO with the population mixed into every group, the trainer's
`train_until`) and an evaluation (cycle_eval.py). It is the only driver: every
mode writes the same run directory, which `fst plot` and `fst export` read.

    fst run programs/chain_sum-fst.yaml [--set loop.mode=rl] [--resume]

Modes (`loop.mode`, see `modes.py`): `fst`; `rl` (slow only, seed instruction; `fst train`); `gepa` (fast
only, frozen weights; `fst optimize`); `gepa-then-rl` (one GEPA round on the base weights, then RL with its
single best instruction).

The problems are visited in one seeded order. In `fst` the fast step reads the RL rollouts of the last T steps
(one rollout stream, `gepa.rollouts: rl`): they are its anchor, its carried candidates' scores and what
reflection sees, and only a new proposal's judging draws new rollouts (none when judged online, in the next T
RL steps). A round that samples its own (a stage's first, `gepa.rollouts: own`, gepa and gepa-then-rl)
anchors on exactly the problems the next T RL steps will use (T x B of them; for gepa-then-rl's single round,
all the problems of its RL steps).

With `distill.steps`, each stage ends with a distill phase (slow/distill.py): the best instruction distilled into
the weights with TRL's SDFT trainer, and the stage evaluated again (distill.jsonl).

After every phase the run state (cycle, phase, population, ledger) is written atomically to `state.json`, and
every slow phase ends on a TRL checkpoint, so `--resume` after a crash continues from the last completed phase
and counts nothing twice.

Under a launcher (`torchrun`, `accelerate launch`) every process runs this loop and trains; the main one alone
holds the lock, runs the fast step and the evaluations and writes, and the state is shared from it after
every phase (distributed.py).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import yaml

from fst_prompt.config import RunConfig, redacted
from fst_prompt.console import StepLog, quiet_third_party, say, to_tracker
from fst_prompt.cycle_eval import evaluate_cycle, evaluate_start, evaluate_test
from fst_prompt.device import release_memory
from fst_prompt.distributed import Processes, generating
from fst_prompt.fast.population import Population
from fst_prompt.fast.reflection import Proposer, check_reflection_ready
from fst_prompt.fast.step import fast_step, open_proposer, recall_rejected, scoring_for
from fst_prompt.modes import Mode, resolve_mode
from fst_prompt.plots import plot_runs
from fst_prompt.rollouts import recent_problems, serve
from fst_prompt.rundir import CycleRecord, DistillRecord, RunDir, RunState
from fst_prompt.slow.distill import build_distill_trainer
from fst_prompt.stages import (
    Schedule,
    Stage,
    checkpoint_dir,
    distill_dir,
    forgetting_matrix,
    load_tasks,
    seed_instructions,
    upcoming_problems,
)
from fst_prompt.state import changed_fields, config_fields, last_complete_checkpoint, run_lock
from fst_prompt.step_eval import StepEval
from fst_prompt.task import Task


def run_loop(config: RunConfig, *, resume: bool = False, progress: bool = True, tasks: list[Task] | None = None,
             reflection_lm: object = None) -> RunState:
    """Run (or, with `resume`, continue) the run `config` describes. `tasks`: the schedule's tasks when they
    are not files (the Python API); `reflection_lm`: a `dspy.LM` to reflect with instead of the configured one."""
    mode = resolve_mode(config.loop.mode)
    tasks = tasks or load_tasks(config)  # before any model loads: a broken task is a config error
    if mode.fast != "never" and reflection_lm is None:
        check_reflection_ready(config.reflection)
    quiet_third_party()
    run_dir = RunDir(config.run_dir)
    # main_only: what the main process alone holds; its errors stop every process
    with Processes(config.loop.wait_minutes) as procs, contextlib.ExitStack() as main_only:
        progress = progress and procs.main
        procs.only_main(lambda: main_only.enter_context(run_lock(run_dir.path)))  # one job per run directory
        seed = seed_instructions(config, tasks[0])
        state = (procs.on_main(_resumed_state, run_dir, config) if resume else
                 procs.on_main(_fresh_state, run_dir, config, seed))
        # the reflection endpoint answers before anything starts; only the main process runs fast steps
        proposer = procs.only_main(lambda: main_only.enter_context(_proposer(config, mode, run_dir, reflection_lm)))
        if not resume:
            procs.on_main(_start, run_dir, config, state)
        elif proposer is not None:
            recall_rejected(proposer, run_dir, state.cycle, state.phase)
        steps = StepLog(run_dir.steps_path, progress=progress)
        step_eval = StepEval(run_dir, config, procs)  # light evaluations inside a slow step
        schedule = Schedule(config, tasks, mode, run_dir, callbacks=[steps, step_eval], processes=procs.count)
        if state.cycle == 0 and state.phase == "fast" and procs.on_main(lambda: run_dir.start() is None):
            stage = schedule.stage_for(0)  # the start: base weights, seed instruction
            with generating(stage.trainer):
                procs.on_main(evaluate_start, stage, config, run_dir)
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
                        population = procs.on_main(_fast_step, stage, population, proposer, config, mode, state,
                                                   run_dir, progress)
                state = _commit(procs, state, run_dir, population, phase="slow" if mode.trains else "eval")
            if state.phase == "slow":
                step_eval.begin(stage, population.best().instructions, state)
                _slow_step(stage, mode.train_contexts(population, seed_instructions(config, stage.task)), config,
                           state, procs, step_eval, run_dir)
                step_eval.end()
                state = _commit(procs, state, run_dir, population, phase="eval")
            state = _end_of_cycle(stage, tasks, population, config, state, procs, run_dir, progress)
            state.cycle += 1
            state = _commit(procs, state, run_dir, population, phase="fast")
        procs.on_main(_finish, run_dir, config)
    return state


def _fast_step(stage: Stage, population: Population, proposer: Proposer, config: RunConfig, mode: Mode,
               state: RunState, run_dir: RunDir, progress: bool) -> Population:
    """A GEPA round under the current weights. With one rollout stream it reads the RL rollouts of the last T
    steps and is anchored on their problems; a stage's first round (no RL rollouts yet) and every round of
    `gepa.rollouts: own` sample their own, anchored on the problems the next RL steps use."""
    T, B, gepa = config.loop.steps_per_cycle, stage.problems_per_step, config.gepa  # B: over all processes
    stream = mode.reads_rl_rollouts and gepa.rollouts == "rl"
    anchor, served = [], None
    if stream:
        now, max_age = state.ledger.rl_steps, gepa.max_staleness or T
        rows = run_dir.rollouts.rows(stage.task.name)
        anchor = recent_problems(rows, now=now, max_age=max_age)
        served = serve(rows, now=now, max_age=max_age)
    judging = gepa.judging if anchor else "minibatch"
    if not anchor:
        first = (state.cycle - stage.first_cycle) * T * B  # position in the stage's problem order
        anchor = upcoming_problems(stage.order, first, gepa.anchor_size or mode.anchor_steps(T, stage.cycles) * B)
    unique = len(set(anchor))  # fewer than n when the train split is smaller than the anchor (RL's order wraps)
    source = (f"the RL rollouts of the last {max_age} steps, judging {judging}" if served else
              "a sampled round (no RL rollouts yet)" if stream else "")
    say(f"cycle {state.cycle + 1}/{config.total_cycles} · fast step: GEPA round on {unique} {stage.task.name} "
        f"problems" + (f" ({len(anchor)} anchor entries)" if unique != len(anchor) else "")
        + (f", from {source}" if source else ""))
    scoring = scoring_for(gepa, config.rl, trains=mode.trains, max_new_tokens=config.policy.max_new_tokens,
                          cycle=state.cycle, stream=stream)
    budget = (gepa.new_rollouts if gepa.new_rollouts is not None else T * B * config.rl.num_generations
              ) if stream else None
    population, record = fast_step(stage.task, stage.policy, population, proposer, gepa, scoring, anchor=anchor,
                                   cycle=state.cycle, run_dir=run_dir, progress=progress,
                                   served=served if stream else None, new_rollouts=budget, judging=judging)
    state.ledger.add_round(record)
    return population


def _slow_step(stage: Stage, contexts: list[dict[str, str]], config: RunConfig, state: RunState,
               procs: Processes, step_eval: StepEval, run_dir: RunDir) -> None:
    """Train to the end of this cycle's T steps, resuming TRL from its last checkpoint (optimizer, RNG, data)."""
    trainer, T = stage.trainer, config.loop.steps_per_cycle
    assert trainer is not None  # modes that train have a trainer
    target = (state.cycle - stage.first_cycle + 1) * T
    say(f"cycle {state.cycle + 1}/{config.total_cycles} · slow step: RL steps {target - T + 1}-{target} of "
        f"{stage.task.name} with {len(contexts)} context(s)" + (f", {procs.count} processes" * (procs.count > 1)))
    # the main process removes a checkpoint a crash left half-written; every process resumes from the same one
    checkpoint = procs.on_main(last_complete_checkpoint, trainer.args.output_dir)
    procs.on_main(_align_store, run_dir, stage, config, checkpoint)
    record = trainer.train_until(target, contexts, resume_from=checkpoint)
    errors = procs.sum(record.metric_errors)  # every process scores its own rollouts
    if errors:
        state.ledger.rl_metric_errors += errors
        say(f"  the metric raised on {errors} RL completions (scored 0); last: {record.last_error or None}")
    state.ledger.rl_steps = stage.first_cycle * T + record.last_step
    state.ledger.rl_rollouts = state.ledger.rl_steps * stage.problems_per_step * config.rl.num_generations
    state.ledger.slow_seconds += record.seconds - step_eval.seconds  # RL time only


def _end_of_cycle(stage: Stage, tasks: list[Task], population: Population, config: RunConfig, state: RunState,
                  procs: Processes, run_dir: RunDir, progress: bool) -> RunState:
    """The cycle's evaluation; at the end of a stage, with `distill.steps`, its distill phase and the evaluation
    after it (a run resumed inside the distill phase goes straight back to it)."""
    last = state.cycle == stage.first_cycle + stage.cycles - 1
    if state.phase != "distill":  # before a distill phase the probe also runs under the best instruction
        with generating(stage.trainer):
            procs.on_main(_evaluate_and_log, stage, tasks, population, config, state, run_dir,
                          bool(config.distill.steps and last))
    if last and config.loop.archive and config.schedule:  # the task's instruction, kept outside the K slots
        best = population.best()
        state.archive[stage.task.name] = {"id": best.id, "instructions": dict(best.instructions),
                                          "stage": stage.index}
    if config.distill.steps and last:
        state = _commit(procs, state, run_dir, population, phase="distill")
        _distill_step(stage, tasks, population, config, state, procs, run_dir, progress)
    return state


def _distill_step(stage: Stage, tasks: list[Task], population: Population, config: RunConfig, state: RunState,
                  procs: Processes, run_dir: RunDir, progress: bool) -> None:
    """FST-distill at the end of a stage: the best instruction into the weights (slow/distill.py), resuming from
    the phase's last checkpoint, then the stage's evaluation again; both, with the cost, go to distill.jsonl."""
    d, trainer, best = config.distill, stage.trainer, population.best()
    assert trainer is not None  # the config refuses distill for modes that do not train
    say(f"stage {stage.index + 1} · distill: {d.steps} steps of self-distillation into the weights of "
        f"{stage.task.name}; teacher: the best instruction ({best.id}), student: {d.student} instruction")
    if trainer.optimizer is not None:  # the stage's RL is over: its Adam moments (twice the weights) go before
        trainer.optimizer.state.clear()  # the distill trainer makes its own
        release_memory()
    folder = distill_dir(run_dir, config, stage.index)
    checkpoint = procs.on_main(last_complete_checkpoint, folder)
    start = procs.on_main(last_complete_checkpoint, checkpoint_dir(run_dir, config, stage.index))  # the teacher's
    steps = StepLog(run_dir.distill_steps_path, progress=progress, label="distill steps")
    steps.tags = {"cycle": state.cycle, "stage": stage.index, "task": stage.task.name}
    distiller = build_distill_trainer(stage.task, trainer.model, trainer.processing_class, best.instructions, d,
                                      config.rl, folder, order=stage.order, weights=start, callbacks=[steps],
                                      dtype=config.policy.dtype)
    record = distiller.train_until(d.steps, resume_from=checkpoint)
    del distiller  # its optimizer state; the weights are the stage's, trained in place
    rollouts = record.last_step * d.problems_per_step * procs.count * d.num_generations
    state.ledger.distill_steps += record.last_step  # the ledger was saved before this stage's phase began
    state.ledger.distill_rollouts += rollouts
    state.ledger.distill_seconds += record.seconds
    with generating(trainer):
        procs.on_main(_log_distill, stage, tasks, population, config, state, run_dir, record.last_step, rollouts,
                      record.seconds)


def _log_distill(stage: Stage, tasks: list[Task], population: Population, config: RunConfig, state: RunState,
                 run_dir: RunDir, steps: int, rollouts: int, seconds: float) -> None:
    before = next(c for c in reversed(run_dir.cycles()) if c.cycle == state.cycle)
    after = evaluate_cycle(stage, tasks, population, config, state, kl_under_best=True)
    keys = ("val_accuracy_best", "val_accuracy_seed", "val_accuracy_by_task", "kl", "kl_stderr", "kl_best",
            "kl_best_stderr")
    run_dir.append_distill(DistillRecord(
        stage=stage.index, task=stage.task.name, cycle=state.cycle, student=config.distill.student,
        teacher_id=population.best().id, steps=steps, rollouts=rollouts, seconds=seconds,
        eval_n=after.eval_n, before={k: getattr(before, k) for k in keys}, after={k: getattr(after, k) for k in keys},
        time=after.time))
    say(f"stage {stage.index + 1} · distill: val accuracy seed {before.val_accuracy_seed:.3f} -> "
        f"{after.val_accuracy_seed:.3f}, best {before.val_accuracy_best:.3f} -> {after.val_accuracy_best:.3f}; "
        f"KL {before.kl:.3f} -> {after.kl:.3f} (prompts with the best instruction: {_num(before.kl_best)} -> "
        f"{_num(after.kl_best)}); {steps} steps, {seconds:.0f} s")


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _align_store(run_dir: RunDir, stage: Stage, config: RunConfig, checkpoint: str | None) -> None:
    """The rollout store as of the checkpoint the trainer resumes from: the rows of the steps about to be redone
    (a crash after it) go, and rows older than `gepa.keep_rollout_cycles` cycles keep only their scores."""
    T = config.loop.steps_per_cycle
    step = stage.first_cycle * T + (int(Path(checkpoint).name.split("-")[-1]) if checkpoint else 0)
    run_dir.rollouts.drop_from(step)
    run_dir.rollouts.summarise_before(step - config.gepa.keep_rollout_cycles * T)


def _evaluate_and_log(stage: Stage, tasks: list[Task], population: Population, config: RunConfig, state: RunState,
                      run_dir: RunDir, kl_under_best: bool = False) -> None:
    record = evaluate_cycle(stage, tasks, population, config, state, kl_under_best=kl_under_best)
    run_dir.append_cycle(record)
    to_tracker(stage.trainer, record.to_json())
    say(_cycle_line(record, config.total_cycles))
    if state.cycle == config.total_cycles - 1 and config.loop.test_n:
        evaluate_test(stage, tasks, population, config, run_dir)


@contextlib.contextmanager
def _proposer(config: RunConfig, mode: Mode, run_dir: RunDir, lm: object) -> Iterator[Proposer | None]:
    """The reflection LM's proposer for the modes that run fast steps (a local server lives this long)."""
    if mode.fast == "never":
        yield None
        return
    with open_proposer(config.reflection, run_dir, lm=lm) as proposer:
        yield proposer


def _fresh_state(run_dir: RunDir, config: RunConfig, seed: dict[str, str]) -> RunState:
    """A new run's state, once `run_dir` is known to hold no other run or files (nothing is written yet)."""
    if run_dir.is_started():
        raise FileExistsError(f"{run_dir.path} already holds a run: pass --resume to continue it, or choose another "
                              "run_dir")
    found = run_dir.leftovers()
    if found:
        raise FileExistsError(f"{run_dir.path} is not empty ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''})"
                              " and holds no run to resume: choose another run_dir, or empty it")
    return RunState(population=Population.seed(seed, config.gepa.population_size).to_json(),
                    config=config_fields(redacted(config.model_dump())))


def _start(run_dir: RunDir, config: RunConfig, state: RunState) -> None:
    run_dir.write_config(yaml.safe_dump(redacted(config.model_dump()), sort_keys=False))
    run_dir.save_state(state)


def _resumed_state(run_dir: RunDir, config: RunConfig) -> RunState:
    """The run's state, if `config` differs from the run's own only in fields that are safe to change."""
    state = run_dir.load_state()
    now = config_fields(redacted(config.model_dump()))
    if state.config is not None:
        changed = changed_fields(state.config, now, config_fields(redacted(RunConfig.model_construct().model_dump())))
        if changed:
            shown = "; ".join(f"{k}: {_short(state.config.get(k))} -> {_short(now.get(k))}" for k in changed[:5])
            raise ValueError(f"cannot resume {run_dir.path} with a changed config ({shown}): these decide which "
                             "problems, candidates or steps the run uses. Resume with the run's own config.yaml, or "
                             "start a new run_dir. Safe to change: loop.cycles, the evaluations (loop.eval_n, "
                             "loop.eval_every(_n), loop.test_n), the reflection endpoint")
    ends = list(itertools.accumulate(stage.cycles for stage in config.stages()))  # each stage's cycles end here
    for d in run_dir.distills():
        if d.stage < len(ends) and d.cycle != ends[d.stage] - 1:
            raise ValueError(f"cannot resume {run_dir.path} with loop.cycles {config.loop.cycles}: stage "
                             f"{d.stage + 1} ended with a distill phase after cycle {d.cycle + 1}, and further cycles "
                             "would train on from the RL checkpoint before it, losing the distilled weights. Start a "
                             "new run from them instead (`fst export`, then policy.model: <export>/model)")
    state.config = now
    return state


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _finish(run_dir: RunDir, config: RunConfig) -> None:
    """Plots, and for a schedule the forgetting matrix: accuracy on task i after stage j."""
    if config.schedule:
        run_dir.write_forgetting(forgetting_matrix(run_dir.cycles()) | {"archive": config.loop.archive})
    for path in plot_runs([run_dir.path], run_dir.plots_dir):
        say(f"wrote {path}")


def _commit(procs: Processes, state: RunState, run_dir: RunDir, population: Population, *, phase: str) -> RunState:
    """The main process writes the state; every process goes on with the main one's (population, ledger).
    Memory the finished phase freed goes back to the system before the next one starts."""
    state.population, state.phase = population.to_json(), phase
    release_memory()
    if procs.main:
        run_dir.save_state(state)
    return procs.share(state)


def _cycle_line(r: CycleRecord, total: int) -> str:
    ledger = r.ledger
    baseline = f" (constant baseline {r.val_majority_baseline:.3f})" if r.val_majority_baseline is not None else ""
    checks = f" + val checks {ledger.gepa_val_rollouts}" if ledger.gepa_val_rollouts else ""
    reused = f" (RL rollouts read by it: {ledger.gepa_reused_rollouts})" if ledger.gepa_reused_rollouts else ""
    return (f"cycle {r.cycle + 1}/{total} [{r.mode}]: val accuracy best {r.val_accuracy_best:.3f} "
            f"(seed {r.val_accuracy_seed:.3f}){baseline}; KL {r.kl:.3f}; RL steps {ledger.rl_steps}; "
            f"rollouts RL {ledger.rl_rollouts} + fast loop new {ledger.fast_new_rollouts}{checks}{reused}; "
            f"proposals {ledger.proposals_accepted}/{ledger.proposals_tried}; "
            f"fast {ledger.fast_seconds:.0f} s, slow {ledger.slow_seconds:.0f} s"
            + (f"; metric errors {ledger.rl_metric_errors}" if ledger.rl_metric_errors else "")
            + (f"; reflection faults {ledger.reflection_faults}" if ledger.reflection_faults else ""))
