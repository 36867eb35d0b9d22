# pamlbench front door. On a fresh machine with Python 3.11, `make bench` and `make test` create the virtual
# environment (.venv) and install everything they need first.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pamlbench-installed
# pip on this project's machines lists local wheel folders that lack most packages; hide that noise only.
PIP_NOISE := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: setup bench report test lint clean-cache

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pamlbench and its dependencies into $(VENV) (first time: a few minutes)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 | $(PIP_NOISE)
	@touch $(STAMP)

setup: $(STAMP)  ## create/update the virtual environment

bench: $(STAMP)  ## run the default benchmark (benchmark.toml) and write leaderboard.md
	$(BIN)/pamlbench bench

report: $(STAMP)  ## regenerate leaderboard.md from results/
	$(BIN)/pamlbench report

test: $(STAMP)  ## run the test suite
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check bench methods datasets tests

clean-cache:  ## delete built datasets and checkpoints (results/ is kept)
	rm -rf .pamlbench
