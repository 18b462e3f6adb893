"""Run the experiment drivers' `fst` jobs: skip the finished ones, resume the interrupted ones, keep the results.

A job is one `fst run` (or `fst eval`) command. Its working directory is `runs/exp/<study>/<name>` and its
results — the run's record files (`fst_prompt.rundir.RECORDS`: metrics, light evaluations between RL steps, GEPA
rounds, RL steps, the final state and population, config, forgetting matrix, test result, start), the wall time —
are copied to `evals/results/<study>/<name>/`, where a `done.json` marks it finished: a driver run again skips it,
so a study can be completed in pieces. A `fst run` that was interrupted is continued with `--resume`. A job starts
only from committed code (the commit it records is then the code it ran), unless the driver is given
`--allow-dirty '<why>'`, and the reason is recorded with that attempt. Only the
final weights of a run are kept (for later studies that start from them); intermediate checkpoints and optimizer
state are deleted. A job's results folder is a run directory: the drivers read it with `RunDir`.

Generation on this 2-core machine is bound by per-token overhead, not arithmetic: one process with one
thread is as fast as with two, so small runs (v1, SmolLM2-135M) can go two side by side, each on one thread
(`--jobs 2`). A v2 run (Qwen2.5-Coder-0.5B in fp32: policy, reference, gradients and Adam state) holds ~12 GB,
so two do not fit in 24 GiB (and its RL steps took ~85 s side by side against ~45 s alone): the default is one
at a time, and a run the kernel kills says why it likely died.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fst_prompt.atomic import append_jsonl, read_jsonl
from fst_prompt.rundir import LOGS, RECORDS, RunDir

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "evals" / "results"
STAMP = "%Y-%m-%d %H:%M:%S"  # an attempt's start and a job's end in done.json (local time)
RUNS = ROOT / "runs" / "exp"
WEIGHTS = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
           "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja")


@dataclass
class Job:
    study: str
    name: str  # results go to <results_root>/<study>/<name>/
    argv: list[str]  # `fst` arguments; for `run`, run_dir is added here
    results_root: Path = RESULTS  # evals/results (a test: a temporary folder)
    runs_root: Path = RUNS  # runs/exp: where it runs, and where its final weights stay
    inputs: dict[str, str] = field(default_factory=dict)  # files written into its results folder when it starts

    @property
    def results(self) -> Path:
        return self.results_root / self.study / self.name

    @property
    def run_dir(self) -> Path:
        return self.runs_root / self.study / self.name

    @property
    def final_weights(self) -> Path:
        """Where a finished `fst run` job keeps its final weights (an HF model folder)."""
        return self.run_dir / "final"

    @property
    def done(self) -> bool:
        return (self.results / "done.json").is_file()


@dataclass(frozen=True, kw_only=True)
class Study:
    """A study: its name (its folder under evals/results/ and runs/exp/) and the run config its jobs start from.
    A driver's `--study` picks one; everything it runs, reads and writes follows from it."""

    name: str
    config: str  # relative to the repository root
    results_root: Path = RESULTS
    runs_root: Path = RUNS

    @property
    def folder(self) -> Path:
        """The study's results: one folder per job, and the report."""
        return self.results_root / self.name

    def job(self, name: str, argv: list[str], study: str | None = None) -> Job:
        """A job of this study (or, `study`, of another study under the same roots: one it builds on)."""
        return Job(study or self.name, name, argv, self.results_root, self.runs_root)

    def run_config(self) -> dict:
        import yaml

        return yaml.safe_load((ROOT / self.config).read_text())


def sets(settings: dict) -> list[str]:
    """`--set key=value` arguments for dotted settings ({"policy.model": "x"} -> ["--set", "policy.model=x"])."""
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def eval_job(study: Study, name: str, task: str, config: dict, instructions: dict[str, str] | None = None, *,
             temperature: float | None = None) -> Job:
    """An `fst eval` job on val with a run config's policy, length and n; `instructions` replace the seed's (a
    `prompt.json` its results folder gets when the job starts: building a job writes nothing); `temperature`
    samples one completion a problem (seed 0) instead of greedy decoding."""
    job = study.job(name, ["eval", "--task", task, "--split", "val", "--n", str(config["loop"]["eval_n"]),
                           "--max-new-tokens", str(config["policy"]["max_new_tokens"]),
                           "--model", config["policy"]["model"]])
    if temperature is not None:
        job.argv += ["--temperature", str(temperature), "--seed", "0"]
    if instructions:
        job.inputs["prompt.json"] = json.dumps({"instructions": instructions}) + "\n"
        job.argv += ["--prompt", str(job.results / "prompt.json")]
    job.argv += ["--out", str(job.results / "eval.json")]
    return job


