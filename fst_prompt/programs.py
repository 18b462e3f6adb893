"""Find and load task definitions: `--task <name>` or `--task path/to/file.py`.

A task file defines `make_task(**kwargs) -> Task` (see `programs/`). A bare name is looked up as
`programs/<name>.py` in the current directory, then among the shipped tasks: the repository's `programs/`
folder beside this package (a checkout, an editable install), or the same files installed with the package as
`fst_prompt/tasks/` (a wheel: pyproject.toml maps `programs/` to the package `fst_prompt.tasks`). Task files
are loaded from their path and import only `fst_prompt` and libraries, never each other.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fst_prompt.task import Task, TaskError

_REPO_PROGRAMS = Path(__file__).resolve().parent.parent / "programs"  # a checkout or an editable install
_INSTALLED_TASKS = Path(__file__).resolve().parent / "tasks"  # `pip install .`: programs/ as fst_prompt.tasks


def program_dirs() -> list[Path]:
    """Where bare task names are looked up, first match wins: ./programs, then the shipped tasks."""
    return [d for d in (Path.cwd() / "programs", _INSTALLED_TASKS, _REPO_PROGRAMS) if d.is_dir()]


def available_tasks() -> list[str]:
    names = {p.stem for d in program_dirs() for p in d.glob("*.py") if not p.stem.startswith("_")}
    return sorted(names)


def load_task(spec: str | Path, **kwargs: Any) -> Task:
    """Load a task by name or file path and build it with `make_task(**kwargs)`."""
    path = _find(str(spec))
    module_spec = importlib.util.spec_from_file_location(f"fst_task_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - a task file that does not import is the user's to fix
        raise TaskError(f"task file {path} does not import: {_where(e, path)}{type(e).__name__}: {e}") from e
    make = getattr(module, "make_task", None)
    if not callable(make):
        raise TaskError(f"{path} must define `make_task(**kwargs) -> fst_prompt.Task`")
    try:
        task = make(**kwargs)
    except TaskError:
        raise
    except Exception as e:  # noqa: BLE001 - as above, for the task's own constructor
        raise TaskError(f"{path}: make_task({_kwargs(kwargs)}) raised {_where(e, path)}{type(e).__name__}: {e}") from e
    if not isinstance(task, Task):
        raise TaskError(f"{path}: make_task() returned {type(task).__name__}, not fst_prompt.Task")
    return task


def _where(error: BaseException, path: Path) -> str:
    """'line N: ' for the deepest frame of `error` inside the task file (or a SyntaxError's own line)."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f"line {error.lineno}: "
    import traceback

    lines = [f.lineno for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
    return f"line {lines[-1]}: " if lines else ""


def _kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def _find(spec: str) -> Path:
    path = Path(spec).expanduser()
    if path.suffix == ".py":
        if not path.is_file():
            raise TaskError(f"task file {path} does not exist")
        return path
    for d in program_dirs():
        if (d / f"{spec}.py").is_file():
            return d / f"{spec}.py"
    raise TaskError(f"unknown task {spec!r}; available: {available_tasks()} (or give a path to a .py file)")
