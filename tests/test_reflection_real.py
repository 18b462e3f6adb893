"""A real GEPA round: SmolLM2-135M policy, Qwen2.5-Coder-1.5B reflection served by llama.cpp (slow)."""

import pytest

from fst_prompt.config import GEPAConfig, ReflectionConfig
from fst_prompt.fast.population import Population
from fst_prompt.fast.reflection import Proposer, open_reflection_lm
from fst_prompt.fast.round import gepa_round
from fst_prompt.policy import Policy, Sampling
from fst_prompt.programs import load_task


@pytest.mark.slow
def test_real_round_with_offline_reflection_lm(tmp_path):
    task = load_task("basic_arithmetic", sizes=(6, 6, 6))
    policy = Policy.load("smollm2-135m-instruct", batch_size=6, sampling=Sampling(max_new_tokens=48))
    config = ReflectionConfig()  # the offline default
    with open_reflection_lm(config, tmp_path) as lm:
        proposer = Proposer(lm, config.template)
        population, record = gepa_round(
            Population.seed(task.seed_instructions(), k=4), task, policy, task.train, proposer,
            GEPAConfig(max_metric_calls=15, anchor_size=6, reflection_minibatch_size=3),
            log_path=tmp_path / "gepa.log", progress=False,
        )
    assert record.reflection_calls >= 1 and record.reflection_completion_tokens > 0
    assert record.proposals_tried + sum(record.proposal_failures.values()) >= 1
    assert record.policy_rollouts == policy.stats.rollouts
    assert 1 <= len(population) <= 4
    print(f"\nproposals: {proposer.outcomes}; reflection {record.reflection_seconds:.0f} s; "
          f"best: {population.best().instructions}")
