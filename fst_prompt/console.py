"""What a run shows on the terminal, and the per-step record it keeps.

One line per cycle phase, a progress bar for the GEPA round (metric calls, proposals tried/accepted, best
anchor score) and for the RL steps (step, reward, KL), and the cycle summary line. TRL's per-step dicts
never reach the terminal: `StepLog` appends them to `steps.jsonl` in the run directory (kept when
checkpoints are pruned; `fst plot` reads it) and TRL's own tracker (`rl.report_to`) still gets them.
Third-party logging and per-file progress bars are turned down (`quiet_third_party`); the `fst` command
also hides third-party deprecation warnings (`cli.filter_warnings`).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm
from transformers import TrainerCallback

from fst_prompt.atomic import append_jsonl

if TYPE_CHECKING:
    from fst_prompt.fast.reflection import Proposer
    from fst_prompt.slow.trainer import PopulationGRPOTrainer

TRACKER_PREFIX = "fst/"  # per-cycle metrics sent to the tracker; StepLog does not keep them


def quiet_third_party() -> None:
    """Third-party logging down to errors and their per-file progress bars off: the run shows its own."""
    for name in ("transformers", "trl", "accelerate", "peft", "datasets", "httpx", "LiteLLM", "dspy"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import huggingface_hub.utils
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # "Loading weights" bars on every model load
    huggingface_hub.utils.disable_progress_bars()  # "Writing model shards" bars on every checkpoint


def say(message: str) -> None:
    """A console line that does not break an open progress bar (the main process's only, under a launcher)."""
    if os.environ.get("RANK", "0") == "0":
        tqdm.write(message)


class StepLog(TrainerCallback):
    """Every TRL log dict to `steps.jsonl` (tagged with the stage and task) and a step bar on the console."""

    def __init__(self, path: Path, *, progress: bool = True, label: str = "RL steps") -> None:
        self.path, self.progress, self.label = Path(path), progress, label
        self.tags: dict[str, Any] = {}
        # its `last_batch` (problems used, population) joins each step's record
        self.trainer: PopulationGRPOTrainer | None = None
        self.bar: tqdm | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=f"  {self.label}", unit="step",
                            disable=not self.progress, leave=False, dynamic_ncols=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero or any(k.startswith(TRACKER_PREFIX) for k in logs):
            return
        batch = (getattr(self.trainer, "last_batch", None) or {}) if "reward" in logs else {}  # a step's own log
        append_jsonl(self.path, {**self.tags, "step": state.global_step, "time": time.time(), **logs, **batch})
        if self.bar is not None and "train_runtime" not in logs:  # a step's log, not the end-of-training summary
            self.bar.update(state.global_step - self.bar.n)
            if "reward" in logs:  # RL's
                self.bar.set_postfix(reward=f"{logs['reward']:.3f}", kl=f"{logs.get('kl', 0.0):.4f}", refresh=False)
            elif "loss" in logs:  # the distill phase's (no reward)
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def to_tracker(trainer: PopulationGRPOTrainer | None, record: dict[str, Any]) -> None:
    """The cycle's numbers (val accuracy, KL, ledger) to the trainer's tracker (`rl.report_to`), if any.

    Skipped when the trainer has not trained in this process (a resume straight into an evaluation): the
    trackers open their run at the start of training."""
    if trainer is None or trainer.args.report_to in ("none", [], ["none"], None) or trainer.state.global_step == 0:
        return
    numbers = {f"{TRACKER_PREFIX}{k}": v for k, v in record.items()
               if isinstance(v, int | float) and not isinstance(v, bool) and k != "time"}
    trainer.callback_handler.on_log(trainer.args, trainer.state, trainer.control, numbers)


class RoundProgress:
    """The GEPA round's bar (a gepa callback): metric calls spent of the budget, proposals tried/accepted,
    best anchor score."""

    def __init__(self, budget: int, proposer: Proposer, *, show: bool) -> None:
        self.proposer, self.tried0 = proposer, proposer.outcomes["proposed"]
        self.accepted, self.best = 0, 0.0
        self.bar = tqdm(total=budget, desc="  GEPA round", unit="call", disable=not show, leave=False,
                        dynamic_ncols=True)

    def on_budget_updated(self, event: dict[str, Any]) -> None:
        self.bar.update(min(event["metric_calls_used"], self.bar.total) - self.bar.n)
        self._postfix()

    def on_candidate_accepted(self, event: dict[str, Any]) -> None:
        self.accepted += 1

    def on_valset_evaluated(self, event: dict[str, Any]) -> None:
        self.best = max(self.best, event["average_score"])
        self._postfix()

    def _postfix(self) -> None:
        self.bar.set_postfix(tried=self.proposer.outcomes["proposed"] - self.tried0, accepted=self.accepted,
                             best=f"{self.best:.3f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
