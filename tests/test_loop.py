"""The FST loop on the tiny model with a scripted reflection endpoint: modes, ledger, crash + resume."""

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from fst_prompt import loop, stages
from fst_prompt.cli import main
from fst_prompt.config import ConfigError, RunConfig, load_config
from fst_prompt.policy import Sampling
from fst_prompt.rundir import RunDir
from fst_prompt.state import RunState, last_complete_checkpoint, run_lock


def config(tmp_path, tiny_path, endpoint, **changes):
    data = {"task": "chain_sum", "task_kwargs": {"sizes": [16, 4, 4]},
            "policy": {"model": str(tiny_path), "batch_size": 4, "max_new_tokens": 4},
            "gepa": {"max_metric_calls": 10, "population_size": 2, "reflection_minibatch_size": 2},
            "reflection": {"model": "fake", "base_url": endpoint, "retries": 0},
            "rl": {"problems_per_step": 2, "num_generations": 2, "max_completion_length": 4, "save_every": 1,
                   "learning_rate": 1e-3, "warmup_steps": 0},
            "loop": {"mode": "fst", "cycles": 2, "steps_per_cycle": 2, "eval_n": 4},
            "run_dir": str(tmp_path / "run")}
    for key, value in changes.items():
        if "__" not in key:
            data[key] = value
            continue
        section, field = key.split("__")
        data[section][field] = value
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, model=RunConfig)


def comparable(state: RunState, run_dir=None) -> dict:
    """What a resumed run must end with to equal an uninterrupted one: counters, population, and (given its
    directory) the final weights (hash of the last checkpoint's), val accuracies and KL of every cycle."""
    ledger = {k: v for k, v in vars(state.ledger).items() if not k.endswith("seconds")}
    out = {"cycle": state.cycle, "phase": state.phase, "ledger": ledger,
           "population": [(c["id"], c["scores"]) for c in state.population["candidates"]]}
    if run_dir is not None:
        import hashlib

        from fst_prompt.plots import load_cycles

        weights = run_dir / "checkpoints" / last_complete_checkpoint(run_dir / "checkpoints", remove_partial=False)
        out["weights"] = hashlib.sha256((weights / "model.safetensors").read_bytes()).hexdigest()
        out["cycles"] = [(c["val_accuracy_best"], c["val_accuracy_seed"], round(c["kl"], 6))
                         for c in load_cycles(run_dir)]
        out["rollouts"] = RunDir(run_dir).rollouts.rows()  # the store: every RL rollout, once
    return out


def test_fst_run_ledger_and_files(tmp_path, tiny_path, endpoint):
    state = loop.run_loop(config(tmp_path, tiny_path, endpoint), progress=False)
    run = tmp_path / "run"
    assert state.cycle == 2 and state.phase == "fast"
    assert state.ledger.rl_steps == 4 and state.ledger.rl_rollouts == 4 * 2 * 2
    assert state.ledger.gepa_rollouts > 0 and state.ledger.reflection_calls >= 1
    cycles = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [c["cycle"] for c in cycles] == [0, 1] and [c["rl_steps"] for c in cycles] == [2, 4]
    assert len((run / "rounds.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*"))[-1] == "checkpoint-4"
    # one rollout stream: every RL rollout is stored; the second round read cycle 0's and drew at most a cycle's
    rows, (first, second) = RunDir(run).rollouts.rows(), RunDir(run).rounds()
    assert len(rows) == 16 and sorted({r.version for r in rows}) == [0, 1, 2, 3]
    assert {r.candidate for r in rows} <= {c["id"] for r in RunDir(run).rounds() for c in r.population}
    assert first.judging == "minibatch" and first.reused_rollouts == 0  # no RL rollouts yet: a sampled round
    assert second.reused_rollouts > 0 and sorted(set(second.anchor)) == sorted({r.example_index for r in rows
                                                                                  if r.version < 2})
    assert all(r.policy_rollouts - r.val_rollouts <= 2 * 2 * 2 for r in (first, second))  # T x B x G
    assert state.ledger.gepa_reused_rollouts == second.reused_rollouts


