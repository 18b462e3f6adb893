"""The `fst` command.

    fst eval --task basic_arithmetic --model smollm2-135m-instruct --split val --n 64 [--prompt prompts.json]
    fst run programs/chain_sum-fst.yaml [--set loop.mode=rl] [--resume]
    fst optimize programs/chain_sum.yaml        # = fst run ... --set loop.mode=gepa (frozen weights)
    fst train programs/chain_sum-train.yaml     # = fst run ... --set loop.mode=rl (seed instruction)
    fst plot runs/fst runs/rl [--out plots/]
    fst export runs/fst --out exported/
    fst models        # what model names resolve to, and whether they are converted yet
    fst tasks         # the tasks found in programs/

Everything that can be checked without a model (task, prompt file, split, n) is checked before the
model loads; errors print one line naming the fix and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fst_prompt import __version__
from fst_prompt.atomic import write_json_atomic
from fst_prompt.config import PolicyConfig
from fst_prompt.distributed import launched_processes

if TYPE_CHECKING:  # DSPy (and litellm under it) is imported only after main() has set OFFLINE_ENV
    from fst_prompt.baselines import Baseline

_POLICY = PolicyConfig.model_fields  # `fst eval` defaults = the run config's


# Libraries under us whose deprecation notices a user of the command can do nothing about.
THIRD_PARTY = ("transformers", "trl", "peft", "accelerate", "torch", "dspy", "litellm", "pydantic", "gepa",
               "datasets", "huggingface_hub")


def filter_warnings() -> None:
    """Hide third-party Future/Deprecation warnings: set before those libraries are imported."""
    for category in (FutureWarning, DeprecationWarning):
        for module in THIRD_PARTY:
            warnings.filterwarnings("ignore", category=category, module=rf"{module}(\.|$)")


# A user's mistake (bad config, task file, prompt file, run directory): one message naming the fix, status 2.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)


# Set by the command for its own process, before DSPy is first imported (a user's explicit setting wins): litellm
# otherwise fetches its price list from the network at import (5 s time-outs and warnings offline); tokenizers warn
# after a fork. Importing the package sets nothing; the built-in models load from local files only (models.py).
OFFLINE_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "TOKENIZERS_PARALLELISM": "false"}


def offline_environment() -> None:
    """OFFLINE_ENV, where the user has not set the variables: for the `fst` command and the evals scripts (the
    library itself changes no environment variable)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def main(argv: list[str] | None = None) -> int:
    offline_environment()
    code = _command(argv)
    if launched_processes() > 1:
        _leave_now(code)
    return code


