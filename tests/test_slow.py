"""Slow weights on the tiny model: the mixed-group hook, advantages, KL probe, a 2-step smoke run."""

import copy
import json
from types import SimpleNamespace

import pytest
import torch

from fst_prompt import Feedback
from fst_prompt.config import RLConfig
from fst_prompt.slow.build import build_trainer
from fst_prompt.slow.kl import kl_to_base

CONTEXTS = [{"self": "Context A: add."}, {"self": "Context B: subtract."}]


def rl(**changes):
    base = dict(problems_per_step=2, num_generations=4, max_completion_length=6, learning_rate=1e-3,
                warmup_steps=0, save_every=100)
    return RLConfig(**(base | changes))


def test_mixed_group_advantages_match_hand_computation(qa_task, tiny_path, tmp_path, monkeypatch):
    trainer = build_trainer(qa_task, tiny_path, rl(), tmp_path, max_steps=2, contexts=CONTEXTS, shuffle_dataset=False)
    seen = {}

    def reward_by_context(prompts, completions, context_index, **kwargs):
        seen["system"] = [p[0]["content"] for p in prompts]
        seen["context_index"] = list(context_index)
        return [float(k) for k in context_index]

    reward_by_context.__name__ = "by_context"
    trainer.reward_funcs = [reward_by_context]
    trainer.reward_func_names = ["by_context"]
    rows = [{"prompt": "unused", "example_index": i} for i in (0, 0, 0, 0, 1, 1, 1, 1)]
    out = trainer._generate_and_score_completions(rows)

    # G=4, K=2: contexts per group [0, 1, 0, 1]; rewards = context index = [0, 1, 0, 1] per group.
    # One baseline per problem over all 4 rollouts: mean 0.5; std (unbiased) = sqrt(4 * 0.25 / 3) = 0.57735.
    # advantage = (r - 0.5) / (0.57735 + 1e-4) = -0.86588 / +0.86588.
    assert seen["context_index"] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert seen["system"][0] == "Context A: add." and seen["system"][1] == "Context B: subtract."
    expected = torch.tensor([-0.86588, 0.86588] * 4)
    assert torch.allclose(out["advantages"], expected, atol=1e-4)


def test_kl_probe_zero_for_identical_models_positive_after_perturbation(tiny_path, qa_task):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fst_prompt.render import render

    tok = AutoTokenizer.from_pretrained(tiny_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_path)
    model = copy.deepcopy(base)
    convs = [render(qa_task, ex) for ex in qa_task.val[:4]]
    same = kl_to_base(model, tok, convs, base=base, samples_per_prompt=2, max_new_tokens=8)
    assert same.mean == 0.0 and same.n == 8
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.2)
    moved = kl_to_base(model, tok, convs, base=base, samples_per_prompt=2, max_new_tokens=8)
    assert moved.mean > 3 * moved.stderr > 0
    # one generator per sequence: the batch size bounds memory, it does not change the estimate
    for batch_size in (1, 3):
        again = kl_to_base(model, tok, convs, base=base, samples_per_prompt=2, max_new_tokens=8, batch_size=batch_size)
        assert again.n == 8 and again.mean == pytest.approx(moved.mean, rel=1e-4)
    other = kl_to_base(model, tok, convs, base=base, samples_per_prompt=2, max_new_tokens=8, seed=1)
    assert other.mean != pytest.approx(moved.mean, rel=1e-4)  # the seed does change the samples


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def variety(gold, pred):
    """A graded metric, so that random-weight rollouts get different rewards (and gradients)."""
    text = str(pred.answer)
    return Feedback(len(set(text)) / max(len(text), 1), "graded by character variety")


@pytest.mark.parametrize("lora", [False, True])
def test_two_step_smoke_run(qa_task, tiny_path, tmp_path, lora):
    qa_task.metric = variety
    trainer = build_trainer(qa_task, tiny_path, rl(lora=lora, lora_r=4), tmp_path, max_steps=2, contexts=CONTEXTS)
    before = snapshot(trainer.model)
    trainer.train()
    after = snapshot(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before)  # the weights moved
    if lora:
        assert trainer.ref_model is None and all("lora_" in n for n in before)  # no second model copy
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logs)
    assert "kl" in logs[0] and "frac_reward_zero_std" in logs[0]
    assert any(k.startswith("reward/context_") for k in logs[0])
    import pandas as pd

    table = pd.read_parquet(tmp_path / "completions" / "completions_00001.parquet")
    systems = {p[0]["content"] for p in table["prompt"]}
    assert systems == {"Context A: add.", "Context B: subtract."}  # >= 2 distinct contexts were rolled out
    reward_col = next(c for c in table.columns if c.endswith("_metric"))
    # The reward is the task's metric on the parsed completion.
    for completion, reward in zip(table["completion"], table[reward_col], strict=True):
        text = completion[-1]["content"] if not isinstance(completion, str) else completion
        assert reward == pytest.approx(variety(None, SimpleNamespace(answer=text.strip())).score)