def test_evaluations_between_rl_steps_leave_the_training_trajectory_unchanged(tmp_path, tiny_path, endpoint,
                                                                            monkeypatch):
    from safetensors.torch import load_file

    from fst_prompt import step_eval
    from fst_prompt.programs import load_task

    # the parity task rewards the tiny model's replies by their length, so its weights move and its accuracies vary
    # (chain_sum's are 0 and stay so); one request per generate, as in the resume tests below
    same = {"task": PARITY, "policy__batch_size": 1, "loop__mode": "rl"}
    plain = loop.run_loop(config(tmp_path / "a", tiny_path, endpoint, **same), progress=False)
    seen = []  # what each light evaluation scored: the weights at that moment, the instructions, the accuracy
    evaluate = step_eval.evaluate

    def recording_evaluate(task, policy, **kwargs):
        result = evaluate(task, policy, **kwargs)
        weights = {k: v.detach().clone() for k, v in policy.model.state_dict().items()}
        seen.append((weights, kwargs["instructions"], kwargs["n"], result.accuracy))
        return result

    monkeypatch.setattr(step_eval, "evaluate", recording_evaluate)
    cfg = config(tmp_path / "b", tiny_path, endpoint, **same, loop__eval_every=1, loop__eval_every_n=3)
    dense = loop.run_loop(cfg, progress=False)
    monkeypatch.undo()
    assert comparable(dense, tmp_path / "b" / "run") == comparable(plain, tmp_path / "a" / "run")
    assert not (tmp_path / "a" / "run" / "evals.jsonl").exists()
    records = [json.loads(line) for line in (tmp_path / "b" / "run" / "evals.jsonl").read_text().splitlines()]
    # steps 1 and 3: the last step of each cycle (2, 4) gets the cycle's full evaluation instead
    assert [(r["cycle"], r["rl_steps"], r["eval_n"]) for r in records] == [(0, 1, 3), (1, 3, 3)]
    assert [r["total_rollouts"] for r in records] == [1 * 2 * 2, 3 * 2 * 2]
    assert 0 < records[0]["seconds"] < records[1]["seconds"]
    # each record is what its evaluation scored: the seed instruction (rl mode) on 3 problems, with the weights
    # after that RL step (step 3's are the kept checkpoint-3: save_every 1, the last two kept)
    seed = load_task("chain_sum", sizes=(16, 4, 4)).seed_instructions()
    assert [(instr, n, acc) for _, instr, n, acc in seen] == [(seed, 3, r["val_accuracy_best"]) for r in records]
    saved = load_file(tmp_path / "b" / "run" / "checkpoints" / "checkpoint-3" / "model.safetensors")
    assert all(torch.equal(saved[k], seen[1][0][k]) for k in saved)
    assert not all(torch.equal(saved[k], seen[0][0][k]) for k in saved)  # step 1's weights were others


def test_gradient_checkpointing_changes_memory_not_the_trajectory(tmp_path, tiny_path, endpoint):
    """Why `rl.trainer_args.gradient_checkpointing` may change on resume: the same weights either way."""
    plain = loop.run_loop(config(tmp_path / "a", tiny_path, endpoint, loop__mode="rl", loop__cycles=1), progress=False)
    cfg = config(tmp_path / "b", tiny_path, endpoint, loop__mode="rl", loop__cycles=1,
                 rl__trainer_args={"gradient_checkpointing": True})
    checkpointed = loop.run_loop(cfg, progress=False)
    assert comparable(checkpointed, tmp_path / "b" / "run") == comparable(plain, tmp_path / "a" / "run")