def _leave_now(code: int) -> None:
    """End a launched process (torchrun, accelerate launch) without the interpreter's teardown. Its process
    group is already destroyed (`Processes`), yet a library's thread can still abort the process while the
    interpreter shuts down (`terminate called without an active exception`, SIGABRT), and the launcher then
    reports a failure for a run that finished and wrote everything. Every file is closed by now (the `with`
    blocks have run); logs and the console are flushed first."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _command(argv: list[str] | None) -> int:
    filter_warnings()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with terminate_cleanly():
            return args.func(args)
    except USER_ERRORS as e:
        if args.debug:
            raise
        print(f"fst {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fst {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug or a failing library: keep the traceback, say where it is
        if args.debug:
            raise
        log_dir = getattr(args, "log_dir", None)
        log = _write_traceback(log_dir)
        print(f"fst {args.command}: unexpected error: {type(e).__name__}: {_first_line(e)}\n"
              f"  the traceback is {f'in {log}' if log else 'lost (it could not be written)'}; run again with "
              f"--debug to print it{_disk_full(log_dir)}", file=sys.stderr)
        return 1


DISK_LOW = 1 << 30  # bytes: below this a failed write is most likely a full disk


def _disk_full(log_dir: Path | None) -> str:
    """A hint for an error that a full disk most likely caused (torch.save then fails with "unexpected pos"): how
    little is free, and that the run resumes from its last complete checkpoint once there is room."""
    import shutil

    where = log_dir if log_dir is not None and log_dir.exists() else Path.cwd()
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return ""
    if free >= DISK_LOW:
        return ""
    return (f"\n  the disk holding {where} has only {free / 2**20:.0f} MiB free, the likely cause: free space, then "
            f"run the same command with --resume (a checkpoint cut short is skipped; the last complete one is used)")


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """A SIGTERM (`kill`, a scheduler's stop, torchrun ending its workers) unwinds like an exit: `with` blocks
    close, so the local llama.cpp server is stopped and the run-dir lock released (Python's default ends the
    process on the spot). Where no handler can be set (not the main thread), nothing changes."""
    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_traceback(log_dir: Path | None) -> Path | None:
    """The current exception's traceback, in the run directory when there is one (else a temp file; None where
    neither can be written)."""
    import tempfile
    import time
    import traceback

    text = f"{time.strftime('%Y-%m-%d %H:%M:%S')} fst {' '.join(sys.argv[1:])}\n{traceback.format_exc()}\n"
    if log_dir is not None:
        with contextlib.suppress(OSError):
            log_dir.mkdir(parents=True, exist_ok=True)
            rank = os.environ.get("RANK", "0")  # under a launcher, one log per process
            path = log_dir / ("error.log" if rank == "0" else f"error.rank{rank}.log")
            with open(path, "a") as f:
                f.write(text)
            return path
    try:  # a full disk may refuse this too
        fd, name = tempfile.mkstemp(prefix="fst-error-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(text)
    except OSError:
        return None
    return Path(name)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else "(no message)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fst", description="Fast-Slow Training for LLMs.")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of any error")
    parser.add_argument("--version", action="version", version=f"fst-prompt {__version__}")
    common = argparse.ArgumentParser(add_help=False)  # so that `fst run x.yaml --debug` works too
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("eval", parents=[common], help="evaluate a task's program on a model")
    ev.add_argument("--task", required=True, help="task name in programs/ or path to a task .py file")
    ev.add_argument("--model", default="smollm2-135m-instruct",
                    help="built-in model name (see `fst models`), Hugging Face hub id org/name, or HF model folder")
    ev.add_argument("--split", default="val", choices=["train", "val", "test"])
    ev.add_argument("--n", type=_positive, default=64, help="evaluate the first n examples of the split")
    ev.add_argument("--prompt", type=Path, help="prompts.json with the instructions to use")
    ev.add_argument("--out", type=Path, help="write the full result (every rollout) as JSON here")
    ev.add_argument("--batch-size", type=_positive, default=_POLICY["batch_size"].default)
    ev.add_argument("--max-new-tokens", type=_positive, default=_POLICY["max_new_tokens"].default)
    ev.add_argument("--temperature", type=float, default=_POLICY["temperature"].default)
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=cmd_eval)

    _config_command(sub, common, "run", None, "the FST loop, or a baseline (loop.mode: fst, rl, gepa, gepa-then-rl)",
                    "programs/chain_sum-fst.yaml", "loop.mode=rl")
    _config_command(sub, common, "optimize", "gepa", "GEPA only, frozen weights: `fst run` with loop.mode=gepa",
                    "programs/chain_sum.yaml", "gepa.max_metric_calls=300")
    _config_command(sub, common, "train", "rl", "RL only, seed instruction: `fst run` with loop.mode=rl",
                    "programs/chain_sum-train.yaml", "loop.cycles=5")

    pl = sub.add_parser("plot", parents=[common],
                        help="accuracy / KL / fast-weight / RL-step figures for one or several run dirs")
    pl.add_argument("run_dirs", type=Path, nargs="+")
    pl.add_argument("--out", type=Path, default=Path("plots"),
                    help="folder for the PNGs (default: ./plots; the run directories are only read)")
    pl.set_defaults(func=cmd_plot)

    ex = sub.add_parser("export", parents=[common],
                        help="prompts.json, DSPy program.json, model folder and card from a run dir")
    ex.add_argument("run_dir", type=Path)
    ex.add_argument("--out", type=Path, required=True)
    ex.set_defaults(func=cmd_export)

    sub.add_parser("tasks", parents=[common], help="list the tasks found in programs/").set_defaults(func=cmd_tasks)
    sub.add_parser("models", parents=[common], help="list the built-in model names").set_defaults(func=cmd_models)
    return parser


def _config_command(sub: Any, common: argparse.ArgumentParser, name: str, mode: str | None, help: str, example: str,
                    override: str) -> None:
    """`fst <name> <config> [--set key=value ...] [--resume]`: `fst run`, with loop.mode fixed for an alias."""
    cmd = sub.add_parser(name, parents=[common], help=help)
    cmd.add_argument("config", type=Path, help=f"YAML config, e.g. {example}")
    cmd.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help=f"override a config field, e.g. --set {override} (repeatable)")
    cmd.add_argument("--resume", action="store_true", help="continue the run in run_dir from its last checkpoint")
    cmd.set_defaults(func=cmd_run, mode=mode)


def cmd_eval(args: argparse.Namespace) -> int:
    from fst_prompt.baselines import majority_baseline
    from fst_prompt.programs import load_task

    task = load_task(args.task)
    instructions = read_prompt_file(args.prompt) if args.prompt else None
    if instructions:
        task.check_instructions(instructions)
    if args.n > len(task.split(args.split)):
        print(f"note: the {args.split} split has {len(task.split(args.split))} examples; using all of them")
    if args.out and args.out.exists() and args.out.is_dir():
        raise ValueError(f"--out {args.out} is a directory; give a file path")

    from fst_prompt.models import resolve_model

    resolve_model(args.model)  # a model that cannot be found fails here, before torch loads (a found one is cached)
    from fst_prompt.evaluate import evaluate
    from fst_prompt.policy import Policy, Sampling

    sampling = Sampling(temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    policy = Policy.load(args.model, batch_size=args.batch_size, seed=args.seed, sampling=sampling)
    result = evaluate(task, policy, split=args.split, n=args.n, instructions=instructions)
    baseline = majority_baseline(task, args.split, args.n)
    _print_summary(result.summary(), args.model, baseline)
    if args.out:
        write_json_atomic(args.out, {"model": args.model, **result.to_json(), "majority_baseline": asdict(baseline)})
        print(f"wrote {args.out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from fst_prompt.config import load_config

    overrides = args.overrides + ([f"loop.mode={args.mode}"] if args.mode else [])
    config = load_config(args.config, overrides)  # validated before the (slow) import of the loop
    args.log_dir = Path(config.run_dir)
    from fst_prompt.api import run

    run(config, resume=args.resume)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from fst_prompt.plots import plot_runs

    for path in plot_runs(args.run_dirs, args.out):
        print(f"wrote {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fst_prompt.export import export_run

    for path in export_run(args.run_dir, args.out):
        print(f"wrote {path}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from fst_prompt.programs import available_tasks

    print("\n".join(available_tasks()))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from fst_prompt.cachedir import cache_root
    from fst_prompt.models import KNOWN_MODELS, is_complete

    for name in KNOWN_MODELS:
        folder = cache_root() / "models" / name
        print(
            f"{name:32s} {'converted: ' + str(folder) if is_complete(folder) else 'converted on first use'}"
        )
    return 0


def read_prompt_file(path: Path) -> dict[str, str]:
    """Instructions from a prompts.json: {"instructions": {predictor: text}, ...} or a flat mapping."""
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist")
    try:
        data: Any = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"prompt file {path} is not valid JSON: {e}") from e
    if isinstance(data, dict) and isinstance(data.get("instructions"), dict):
        data = data["instructions"]
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f'prompt file {path} must hold {{"instructions": {{"<predictor>": "<text>"}}}}')
    return data


def _print_summary(s: dict[str, Any], model: str, baseline: Baseline | None = None) -> None:
    print(f"task={s['task']} split={s['split']} n={s['n']} model={model}")
    from fst_prompt.stats import with_interval

    print(f"  accuracy           {with_interval(s['accuracy'], s['n'])}   (95% Wilson interval; mean score "
          f"{s['mean_score']:.3f})")
    if baseline is not None:
        print(f"  constant baseline  {baseline.accuracy:.3f}   (always answering {baseline.answer!r})")
    print(f"  parse failures     {s['parse_failure_rate']:.3f}   (cut at max tokens {s['truncated_rate']:.3f})")
    print(f"  completion length  {s['mean_completion_tokens']:.1f} tokens")
    print(
        f"  throughput         {s['rollouts_per_s']:.2f} rollouts/s ({s['generate_calls']} generate calls, "
        f"{s['seconds']:.1f} s)"
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
