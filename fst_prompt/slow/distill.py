"""FST-distill: on-policy self-distillation of the population's best instruction into the weights, with TRL's
SDFT trainer (`trl.experimental.sdft`, arXiv 2601.19897; the paper's FST-distill follows SDPO, arXiv 2601.20802,
whose TRL trainer needs a reward and takes its teacher context from successful rollouts, so SDFT is the fit).

The student is shown each train problem rendered with the student instruction (the seed's, or none); the teacher
is the same model shown the problem rendered with the best instruction, the privileged context, with the weights
the phase started from (`distill.teacher: frozen`, TRL's "base" teacher loaded from the stage's last checkpoint),
the student's own as they train (`live`) or TRL's EMA of them (`ema`). The student samples; the loss is TRL's,
on the student's own completions: reverse KL(student || teacher) over the teacher's top-k logits at
`distill.alpha` = 1. No reward and no reference model. Only the teacher's prompt differs from TRL's default
builder (which appends the privileged text to the student's last message): ours is the whole problem rendered
under the best instruction, so the teacher sees the prompt the population would use and the student never does.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

with warnings.catch_warnings():  # TRL warns that experimental trainers may change: pinned in pyproject (trl 1.16)
    warnings.simplefilter("ignore")
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer
    from trl.experimental.sdft.sdft_trainer import DemonstrationTeacherContextBuilder

from transformers import PrinterCallback

from fst_prompt.config import DistillConfig, RLConfig
from fst_prompt.device import mixed_precision_flags
from fst_prompt.render import render
from fst_prompt.task import Task


@dataclass
class DistillRecord:
    first_step: int
    last_step: int
    seconds: float


class InstructionTeacher(DemonstrationTeacherContextBuilder):
    """The teacher's prompt is the row's `privileged_context`: the problem rendered under the best instruction."""

    def _compose_teacher_prompt(self, prompt: Any, privileged_context: Any) -> Any:
        if not privileged_context:
            raise ValueError("a distill row has no teacher prompt")
        return privileged_context


class DistillTrainer(SDFTTrainer):
    """TRL's SDFT trainer with the teacher shown the best instruction (`InstructionTeacher`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.teacher_context_builder = InstructionTeacher(self)

    def train_until(self, step: int, *, resume_from: str | None = None) -> DistillRecord:
        """Distill until optimizer step `step`, resuming TRL from `resume_from` (optimizer, RNG, data) if given."""
        t0, first = time.perf_counter(), self.state.global_step
        self.args.max_steps = step
        self.train(resume_from_checkpoint=resume_from)
        return DistillRecord(first_step=first, last_step=self.state.global_step, seconds=time.perf_counter() - t0)


TEACHER_KIND = {"frozen": "base", "live": "live", "ema": "ema"}  # ours -> TRL's teacher_model_kind


def student_instruction(task: Task, student: str) -> str:
    """The instruction the student is shown: the task's seed instruction, or none (the signature's fields)."""
    return next(iter(task.seed_instructions().values())) if student == "seed" else ""


def distill_dataset(task: Task, order: list[int], student: str, teacher: str):
    """One row per train problem, in `order`: the student's prompt, the teacher's (`privileged_context`) and
    the problem's index in the train split."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": render(task, task.train[i], student),
                               "privileged_context": render(task, task.train[i], teacher), "example_index": i}
                              for i in order])


def distill_args(distill: DistillConfig, rl: RLConfig, output_dir: Path, dtype: str = "auto") -> SDFTConfig:
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir), max_steps=distill.steps, learning_rate=distill.learning_rate,
        per_device_train_batch_size=distill.problems_per_step * distill.num_generations,
        num_generations=distill.num_generations,
        max_completion_length=distill.max_completion_length or rl.max_completion_length, max_prompt_length=None,
        temperature=rl.temperature, top_p=rl.top_p, teacher_model_kind=TEACHER_KIND[distill.teacher],
        distillation_alpha=distill.alpha,
        distillation_mode="topk_logits", distillation_topk=distill.topk, shuffle_dataset=False,
        lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch", weight_decay=0.0, seed=rl.seed or 0,
        logging_steps=1, report_to=rl.report_to, disable_tqdm=True, save_strategy="steps",
        save_steps=distill.save_every, save_total_limit=2, save_only_model=False, **mixed_precision_flags(dtype),
        gradient_checkpointing=False, dataloader_num_workers=0,
    )
    return SDFTConfig(**(kwargs | distill.trainer_args))


def build_distill_trainer(task: Task, model: Any, tokenizer: Any, instructions: dict[str, str],
                          distill: DistillConfig, rl: RLConfig, output_dir: Path, *, order: list[int],
                          weights: str | Path | None = None, callbacks: list | None = None,
                          dtype: str = "auto") -> DistillTrainer:
    """A trainer that distills `instructions` (the best candidate's) into `model`, visiting the train problems in
    `order`. `weights`: a folder holding `model`'s current weights, which a frozen (or EMA) teacher loads. A
    program of several predictors is refused: its calls are rendered one by one, not as one prompt."""
    if len(task.predictors) > 1:
        raise ValueError(f"distill supports single-predictor programs; {task.name} has {len(task.predictors)}")
    if distill.teacher != "live" and weights is None:
        raise ValueError(f"distill.teacher {distill.teacher!r} loads the starting weights from a checkpoint; "
                         "none given")
    teacher = next(iter(instructions.values()))
    dataset = distill_dataset(task, order, student_instruction(task, distill.student), teacher)
    source = model.config._name_or_path
    model.config._name_or_path = str(weights) if weights is not None else source  # where TRL loads the teacher
    try:
        trainer = DistillTrainer(model=model, args=distill_args(distill, rl, output_dir, dtype),
                                 train_dataset=dataset, processing_class=tokenizer, callbacks=callbacks)
    finally:
        model.config._name_or_path = source  # the stage's reference stays the base model
    trainer.remove_callback(PrinterCallback)
    return trainer
