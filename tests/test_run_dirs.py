"""One driver, one run directory: every mode (and the `fst optimize` / `fst train` aliases) writes a directory
that `fst export` and `fst plot` read — without changing a byte of it — and the console shows progress lines,
not TRL's dicts or Python warnings. Tiny model, scripted reflection endpoint on loopback."""

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fst_prompt import loop
from fst_prompt.cli import main
from tests.test_loop import config, continual_config

PACKAGE = Path(__file__).resolve().parents[1] / "fst_prompt"


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def export_and_plot(run: Path, tmp_path: Path) -> Path:
    before = snapshot(run)
    out = tmp_path / "export"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert main(["plot", str(run), "--out", str(tmp_path / "figs")]) == 0
    assert snapshot(run) == before  # read only
    assert (tmp_path / "figs" / "accuracy.png").stat().st_size > 5000
    return out


RUNS = {
    "fst": lambda tmp, tiny, url: config(tmp, tiny, url, loop__cycles=1),
    "rl": lambda tmp, tiny, url: config(tmp, tiny, url, loop__mode="rl", loop__cycles=1),
    "gepa": lambda tmp, tiny, url: config(tmp, tiny, url, loop__mode="gepa", loop__cycles=2),
    "gepa-then-rl": lambda tmp, tiny, url: config(tmp, tiny, url, loop__mode="gepa-then-rl", loop__cycles=1),
    "lora": lambda tmp, tiny, url: config(tmp, tiny, url, loop__cycles=1, rl__lora=True, rl__lora_r=4),
    "schedule": lambda tmp, tiny, url: continual_config(tmp, tiny, url),
}


@pytest.mark.parametrize("kind", list(RUNS))
def test_every_mode_exports_and_plots(kind, tmp_path, tiny_path, endpoint):
    cfg = RUNS[kind](tmp_path, tiny_path, endpoint)
    loop.run_loop(cfg, progress=False)
    run = Path(cfg.run_dir)
    out = export_and_plot(run, tmp_path)
    names = {p.name for p in out.iterdir()}
    programs = {"program-chain_sum.json", "program-letter_counting.json"} if kind == "schedule" else {"program.json"}
    assert programs <= names and {"prompts.json", "README.md"} <= names
    if kind == "gepa":
        assert "model" not in names and not (run / "steps.jsonl").exists()
        return
    model = out / "model"
    assert (model / ("adapter_model.safetensors" if kind == "lora" else "model.safetensors")).is_file()
    assert not (model / "optimizer.pt").exists()
    steps = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    trained = [s for s in steps if "reward" in s]
    assert trained and all({"frac_reward_zero_std", "reward/context_0", "task", "stage"} <= set(s) for s in trained)
    assert (tmp_path / "figs" / "rl_steps.png").is_file()
    if kind == "schedule":  # the weights of the last stage's last checkpoint
        last = sorted((run / "checkpoints" / "stage-1").glob("checkpoint-*"))[-1]
        assert (model / "model.safetensors").read_bytes() == (last / "model.safetensors").read_bytes()


def test_export_leaves_a_running_directory_alone(tmp_path, tiny_path, endpoint):
    cfg = config(tmp_path, tiny_path, endpoint, loop__mode="rl", loop__cycles=1)
    loop.run_loop(cfg, progress=False)
    run = Path(cfg.run_dir)
    partial = run / "checkpoints" / "checkpoint-9"  # a checkpoint being written right now (no trainer_state.json)
    partial.mkdir()
    (partial / "model.safetensors").write_text("half")
    export_and_plot(run, tmp_path)
    assert partial.is_dir()
    assert main(["export", str(run), "--out", str(run / "export")]) == 2  # never into the run directory


def write_yaml(tmp_path: Path, cfg) -> Path:
    path = tmp_path / "alias.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(exclude={"loop": {"mode"}})))
    return path


