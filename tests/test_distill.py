"""FST-distill (slow/distill.py): TRL's SDFT trainer on the tiny model, the teacher shown the best instruction and
the student not (checked on the rendered prompts), and the phase inside `fst run`: its record, its ledger, its
checkpoints as the run's weights, and a crash inside it followed by `--resume` ending as an uninterrupted run."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, TrainerCallback

from fst_prompt import loop
from fst_prompt.config import DistillConfig, RLConfig, load_config
from fst_prompt.device import load_causal_lm
from fst_prompt.export import export_run
from fst_prompt.fast.population import Population
from fst_prompt.programs import load_task
from fst_prompt.rundir import RunDir, RunState
from fst_prompt.slow import distill
from fst_prompt.stages import final_checkpoint
from tests.test_loop import comparable, config

MARK = "Write the sum on a line of its own, prefixed with ZEBRA."


class Prompts(TrainerCallback):
    """The student's and the teacher's prompts of every distill batch, as the model reads them."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.student, self.teacher, self.completions_match = tokenizer, [], [], []

    def on_self_distillation_batch_prepared(self, *, prompt_ids, completion_ids, teacher_input_ids, **_):
        width = completion_ids.shape[1]
        self.student += self.tokenizer.batch_decode(prompt_ids, skip_special_tokens=True)
        self.teacher += self.tokenizer.batch_decode(teacher_input_ids[:, :-width], skip_special_tokens=True)
        self.completions_match.append(torch.equal(teacher_input_ids[:, -width:], completion_ids))


def test_distill_trains_through_trl_and_only_the_teacher_sees_the_best_instruction(tmp_path, tiny_path):
    task = load_task("chain_sum", sizes=[16, 4, 4])
    model = load_causal_lm(tiny_path, "float32", device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prompts = Prompts(tokenizer)
    d = DistillConfig(steps=2, save_every=1, problems_per_step=2, num_generations=2, learning_rate=1e-3)
    rl = RLConfig(max_completion_length=4)
    trainer = distill.build_distill_trainer(task, model, tokenizer, {"self": MARK}, d, rl, tmp_path / "out",
                                            order=list(range(16)), weights=tiny_path, callbacks=[prompts])
    assert isinstance(trainer, distill.SDFTTrainer)  # TRL's trainer, its loss and its generation
    record = trainer.train_until(2)

    assert (record.first_step, record.last_step) == (0, 2)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # the weights changed
    assert trainer.args.distillation_alpha == 1.0  # reverse KL
    # the teacher (frozen, the default) kept the weights the phase started from; the student moved away from them
    assert trainer.teacher_model is not model and all(
        torch.equal(before[k], v) for k, v in trainer.teacher_model.state_dict().items())
    assert model.config._name_or_path == str(tiny_path)  # put back: TRL loaded the teacher from `weights`
    assert any("distillation_loss" in k for k in trainer.state.log_history[0])
    seed = task.seed_instructions()["self"]
    assert len(prompts.student) == len(prompts.teacher) == 2 * 2 * 2  # steps x problems x generations
    assert all(MARK in t and seed not in t for t in prompts.teacher)
    assert all(MARK not in s and seed in s for s in prompts.student)
    # the same problem on both sides (the teacher's prompt differs only in its instruction), and the teacher
    # scores exactly the completions the student sampled
    for s, t in zip(prompts.student, prompts.teacher, strict=True):
        assert s.replace(seed, "") == t.replace(MARK, "")
    assert all(prompts.completions_match)
    assert sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]


def test_a_live_teacher_is_the_student_and_a_frozen_one_needs_the_starting_weights(tmp_path, tiny_path):
    task = load_task("chain_sum", sizes=[16, 4, 4])
    model = load_causal_lm(tiny_path, "float32", device="cpu")
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    rl = RLConfig(max_completion_length=4)
    live = DistillConfig(steps=2, save_every=1, problems_per_step=2, num_generations=2, teacher="live")
    trainer = distill.build_distill_trainer(task, model, tokenizer, {"self": MARK}, live, rl, tmp_path / "a",
                                            order=list(range(16)))
    assert trainer.teacher_model is model
    with pytest.raises(ValueError, match="loads the starting weights from a checkpoint"):
        distill.build_distill_trainer(task, model, tokenizer, {"self": MARK}, live.model_copy(update={"teacher":
                                      "frozen"}), rl, tmp_path / "b", order=list(range(16)))


