"""A real `kill -9` of `fst run` during its RL phase, then `--resume`: nothing checkpointed is lost or counted
twice (slow: subprocesses, the tiny model, a scripted reflection endpoint on loopback)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fst_prompt.state import RunState


def write_config(path: Path, run_dir: Path, tiny_path: Path, endpoint: str) -> Path:
    data = {"task": "chain_sum", "task_kwargs": {"sizes": [24, 4, 4]},
            "policy": {"model": str(tiny_path), "batch_size": 4, "max_new_tokens": 4},
            "gepa": {"max_metric_calls": 8, "population_size": 2, "reflection_minibatch_size": 2},
            "reflection": {"model": "fake", "base_url": endpoint, "retries": 0},
            "rl": {"problems_per_step": 2, "num_generations": 2, "max_completion_length": 16, "save_every": 1,
                   "learning_rate": 1e-3, "warmup_steps": 0},
            "loop": {"mode": "fst", "cycles": 2, "steps_per_cycle": 4, "eval_n": 4},
            "run_dir": str(run_dir)}
    path.write_text(yaml.safe_dump(data))
    return path


def fst(*args: str) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "fst"
    return subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def ledger(run_dir: Path) -> dict:
    state = RunState.load(run_dir)
    return {k: v for k, v in vars(state.ledger).items() if not k.endswith("seconds")} | {"cycle": state.cycle}


@pytest.mark.slow
def test_kill_9_during_rl_then_resume(tmp_path, tiny_path, endpoint):
    reference = tmp_path / "reference"
    proc = fst("run", str(write_config(tmp_path / "a.yaml", reference, tiny_path, endpoint)))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]

    run_dir = tmp_path / "killed"
    config = write_config(tmp_path / "b.yaml", run_dir, tiny_path, endpoint)
    proc = fst("run", str(config))
    deadline = time.time() + 600
    # Wait until the second cycle's slow phase has checkpointed at least one step, then kill -9.
    while time.time() < deadline:
        state_file = run_dir / "state.json"
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state["cycle"] == 1 and state["phase"] == "slow" and (run_dir / "checkpoints" / "checkpoint-5").exists():
                break
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((run_dir / "state.json").read_text())["phase"] == "slow"

    resumed = fst("run", str(config), "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    assert ledger(run_dir) == ledger(reference)
    cycles = {json.loads(line)["cycle"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()}
    assert cycles == {0, 1}