@pytest.mark.parametrize("alias, mode", [("optimize", "gepa"), ("train", "rl")])
def test_aliases_are_run_with_a_mode_and_a_quiet_console(alias, mode, tmp_path, tiny_path, endpoint):
    cfg = config(tmp_path, tiny_path, endpoint, loop__cycles=1)
    fst = Path(sys.executable).parent / "fst"  # the installed command, in a fresh process: warnings show there
    done = subprocess.run([str(fst), alias, str(write_yaml(tmp_path, cfg))], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = Path(cfg.run_dir)
    assert yaml.safe_load((run / "config.yaml").read_text())["loop"]["mode"] == mode
    record = json.loads((run / "metrics.jsonl").read_text())
    assert record["mode"] == mode and record["rl_steps"] == (2 if mode == "rl" else 0)
    export_and_plot(run, tmp_path)
    lines = (done.stdout + done.stderr).splitlines()
    assert any(line.startswith("cycle 1/1 [") for line in lines)
    noise = [line for line in lines if line.lstrip().startswith("{") or "Warning" in line or "warn(" in line]
    assert not noise  # no TRL dicts, no Python warnings


def test_one_seed_derives_the_others(tmp_path, tiny_path, endpoint):
    from fst_prompt.config import load_config

    cfg = config(tmp_path, tiny_path, endpoint)
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(exclude={"policy": {"seed"}, "gepa": {"seed"}, "rl": {"seed"}})))

    derived = load_config(path, ["seed=7"])
    assert (derived.policy.seed, derived.gepa.seed, derived.rl.seed) == (7, 7, 7)
    assert load_config(path, ["seed=7", "rl.seed=3"]).rl.seed == 3


def own_imports() -> dict[str, list[tuple[str, bool]]]:
    """module -> [(imported fst_prompt module, at top level?)] for every module of the package."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        # imports for type checkers only never run: neither lazy nor part of an import cycle at run time
        typing_only = {id(n) for block in tree.body if _is_type_checking(block) for n in ast.walk(block)}
        found = []
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fst_prompt"):
                found.append((node.module, id(node) in top))
            elif isinstance(node, ast.Import):
                found += [(a.name, id(node) in top) for a in node.names if a.name.startswith("fst_prompt")]
        graph[name] = found
    return graph


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def test_no_import_cycles_and_own_imports_at_the_top():
    graph = own_imports()
    # cli.py loads the loop (torch, TRL) only when a command needs it, so that `fst --help` starts fast; the
    # package's public names load on first use (PEP 562), so that `import fst_prompt` loads nothing
    lazy = [(m, dep) for m, deps in graph.items() for dep, top in deps if not top
            and m not in ("fst_prompt.cli", "fst_prompt")]
    assert not lazy
    edges = {m: {d for d, _ in deps if d != m and d in graph} for m, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        assert state.get(m) != 1, f"import cycle: {' -> '.join([*path, m])}"
        if state.get(m) != 2:
            state[m] = 1
            for d in edges[m]:
                visit(d, [*path, m])
            state[m] = 2

    for m in edges:
        visit(m, [])


def test_every_module_imports_on_its_own():
    """Each module imported first in a clean package state: a cycle would fail on a partly initialised module."""
    modules = sorted(own_imports())
    script = ("import importlib, sys\n"
              f"for name in {modules!r}:\n"
              "    for loaded in [m for m in sys.modules if m.startswith('fst_prompt')]:\n"
              "        del sys.modules[loaded]\n"
              "    importlib.import_module(name)\n"
              "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


def test_cycle_metrics_reach_the_tracker(tmp_path, tiny_path, endpoint):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = config(tmp_path, tiny_path, endpoint, loop__mode="rl", loop__cycles=2, rl__report_to="tensorboard")
    loop.run_loop(cfg, progress=False)
    events = sorted(Path(cfg.run_dir).rglob("events.out.tfevents.*"))
    scalars = {}
    for path in events:
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.step for e in acc.Scalars(tag))
    assert sorted(scalars["train/fst/val_accuracy_best"]) == [2, 4]  # one per cycle, at its RL step
    assert len(scalars["train/reward"]) == 4 and "train/fst/kl" in scalars  # TRL's per-step ones too
