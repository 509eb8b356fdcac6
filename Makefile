# SecureChat developer tasks. Run `make` (or `make help`) to list them.
#
# Every target that needs the project installed depends on the stamp file
# .venv/.installed, which is rebuilt whenever pyproject.toml changes.

PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
ARGS        ?=
PYTEST_ARGS ?=
# pytest-xdist processes for test/check (a number, or auto: one per CPU). Tests are handed
# out one at a time (--dist load): the fuzzers' entry points and the fault scenarios are
# each long, and spreading them is what keeps the slowest process short.
WORKERS     ?= auto
XDIST       := -n $(WORKERS) --dist load

.DEFAULT_GOAL := help

.PHONY: help install demo serve migrate test check lint fmt clean bench

help: ## Show this help
	@echo "SecureChat make targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  %-10s %s\n", $$1, $$2}'
	@echo ""
	@echo "Variables: PYTHON=$(PYTHON)  ARGS='...' (demo/serve/migrate)  PYTEST_ARGS='...' (test)"
	@echo "           WORKERS=$(WORKERS) (test/check: pytest-xdist processes; 0 runs in one process)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo ">> creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo ">> installing project into $(VENV) (editable, with [test] extra)"
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

install: $(STAMP) ## Create .venv and install the project (editable, with test extras)

demo: $(STAMP) ## Run the demo (pass extra options with ARGS=...)
	$(BIN)/securechat demo $(ARGS)

serve: $(STAMP) ## Run the server (pass extra options with ARGS=...)
	$(BIN)/securechat serve $(ARGS)

migrate: $(STAMP) ## Apply database migrations (pass extra options with ARGS=...)
	$(BIN)/securechat migrate $(ARGS)

test: $(STAMP) ## Lint, then run the test suite (pass options with PYTEST_ARGS=...)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

check: $(STAMP) ## The inner loop: lint, then every test except the fault, load and browser suites
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(XDIST) -m "not browser" --ignore=tests/faults --ignore=tests/loadtest \
		$(PYTEST_ARGS)

bench: $(STAMP) ## Run the load benchmark, print the table, write loadtest/results/ (ARGS='--quick' ...)
	$(BIN)/python -m loadtest.bench $(ARGS)

lint: $(STAMP) ## Lint with ruff
	$(BIN)/ruff check .

fmt: $(STAMP) ## Apply ruff's automatic lint fixes
	$(BIN)/ruff check --fix .

clean: ## Remove .venv, data/, build output and caches
	rm -rf $(VENV) data build dist *.egg-info .pytest_cache .ruff_cache .hypothesis .pytest-faults
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