def test_population_can_change_between_steps(qa_task, tiny_path, tmp_path):
    trainer = build_trainer(qa_task, tiny_path, rl(), tmp_path, max_steps=1, contexts=CONTEXTS)
    trainer.set_population([{"self": "Only context C."}])
    trainer.train()
    import pandas as pd

    table = pd.read_parquet(tmp_path / "completions" / "completions_00001.parquet")
    assert {p[0]["content"] for p in table["prompt"]} == {"Only context C."}
    with pytest.raises(ValueError, match="the population is empty"):
        trainer.set_population([])


def test_non_finite_loss_stops_with_a_clear_message(qa_task, tiny_path, tmp_path, monkeypatch):
    trainer = build_trainer(qa_task, tiny_path, rl(), tmp_path, max_steps=1, contexts=CONTEXTS)
    from trl import GRPOTrainer

    monkeypatch.setattr(GRPOTrainer, "compute_loss", lambda *a, **k: torch.tensor(float("nan")))
    with pytest.raises(FloatingPointError, match="last checkpoint .* is intact"):
        trainer.train()


def test_non_finite_gradient_under_a_finite_loss_stops_before_the_update(qa_task, tiny_path, tmp_path):
    trainer = build_trainer(qa_task, tiny_path, rl(), tmp_path, max_steps=1, contexts=CONTEXTS)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    weight = next(p for p in trainer.model.parameters() if p.requires_grad)
    weight.register_hook(lambda g: g * float("nan"))
    with pytest.raises(FloatingPointError, match="gradient is not finite .*the loss was finite.* is intact"):
        trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


def test_a_metric_that_raises_scores_zero_in_rl_and_is_counted(qa_task, tiny_path, tmp_path):
    from fst_prompt.slow.reward import TaskReward

    def strict(gold, pred):  # int() of free text: what a user's metric often does
        return Feedback(float(int(pred.answer) == int(gold.answer)), "")

    qa_task.metric = strict
    reward = TaskReward(qa_task)
    scores = reward(prompts=[None] * 3, completions=["2", "two", "0"], example_index=[1, 1, 0])
    assert scores == [1.0, 0.0, 1.0] and reward.errors == 1 and "ValueError" in reward.last_error
    trainer = build_trainer(qa_task, tiny_path, rl(), tmp_path, max_steps=1, contexts=CONTEXTS)
    trainer.train()  # the tiny model writes free text: the metric raises, the step completes
    assert trainer.reward_funcs[0].errors > 0


def test_vllm_server_mode_is_refused(qa_task, tiny_path, tmp_path):
    with pytest.raises(ValueError, match="vllm_mode='colocate'"):
        build_trainer(qa_task, tiny_path, rl(), tmp_path, max_steps=2, use_vllm=True, vllm_mode="server")


def test_metrics_are_json_serialisable(qa_task, tiny_path, tmp_path):
    """What a step logs goes to steps.jsonl: plain numbers that a strict JSON round trip keeps (no tensor, numpy
    scalar, NaN or inf), with the fields the reports read."""
    trainer = build_trainer(qa_task, tiny_path, rl(), tmp_path, max_steps=1)
    trainer.train()
    history = trainer.state.log_history
    assert json.loads(json.dumps(history, allow_nan=False)) == history
    step = next(h for h in history if "loss" in h)
    assert {"reward", "frac_reward_zero_std"} <= set(step) and 0.0 <= step["frac_reward_zero_std"] <= 1.0


@pytest.mark.slow
def test_smollm2_two_steps(tmp_path):
    """The real default model: two mixed-context GRPO steps move the weights."""
    from fst_prompt.models import resolve_model
    from fst_prompt.programs import load_task

    task = load_task("chain_sum", sizes=(8, 8, 8))
    contexts = [task.seed_instructions(), {"self": "Add or subtract the two numbers. Reply with the number only."}]
    trainer = build_trainer(task, resolve_model("smollm2-135m-instruct"), rl(max_completion_length=24,
                            learning_rate=1e-5), tmp_path, max_steps=2, contexts=contexts)
    before = snapshot(trainer.model)
    trainer.train()
    after = snapshot(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and "reward/context_0" in logs[0] and "reward/context_1" in logs[0]


def test_vllm_settings_are_validated_before_any_model_loads():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="colocate"):
        RLConfig(use_vllm=False, vllm_mode="server")
    import importlib.util

    if importlib.util.find_spec("vllm") is None:  # the CPU machines this suite runs on
        with pytest.raises(ValidationError, match="vllm is not installed"):
            RLConfig(use_vllm=True)


def test_tensorboard_tracking_passes_through(qa_task, tiny_path, tmp_path):
    """Experiment tracking is TRL's: `rl.report_to: tensorboard` writes event files (works offline)."""
    trainer = build_trainer(qa_task, tiny_path, rl(report_to="tensorboard"), tmp_path, max_steps=1)
    trainer.train()
    events = list(tmp_path.rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_the_probe_renders_its_problems_with_the_seed_or_the_given_instruction(qa_task):
    """The KL probe's fixed problems: under the seed instruction, or (around a distill phase) the best one."""
    from fst_prompt.slow.kl import probe_conversations

    name = qa_task.predictors[0][0]
    seed, best = probe_conversations(qa_task, 2), probe_conversations(qa_task, 2, {name: "Answer in French."})
    assert len(seed) == len(best) == 2
    assert "Answer in French." in best[0][0]["content"] and "Answer in French." not in seed[0][0]["content"]
    assert seed[0][-1] == best[0][-1]  # the same problem
