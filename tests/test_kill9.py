"""A real `kill -9` of `fst run` during its RL phase, then `--resume`: nothing checkpointed is lost or counted
twice (slow: subprocesses, the tiny model, a scripted reflection endpoint on loopback)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fst_prompt.rundir import RunDir
from fst_prompt.state import RunState, last_complete_checkpoint
from tests.test_loop import config as loop_config


def write_config(path: Path, run_dir: Path, tiny_path: Path, endpoint: str) -> Path:
    """The loop tests' config with longer cycles (4 RL steps, checkpointed every step)."""
    cfg = loop_config(path.parent / path.stem, tiny_path, endpoint, loop__steps_per_cycle=4,
                      rl__max_completion_length=16, gepa__max_metric_calls=8)
    path.write_text(yaml.safe_dump(cfg.model_dump() | {"run_dir": str(run_dir)}))
    return path


def fst(*args: str) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "fst"
    return subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def ledger(run_dir: Path) -> dict:
    """The counters, the population and the rollout store: what must not differ from an uninterrupted run."""
    state = RunState.load(run_dir)
    counters = {k: v for k, v in vars(state.ledger).items() if not k.endswith("seconds")}
    return counters | {"cycle": state.cycle, "population": state.population,
                       "rollouts": RunDir(run_dir).rollouts.rows(), "weights": weights(run_dir)}


def weights(run_dir: Path) -> str:
    last = last_complete_checkpoint(run_dir / "checkpoints", remove_partial=False)
    return hashlib.sha256((run_dir / "checkpoints" / last / "model.safetensors").read_bytes()).hexdigest()


def wait_for_slow_checkpoint(proc: subprocess.Popen, run_dir: Path, checkpoint: str) -> None:
    """Until the second cycle's slow phase has written `checkpoint` (then the caller kills the run)."""
    deadline = time.time() + 600
    while time.time() < deadline:
        state_file = run_dir / "state.json"
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state["cycle"] == 1 and state["phase"] == "slow" and (run_dir / "checkpoints" / checkpoint).exists():
                return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"{checkpoint} of the second cycle never appeared")


@pytest.mark.slow
def test_kill_9_during_rl_then_resume(tmp_path, tiny_path, endpoint):
    reference = tmp_path / "reference"
    proc = fst("run", str(write_config(tmp_path / "a.yaml", reference, tiny_path, endpoint)))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-3000:]

    run_dir = tmp_path / "killed"
    config = write_config(tmp_path / "b.yaml", run_dir, tiny_path, endpoint)
    proc = fst("run", str(config))
    wait_for_slow_checkpoint(proc, run_dir, "checkpoint-5")  # a step of the second cycle is checkpointed
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((run_dir / "state.json").read_text())["phase"] == "slow"

    resumed = fst("run", str(config), "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    assert ledger(run_dir) == ledger(reference)
    cycles = {json.loads(line)["cycle"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()}
    assert cycles == {0, 1}
