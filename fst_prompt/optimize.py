"""`fst optimize`: GEPA-only mode. The policy's weights stay frozen; only the instructions evolve.

Writes to the run directory: `config.yaml` (as resolved), `population_round<N>.json` after every round,
`rounds.jsonl` (one record per round), `prompts.json` (best instructions + the population with scores),
`result.json` (test accuracy, seed vs best) and `gepa.log` / `reflection_server.log`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fst_prompt.config import OptimizeConfig
from fst_prompt.state import append_jsonl, write_json_atomic, write_text_atomic


def run_optimize(config: OptimizeConfig, *, progress: bool = True) -> dict[str, Any]:
    from fst_prompt.evaluate import evaluate
    from fst_prompt.fast.population import Population
    from fst_prompt.fast.reflection import Proposer, check_reflection_ready, open_reflection_lm
    from fst_prompt.fast.round import gepa_round
    from fst_prompt.policy import Policy, Sampling
    from fst_prompt.programs import load_task

    task = load_task(config.task, **config.task_kwargs)
    check_reflection_ready(config.reflection)  # before the model loads: a missing server is a config error
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config.model_dump(), sort_keys=False))

    pc = config.policy
    policy = Policy.load(pc.model, batch_size=pc.batch_size, seed=pc.seed,
                         sampling=Sampling(temperature=pc.temperature, max_new_tokens=pc.max_new_tokens))
    population = Population.seed(task.seed_instructions(), config.gepa.population_size)
    anchor = task.train[: config.gepa.anchor_size]
    records = []
    with open_reflection_lm(config.reflection, run_dir) as lm:
        proposer = Proposer(lm, config.reflection.template)
        for cycle in range(config.rounds):
            population, record = gepa_round(population, task, policy, anchor, proposer, config.gepa, cycle=cycle,
                                            log_path=run_dir / "gepa.log", progress=progress)
            records.append(record.to_json())
            write_json_atomic(run_dir / f"population_round{cycle}.json", population.to_json())
            append_jsonl(run_dir / "rounds.jsonl", record.to_json())
            print(_round_line(record))

    best = population.best()
    seed_eval = evaluate(task, policy, split="test", n=config.test_n, progress=progress)
    best_eval = evaluate(task, policy, split="test", n=config.test_n, instructions=best.instructions,
                         progress=progress)
    write_json_atomic(run_dir / "prompts.json", {"instructions": best.instructions, "best_id": best.id,
                                                 "population": population.to_json()})
    result = {"task": task.name, "model": pc.model, "test_n": seed_eval.n,
              "seed_test_accuracy": seed_eval.accuracy, "best_test_accuracy": best_eval.accuracy,
              "seed_instructions": task.seed_instructions(), "best_instructions": best.instructions,
              "rounds": records}
    write_json_atomic(run_dir / "result.json", result)
    print(rounds_table(records))
    print(f"test accuracy (n={seed_eval.n}): seed {seed_eval.accuracy:.3f} -> best {best_eval.accuracy:.3f}")
    print(f"wrote {run_dir}/prompts.json")
    return result


def _round_line(r: Any) -> str:
    return (f"round {r.cycle}: {r.proposals_accepted}/{r.proposals_tried} proposals accepted, "
            f"{sum(r.proposal_failures.values())} failed; {r.policy_rollouts} rollouts, {r.metric_calls} metric "
            f"calls; best {r.best_id} anchor score {r.best_score:.3f}; {r.seconds:.0f} s")


def rounds_table(records: list[dict[str, Any]]) -> str:
    head = ("| round | tried | accepted | failed | metric calls | rollouts | reflection calls | reflection s "
            "| best score | seconds |\n|---|---|---|---|---|---|---|---|---|---|")
    rows = [f"| {r['cycle']} | {r['proposals_tried']} | {r['proposals_accepted']} | "
            f"{sum(r['proposal_failures'].values())} | {r['metric_calls']} | {r['policy_rollouts']} | "
            f"{r['reflection_calls']} | {r['reflection_seconds']:.0f} | {r['best_score']:.3f} | {r['seconds']:.0f} |"
            for r in records]
    return "\n".join([head, *rows])
