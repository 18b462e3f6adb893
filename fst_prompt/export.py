"""`fst export <run_dir> --out DIR`: what a run learned, in forms other tools load without fst_prompt.

- `prompts.json`: the best instructions `{predictor: text}` plus the population with its scores;
- `program.json`: the DSPy program with the learned instructions (`program.save`); plain `dspy` loads it
  into the same module with `program.load("program.json")`; a continual run gets one
  `program-<task>.json` per task of its schedule, each with its task's archived instruction (`loop.archive`);
- `model/`: the trained weights from the last complete checkpoint of the last stage that trained (its distill
  phase's, where it had one; a full HF model folder, or the LoRA adapter); none in gepa mode;
- `README.md`: a model card with the run's measured figures.

Every mode writes the same run directory (`fst run`), so this reads them all. It only reads: the run
directory (which may still be running) is left byte-for-byte as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dspy

from fst_prompt.atomic import write_json_atomic, write_text_atomic
from fst_prompt.config import RunConfig, load_config
from fst_prompt.fast.population import Population
from fst_prompt.programs import load_task
from fst_prompt.rundir import CycleRecord, DistillRecord, RunDir, RunState
from fst_prompt.stages import final_checkpoint

# Trainer state in a TRL checkpoint that a model folder does not need.
_TRAINING_ONLY = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin"}


def export_run(run_dir: Path, out: Path) -> list[Path]:
    run, out = RunDir(run_dir), Path(out)
    if not run.is_run():
        raise FileNotFoundError(f"{run.config_path} does not exist: is {run.path} a `fst run` directory?")
    if out.resolve() == run.path.resolve() or run.path.resolve() in out.resolve().parents:
        raise ValueError(f"--out {out} is inside the run directory {run.path}; export writes nothing there")
    config: RunConfig = load_config(run.config_path)
    state = run.load_state()
    population = Population.from_json(state.population)
    best = population.best()
    out.mkdir(parents=True, exist_ok=True)

    archive = state.archive if config.loop.archive else {}  # a continual run's instruction for each task
    write_json_atomic(out / "prompts.json", {"instructions": best.instructions, "best_id": best.id,
                                             "population": population.to_json(), "archive": archive})
    written = [out / "prompts.json"]
    for name, program in _programs(run, config):
        path = out / (f"program-{name}.json" if config.schedule else "program.json")
        _with_instructions(program, archive.get(name, {}).get("instructions", best.instructions)).save(str(path))
        written.append(path)
    model_dir = _copy_last_checkpoint(final_checkpoint(run, config), out / "model")
    if model_dir:
        written.append(model_dir)
    cycles = run.cycles() if run.has_cycles() else []
    write_text_atomic(out / "README.md", _model_card(config, state, best.instructions, cycles[-1] if cycles else None,
                                                     model_dir, run.distills()))
    written.append(out / "README.md")
    return written


def _programs(run: RunDir, config: RunConfig) -> list[tuple[str, dspy.Module]]:
    """Each task's DSPy program: the one a Python run saved (`FST.compile`), else the task file's."""
    if run.program_dir.is_dir():
        return [(config.task or "program", dspy.load(str(run.program_dir), allow_pickle=True))]
    tasks = [load_task(spec.task, **spec.task_kwargs) for spec in config.stages()]
    return [(task.name, task.program) for task in tasks]


def _with_instructions(program: dspy.Module, instructions: dict[str, str]) -> dspy.Module:
    program = program.deepcopy()
    for name, predictor in program.named_predictors():
        if name in instructions:
            predictor.signature = predictor.signature.with_instructions(instructions[name])
    return program


def _copy_last_checkpoint(last: str | None, dest: Path) -> Path | None:
    if last is None:
        return None  # gepa mode: the weights never changed
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(last, tmp, ignore=lambda d, names: [n for n in names if n in _TRAINING_ONLY])
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def _model_card(config: RunConfig, state: RunState, instructions: dict[str, str], last: CycleRecord | None,
                model_dir: Path | None, distills: list[DistillRecord]) -> str:
    ledger = state.ledger
    def measured(value: float | None) -> float | str:
        return "n/a" if value is None or last is None else value

    rows = "\n".join(f"| {k} | {v} |" for k, v in (
        ("mode", config.loop.mode), ("policy", config.policy.model), ("cycles completed", state.cycle),
        ("RL steps", ledger.rl_steps), ("RL rollouts", ledger.rl_rollouts),
        ("fast loop's new rollouts (val checks)", f"{ledger.fast_new_rollouts} ({ledger.gepa_val_rollouts})"),
        ("RL rollouts the fast loop read", ledger.gepa_reused_rollouts),
        ("proposals accepted / tried", f"{ledger.proposals_accepted} / {ledger.proposals_tried}"),
        ("val accuracy, best instruction", measured(last and last.val_accuracy_best)),
        ("val accuracy, seed instruction", measured(last and last.val_accuracy_seed)),
        ("val accuracy, constant answer", measured(last and last.val_majority_baseline)),
        ("KL to base (probe, nats/sequence)", measured(last and last.kl)),
        ("fast / slow wall time (s)", f"{ledger.fast_seconds:.0f} / {ledger.slow_seconds:.0f}")))
    prompts = "\n".join(f"- `{name}`:\n\n```\n{text}\n```" for name, text in instructions.items())
    distilled = "".join(
        f"\n\nDistilled (stage {d.stage + 1}, {d.task}: {d.steps} steps, {d.rollouts} student rollouts, "
        f"{d.seconds:.0f} s): val accuracy with the seed instruction {d.before['val_accuracy_seed']:.3f} → "
        f"{d.after['val_accuracy_seed']:.3f}, with the best {d.before['val_accuracy_best']:.3f} → "
        f"{d.after['val_accuracy_best']:.3f}; KL {d.before['kl']:.3f} → {d.after['kl']:.3f}." for d in distills)
    if model_dir:
        kind = "a LoRA adapter" if (model_dir / "adapter_config.json").exists() else "a full model"
        weights = f"`model/` holds the trained weights ({kind})."
    else:
        weights = "No weights: this run only evolved instructions (gepa mode)."
    tasks = " → ".join(spec.task for spec in config.stages())
    return (f"# {tasks}: trained with fst-prompt ({config.loop.mode})\n\n"
            f"Measured by the run (val split, n = {_n(last, config)}):\n\n| | |\n|---|---|\n{rows}{distilled}\n\n"
            f"## Learned instructions\n\n{prompts}\n\n## Files\n\n{weights} `program.json` loads into the task's "
            "DSPy module with `program.load(...)` (one `program-<task>.json` per task for a continual run); "
            "`prompts.json` holds the population with its scores.\n\n"
            "Base model license: Apache-2.0 (see the model folder's LICENSE / NOTICE).\n")


def _n(last: CycleRecord | None, config: RunConfig) -> int:
    return last.eval_n if last is not None and last.eval_n is not None else config.loop.eval_n
