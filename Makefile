# The two commands of the README:  `make demo`  and  `make test`.
# Both create or update the project's own virtual environment (.venv) first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck env clean

# The install builds the JupyterLab sidebar (labextension/) too: rebuild when its sources change.
LABEXTENSION := labextension/package.json labextension/yarn.lock labextension/tsconfig.json \
	$(wildcard labextension/src/*.ts labextension/style/*)

# Node.js >= 20 builds the sidebar: the one on PATH, or one scripts/ensure-node puts in .venv/bin.
WITH_NODE := PATH="$(abspath $(BIN)):$$PATH"

$(STAMP): pyproject.toml $(LABEXTENSION)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "error: rds_kernel needs Python >= 3.11; '$(PYTHON)' is" \
	    "$$($(PYTHON) --version 2>&1 || echo missing): run make PYTHON=python3.11 (or newer)" >&2; \
	  exit 1; }
	@test -x $(BIN)/python || echo "first run: setting up .venv and building the sidebar" \
	  "(1-2 minutes)" >&2
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	scripts/ensure-node $(BIN)/python
	$(WITH_NODE) $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

env: $(STAMP)

## make demo: two owner nodes with the bundled synthetic patients, and JupyterLab on the course.
demo: $(STAMP)
	$(BIN)/rds demo

## make test: lint, type-check and the whole test suite (SQLite, PostgreSQL, Chromium, bwrap).
test: $(STAMP) lint typecheck
	scripts/ensure-postgres
	scripts/ensure-chromium
	scripts/ensure-bubblewrap
	$(BIN)/python -m pytest

## make lint: ruff for Python; ESLint (type-aware) and Prettier for the sidebar's TypeScript.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd labextension && $(WITH_NODE) ../$(BIN)/jlpm run lint:check

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
