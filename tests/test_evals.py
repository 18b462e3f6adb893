"""The experiment drivers' bookkeeping and arithmetic (evals/): skipping, harvesting, ratios, areas."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evals"))
import bench_pipeline  # noqa: E402
import compare  # noqa: E402
import fast_weights  # noqa: E402
import headroom  # noqa: E402
import plasticity  # noqa: E402
import runner  # noqa: E402


def pts(*pairs):
    return [{"step": s, "acc": a, "kl": k} for s, a, k in pairs]


def test_steps_to_reach_and_kl_at_matched_accuracy():
    rl = pts((0, 0.2, 0.0), (4, 0.3, 0.2), (8, 0.5, 0.6), (12, 0.4, 0.8))
    fst = pts((0, 0.2, 0.0), (4, 0.5, 0.1), (8, 0.6, 0.3))
    peak = max(p["acc"] for p in rl)
    assert (compare.steps_to_reach(rl, peak), compare.steps_to_reach(fst, peak)) == (8, 4)  # ratio 2
    assert compare.steps_to_reach(fst, 0.9) is None
    assert compare.kl_at(rl, 0.4) == pytest.approx(0.2 + 0.5 * 0.4)  # halfway from 0.3 to 0.5
    assert compare.kl_at(fst, 0.5) == pytest.approx(0.1) and compare.kl_at(fst, 0.7) is None
    assert compare.spread([1.0, 3.0, None]) == {"mean": 2.0, "min": 1.0, "max": 3.0, "n": 2,
                                               "sd": pytest.approx(2**0.5)}


def test_area_under_curve_is_the_mean_accuracy_over_steps():
    assert plasticity.auc([{"step": 0, "acc": 0.0}, {"step": 4, "acc": 0.4}, {"step": 12, "acc": 0.4}]) == \
        pytest.approx((4 * 0.2 + 8 * 0.4) / 12)


def test_runner_harvests_keeps_final_weights_and_skips_done_jobs(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(runner, "RUNS", tmp_path / "runs")
    job = runner.Job("study", "task/rl-s0", ["run", "cfg.yaml"])
    for step, complete in ((4, True), (8, True), (12, False)):  # checkpoint-12: killed while being written
        ckpt = job.run_dir / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_text(f"weights {step}")
        (ckpt / "optimizer.pt").write_text("state")
        if complete:
            (ckpt / "trainer_state.json").write_text("{}")
    (job.run_dir / "metrics.jsonl").write_text(json.dumps({"cycle": 0}) + "\n")
    runner._harvest(job, 61.0, threads=1, parallel=1, commit="abc1234")
    done = json.loads((job.results / "done.json").read_text())
    assert (job.results / "metrics.jsonl").is_file() and done["wall_seconds"] == 61.0
    assert done["commit"] == "abc1234"  # the commit the job started from
    final = runner.final_weights("study", "task/rl-s0")
    assert [p.name for p in final.iterdir()] == ["model.safetensors"]  # no optimizer state
    assert (final / "model.safetensors").read_text() == "weights 8"
    assert not (job.run_dir / "checkpoints").exists()
    assert job.done
    monkeypatch.setattr(runner, "_run_one", lambda *a: pytest.fail("a finished job was run again"))
    runner.run_jobs([job], parallel=1)


def test_continual_normalises_each_stage_by_the_best_peak_of_either_method(tmp_path, monkeypatch):
    import continual

    monkeypatch.setattr(continual, "RESULTS", tmp_path)
    accs = {"rl": [0.2, 0.4, 0.1, 0.1], "fst": [0.3, 0.5, 0.2, 0.3]}
    for mode, values in accs.items():
        run = tmp_path / "continual" / f"{mode}-s0"
        run.mkdir(parents=True)
        records = [{"cycle": i, "stage": i // 2, "task": ["a", "b"][i // 2], "rl_steps": 4 * (i + 1),
                    "val_accuracy_best": v, "val_accuracy_by_task": {}, "kl": 0.0} for i, v in enumerate(values)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        (run / "forgetting.json").write_text(json.dumps({"tasks": ["a", "b"], "after_stage": [[values[1], None],
                                                                                           [0.1, values[3]]]}))
        (run / "done.json").write_text("{}")
    a = continual.analyse([0])
    stage_a, stage_b = a["per_stage"]
    assert stage_a["rl"]["normalised_final"] == pytest.approx(0.4 / 0.5) and stage_a["fst"]["normalised_final"] == 1
    assert stage_b["rl"]["normalised_final"] == pytest.approx(0.1 / 0.3) and stage_b["rl"]["gain_within_stage"] == 0
    assert a["forgetting"]["fst"]["after_stage"] == [[0.5, None], [0.1, 0.3]]
    assert "| 1 (b) | 0.100 | 0.300 |" in continual.markdown(a)
    assert continual.plot(a, tmp_path)[0].stat().st_size > 5000


def test_pipeline_bench_times_rl_steps_within_a_cycle_only():
    steps = [{"cycle": 0, "step": 1, "time": 10.0, "loss": 0.1}, {"cycle": 0, "step": 2, "time": 13.0, "loss": 0.1},
             {"cycle": 0, "step": 2, "time": 13.5, "train_runtime": 9.0},  # the end-of-slice summary
             {"cycle": 1, "step": 3, "time": 99.0, "loss": 0.1},  # after the evaluation and GEPA round
             {"cycle": 1, "step": 4, "time": 103.0, "loss": 0.1}]
    assert bench_pipeline.rl_step_seconds(steps) == [3.0, 4.0]


@pytest.mark.parametrize("study", [headroom, fast_weights])
def test_every_study_run_has_a_valid_config_with_its_task_settings(study):
    from fst_prompt.config import CONVENTION_TEMPLATE, load_config

    runs = [j for j in study.jobs_for(list(study.TASKS), [0, 1]) if j.argv[0] == "run"]
    assert {j.name.split("/")[0] for j in runs} == {"chain_sum", "ticket_routing", "date_normalize"}  # headroom
    for job in runs:
        overrides = [job.argv[i + 1] for i, a in enumerate(job.argv) if a == "--set"]
        config = load_config(job.argv[1], overrides)
        task = job.name.split("/")[0]
        assert config.task == task and config.seed == int(job.name[-1])
        convention = task in ("ticket_routing", "date_normalize")
        assert config.policy.model == ("qwen2.5-coder-0.5b-instruct" if convention else "smollm2-135m-instruct")
        assert (config.reflection.template == CONVENTION_TEMPLATE) == convention


def test_headroom_scores_the_seed_and_hand_written_instructions_also_as_rl_samples_them():
    from fst_prompt.config import load_config

    jobs = {j.name: j.argv for j in headroom.jobs_for(["chain_sum"], [0])}
    assert load_config(fast_weights.CONFIG).rl.temperature == headroom.RL_TEMPERATURE
    for name in ("seed", "hand"):
        greedy, sampled = jobs[f"chain_sum/{name}"], jobs[f"chain_sum/{name}-sampled"]
        assert "--temperature" not in greedy
        assert sampled[sampled.index("--temperature") + 1] == str(headroom.RL_TEMPERATURE)
        assert sampled[sampled.index("--seed") + 1] == "0"
        assert ("--prompt" in sampled) == (name == "hand") and sampled[sampled.index("--n") + 1] == "128"