def run_jobs(jobs: list[Job], *, parallel: int = 1, allow_dirty: str | None = None) -> None:
    """Run the jobs not yet done, `parallel` at a time (each with 1/parallel of the cores). A job starts only from
    committed code, unless `allow_dirty` gives the reason it may not (recorded with the attempt)."""
    todo = [j for j in jobs if not j.done]
    if todo and not allow_dirty and _commit().endswith("-dirty"):
        sys.exit(DIRTY)
    print(f"{len(jobs) - len(todo)} of {len(jobs)} jobs already done; running {len(todo)}, {parallel} at a time",
          flush=True)
    threads = max(1, (os.cpu_count() or 2) // parallel)
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        ok = list(pool.map(lambda j: _run_one(j, threads, parallel, allow_dirty), todo))
    failed = [j.name for j, good in zip(todo, ok, strict=True) if not good]
    if failed:
        sys.exit(f"{len(failed)} jobs failed (see runs/exp/<study>/<name>/log.txt): {failed}")


DIRTY = ("refusing to start: tracked files outside evals/results/ have uncommitted changes (`git status`), so the "
         "commit a run records would not be the code it ran. Commit them, or pass --allow-dirty '<why>' (recorded "
         "in the run's done.json)")


def _run_one(job: Job, threads: int, parallel: int, allow_dirty: str | None = None) -> bool:
    # checked per job, not only once: a queue of jobs runs for hours while the tree is edited beside it
    commit = _commit()  # the code it starts with (edits made while it runs do not count)
    if commit.endswith("-dirty") and not allow_dirty:
        print(f"{job.study}/{job.name}: {DIRTY}", flush=True)
        return False
    job.run_dir.mkdir(parents=True, exist_ok=True)
    for name, text in job.inputs.items():
        (job.results / name).parent.mkdir(parents=True, exist_ok=True)
        (job.results / name).write_text(text)
    argv = [str(Path(sys.executable).parent / "fst"), *job.argv]
    if job.argv[0] == "run":
        argv += ["--set", f"run_dir={job.run_dir}", "--set", f"reflection.threads={threads}"]
        if RunDir(job.run_dir).is_started():
            argv.append("--resume")
    resumed = _earlier_work(job.run_dir)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TQDM_DISABLE": "1"}
    print(f"[{time.strftime('%H:%M:%S')}] start {job.study}/{job.name}", flush=True)
    t0 = time.perf_counter()
    append_jsonl(_attempts_file(job.run_dir), {"commit": commit, "started": time.strftime(STAMP)}
                 | ({"dirty_reason": allow_dirty} if commit.endswith("-dirty") else {}))
    with open(job.run_dir / "log.txt", "a") as log:
        rc = subprocess.run(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - t0
    print(f"[{time.strftime('%H:%M:%S')}] {'done' if rc == 0 else f'FAILED (exit {rc})'} {job.study}/{job.name} "
          f"in {seconds / 60:.1f} min", flush=True)
    if rc == -signal.SIGKILL:
        fix = f"run fewer jobs side by side (--jobs {parallel - 1})" if parallel > 1 else "free memory"
        print(f"  killed by SIGKILL, most often the out-of-memory killer: {fix}; the next call resumes it from its "
              "last checkpoint", flush=True)
    if rc != 0:
        return False
    _harvest(job, seconds, threads, parallel, commit, resumed=resumed)
    return True


def _earlier_work(run_dir: Path) -> bool:
    """Whether an interrupted attempt got anywhere: a logged RL step, evaluation or GEPA round, or a round begun.
    One that stopped before any of it (a machine lost while the model loaded) leaves its wall time whole."""
    logs = (run_dir / name for name in LOGS)
    return any(log.is_file() and log.stat().st_size for log in logs) or any(RunDir(run_dir).gepa_root.glob("*/*"))


def _harvest(job: Job, seconds: float, threads: int, parallel: int, commit: str, resumed: bool = False) -> None:
    """Copy the results, keep the final weights only, mark the job done (last, atomically). A resumed run's
    `wall_seconds` are its last attempt's only (`resumed`: true): what came before a crash is not known.
    `attempts` lists the commit and start time of every attempt (`commit` is the last one's)."""
    from fst_prompt.atomic import write_json_atomic
    from fst_prompt.state import last_complete_checkpoint

    job.results.mkdir(parents=True, exist_ok=True)
    for name in RECORDS:
        if (job.run_dir / name).is_file():
            shutil.copy2(job.run_dir / name, job.results / name)
    checkpoints = RunDir(job.run_dir).checkpoints()
    if checkpoints.is_dir():
        stages = sorted(checkpoints.glob("stage-*"), key=lambda p: int(p.name.split("-")[1])) or [checkpoints]
        distilled = stages[-1] / "distill"  # a distill phase's checkpoints are the stage's weights (slow/distill.py)
        last = ((last_complete_checkpoint(distilled) if distilled.is_dir() else None)
                or last_complete_checkpoint(stages[-1]))
        if last:
            final = job.final_weights
            final.mkdir(exist_ok=True)
            for name in WEIGHTS:
                if (Path(last) / name).is_file():
                    shutil.copy2(Path(last) / name, final / name)
        shutil.rmtree(checkpoints)
    attempts = _attempts_file(job.run_dir)  # every attempt's code, crashed ones included
    write_json_atomic(job.results / "done.json", {"argv": job.argv, "commit": commit,
                                                  "wall_seconds": round(seconds, 1), "threads": threads,
                                                  "device": _device(parallel), "resumed": resumed,
                                                  "attempts": read_jsonl(attempts) if attempts.is_file() else [],
                                                  "finished": time.strftime(STAMP)})


def _attempts_file(run_dir: Path) -> Path:
    """Beside the run's folder, not in it: `fst run` starts only in a folder holding no files of its own."""
    return run_dir.with_name(run_dir.name + ".attempts.jsonl")


def uninterrupted_minutes(results: list[Path]) -> list[float]:
    """Wall minutes of the finished runs among `results` that ran in one attempt: a resumed run's time is its
    last attempt's only, so it is left out."""
    done = [json.loads((r / "done.json").read_text()) for r in results if (r / "done.json").is_file()]
    return [d["wall_seconds"] / 60 for d in done if not d.get("resumed")]


def driver_parser(doc: str, seeds: list[int]) -> argparse.ArgumentParser:
    """The options every study driver shares."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--seeds", nargs="*", type=int, default=seeds)
    ap.add_argument("--jobs", type=int, default=1,
                    help="runs side by side, each with cores/jobs threads (a v2 run needs ~12 GB of memory)")
    ap.add_argument("--report-only", action="store_true", help="only analyse the runs already finished")
    ap.add_argument("--allow-dirty", metavar="REASON",
                    help="start jobs although code outside evals/results/ is uncommitted; the reason is recorded in "
                         "each such run's done.json (attempts)")
    return ap


def task_driver_parser(doc: str, tasks: tuple[str, ...], seeds: list[int]) -> argparse.ArgumentParser:
    """`driver_parser` plus `--tasks` (the drivers that run per task and seed)."""
    ap = driver_parser(doc, seeds=seeds)
    ap.add_argument("--tasks", nargs="+", default=list(tasks))
    return ap


def report_scope(tasks: tuple[str, ...], seeds: list[int], args: argparse.Namespace) -> tuple[list[str], list[int]]:
    """The tasks and seeds a driver's report covers: its defaults and any asked for (their finished runs only)."""
    return list(dict.fromkeys([*tasks, *args.tasks])), report_seeds(seeds, args)


def report_seeds(seeds: list[int], args: argparse.Namespace) -> list[int]:
    """The seeds a driver's report covers: its defaults and any asked for, so that running a few seeds does not
    shrink the report (a plain `--report-only` then redraws it as it was)."""
    return sorted({*seeds, *args.seeds})


def write_report(study: Study, analysis: dict, text: str, plot: Callable[[dict, Path], list[Path]]) -> None:
    """`<study>.json` (the analysis), `<study>.md` (its tables) and the study's figures, in its results folder."""
    from fst_prompt.atomic import write_json_atomic, write_text_atomic

    out = study.folder
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / f"{study.name}.json", analysis)
    write_text_atomic(out / f"{study.name}.md", text)
    for path in plot(analysis, out):
        print(f"wrote {path}")
    print(text)


def _commit() -> str:
    """The code a job ran: `git describe` of HEAD, `-dirty` when tracked files outside evals/results/ had
    uncommitted changes (a finished run's harvest rewrites the reports there; that is not a change of code)."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)

    name = git("describe", "--always").stdout.strip()
    if not name:
        return "unknown"
    changed = git("diff", "--quiet", "HEAD", "--", ".", ":(exclude)evals/results").returncode != 0
    return name + ("-dirty" if changed else "")


def _device(parallel: int) -> str:
    import torch

    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return f"{where}, {os.cpu_count()} cores, {parallel} job(s) side by side"