def test_fast_steps_score_as_rl_samples_and_gepa_mode_greedily(tmp_path, tiny_path, endpoint):
    from fst_prompt.fast.step import scoring_for
    from fst_prompt.modes import resolve_mode

    def scoring(cfg, mode, cycle):
        return scoring_for(cfg.gepa, cfg.rl, trains=resolve_mode(mode).trains, max_new_tokens=cfg.policy.max_new_tokens,
                           cycle=cycle)

    cfg = config(tmp_path, tiny_path, endpoint, gepa__samples_per_problem=3, rl__temperature=0.9, rl__top_p=0.95)
    fst = scoring(cfg, "fst", cycle=2)
    assert fst.samples == 3 and fst.sampling == Sampling(0.9, 0.95, 4) and fst.seed == 2
    assert scoring(cfg, "fst", cycle=3).seed != fst.seed  # each round its own draws
    assert not scoring(cfg, "gepa", cycle=0).sampled
    greedy = config(tmp_path, tiny_path, endpoint, gepa__temperature=0.0)
    assert not scoring(greedy, "fst", cycle=0).sampled


def test_anchor_is_the_problems_the_next_steps_use():
    order = stages.problem_order(10, seed=0)
    assert sorted(order) == list(range(10)) and order == stages.problem_order(10, seed=0)
    # RL steps of B = 2 problems: steps 0-1 use positions 0-3; steps 4-5 use 8-11, wrapping into the next epoch
    assert stages.upcoming_problems(order, start=0 * 2, n=2 * 2) == order[:4]
    assert stages.upcoming_problems(order, start=4 * 2, n=2 * 2) == order[8:] + order[:2]


PARITY = str(Path(__file__).parent / "tasks" / "parity_chain_sum.py")  # GEPA's scores depend on the weights


@pytest.mark.parametrize("crash_in", ["between_fast_and_slow", "middle_of_slow", "mid_checkpoint_write"])
def test_resume_after_crash_matches_uninterrupted_run(tmp_path, tiny_path, endpoint, monkeypatch, crash_in):
    # One request per generate: the engine batches the calls that arrive within a few ms, and on this random tiny
    # model a different batch (padding) can flip a greedy token, so a busy machine could change a round's rollouts
    # and with them its reflection prompts (the likely cause of one fresh-clone failure: 7 requests for 6).
    uninterrupted = loop.run_loop(config(tmp_path / "a", tiny_path, endpoint, task=PARITY, policy__batch_size=1),
                                  progress=False)
    scores = {s for c in uninterrupted.population["candidates"] for s in c["scores"].values()}
    assert len(scores) > 1  # the rounds' scores vary with the completions, and so with the weights

    cfg = config(tmp_path / "b", tiny_path, endpoint, task=PARITY, policy__batch_size=1)  # as above
    real_slow = loop._slow_step
    calls = {"n": 0}

    def crashing_slow(stage, contexts, cfg_, state, procs, step_eval, run_dir):
        calls["n"] += 1
        if calls["n"] == 2:  # the second cycle's slow phase
            if crash_in in ("middle_of_slow", "mid_checkpoint_write"):
                stage.trainer.set_population(contexts)
                stage.trainer.args.max_steps = 3  # one of its two steps done and checkpointed
                stage.trainer.train(resume_from_checkpoint=True)
            if crash_in == "mid_checkpoint_write":  # killed while saving: the Trainer writes trainer_state.json last
                (tmp_path / "b" / "run" / "checkpoints" / "checkpoint-3" / "trainer_state.json").unlink()
            raise KeyboardInterrupt("simulated crash")
        return real_slow(stage, contexts, cfg_, state, procs, step_eval, run_dir)

    monkeypatch.setattr(loop, "_slow_step", crashing_slow)
    with pytest.raises(KeyboardInterrupt):
        loop.run_loop(cfg, progress=False)
    saved = RunState.load(tmp_path / "b" / "run")
    assert (saved.cycle, saved.phase) == (1, "slow")
    monkeypatch.setattr(loop, "_slow_step", real_slow)
    resumed = loop.run_loop(cfg, resume=True, progress=False)
    assert comparable(resumed, tmp_path / "b" / "run") == comparable(uninterrupted, tmp_path / "a" / "run")


