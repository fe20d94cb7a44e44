# fairpool: every target sets up what it needs; nothing is installed by hand.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CACHE ?= $(CURDIR)/.cache
# Tests and benchmarks find the built control plane in the same place.
export FAIRPOOL_CACHE := $(CACHE)
OUT ?= out/demo

.PHONY: demo test unit bench lint venv system-deps clean

# Each real component adds its set-up target to SYSTEM_DEPS in its own fragment.
SYSTEM_DEPS :=
include $(sort $(wildcard mk/*.mk))

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## A simulated month of the built-in demo consortium, ending in its cost report.
demo: $(STAMP) engine
	$(BIN)/fairpool simulate --out $(OUT)

## Every test: unit tests on the pure core, then integration tests on real parts.
test: $(STAMP) engine system-deps
	FAIRPOOL_ENGINE=compiled $(BIN)/python -m pytest -q -p no:cacheprovider

## Unit tests only (no real components), for a quick loop: on both cores (pytest-xdist),
## each property test drawing 25 % of its random cases (tests/examples.py; `make test`
## draws them all).
UNIT_EXAMPLES ?= 0.25
unit: $(STAMP) engine
	FAIRPOOL_ENGINE=compiled FAIRPOOL_EXAMPLES=$(UNIT_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider -n 2 tests/unit

bench: $(STAMP) engine system-deps
	FAIRPOOL_ENGINE=compiled $(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## Real components the integration tests run (installed from Debian's packages / built from Go modules).
system-deps: $(SYSTEM_DEPS)

clean:
	rm -rf $(VENV) $(CACHE) out scheduler/engine/*.so scheduler/engine/compiled.json \
	  scheduler/sim/*.so
