"""Files written so that a crash never leaves half of one: atomic replacement (temp file + fsync + rename, the
rule every writer follows) and append-only JSONL logs whose readers skip a line a crash cut short."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def append_jsonl(path: Path, record: dict[str, Any] | list[dict[str, Any]]) -> None:
    """One JSON record per line (a list: one line each), in one `write` (logs; a crash can cost at most the lines
    being written). A torn last line left by an earlier crash is ended first, so the new record starts a line of
    its own."""
    records = record if isinstance(record, list) else [record]
    data = "".join(json.dumps(r, default=str) + "\n" for r in records).encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file; lines that do not parse (a write cut short by a crash or a full disk) are
    skipped, and said so on stderr."""
    records, torn = [], 0
    for line in Path(path).read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            torn += 1
    if torn:
        print(f"note: skipped {torn} unreadable line(s) in {path} (a write cut short by a crash?)", file=sys.stderr)
    return records