def test_a_student_shown_no_instruction_sees_neither():
    task = load_task("chain_sum", sizes=[4, 4, 4])
    rows = distill.distill_dataset(task, [0, 1], distill.student_instruction(task, "none"), MARK)
    seed = task.seed_instructions()["self"]
    text = str(rows[0]["prompt"])
    assert seed not in text and MARK not in text and MARK in str(rows[0]["privileged_context"])


def test_bad_distill_settings_are_config_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: chain_sum\nloop: {mode: gepa}\ndistill: {steps: 2}\n")
    with pytest.raises(ValueError, match="loop.mode gepa keeps them frozen"):
        load_config(path, model=loop.RunConfig)
    path.write_text("task: chain_sum\ndistill: {steps: 3, save_every: 2}\n")
    with pytest.raises(ValueError, match="must divide distill.steps"):
        load_config(path, model=loop.RunConfig)
    path.write_text("task: chain_sum\ndistill: {steps: 2, trainer_args: {distilation_alpha: 0.5}}\n")
    with pytest.raises(ValueError, match="not SDFTConfig settings: distilation_alpha"):
        load_config(path, model=loop.RunConfig)


def distill_config(tmp_path, tiny_path, endpoint):
    return config(tmp_path, tiny_path, endpoint, distill={"steps": 2, "save_every": 1, "problems_per_step": 2,
                                                          "num_generations": 2, "learning_rate": 1e-3})


def weights_hash(run_dir: Path, cfg) -> str:
    return hashlib.sha256((Path(final_checkpoint(RunDir(run_dir), cfg)) / "model.safetensors").read_bytes()).hexdigest()


