# Switchyard — every command a newcomer needs. `make help` lists them.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/.venv
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
PYTEST := $(UV) run --frozen pytest

.PHONY: help install run test unit integration e2e lint contracts bench up down dlq clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --user --quiet uv

.venv/.installed: uv.lock pyproject.toml $(wildcard shared/pyproject.toml services/*/pyproject.toml) | $(UV)
	$(UV) sync --frozen --all-packages
	@touch $@

install: .venv/.installed ## install every dependency from the lock file (idempotent)

run: install ## run the whole suite locally (embedded store, mail sink, every service)
	$(UV) run --frozen python scripts/run.py

# The suite mostly waits (timeouts, retries, the broker), so it runs in 3 worker processes;
# a test file stays in one worker (its module fixtures are shared), and every worker's
# session has its own store, exchange, queue prefix and ports, as separate runs do.
test: install ## the whole test suite: unit, integration (real RabbitMQ, embedded store, SMTP) and e2e
	$(PYTEST) -n 3 --dist loadfile shared services tests-e2e

unit: install ## fast tests with fakes only
	$(PYTEST) -m "not integration and not e2e" shared services

integration: install ## tests on the real broker, store and SMTP server
	$(PYTEST) -m integration shared services

e2e: install ## journeys through the gateway against the running suite
	$(PYTEST) tests-e2e

# Every service package (services/<name>/src/<name>_svc), found on disk: a new service is
# type-checked the day it lands.
SERVICE_PACKAGES := $(notdir $(wildcard services/*/src/*_svc))
SPACE := $(subst ,, )
MYPY_PATH := $(subst $(SPACE),:,shared/src $(wildcard services/*/src))

lint: install ## ruff on everything, mypy (strict) on shared/ and every service
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check shared services tests-e2e scripts
	MYPYPATH=$(MYPY_PATH) $(UV) run --frozen mypy -p switchyard $(addprefix -p ,$(SERVICE_PACKAGES))

contracts: install ## regenerate contracts/ from the code
	$(UV) run --frozen switchyard-contracts export

bench: install ## benchmarks, printed as tables beside their baselines
	$(UV) run --frozen python -m benchmarks

dlq: install ## the DLQ tool: make dlq ARGS="list"
	$(UV) run --frozen switchyard-dlq $(ARGS)

up: install ## docker compose: real MongoDB, RabbitMQ, Mailpit, Prometheus, Grafana, Jaeger, services
	$(UV) run --frozen python -m switchyard.devtools.run compose-secrets
	docker compose up --build -d

down: ## stop the compose stack
	docker compose down

clean: ## remove the venv and local state
	rm -rf .venv .var
