"""`fst run` on two CPU processes (`torchrun --nproc_per_node 2`: accelerate's MULTI_CPU mode, gloo), the tiny
model and a scripted reflection endpoint: one GEPA round and one set of writes per cycle, every process
training with the same population on the problems the round was anchored on, and a `kill -9` of the launcher
followed by `--resume` (slow: real processes)."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fst_prompt.state import RunState, read_jsonl
from tests.scripted import FakeOpenAI
from tests.test_kill9 import ledger, wait_for_slow_checkpoint
from tests.test_loop import config as loop_config


def write_config(path: Path, run_dir: Path, tiny_path: Path, endpoint: str) -> Path:
    cfg = loop_config(path.parent / path.stem, tiny_path, endpoint, loop__steps_per_cycle=2, loop__cycles=2,
                      rl__max_completion_length=8, gepa__max_metric_calls=8)
    path.write_text(yaml.safe_dump(cfg.model_dump() | {"run_dir": str(run_dir)}))
    return path


def torchrun(*args: str) -> subprocess.Popen:
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "fst_prompt.cli", *args]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group: kill -9 reaches the workers too


@pytest.mark.slow
def test_two_processes_run_the_fast_step_once_and_train_on_its_anchor(tmp_path, tiny_path, endpoint):
    run_dir = tmp_path / "two"
    proc = torchrun("run", str(write_config(tmp_path / "a.yaml", run_dir, tiny_path, endpoint)))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-4000:]

    state = RunState.load(run_dir)
    assert state.cycle == 2 and state.ledger.rl_steps == 4
    assert state.ledger.rl_rollouts == 4 * (2 * 2) * 2  # steps x (B problems x 2 processes) x G
    metrics, rounds, steps = (read_jsonl(run_dir / f) for f in ("metrics.jsonl", "rounds.jsonl", "steps.jsonl"))
    assert [m["cycle"] for m in metrics] == [0, 1]  # one line per cycle, not one per process
    assert [r["cycle"] for r in rounds] == [0, 1]  # one GEPA round per cycle ...
    # ... and only the main process called the endpoint: its start-up check and the rounds' calls
    assert len(FakeOpenAI.auth_headers) == 1 + state.ledger.reflection_calls
    trained = [s for s in steps if "problems" in s]
    assert [s["step"] for s in trained] == [1, 2, 3, 4]
    # the first round samples its own, anchored on the problems both processes use in the cycle's two steps;
    # the second reads the stream: its anchor is the problems of the two steps RL has just run (cycle 0's)
    used = {c: sorted(i for s in trained if s["cycle"] == c for i in s["problems"]) for c in (0, 1)}
    assert len(used[0]) == 2 * 2 * 2 and sorted(rounds[0]["anchor"]) == used[0]
    assert sorted(rounds[1]["anchor"]) == used[0] and rounds[1]["reused_rollouts"] > 0
    # and the store holds every RL rollout of both processes, gathered to the main one and written once
    stored = read_jsonl(run_dir / "rollouts.jsonl")
    assert len(stored) == state.ledger.rl_rollouts
    assert sorted(r["example_index"] for r in stored if r["version"] < 2) == sorted(used[0] * 2)
    for cycle in (0, 1):  # one population per cycle, the same on both processes (the trainer checks that)
        assert len({s["population"] for s in trained if s["cycle"] == cycle}) == 1


@pytest.mark.slow
def test_kill_9_of_the_launcher_then_resume_on_two_processes(tmp_path, tiny_path, endpoint):
    reference = tmp_path / "reference"
    proc = torchrun("run", str(write_config(tmp_path / "a.yaml", reference, tiny_path, endpoint)))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()[-4000:]

    run_dir = tmp_path / "killed"
    config = write_config(tmp_path / "b.yaml", run_dir, tiny_path, endpoint)
    proc = torchrun("run", str(config))
    wait_for_slow_checkpoint(proc, run_dir, "checkpoint-3")  # then kill -9 the launcher and its workers
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    resumed = torchrun("run", str(config), "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-4000:]
    assert ledger(run_dir) == ledger(reference)
    assert [m["cycle"] for m in read_jsonl(run_dir / "metrics.jsonl")] == [0, 1]