def test_modes(tmp_path, tiny_path, endpoint):
    rl = loop.run_loop(config(tmp_path / "rl", tiny_path, "http://127.0.0.1:9/v1", loop__mode="rl",
                              loop__cycles=1), progress=False)
    assert rl.ledger.gepa_rollouts == 0 and rl.ledger.rl_steps == 2  # never reached the (dead) endpoint
    gepa = loop.run_loop(config(tmp_path / "g", tiny_path, endpoint, loop__mode="gepa", loop__cycles=1),
                         progress=False)
    assert gepa.ledger.rl_steps == 0 and gepa.ledger.gepa_rollouts > 0
    assert not (tmp_path / "g" / "run" / "checkpoints").exists()


def test_gepa_then_rl_anchors_on_every_step_and_rl_evaluates_once(tmp_path, tiny_path, endpoint, monkeypatch):
    then = loop.run_loop(config(tmp_path / "t", tiny_path, endpoint, loop__mode="gepa-then-rl"), progress=False)
    scores = [c["scores"] for c in then.population["candidates"]]
    assert {len(s) for s in scores} == {2 * 2 * 2}  # cycles x T x B problems, not just the first T steps'
    assert then.ledger.rl_steps == 4 and len((tmp_path / "t" / "run" / "rounds.jsonl").read_text().splitlines()) == 1

    from fst_prompt import cycle_eval

    calls = []
    real = cycle_eval.evaluate
    monkeypatch.setattr(cycle_eval, "evaluate",
                        lambda *a, **k: calls.append(k["instructions"]) or real(*a, **k))
    loop.run_loop(config(tmp_path / "rl", tiny_path, endpoint, loop__mode="rl", loop__cycles=1), progress=False)
    assert len(calls) == 2  # the start, then the cycle: best == seed instruction, evaluated once, reported as both
    record = json.loads((tmp_path / "rl" / "run" / "metrics.jsonl").read_text())
    assert record["val_accuracy_best"] == record["val_accuracy_seed"]


def test_config_and_cli_errors(tmp_path, tiny_path, endpoint, capsys):
    with pytest.raises(ConfigError, match="rl.save_every .* must divide loop.steps_per_cycle"):
        config(tmp_path, tiny_path, endpoint, rl__save_every=3)
    with pytest.raises(ConfigError, match="loop.mode"):
        config(tmp_path, tiny_path, endpoint, loop__mode="slow-only")
    cfg_path = tmp_path / "config.yaml"
    config(tmp_path, tiny_path, endpoint)
    assert main(["run", str(cfg_path), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_plots_from_runs(tmp_path, tiny_path, endpoint, capsys):
    loop.run_loop(config(tmp_path / "a", tiny_path, endpoint, loop__cycles=1), progress=False)
    run = tmp_path / "a" / "run"
    assert {p.name for p in (run / "plots").iterdir()} == {"accuracy.png", "kl_vs_accuracy.png", "fast_weights.png",
                                                          "rl_steps.png"}
    assert main(["plot", str(run), str(run), "--out", str(tmp_path / "figs")]) == 0
    assert all((tmp_path / "figs" / n).stat().st_size > 5000 for n in ("accuracy.png", "kl_vs_accuracy.png"))
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "figs")]) == 2
    assert "a `fst run` directory" in capsys.readouterr().err


PLAIN_DSPY = """
import json, sys
import dspy  # plain DSPy: fst_prompt is never imported here
assert "fst_prompt" not in sys.modules

class ChainSum(dspy.Signature):
    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="the integer result, digits only")

program = dspy.Predict(ChainSum)
program.load(sys.argv[1])
lm = dspy.utils.dummies.DummyLM([{"answer": "7"}], adapter=dspy.ChatAdapter())
with dspy.context(lm=lm, adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
    pred = program(question="3 + 4 =")
print(json.dumps({"instructions": program.signature.instructions, "answer": pred.answer,
                  "messages": lm.history[-1]["messages"]}))
"""


