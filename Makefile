# Everything installs into the repo's own virtualenv (.venv); nothing is needed beforehand but python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run demo test test-slow fuzz lint typecheck browser bench clean

$(STAMP): gateway/pyproject.toml frameworks/pyproject.toml requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./gateway -e './frameworks[pydantic-ai,agno]' -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

## Run the gateway on http://127.0.0.1:7680 with the embedded SQLite database ./majordomo.db
run: install
	$(BIN)/majordomo serve

## A simulated week of traffic through the real gateway into ./majordomo-demo.db, then serve it
demo: install
	$(BIN)/majordomo demo

lint: install
	$(BIN)/ruff check .

## mypy --strict over both packages (settings: [tool.mypy] in pyproject.toml)
typecheck: install
	$(BIN)/mypy gateway/src/majordomo_gateway frameworks/src/majordomo_frameworks

## Debian's chromium, for the dashboard's browser test (installed when missing and run as root)
browser:
	bash gateway/scripts/ensure-chromium.sh

## The whole default test suite (needs PostgreSQL on 127.0.0.1:5432; see README)
test: install lint typecheck browser
	$(BIN)/pytest -q
	PYDANTIC_AI_1X_VENV=.venv-pai1 bash frameworks/scripts/test-pydantic-ai-1x.sh

## Long fault-injection and load runs
test-slow: install
	$(BIN)/pytest -q -m slow

## The long seeded fuzz run (docs/reliability.md): make fuzz FUZZ_CASES=100000 FUZZ_SEED=7
FUZZ_CASES ?= 100000
FUZZ_SEED ?=
fuzz: install
	$(BIN)/python -m tests.fuzz --cases $(FUZZ_CASES) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED)) $(FUZZ_ARGS)

bench: install
	bash bench/run.sh $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-pai1 .pytest_cache .ruff_cache .mypy_cache