def test_the_distill_phase_in_a_run_is_recorded_counted_and_is_the_runs_weights(tmp_path, tiny_path, endpoint):
    cfg = distill_config(tmp_path, tiny_path, endpoint)
    state = loop.run_loop(cfg, progress=False)
    run = RunDir(tmp_path / "run")
    assert state.cycle == 2 and state.ledger.distill_steps == 2 and state.ledger.distill_rollouts == 2 * 2 * 2
    (record,) = run.distills()
    assert (record.stage, record.cycle, record.steps, record.student) == (0, 1, 2, "seed")
    assert record.teacher_id == Population.from_json(state.population).best().id
    last = run.cycles()[-1]
    assert record.before["val_accuracy_seed"] == last.val_accuracy_seed and record.before["kl"] == last.kl
    assert record.after["kl"] != record.before["kl"]  # the weights moved
    # around the phase the probe also runs on its problems under the best instruction: the stage's last cycle
    # records it (the "before"), the earlier cycles do not
    assert record.before["kl_best"] == last.kl_best is not None and record.after["kl_best"] is not None
    assert run.cycles()[0].kl_best is None and "kl_best" not in run.cycles()[0].to_json()
    assert Path(final_checkpoint(run, cfg)).parent == run.distill_checkpoints()  # export ships the distilled model
    assert [m.cycle for m in run.cycles()] == [0, 1]  # one evaluation line per cycle: the distill's is its own
    logged = [json.loads(line) for line in (run.path / "distill_steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "sdft/distillation_loss" in r] == [1, 2]
    exported = export_run(run.path, tmp_path / "export")
    card = (tmp_path / "export" / "README.md").read_text()
    assert tmp_path / "export" / "model" in exported and "Distilled (stage 1, chain_sum: 2 steps, 8 student" in card
    shipped = (tmp_path / "export" / "model" / "model.safetensors").read_bytes()
    assert shipped == (Path(final_checkpoint(run, cfg)) / "model.safetensors").read_bytes()
    more = cfg.model_copy(update={"loop": cfg.loop.model_copy(update={"cycles": 3})})
    with pytest.raises(ValueError, match="ended with a distill phase after cycle 2"):  # not on from the RL weights
        loop.run_loop(more, resume=True, progress=False)


def test_a_crash_inside_the_distill_phase_then_resume_ends_as_an_uninterrupted_run(tmp_path, tiny_path, endpoint,
                                                                                  monkeypatch):
    reference_cfg = distill_config(tmp_path / "a", tiny_path, endpoint)
    reference = loop.run_loop(reference_cfg, progress=False)

    cfg = distill_config(tmp_path / "b", tiny_path, endpoint)
    real_save = distill.DistillTrainer._save_checkpoint

    def save_then_crash(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        if self.state.global_step == 1:
            raise RuntimeError("killed after the first distill checkpoint")

    monkeypatch.setattr(distill.DistillTrainer, "_save_checkpoint", save_then_crash)
    with pytest.raises(RuntimeError, match="killed"):
        loop.run_loop(cfg, progress=False)
    assert RunState.load(tmp_path / "b" / "run").phase == "distill"
    monkeypatch.setattr(distill.DistillTrainer, "_save_checkpoint", real_save)
    resumed = loop.run_loop(cfg, resume=True, progress=False)

    assert comparable(resumed, tmp_path / "b" / "run") == comparable(reference, tmp_path / "a" / "run")
    assert weights_hash(tmp_path / "b" / "run", cfg) == weights_hash(tmp_path / "a" / "run", reference_cfg)
    after = [RunDir(tmp_path / d / "run").distills()[0].after for d in ("a", "b")]
    assert after[0] == after[1]


@pytest.mark.slow
def test_kill_9_inside_the_distill_phase_then_resume(tmp_path, tiny_path, endpoint):
    import os
    import signal
    import time

    import yaml

    from tests.test_kill9 import fst

    def write(name: str) -> tuple[Path, Path]:
        cfg = distill_config(tmp_path / name, tiny_path, endpoint)
        cfg.distill.steps, cfg.rl.max_completion_length = 4, 16
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump()))
        return path, Path(cfg.run_dir)

    def final(run_dir: Path) -> dict:
        state = RunState.load(run_dir)
        digest = hashlib.sha256((run_dir / "checkpoints" / "distill" / "checkpoint-4" / "model.safetensors")
                                .read_bytes()).hexdigest()
        return {"ledger": {k: v for k, v in vars(state.ledger).items() if not k.endswith("seconds")},
                "population": state.population, "weights": digest,
                "after": RunDir(run_dir).distills()[0].after}

    config_a, reference = write("a")
    proc = fst("run", str(config_a))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]

    config_b, run_dir = write("b")
    proc = fst("run", str(config_b))
    deadline = time.time() + 600
    while not (run_dir / "checkpoints" / "distill" / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert RunState.load(run_dir).phase == "distill" and not (run_dir / "distill.jsonl").exists()
    assert not (run_dir / "checkpoints" / "distill" / "checkpoint-4").exists()  # killed inside the phase

    resumed = fst("run", str(config_b), "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    assert final(run_dir) == final(reference)


def test_the_step_bar_counts_distill_steps_which_log_no_reward(tmp_path):
    """The console's step bar moves on every step's log, RL's (reward, KL) and the distill phase's (loss only),
    and not on the end-of-training summary; every log still goes to the steps file."""
    from transformers import TrainerControl, TrainerState

    from fst_prompt.console import StepLog

    log = StepLog(tmp_path / "steps.jsonl", label="distill steps")
    state = TrainerState(max_steps=3, global_step=0, is_world_process_zero=True)
    log.on_train_begin(None, state, TrainerControl())
    for step in (1, 2):
        state.global_step = step
        log.on_log(None, state, None, logs={"loss": 0.25, "sdft/distillation_loss": 0.25})
    assert log.bar.n == 2 and "loss=0.2500" in str(log.bar)
    log.on_log(None, state, None, logs={"train_runtime": 1.0, "train_loss": 0.25})
    assert log.bar.n == 2
    state.global_step = 3
    log.on_log(None, state, None, logs={"loss": 0.1, "reward": 0.5, "kl": 0.01})  # an RL step's
    assert log.bar.n == 3 and "reward=0.500" in str(log.bar)
    assert len((tmp_path / "steps.jsonl").read_text().splitlines()) == 4
