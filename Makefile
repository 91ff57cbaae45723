# fraudflow: two commands on a fresh machine -- `make demo`, then `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat constraints.txt pyproject.toml | sha1sum | cut -c1-12)
export FRAUDFLOW_HOME ?= $(CURDIR)/.fraudflow
TEST_WORKERS ?= 2  # pytest-xdist workers; each test module stays whole on one (tests/conftest.py)

.PHONY: install demo test up down lint airflow mlflow evidently serve bench lock clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "== installing the pinned environment into $(VENV) (first time: ~4 min, ~3.5 GB)"
	$(BIN)/python -m pip install --quiet --upgrade "pip==26.3"
	$(BIN)/python -m pip install --progress-bar on -c constraints.txt -e '.[dev,production,spark]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: install ## the whole closed loop on embedded defaults (starts from a clean $(FRAUDFLOW_HOME))
	$(BIN)/fraudflow demo --fresh

test: install ## lint + the whole suite against real Airflow/GX/Feast/MLflow/BentoML/Evidently
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(TEST_WORKERS)

up: install ## fraudflow live on today's clock: last 60 days landed, Airflow scheduler + UI, traffic feeder (fresh home)
	$(BIN)/fraudflow up

down: ## stop what `make up` started (Airflow, feeder, scoring service)
	@test -x $(BIN)/fraudflow && $(BIN)/fraudflow down || echo "nothing to stop (no environment yet)"

lint: install
	$(BIN)/ruff check .

airflow: install ## Airflow UI (http://localhost:8080) on the same home as `make demo`
	$(BIN)/fraudflow airflow standalone

mlflow: install ## MLflow UI (http://127.0.0.1:5000) on the home's runs and registry (model cards as descriptions)
	$(BIN)/fraudflow mlflow-ui

evidently: install ## Evidently UI (http://127.0.0.1:8000): every monitoring run, drift over the monitored days
	$(BIN)/fraudflow evidently-ui

serve: install ## the scoring API (bentoml serve) on http://127.0.0.1:3000, champion from the demo
	$(BIN)/fraudflow serve --port 3000

bench: install ## every benchmark in benchmarks/, each prints a table (serving needs hey + wrk)
	@command -v hey >/dev/null && command -v wrk >/dev/null || { echo "benchmarks/serving.py needs the load generators: sudo apt-get install -y hey wrk"; exit 1; }
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lock: ## re-resolve the environment from pyproject.toml and rewrite constraints.txt
	rm -rf /tmp/fraudflow-lock && $(PYTHON) -m venv /tmp/fraudflow-lock
	/tmp/fraudflow-lock/bin/pip install --quiet --upgrade "pip==26.3" && /tmp/fraudflow-lock/bin/pip install --quiet '.[dev,production,spark]'
	/tmp/fraudflow-lock/bin/pip freeze --exclude fraudflow > constraints.txt

clean: ## remove run state (the fraudflow home), keep the environment
	rm -rf $(FRAUDFLOW_HOME)
