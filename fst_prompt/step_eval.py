"""Light evaluations between a cycle's RL steps, so an accuracy curve has points between the full ones.

Every `loop.eval_every` RL steps inside a slow step (not on its last step: the cycle's full evaluation
follows it), the best instruction's greedy val accuracy on a fixed subset — the first `loop.eval_every_n`
val problems — is appended to `evals.jsonl` with the RL step, the policy rollouts and the seconds of GEPA
and RL work so far. Generation forks the RNG (policy.py), so the training trajectory is the same with or
without these evaluations; their time is not counted as RL time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from fst_prompt.config import RunConfig
from fst_prompt.distributed import Processes, generating
from fst_prompt.evaluate import evaluate
from fst_prompt.rundir import RunDir, RunState, StepEvalRecord

if TYPE_CHECKING:
    from fst_prompt.stages import Stage


class StepEval(TrainerCallback):
    def __init__(self, run_dir: RunDir, config: RunConfig, procs: Processes) -> None:
        self.run_dir, self.config, self.procs = run_dir, config, procs
        self.every, self.n = config.loop.eval_every, config.loop.eval_every_n
        self.stage: Stage | None = None
        self.seconds = 0.0  # spent evaluating in the current slow step

    def begin(self, stage: Stage, instructions: dict[str, str], state: RunState) -> None:
        """Before a slow step: what to evaluate, and the ledger the records read their x-axes from."""
        self.stage, self.instructions, self.state = stage, instructions, state
        self.seconds, self.started = 0.0, time.perf_counter()

    def end(self) -> None:
        """After a slow step: let go of the stage, so that a finished stage's trainer (its optimizer state and
        reference model, gigabytes) is freed when the schedule moves on, not kept through the next GEPA round."""
        self.stage = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        if not self.every or self.stage is None or step % self.every or step >= args.max_steps:
            return
        t0 = time.perf_counter()
        with generating(self.stage.trainer):
            self.procs.on_main(self._evaluate, step, t0)
        self.seconds += time.perf_counter() - t0

    def _evaluate(self, step: int, t0: float) -> None:
        stage, ledger, T = self.stage, self.state.ledger, self.config.loop.steps_per_cycle
        rl_steps = stage.first_cycle * T + step
        rollouts = ledger.gepa_rollouts + rl_steps * stage.problems_per_step * self.config.rl.num_generations
        result = evaluate(stage.task, stage.policy, split="val", n=self.n, instructions=self.instructions,
                          progress=False)
        self.run_dir.append_step_eval(StepEvalRecord(
            cycle=self.state.cycle, stage=stage.index, task=stage.task.name, rl_steps=rl_steps,
            val_accuracy_best=result.accuracy, eval_n=result.n, total_rollouts=rollouts,
            seconds=ledger.fast_seconds + ledger.slow_seconds + (t0 - self.started - self.seconds), time=time.time()))
