# The two commands a newcomer needs: `make run` and `make test`. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The npm clients the tests drive (package.json: eventsource, openai, axe-core), installed
# exactly as package-lock.json pins them, again whenever the lock changes.
NODE_STAMP := node_modules/.installed
PORT ?= 8000
WORKERS ?= 2
HOST ?= 127.0.0.1
# daphne (the default, as runserver) or uvicorn (faster: docs/performance.md). SERVER= still works.
WEB_SERVER ?= $(or $(SERVER),daphne)

.PHONY: run test lint audit serve bench bench-sse bench-tasks bench-reactions bench-room-assistant bench-idle soak system-deps migrate clean

# The venv's installers are upgraded too: a new venv gets the pip and setuptools bundled with
# Python, which have published advisories (docs/security.md, second review, finding 10).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## make run: the whole server in one process on SQLite and the in-process channel layer.
run: $(STAMP)
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py migrate --verbosity 0
	@echo
	@echo "  Open http://$(HOST):$(PORT)/ and sign up at http://$(HOST):$(PORT)/accounts/signup/"
	@echo "  Admin: DJANGO_DEBUG=1 $(BIN)/python manage.py createsuperuser, then http://$(HOST):$(PORT)/admin/"
	@echo "  A token for scripts: DJANGO_DEBUG=1 $(BIN)/python manage.py mint_token alice --create"
	@echo
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py runserver $(HOST):$(PORT)

## make test: install what the tests need (redis-server with apt when missing, the npm clients of package.json), lint (ruff, mypy, import-linter), run every test.
test: $(STAMP) system-deps $(NODE_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	$(BIN)/pytest --durations=30

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy . && $(BIN)/lint-imports

system-deps:
	@bash deploy/install-system-deps.sh

# After system-deps, which installs Node's npm when it is missing.
$(NODE_STAMP): package-lock.json | system-deps
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

## make audit: pip-audit on the runtime dependencies and the installers (not part of make test:
## it needs the advisory service). Exit 1: known vulnerabilities; 3: the service could not be reached.
audit: $(STAMP)
	$(BIN)/pip install --quiet -e '.[audit]'
	$(BIN)/python deploy/audit.py $(AUDIT_ARGS)

## make serve WORKERS=N PORT=P [WEB_SERVER=uvicorn]: N workers on one port, no sticky sessions, plus the task worker (needs REDIS_URL;
## without DJANGO_SECRET_KEY, a random key for the run).
serve: $(STAMP)
	@test -n "$$REDIS_URL$$REDIS_URLS$$REDIS_SENTINELS$$REDIS_CLUSTER_URL" || { echo "make serve needs REDIS_URL (or REDIS_URLS, REDIS_SENTINELS or REDIS_CLUSTER_URL): several workers share nothing else"; exit 2; }
	$(BIN)/python deploy/serve.py --migrate --workers $(WORKERS) --port $(PORT) --host $(HOST) --server $(WEB_SERVER)

## make bench: the fan-out benchmark (short default; see bench/README.md).
bench: $(STAMP) system-deps
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/fanout.py $(BENCH_ARGS)

## make bench-sse: the SSE token-stream benchmark, ours and a bare Django view (see bench/README.md).
bench-sse: $(STAMP) system-deps
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/sse.py $(BENCH_ARGS)

## make bench-tasks: the task event-stream benchmark, 200 countdown tasks over SSE (see bench/README.md).
bench-tasks: $(STAMP) system-deps
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/tasks.py $(BENCH_ARGS)

## make bench-reactions: reacts at 100/s in one room of 200 members on 2 workers, 20 s (see bench/README.md).
bench-reactions: $(STAMP) system-deps
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/reactions.py $(BENCH_ARGS)

## make bench-room-assistant: one streaming reply at 50 tokens/s to a room of 200 members on 2 workers, 3 times (see bench/README.md).
bench-room-assistant: $(STAMP) system-deps
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/room_assistant.py $(BENCH_ARGS)

## make bench-idle: memory per idle room socket on one daphne worker, RSS and tracemalloc by owner, beside an app that only accepts (see bench/README.md).
bench-idle: $(STAMP) system-deps
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/idle_memory.py $(BENCH_ARGS)

## make soak: 2 workers, 2,000 clients in 50 rooms, churn, SSE streams and tasks (SOAK_ARGS="--duration 300"; see bench/README.md).
soak: $(STAMP) system-deps
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) node_modules staticfiles .mypy_cache .ruff_cache
