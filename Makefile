# Two entry points for a fresh machine: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast install lint typecheck policy-test clean

DEMO_STAMP := $(VENV)/.installed-demo
SOURCES := $(shell find guardrail policies -type f \( -name '*.py' -o -name '*.yaml' \) 2>/dev/null)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip

# Development and tests: an editable install with the test tools.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The demo needs only the proxy: a plain install of the package (no test tools, and none of the
# build backend's editable-install notices), unless the development install is already there.
$(DEMO_STAMP): pyproject.toml $(SOURCES) | $(BIN)/python
	@if [ -f $(STAMP) ]; then touch $@; else \
	  $(BIN)/python -m pip install --quiet --disable-pip-version-check . && rm -rf build && touch $@; fi

## Run the proxy on 127.0.0.1:8787 in front of the built-in demo upstream, with the default policies.
demo: $(DEMO_STAMP)
	$(BIN)/guardrail serve --demo

## Install everything and run the whole test suite (what CI runs).
test: $(STAMP)
	$(BIN)/guardrail test policies
	$(BIN)/python -m pytest -q

## The fast tier (under a minute): everything but the tests marked slow or subprocess.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not subprocess"

typecheck: $(STAMP)
	$(BIN)/mypy

policy-test: $(STAMP)
	$(BIN)/guardrail test policies

clean:
	rm -rf $(VENV) build *.egg-info

## Benchmarks (bench/README.md): direct vs through guardrail side by side, then the engine alone.
## Needs wrk (apt-get install -y wrk). QUICK=1 for a ~1 minute run; BENCH_ARGS for bench.run flags.
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m bench.run $(if $(QUICK),--quick) $(BENCH_ARGS)
	$(BIN)/python -m bench.engine_bench $(if $(QUICK),--quick)

## Detection quality on the evaluation kit's dev data (../shared/eval, not shipped), split into a
## tuning half and a check half scored side by side (bench/eval_split.py). EVAL_ARGS for its flags,
## e.g. EVAL_ARGS="--full" or EVAL_ARGS="--errors reddit.distress_weak" (tuning half only).
.PHONY: eval
eval: $(STAMP)
	$(BIN)/python -m bench.eval_split $(EVAL_ARGS)
