"""`fst eval`: errors before any model loads; a full run on the tiny model; a real SmolLM2 run (slow)."""

import json
import os
import subprocess
import sys

import pytest

from fst_prompt.cli import main


def test_eval_on_tiny_model_writes_json(tiny_path, tmp_path, capsys):
    out = tmp_path / "result.json"
    code = main(["eval", "--task", "chain_sum", "--model", str(tiny_path), "--n", "3", "--batch-size", "2",
                 "--max-new-tokens", "4", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "rollouts/s" in printed and "parse failures" in printed
    assert "constant baseline" in printed and "(always answering '" in printed
    data = json.loads(out.read_text())
    assert set(data["majority_baseline"]) == {"answer", "accuracy", "n"} and data["majority_baseline"]["n"] == 3
    assert data["n"] == 3 and len(data["rollouts"]) == 3 and data["generate_calls"] == 2
    assert data["instructions"]["self"].startswith("Add and subtract the numbers.")


def test_prompt_file_instructions_are_used(tiny_path, tmp_path):
    prompt = tmp_path / "prompts.json"
    prompt.write_text(json.dumps({"instructions": {"self": "Say a number."}}))
    out = tmp_path / "r.json"
    assert main(["eval", "--task", "chain_sum", "--model", str(tiny_path), "--n", "1", "--max-new-tokens", "2",
                 "--prompt", str(prompt), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["instructions"] == {"self": "Say a number."}


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ('{"instructions": {"other": "x"}}', "the prompt names ['other']"),
    ('["a list"]', "must hold"),
])
def test_bad_prompt_file_fails_before_the_model_loads(tmp_path, capsys, content, message):
    prompt = tmp_path / "prompts.json"
    prompt.write_text(content)
    # The model does not exist: reaching it would give a different error.
    code = main(["eval", "--task", "chain_sum", "--model", "no-such-model", "--prompt", str(prompt)])
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("world_size", ["1", "2"])
def test_a_launched_process_leaves_without_the_interpreter_teardown(monkeypatch, capsys, world_size):
    """Under a launcher (WORLD_SIZE > 1) `fst` ends with os._exit(its exit code), output flushed: a library
    thread torn down with the interpreter can otherwise abort a finished run (SIGABRT). Alone, it returns."""
    left = []

    def fake_exit(code):
        left.append(code)
        raise SystemExit(code)

    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setattr(os, "_exit", fake_exit)
    if world_size == "1":
        assert main(["eval", "--task", "nope", "--model", "no-such-model"]) == 2 and left == []
    else:
        with pytest.raises(SystemExit):
            main(["eval", "--task", "nope", "--model", "no-such-model"])
        assert left == [2]
    assert "unknown task 'nope'" in capsys.readouterr().err


def test_unknown_task_and_bad_n(capsys):
    assert main(["eval", "--task", "nope", "--model", "no-such-model"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", "--task", "chain_sum", "--n", "0"])


def test_an_unknown_hub_model_is_one_line_and_status_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache; the hub is offline in tests
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["eval", "--task", "chain_sum", "--model", "nobody/nothing", "--n", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fst eval: error: model 'nobody/nothing' is not in the Hugging Face cache")
    assert err.count("\n") == 1


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == "fst-prompt 0.1.0\n"


@pytest.mark.slow
def test_real_smollm2_eval(tmp_path):
    """The default model, end to end through the installed `fst` command."""
    out = tmp_path / "smol.json"
    fst = os.path.join(os.path.dirname(sys.executable), "fst")
    done = subprocess.run([fst, "eval", "--task", "letter_counting", "--n", "4", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "accuracy" in done.stdout
    data = json.loads(out.read_text())
    assert data["n"] == 4 and data["model"] == "smollm2-135m-instruct"
    assert all(r["completions"] and r["completions"][0].strip() for r in data["rollouts"])  # real text
    assert data["generate_calls"] == 1


BROKEN_TASKS = {
    "syntax": ("import dspy\ndef make_task(:\n", "does not import: line 2: SyntaxError"),
    "import": ("import no_such_module_xyz\n", "does not import: line 1: ModuleNotFoundError"),
    "raises": ("def make_task(**kw):\n    raise KeyError('n_terms')\n", "make_task() raised line 2: KeyError"),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_TASKS))
def test_a_broken_task_file_is_one_line_and_status_2(tmp_path, capsys, kind):
    source, message = BROKEN_TASKS[kind]
    path = tmp_path / "mytask.py"
    path.write_text(source)
    assert main(["eval", "--task", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("override, message", [
    ("task.x=1", "task is a value, not a section"),
    ("gepa.max_metric_cals=3", "gepa.max_metric_cals: unknown field; did you mean max_metric_calls?"),
    ("gepa.max_metric_calls=[1", "the value is not valid YAML"),
    ("loop.mode=fast", "loop.mode: Input should be"),
])
def test_a_bad_override_is_named_and_status_2(tmp_path, capsys, override, message):
    config = tmp_path / "c.yaml"
    config.write_text("task: chain_sum\n")
    assert main(["run", str(config), "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_unexpected_error_leaves_its_traceback_in_the_run_dir(tmp_path, capsys, monkeypatch):
    import fst_prompt.api

    def boom(config, **kwargs):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setattr(fst_prompt.api, "run_loop", boom)
    config = tmp_path / "c.yaml"
    config.write_text(f"task: chain_sum\nrun_dir: {tmp_path / 'run'}\n")
    assert main(["run", str(config)]) == 1
    err = capsys.readouterr().err
    assert "unexpected error: RuntimeError: something inside broke" in err and "second line" not in err
    log = (tmp_path / "run" / "error.log").read_text()
    assert "Traceback" in log and "something inside broke" in log and str(tmp_path / "run" / "error.log") in err
    with pytest.raises(RuntimeError, match="something inside broke"):  # --debug, before or after the command
        main(["run", str(config), "--debug"])
    with pytest.raises(RuntimeError):
        main(["--debug", "run", str(config)])
    assert "MiB free" not in err  # a disk with room: no hint


def test_an_error_on_a_full_disk_says_so_and_how_to_go_on(tmp_path, capsys, monkeypatch):
    """A checkpoint write that fails on a full disk surfaces as torch's "unexpected pos" (seen 2026-12-07): the
    message names the disk's free space and the way on (--resume from the last complete checkpoint)."""
    import shutil

    import fst_prompt.api

    def full(config, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 68224 vs 68116")

    monkeypatch.setattr(fst_prompt.api, "run_loop", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 164 << 10))
    config = tmp_path / "c.yaml"
    config.write_text(f"task: chain_sum\nrun_dir: {tmp_path / 'run'}\n")
    assert main(["run", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"the disk holding {tmp_path / 'run'} has only 0 MiB free" in err and "--resume" in err


def test_sigterm_unwinds_so_with_blocks_close():
    import os
    import signal

    from fst_prompt.cli import terminate_cleanly

    closed, before = [], signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop, terminate_cleanly():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            closed.append(True)  # e.g. LocalServer.__exit__ stopping llama.cpp
    assert stop.value.code == 128 + signal.SIGTERM and closed == [True]
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back
