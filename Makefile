# The README's two commands: `make example` (set up, then run the workflow on the built-in example)
# and `make test` (set up, then run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build by default (what CI tests). On a GPU machine: make example TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"
TORCH  ?= torch==2.13.0
CORES  ?= all

BENCH_VENV ?= .bench-venv

.PHONY: install example test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first: a plain `torch` requirement would otherwise pull a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# the venv's bin first on PATH: the rules call `python -m genodae`
example: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES)
	@echo "done: see results/ (embeddings, gene weights, figures) and report with: $(BIN)/snakemake --report report.html"

test: install
	$(BIN)/ruff check genodae tests bench workflow
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# the CPU benchmark suite (not part of the tests): its own venv, because scvi-tools is a baseline, not a
# dependency; torch and scvi-tools in one pip command so that scvi keeps the CPU torch
$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet $(TORCH) -e ".[bench]"
	# MAGIC, a denoising baseline of bench/mcv.py: its helper scprep pins pandas < 2.1 but runs with the current
	# pandas that anndata needs, so it goes in without its pins (and never into the package's dependencies)
	$(BENCH_VENV)/bin/python -m pip install --quiet --no-deps magic-impute==3.0.0 scprep==1.2.3 graphtools==2.1.0 \
		tasklogger==1.2.0 pygsp==0.6.1 Deprecated==1.3.1 wrapt future==1.0.0 decorator==5.3.1
	$(BENCH_VENV)/bin/python -c "import magic, pandas; print('bench venv: MAGIC', magic.__version__, 'pandas', pandas.__version__)"
	# bench/integration.py's scorers and baseline (in the bench extra): scib-metrics (jax, CPU) and harmonypy
	JAX_PLATFORMS=cpu $(BENCH_VENV)/bin/python -c "import scib_metrics, harmonypy; print('bench venv: scib-metrics', scib_metrics.__version__)"
	# bench/readable.py's cNMF baseline (Kotliar et al. 2019), the authors' package
	$(BENCH_VENV)/bin/python -m pip install --quiet cnmf==1.7.1
	touch $@

bench: $(BENCH_VENV)/.installed
	PATH="$(CURDIR)/$(BENCH_VENV)/bin:$$PATH" PYTHON=$(BENCH_VENV)/bin/python bash bench/run_cpu.sh

clean:
	rm -rf results logs benchmarks resources .snakemake report.html
