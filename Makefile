# pamlbench front door. On a fresh machine with Python 3.11, `make bench` and `make test` create the virtual
# environment (.venv) and install everything they need first.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pamlbench-installed
# pip on this project's machines lists local wheel folders that lack most packages; hide that noise only. The braces
# keep `|| true` on grep alone: a failed install still fails the pipeline (pipefail) and leaves no stamp.
PIP_NOISE := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup bench bench-quick prepare tune perf report test mutation system-packages lint ui clean-cache

UI_PORT ?= 5000
# make bench DATASET=voc DATA=~/data/voc: one dataset of benchmark.toml, or a prepared real dataset
DATASET ?=
DATA ?=
# make prepare DATASET=voc RAW=~/data/VOC2012-download OUT=~/data/voc [IMAGE_CACHE=1]
RAW ?=
OUT ?=
IMAGE_CACHE ?=
BENCH_ARGS := $(if $(DATASET),--dataset $(DATASET)) $(if $(DATA),--data $(DATA))
QUICK_DIR := .pamlbench/quick

# Every installed module is compiled at install: where PYTHONDONTWRITEBYTECODE is set, Python would otherwise
# compile torch's modules again in every process, which makes the test suite over 60 % slower. compileall does it on
# every core (the whole install: 92 s on 2 cores, against 128 s with pip compiling one file at a time); a file it
# cannot compile (a package's own Python 2 test data, say) is left to Python, as pip leaves it.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pamlbench and its dependencies into $(VENV) (first time: a few minutes)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -e '.[dev,cluster]' 2>&1 | $(PIP_NOISE)
	@$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1 || true
	@$(BIN)/python -c "import torch, torchvision" || { echo "torch does not import in $(VENV): a broken install (is the disk full?)"; exit 1; }
	@touch $(STAMP)

setup: $(STAMP)  ## create/update the virtual environment

bench: $(STAMP) system-packages  ## run the default benchmark (benchmark.toml) and write leaderboard.md
	$(BIN)/pamlbench bench $(BENCH_ARGS)

# The tuned values belong to their studies' epoch counts, so at 3 epochs every cell runs its defaults recipe.
bench-quick: $(STAMP) system-packages  ## smoke test of the whole grid (3 epochs, 1 seed, defaults) in .pamlbench/quick; NOT the leaderboard
	@mkdir -p $(QUICK_DIR)
	$(BIN)/pamlbench bench $(BENCH_ARGS) --set epochs=3 --set apl_warmup=1 --seeds 0 --recipe defaults \
		--no-tracking --results $(QUICK_DIR)/results --out $(QUICK_DIR)/leaderboard-quick.md
	@echo "bench-quick: a smoke test only (3 epochs, seed 0): $(QUICK_DIR)/leaderboard-quick.md is not the benchmark"

prepare: $(STAMP)  ## prepare a real dataset: make prepare DATASET=voc RAW=... OUT=... [IMAGE_CACHE=1]
	@test -n "$(DATASET)" -a -n "$(RAW)" -a -n "$(OUT)" || { echo "usage: make prepare DATASET=voc RAW=DIR OUT=DIR"; exit 2; }
	$(BIN)/pamlbench data prepare $(DATASET) --raw $(RAW) --out $(OUT) $(if $(IMAGE_CACHE),--image-cache)

tune: $(STAMP) system-packages  ## tune every variant of benchmark.toml with its [tuning] budget; bench then uses the results
	$(BIN)/pamlbench tune $(BENCH_ARGS)

ui: $(STAMP)  ## browse the MLflow runs on http://127.0.0.1:$(UI_PORT)
	$(BIN)/mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/.pamlbench/mlflow.db}" \
		--host 127.0.0.1 --port $(UI_PORT)

perf: $(STAMP)  ## throughput and wall-time figures (a benchmark, not a test; PERF_ARGS=--quick for a short run)
	$(BIN)/python benchmarks/perf.py $(PERF_ARGS)

report: $(STAMP)  ## regenerate leaderboard.md from results/
	$(BIN)/pamlbench report

test: $(STAMP) system-packages  ## run the test suite
	$(BIN)/python -m pytest

mutation: $(STAMP)  ## mutation testing of the modules in pyproject.toml's [tool.mutmut] (slow; resumable; not in make test)
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children 2  # one OpenMP thread: mutmut forks a child per mutant
	$(BIN)/mutmut results

# Debian packages the tests and the benchmark use: a PostgreSQL server (multi-worker tests) and Fashion-MNIST's IDX
# files (the fashion-mosaic dataset). Installed when missing and possible (root with apt-get).
system-packages:
	@if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] \
		&& command -v apt-get >/dev/null; then \
		echo "installing Debian's dataset-fashion-mnist"; \
		(apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || (apt-get update -qq && \
		 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null)) || \
		echo "could not install dataset-fashion-mnist: fashion-mosaic will be left out"; \
	fi
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian's postgresql for the multi-worker tests"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
		else echo "PostgreSQL server not found and cannot be installed here: its tests will be skipped"; fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check bench methods datasets tests

clean-cache:  ## delete built datasets and checkpoints (results/ is kept)
	rm -rf .pamlbench
