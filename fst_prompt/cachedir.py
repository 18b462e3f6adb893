"""Where converted models and assembled weights live, and the lock that serialises building them.

Default `~/.cache/fst-prompt`; override with the `FST_PROMPT_CACHE` environment variable.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("FST_PROMPT_CACHE") or Path.home() / ".cache" / "fst-prompt"
    return Path(root).expanduser()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock: two processes never build the same artefact at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
