"""fst-prompt: Fast-Slow Training for LLMs — GEPA-evolved prompts (fast weights) + GRPO (slow weights).

Importing the package is cheap and changes nothing in the process (no environment variable is set): the
public names below load DSPy on first use, and torch, transformers and TRL load only when a model is
needed. The `fst` command keeps litellm off the network itself (`cli.main`); a library user who wants the
same sets `LITELLM_LOCAL_MODEL_COST_MAP=True` before the first DSPy import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fst_prompt.api import RunResult, load_run, run
    from fst_prompt.gym import gym_task
    from fst_prompt.optimizer import FST
    from fst_prompt.task import Feedback, Task, TaskError

__all__ = ["FST", "Feedback", "RunResult", "Task", "TaskError", "gym_task", "load_run", "run"]
__version__ = "0.1.0"

# public name -> the module defining it, imported on first access (PEP 562): `import fst_prompt` (and so
# `import fst_prompt.cli`) does not import DSPy, so the CLI can set litellm's offline flag before it does.
_LAZY = {"Feedback": "fst_prompt.task", "Task": "fst_prompt.task", "TaskError": "fst_prompt.task",
         "gym_task": "fst_prompt.gym", "FST": "fst_prompt.optimizer", "run": "fst_prompt.api",
         "load_run": "fst_prompt.api", "RunResult": "fst_prompt.api"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fst_prompt' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