def test_export_loads_in_plain_dspy(tmp_path, tiny_path, endpoint):
    import subprocess
    import sys

    import dspy

    from fst_prompt.cli import main as fst

    cfg = config(tmp_path, tiny_path, endpoint, loop__cycles=1)
    loop.run_loop(cfg, progress=False)
    out = tmp_path / "export"
    assert fst(["export", cfg.run_dir, "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"prompts.json", "program.json", "model", "README.md"}
    assert (out / "model" / "model.safetensors").is_file() and not (out / "model" / "optimizer.pt").exists()
    prompts = json.loads((out / "prompts.json").read_text())

    script = tmp_path / "plain.py"
    script.write_text(PLAIN_DSPY)
    done = subprocess.run([sys.executable, str(script), str(out / "program.json")], capture_output=True, text=True,
                          cwd=tmp_path, env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    plain = json.loads(done.stdout.strip().splitlines()[-1])
    assert plain["instructions"] == prompts["instructions"]["self"] and plain["answer"] == "7"

    # The in-memory program with the learned instruction sends the same messages and predicts the same.
    from fst_prompt.programs import load_task

    task = load_task("chain_sum", sizes=(16, 4, 4))
    lm = dspy.utils.dummies.DummyLM([{"answer": "7"}], adapter=dspy.ChatAdapter())
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        pred = task.with_instructions(prompts["instructions"])(question="3 + 4 =")
    assert pred.answer == plain["answer"] and lm.history[-1]["messages"] == plain["messages"]


def test_half_written_checkpoints_are_discarded(tmp_path):
    for step, complete in ((1, True), (2, True), (3, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_text("weights")
        if complete:
            (folder / "trainer_state.json").write_text("{}")  # the Trainer writes it last
    assert last_complete_checkpoint(tmp_path, remove_partial=False) == str(tmp_path / "checkpoint-2")
    assert (tmp_path / "checkpoint-3").exists()  # a reader (fst export) leaves it alone
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert not (tmp_path / "checkpoint-3").exists()  # the run that owns it cleans up before resuming
    assert last_complete_checkpoint(tmp_path / "none") is None


def continual_config(tmp_path, tiny_path, endpoint, **loop_changes):
    data = config(tmp_path, tiny_path, endpoint).model_dump()
    data.pop("task")
    data["schedule"] = [{"task": "chain_sum", "task_kwargs": {"sizes": [16, 4, 4]}, "cycles": 2},
                        {"task": "letter_counting", "task_kwargs": {"sizes": [16, 4, 4]}, "cycles": 1}]
    data["seed_instruction"] = "Solve the problem. Reply with the final number."
    data["loop"] |= {"steps_per_cycle": 1} | loop_changes
    return RunConfig.model_validate(data)


def test_continual_schedule_switches_tasks_at_the_right_steps(tmp_path, tiny_path, endpoint, monkeypatch):
    import weakref

    import pandas as pd

    cfg = continual_config(tmp_path, tiny_path, endpoint)
    real_fast_step, finished = loop._fast_step, {}

    def fast_step(stage, *args):  # by the next stage's GEPA round, the finished stage's trainer is gone
        if stage.index == 0:
            finished.update(trainer=weakref.ref(stage.trainer), reference=weakref.ref(stage.trainer.ref_model))
        else:
            assert finished["trainer"]() is None and finished["reference"]() is None
            assert stage.kl_base is stage.trainer.ref_model  # one copy of the base model
        return real_fast_step(stage, *args)

    monkeypatch.setattr(loop, "_fast_step", fast_step)
    state = loop.run_loop(cfg, progress=False)
    run = tmp_path / "run"
    cycles = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(c["cycle"], c["task"], c["rl_steps"]) for c in cycles] == [
        (0, "chain_sum", 1), (1, "chain_sum", 2), (2, "letter_counting", 3)]
    assert list(cycles[2]["val_accuracy_by_task"]) == ["chain_sum", "letter_counting"]  # every task seen so far
    assert state.ledger.rl_steps == 3
    forgetting = json.loads((run / "forgetting.json").read_text())
    assert forgetting["tasks"] == ["chain_sum", "letter_counting"]
    assert forgetting["after_stage"][0][1] is None and len(forgetting["after_stage"]) == 2
    # RL on stage 1 rolled out letter-counting problems under the task-agnostic seed instruction
    table = pd.read_parquet(run / "checkpoints" / "stage-1" / "completions" / "completions_00001.parquet")
    assert all("letter" in p[-1]["content"] for p in table["prompt"])
    first = pd.read_parquet(run / "checkpoints" / "stage-0" / "completions" / "completions_00001.parquet")
    assert all("arithmetic" in p[-1]["content"] or "=" in p[-1]["content"] for p in first["prompt"])
    rounds = [json.loads(line)["task"] for line in (run / "rounds.jsonl").read_text().splitlines()]
    assert rounds == ["chain_sum", "chain_sum", "letter_counting"]


def test_continual_resume_into_the_next_stage(tmp_path, tiny_path, endpoint, monkeypatch):
    cfg = continual_config(tmp_path, tiny_path, endpoint, mode="rl")
    real_slow = loop._slow_step

    def crash_on_stage_1(stage, *args):
        if stage.index == 1:
            raise KeyboardInterrupt("simulated crash")
        return real_slow(stage, *args)

    monkeypatch.setattr(loop, "_slow_step", crash_on_stage_1)
    with pytest.raises(KeyboardInterrupt):
        loop.run_loop(cfg, progress=False)
    monkeypatch.setattr(loop, "_slow_step", real_slow)
    state = loop.run_loop(cfg, resume=True, progress=False)  # stage 1 starts from stage 0's last checkpoint
    assert state.cycle == 3 and state.ledger.rl_steps == 3


def test_schedule_config_errors(tmp_path, tiny_path, endpoint):
    from pydantic import ValidationError

    data = continual_config(tmp_path, tiny_path, endpoint).model_dump()
    with pytest.raises(ValidationError, match="either `task` or a continual `schedule`"):
        RunConfig.model_validate(data | {"task": "chain_sum"})
    with pytest.raises(ValidationError, match="not supported yet"):
        RunConfig.model_validate(data | {"rl": data["rl"] | {"lora": True}})


def test_a_second_process_on_the_same_run_dir_is_refused(tmp_path, tiny_path, endpoint, capsys):
    import subprocess
    import sys

    config(tmp_path, tiny_path, endpoint)
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom fst_prompt.state import run_lock\n"
                               f"with run_lock({str(run)!r}):\n    print('locked', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["run", str(tmp_path / "config.yaml")]) == 2
        err = capsys.readouterr().err
        assert f"is in use by another fst process (pid {holder.pid})" in err
        assert not (run / "state.json").exists()
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run):  # the lock dies with its process
        pass


def test_resume_refuses_a_changed_config_but_allows_more_cycles(tmp_path, tiny_path, endpoint):
    first = config(tmp_path, tiny_path, endpoint, loop__cycles=1)
    loop.run_loop(first, progress=False)
    assert RunState.load(tmp_path / "run").config["loop.steps_per_cycle"] == 2
    for key, value, name in [("loop__steps_per_cycle", 1, "loop.steps_per_cycle: 2 -> 1"),
                             ("rl__problems_per_step", 1, "rl.problems_per_step: 2 -> 1"),
                             ("gepa__population_size", 3, "gepa.population_size: 2 -> 3")]:
        changed = config(tmp_path, tiny_path, endpoint, loop__cycles=1, **{key: value})
        with pytest.raises(ValueError, match=f"cannot resume .*{re.escape(name)}"):
            loop.run_loop(changed, resume=True, progress=False)
    more = loop.run_loop(config(tmp_path, tiny_path, endpoint, loop__cycles=2), resume=True, progress=False)
    assert more.cycle == 2 and more.config["loop.cycles"] == 2


def test_a_fresh_run_will_not_write_into_a_folder_that_holds_other_files(tmp_path, tiny_path, endpoint):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty \\(notes.txt\\) and holds no run to resume"):
        loop.run_loop(config(tmp_path, tiny_path, endpoint), progress=False)
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_readers_skip_a_torn_last_line_and_appends_start_a_new_one(tmp_path, capsys):
    from fst_prompt.rundir import RunDir
    from fst_prompt.state import append_jsonl, read_jsonl

    def record(cycle, acc):
        return {"cycle": cycle, "mode": "fst", "val_accuracy_best": acc, "val_accuracy_seed": 0.0, "kl": 0.0,
                "best_id": "x", "population": 1}

    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, record(0, 0.5))
    with path.open("a") as f:
        f.write('{"cycle": 1, "val_acc')  # a kill or a full disk mid-write
    assert [(r.cycle, r.val_accuracy_best) for r in RunDir(tmp_path).cycles()] == [(0, 0.5)]
    assert "skipped 1 unreadable line(s)" in capsys.readouterr().err
    append_jsonl(path, record(1, 0.75))
    assert [r["cycle"] for r in read_jsonl(path)] == [0, 1]


def test_a_round_re_run_after_a_crash_replays_its_reflection_answers(tmp_path, tiny_path, endpoint, monkeypatch):
    from fst_prompt.fast.reflection import ReflectionLM
    from tests.scripted import FakeOpenAI

    # One request per generate: the engine batches the calls that arrive within a few ms, and on this random tiny
    # model a different batch (padding) can flip a greedy token, so a busy machine could change a round's rollouts
    # and with them its reflection prompts (the likely cause of one fresh-clone failure: 7 requests for 6).
    uninterrupted = loop.run_loop(config(tmp_path / "a", tiny_path, endpoint, task=PARITY, policy__batch_size=1),
                                  progress=False)
    requests = len(FakeOpenAI.auth_headers)  # the start-up check and the reflection calls
    FakeOpenAI.auth_headers.clear()
    from fst_prompt.fast import step as fast_step

    real_round, real_ask = fast_step.gepa_round, ReflectionLM.__call__
    in_round_2 = {"now": False}

    def round_(*args, **kwargs):
        in_round_2["now"] = kwargs["cycle"] == 1
        return real_round(*args, **kwargs)

    def ask_then_crash(self, prompt):  # killed in the middle of round 2, just after a paid reflection call
        answer = real_ask(self, prompt)
        if in_round_2["now"]:
            raise KeyboardInterrupt("simulated crash in the middle of a GEPA round")
        return answer

    cfg = config(tmp_path / "b", tiny_path, endpoint, task=PARITY, policy__batch_size=1)
    monkeypatch.setattr(fast_step, "gepa_round", round_)
    monkeypatch.setattr(ReflectionLM, "__call__", ask_then_crash)
    with pytest.raises(KeyboardInterrupt):
        loop.run_loop(cfg, progress=False)
    monkeypatch.setattr(fast_step, "gepa_round", real_round)
    monkeypatch.setattr(ReflectionLM, "__call__", real_ask)
    resumed = loop.run_loop(cfg, resume=True, progress=False)
    assert len(FakeOpenAI.auth_headers) == requests + 1  # one more start-up check; no reflection call twice
    assert comparable(resumed, tmp_path / "b" / "run") == comparable(uninterrupted, tmp_path / "a" / "run")


def test_the_archive_changes_what_is_evaluated_not_what_is_trained(tmp_path, tiny_path, endpoint, monkeypatch):
    """`loop.archive` only chooses the instruction an earlier task is evaluated (and exported) under: the same
    continual run with it off trains the same weights and population, with the same ledger. So a continual run
    with the archive follows the trajectory of the same run without it (RESULTS.md §8 reads v3 from v2 by this)."""
    import hashlib

    from fst_prompt import cycle_eval
    from fst_prompt.plots import load_cycles
    from tests.scripted import FakeOpenAI

    real_fast_step, real_evaluate, used = loop._fast_step, cycle_eval.evaluate, []

    def fast_step(stage, population, *args):  # each stage's round ends on a best instruction of its own
        population = real_fast_step(stage, population, *args)
        best = population.best()
        best.instructions = {k: f"{stage.task.name}: {v}" for k, v in best.instructions.items()}
        return population

    def evaluate(task, policy, *, instructions, **kwargs):
        used[-1].append((task.name, dict(instructions)))
        return real_evaluate(task, policy, instructions=instructions, **kwargs)

    monkeypatch.setattr(loop, "_fast_step", fast_step)
    monkeypatch.setattr(cycle_eval, "evaluate", evaluate)
    ends = {}
    for archive in (True, False):
        FakeOpenAI.reset()
        used.append([])
        cfg = continual_config(tmp_path / f"archive-{archive}", tiny_path, endpoint, archive=archive)
        run = tmp_path / f"archive-{archive}" / "run"
        state = loop.run_loop(cfg, progress=False)
        weights = (run / "checkpoints" / "stage-1" / "checkpoint-1" / "model.safetensors").read_bytes()
        ends[archive] = comparable(state) | {"weights": hashlib.sha256(weights).hexdigest(),
            "cycles": [(c["val_accuracy_best"], round(c["kl"], 6)) for c in load_cycles(run)]}
    assert ends[True] == ends[False]  # weights hash, population, ledger, every cycle's accuracy and KL
    # while the last evaluation of the first task differed: its archived instruction, or the population's best
    last_chain_sum = [[instr for name, instr in calls if name == "chain_sum"][-1] for calls in used]
    assert last_chain_sum[0]["self"].startswith("chain_sum: ")
    assert last_chain_sum[1]["self"].startswith("letter_counting: ")


def test_the_archive_keeps_every_tasks_instruction_through_a_3_stage_schedule(tmp_path, tiny_path, endpoint,
                                                                              monkeypatch):
    from fst_prompt import cycle_eval
    from fst_prompt.export import export_run
    from fst_prompt.fast.population import Population

    data = continual_config(tmp_path, tiny_path, endpoint).model_dump()
    data["schedule"] = [{"task": name, "task_kwargs": {"sizes": [16, 4, 4]}, "cycles": 1}
                        for name in ("chain_sum", "letter_counting", "simple_equations")]
    cfg = RunConfig.model_validate(data)
    assert cfg.loop.archive  # the default
    real_fast_step, real_evaluate, bests, used = loop._fast_step, cycle_eval.evaluate, {}, []

    def fast_step(stage, population, *args):  # each stage's round ends on a best instruction of its own
        population = real_fast_step(stage, population, *args)
        best = population.best()
        best.instructions = {k: f"{stage.task.name}: {v}" for k, v in best.instructions.items()}
        bests[stage.task.name] = dict(best.instructions)
        return population

    def evaluate(task, policy, *, instructions, **kwargs):
        used.append((task.name, dict(instructions)))
        return real_evaluate(task, policy, instructions=instructions, **kwargs)

    monkeypatch.setattr(loop, "_fast_step", fast_step)
    monkeypatch.setattr(cycle_eval, "evaluate", evaluate)
    state = loop.run_loop(cfg, progress=False)
    assert {k: v["instructions"] for k, v in state.archive.items()} == bests and len(bests) == 3
    # the last cycle evaluated the earlier tasks under their own archived instructions, not the population's best
    final_best = Population.from_json(state.population).best().instructions
    last = used[-3:]  # after the seed's evaluation: the three tasks seen, under the best or archived instructions
    assert last == [("chain_sum", bests["chain_sum"]), ("letter_counting", bests["letter_counting"]),
                    ("simple_equations", final_best)]
    assert json.loads((tmp_path / "run" / "forgetting.json").read_text())["archive"] is True
    export_run(tmp_path / "run", tmp_path / "export")
    for name in bests:  # each task's program carries its own instruction
        saved = json.loads((tmp_path / "export" / f"program-{name}.json").read_text())
        assert bests[name]["self"] in json.dumps(saved)
