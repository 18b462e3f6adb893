"""Importing the package changes nothing in the process; the `fst` command sets its own offline environment.

`import fst_prompt` (and `import fst_prompt.cli`) must not import DSPy: litellm under it reads
LITELLM_LOCAL_MODEL_COST_MAP once, at import, so the command can keep it off the network only if it sets the
variable first (`cli.main`).
"""

import os
import subprocess
import sys

from fst_prompt import cli

# what fst_prompt/__init__.py used to set at import
_WATCHED = ("LITELLM_LOCAL_MODEL_COST_MAP", "HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")


def _python(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in _WATCHED}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_package_changes_no_environment_variable():
    out = _python("import os; before = dict(os.environ); import fst_prompt; assert dict(os.environ) == before; "
                  "import fst_prompt.cli, fst_prompt.models, fst_prompt.programs; assert dict(os.environ) == before; "
                  "print('ok')")
    assert out == "ok"


def test_importing_the_package_or_its_cli_imports_no_dspy():
    out = _python("import sys, fst_prompt, fst_prompt.cli; "
                  "print(sorted({'dspy', 'litellm', 'torch'} & set(sys.modules)))")
    assert out == "[]"


def test_the_public_names_still_import():
    out = _python("from fst_prompt import Feedback, Task, TaskError, gym_task; import fst_prompt; "
                  "print(fst_prompt.Task is Task, 'gym_task' in dir(fst_prompt))")
    assert out == "True True"


def test_the_command_sets_its_offline_environment_before_it_runs(monkeypatch, capsys):
    for name in _WATCHED:
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["tasks"]) == 0
    assert "chain_sum" in capsys.readouterr().out
    assert {k: os.environ.get(k) for k in cli.OFFLINE_ENV} == cli.OFFLINE_ENV
