# The two commands of the quick start. Each one sets itself up on a fresh machine.
#   make test   installs the package with its test extras into .venv and runs the suite (slow tests excluded)
#   make demo   installs everything and runs every app end to end on embedded data, writing outputs/demo/

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= all,grib
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
DUALSCI_SHARED_DATA ?= $(abspath ../shared/data)
export DUALSCI_SHARED_DATA
export OMP_NUM_THREADS ?= 2
export MPLBACKEND := Agg
# Elsewhere, point pip at a CPU-only index here, e.g. TORCH_PIP_ARGS="--index-url <your CPU wheel index>".
TORCH_PIP_ARGS ?=

.PHONY: test test-slow demo bench install clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first: the local CPU build when no GPU is visible, so the range in pyproject.toml is
# already satisfied and pip never resolves the multi-gigabyte CUDA wheels.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q --upgrade pip setuptools wheel
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "GPU visible: installing the default torch build"; $(PIP) install -q "torch==2.13.0"; \
	else \
	  echo "no GPU visible: installing the CPU build torch==2.13.0"; \
	  $(PIP) install -q "torch==2.13.0" $(TORCH_PIP_ARGS); \
	fi
	$(PIP) install -q -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*; touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider --timeout=600 --durations=15 $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow --timeout=3600 $(PYTEST_ARGS)

APPS := weather echo medseg robotics

# Every part runs even if an earlier one failed; each leaves outputs/demo/<part>/status.json
# (ok/failed, seconds) for the index page, and the target fails if any part failed.
demo: $(STAMP)
	@mkdir -p outputs/demo; fail=0; \
	for part in core $(APPS); do \
	  if [ $$part = core ]; then cmd="$(PY) -m dualsci.demo --out outputs/demo"; \
	  else cmd="$(PY) -m apps.$$part.demo --out outputs/demo/$$part"; fi; \
	  echo "== demo: $$part ($$cmd)"; start=$$(date +%s); \
	  if $$cmd; then st=ok; else st=failed; fail=1; fi; \
	  mkdir -p outputs/demo/$$part; \
	  printf '{"status": "%s", "seconds": %s}\n' $$st $$(( $$(date +%s) - start )) > outputs/demo/$$part/status.json; \
	done; \
	$(PY) -m dualsci.demo --out outputs/demo --index-only; \
	echo "demo report: outputs/demo/index.html"; exit $$fail

# diffusers is only a benchmark baseline, so it is installed here and not for the tests.
bench: $(STAMP)
	$(PIP) install -q -e ".[bench]"
	$(PY) benchmarks/core.py --quick --out outputs/bench/core.json

clean:
	rm -rf $(VENV) outputs .pytest_cache
