# The two set-up commands are `make demo` and `make test`; each installs what it needs.
SHELL := /bin/bash
UV_VERSION := 0.13.8
PYTHON ?= python3
UV := .tools/bin/uv
VENV := .venv
RUN := $(VENV)/bin/python

.PHONY: demo test bench bench-deps lint format docs install system-deps clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

# The venv is rebuilt from the lock file whenever the lock changes.
$(VENV)/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --all-extras --compile-bytecode --quiet
	touch $@

install: $(VENV)/.installed

# Integration tests start their own redis-server and PostgreSQL, the Spark engine's
# tests a local Spark (a JVM), and the report's test a headless Chromium (Debian's, driven
# by playwright; never `playwright install`); install them if missing.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: install
	$(RUN) -m almanac.demo

# The Feast client that tests/serving/test_feast_client.py drives: its own venv, as its
# pins conflict with our lock file; rebuilt when its requirements change.
FEAST_VENV := .tools/feast-venv
$(FEAST_VENV)/.installed: tests/serving/feast-client.txt
	rm -rf $(FEAST_VENV)
	$(PYTHON) -m venv $(FEAST_VENV)
	$(FEAST_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	cp $< $@

test: install system-deps $(FEAST_VENV)/.installed
	$(RUN) -m pytest -n 2 --dist loadgroup -q

# The HTTP benchmark drives the server with wrk (it falls back to a Python load generator).
bench-deps: system-deps
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } || echo "wrk not installed: the HTTP benchmark uses its Python load generator"

bench: install bench-deps
	$(RUN) benchmarks/run.py $(if $(SIZES),--sizes $(SIZES),)

# ruff; the layering of DESIGN.md (import-linter contracts in pyproject.toml); the types.
lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

# Reference docs generated from the code (a test fails when they are stale).
docs: install
	$(VENV)/bin/typer almanac.cli utils docs --name almanac --title "CLI reference" --output docs/cli.md
	$(RUN) -m almanac.serving.openapi_docs > docs/http-api.md

format: install
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) .tools .pytest_cache benchmarks/.data
