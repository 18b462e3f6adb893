"""`pip install .` (not editable) gives the `fst` command, the Python API, the data files and the shipped tasks.

The slow test builds the wheel from a copy of the sources (a build writes build/ and *.egg-info beside them: never
into the repository), installs it alone into a fresh virtual environment that borrows this environment's
dependencies through a .pth file (no network), and runs `fst` from a folder outside the repository.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

import fst_prompt

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "fst_prompt", "programs")
# run by the installed package's interpreter: where it lives, its data files, a shipped task and config
API_CHECK = """
from importlib.resources import files
import fst_prompt
from fst_prompt import Task, gym_task
from fst_prompt.fetch import weights_registry
from fst_prompt.programs import load_task
print(fst_prompt.__file__)
print(sorted(weights_registry()))
package = files("fst_prompt")
print((package / "data" / "MODELS-NOTICE.txt").is_file(), (package / "tasks" / "chain_sum-fst.yaml").is_file())
print(load_task("chain_sum").name)
"""


def test_every_subpackage_is_listed_for_the_wheel():
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "fst_prompt").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_the_version_is_the_installed_metadata_version():
    from importlib.metadata import version

    assert version("fst-prompt") == fst_prompt.__version__


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(tmp_path / "dist"), str(src)], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("fst_prompt-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A venv holding only the wheel; this environment's site-packages on its path as a plain entry (its .pth
    files, among them the editable install's finder, are not run there)."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path)
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(site.strip(), "_borrowed_dependencies.pth").write_text("\n".join(ours) + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
          "--disable-pip-version-check", str(wheel)], cwd=tmp_path)
    return venv


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_has_the_command_data_and_tasks(tmp_path, tiny_path):
    start = time.perf_counter()
    venv = _fresh_venv(tmp_path, _build_wheel(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # tiny_path's cache: FST_PROMPT_CACHE as here
    fst = [str(venv / "bin" / "fst")]

    api = _run([str(venv / "bin" / "python"), "-c", API_CHECK], cwd=elsewhere, env=env).splitlines()
    assert Path(api[0]).is_relative_to(venv) and not Path(api[0]).is_relative_to(REPO)
    assert "smollm2-135m-instruct" in api[1] and "qwen2.5-coder-1.5b-instruct" in api[1]
    assert api[2:] == ["True True", "chain_sum"]

    assert _run(fst + ["--version"], cwd=elsewhere, env=env) == f"fst-prompt {fst_prompt.__version__}\n"
    shipped = sorted(p.stem for p in (REPO / "programs").glob("*.py") if not p.stem.startswith("_"))
    assert _run(fst + ["tasks"], cwd=elsewhere, env=env).split() == shipped
    out = _run(fst + ["eval", "--task", "chain_sum", "--model", "tiny", "--n", "2", "--batch-size", "2",
                      "--max-new-tokens", "4"], cwd=elsewhere, env=env)
    assert "task=chain_sum split=val n=2 model=tiny" in out and "accuracy" in out
    assert not list(elsewhere.iterdir())  # nothing written where it ran
    print(f"wheel built, installed and run in {time.perf_counter() - start:.1f} s")
