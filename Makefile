# ccpdml: every target creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EXP    ?= digits_ccp_contrastive
RUNS   ?= runs
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install test lint format train report bench clean

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -e ".[cpu,dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check ccpdml data_pipelines tests bench
	$(VENV)/bin/ruff format --check ccpdml data_pipelines tests bench

format: install
	$(VENV)/bin/ruff check --fix ccpdml data_pipelines tests bench
	$(VENV)/bin/ruff format ccpdml data_pipelines tests bench

train: install
	$(PY) -m ccpdml train --config experiments/$(EXP).yaml --workdir $(RUNS)/$(EXP)

report: install
	$(PY) -m ccpdml report $(RUNS)

bench: install
	$(PY) -m pip install -q faiss-cpu || echo "faiss-cpu unavailable: the faiss comparison is skipped"
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
