"""The experiment drivers, benchmarks and checks: thin scripts over `fst_prompt`, run from the repository root as
modules (`python -m evals.compare`, `python -m evals.bench_step`, ...; each module's docstring says how).

`runner.py` runs a study's `fst` jobs and keeps their results in `evals/results/<study>/`, `report.py` holds what
the studies share when they report; a finished job's results folder is a run directory, read with
`fst_prompt.rundir.RunDir`. Importing this package runs nothing and changes nothing.
"""
