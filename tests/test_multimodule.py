"""RL on a two-predictor program (programs/chain_sum_plan.py: plan -> solve): every module call of a rollout
is a training row with that rollout's reward and advantage, advantages baselined per problem and module
(checked by hand), all modules of a rollout under one candidate, GEPA's reflective records per predictor."""

import pytest
import torch

from fst_prompt.config import RLConfig
from fst_prompt.evaluate import Rollout
from fst_prompt.policy import Generation
from fst_prompt.programs import load_task
from fst_prompt.slow.build import build_trainer

A = {"plan": "PLAN-INSTRUCTION-A", "solve": "SOLVE-INSTRUCTION-A"}
B = {"plan": "PLAN-INSTRUCTION-B", "solve": "SOLVE-INSTRUCTION-B"}


@pytest.fixture(scope="module")
def task():
    return load_task("chain_sum_plan", sizes=(8, 4, 4))


def trainer_for(task, tiny_path, tmp_path, **overrides):
    rl = RLConfig(problems_per_step=2, num_generations=4, max_completion_length=6, beta=0.0)
    return build_trainer(task, tiny_path, rl, tmp_path / "ck", max_steps=1, contexts=[A, B], **overrides)


def batch(trainer, problems=(0, 1), group=4):
    return [{"prompt": trainer.train_dataset[i]["prompt"], "example_index": trainer.train_dataset[i]["example_index"]}
            for i in problems for _ in range(group)]


def test_every_module_of_a_rollout_runs_under_the_same_candidate(task, tiny_path, tmp_path):
    trainer = trainer_for(task, tiny_path, tmp_path)
    inputs, ks = batch(trainer, problems=(0,), group=4), [0, 1, 0, 1]
    rollouts = trainer._program_rollouts(inputs, ks)
    decode = trainer.processing_class.decode
    for r, k in zip(rollouts, ks, strict=True):
        assert [c.module for c in r.calls] == ["plan", "solve"]
        for call in r.calls:
            prompt = decode(call.prompt_ids)
            mine, other = ([A, B][k], [A, B][1 - k])
            assert mine[call.module] in prompt and other[call.module] not in prompt
        assert r.calls[1].module_inputs["plan"] == r.calls[0].text.strip()  # solve read this rollout's own plan


def fake_rollouts(trainer, scores, reached_solve):
    tok = trainer.processing_class
    ids = tuple(tok("12")["input_ids"]) + (tok.eos_token_id,)
    out = []
    for i, (score, solve) in enumerate(zip(scores, reached_solve, strict=True)):
        plan = Generation("p", 5, len(ids), "stop", prompt_ids=tuple(tok(f"plan prompt {i}")["input_ids"]), ids=ids,
                          module="plan", module_inputs={"question": "q"})
        calls = [plan] + ([Generation("s", 5, len(ids), "stop", prompt_ids=tuple(tok(f"solve {i}")["input_ids"]),
                                      ids=ids, module="solve", module_inputs={"question": "q", "plan": "p"})]
                          if solve else [])
        out.append(Rollout(i, score, "fb", True, None, [c.text for c in calls], 3, False, calls))
    return out


def test_each_module_call_gets_its_rollouts_advantage_per_problem_and_module(task, tiny_path, tmp_path, monkeypatch):
    trainer = trainer_for(task, tiny_path, tmp_path, scale_rewards="none")  # advantage = reward - group mean
    scores = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # problem 0's four rollouts, then problem 1's
    reached = [True, True, True, True, True, True, True, False]  # the last rollout stopped after `plan`
    monkeypatch.setattr(trainer, "_program_rollouts", lambda inputs, ks: fake_rollouts(trainer, scores, reached))
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch(trainer))
    # rows: problem 0 plan x4, problem 0 solve x4, problem 1 plan x4, problem 1 solve x4
    expected = [0.5, -0.5, -0.5, 0.5] * 2 + [0.25, 0.25, 0.25, -0.75] * 2
    assert out["advantages"].tolist() == pytest.approx(expected)
    adv = out["advantages"].view(2, 2, 4)  # [problem, module, rollout]
    assert torch.equal(adv[:, 0], adv[:, 1])  # a rollout's plan call and solve call share its advantage
    trained = (out["completion_mask"] * out["tool_mask"]).sum(1).view(2, 2, 4)
    assert trained[1, 1, 3] == 0 and (trained[1, 1, :3] > 0).all()  # the solve call never made: no tokens trained
    assert (trained[0] > 0).all()


def test_reflection_records_are_each_predictors_own(task, tiny_path):
    from fst_prompt.fast.adapter import TaskAdapter
    from fst_prompt.policy import Policy, Sampling

    policy = Policy.load(tiny_path, batch_size=4, sampling=Sampling(max_new_tokens=6))
    adapter = TaskAdapter(task, policy)
    evaluated = adapter.evaluate(task.train[:2], A, capture_traces=True)
    records = adapter.make_reflective_dataset(A, evaluated, ["plan", "solve"])
    assert set(records["plan"][0]["Inputs"]) == {"question"}
    assert set(records["solve"][0]["Inputs"]) == {"question", "plan"}
    rollout = evaluated.trajectories[0]["scored"].rollouts[0]
    assert records["plan"][0]["Generated Outputs"] == rollout.calls[0].text
    assert records["solve"][0]["Generated Outputs"] == rollout.calls[1].text


@pytest.mark.parametrize("mode", ["rl", "fst"])
def test_fst_run_on_the_two_module_task_logs_each_module_and_exports_both(tmp_path, tiny_path, endpoint, mode):
    import json

    from fst_prompt import loop
    from fst_prompt.export import export_run
    from tests.test_loop import config

    cfg = config(tmp_path, tiny_path, endpoint, task="chain_sum_plan", loop__mode=mode, loop__cycles=1,
                 rl__max_completion_length=6)
    state = loop.run_loop(cfg, progress=False)
    run = tmp_path / "run"
    assert state.ledger.rl_steps == 2 and (state.ledger.reflection_calls > 0) == (mode == "fst")
    steps = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    assert all({"module/plan/reached", "module/solve/reached"} <= set(s) for s in steps if "reward" in s)
    export_run(run, tmp_path / "export")
    program = json.loads((tmp_path / "export" / "program.json").read_text())
    assert {"plan", "solve"} <= set(program)
