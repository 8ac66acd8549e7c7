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

$(STAMP): pyproject.toml $(LABEXTENSION)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
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

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
