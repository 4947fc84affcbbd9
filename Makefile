# One entry point, the same locally and in CI. Each target makes its own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint unit run check-config bench fidelity clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## demo: the daemon with a car that breaks and mends parts; uses the broker at 127.0.0.1:1883,
## or starts an embedded one
demo: $(BIN)/.installed
	$(BIN)/carlightd demo

## test: lint, type-check and run the whole test suite
test: lint unit

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(BIN)/.installed
	$(BIN)/pytest

## bench: the benchmarks (about 5 minutes; needs the broker at 127.0.0.1:1883); bench/results.json
bench: $(BIN)/.installed
	$(BIN)/python -m bench.run

## fidelity: the pure core over randomized long drives and every single and a seeded set of double
## failures, checked against bench/fidelity_spec.py (no broker; a few minutes); bench/fidelity.json
fidelity: $(BIN)/.installed
	$(BIN)/python -m bench.fidelity

## run: the daemon in the foreground with the default car
run: $(BIN)/.installed
	$(BIN)/carlightd run

check-config: $(BIN)/.installed
	$(BIN)/carlightd check-config

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
