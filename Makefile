# nextclick — the README's commands. `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NEXTCLICK := $(VENV)/bin/nextclick
HOST ?= 127.0.0.1
PORT ?= 8000
MODEL ?= hrnn-init
SEED ?= 7
# Training stops PATIENCE epochs after the best validation epoch (HRNN-Init on the synthetic
# data peaks at epoch 3 of 10: docs/operations.md#make-run-time); EPOCHS, when set, caps it
# (default: the model's paper setting, 10 for HRNN).
PATIENCE ?= 2
EPOCHS ?=
DATA_DIR ?= data/synth
RUN_DIR ?= runs/$(MODEL)
# A second model for the demo page's side-by-side panes: Item-KNN, session-only and fitted
# by counting in seconds (no epochs). COMPARE= (empty) serves MODEL alone.
COMPARE ?= iknn
COMPARE_DIR ?= runs/$(COMPARE)
ifeq ($(MODEL),$(COMPARE))  # e.g. `make retrain MODEL=iknn`: one model, one set of rules
COMPARE :=
endif
ARTIFACTS ?= artifacts
STAMP := $(VENV)/.installed           # [cpu,train,dev]: tests and lint
RUN_STAMP := $(VENV)/.installed-run   # [cpu,train]: enough for `make run`
# What `make run` needs: a full install serves too (the trainer image installs [cpu,train]).
STAMP_RUN = $(if $(wildcard $(STAMP)),$(STAMP),$(RUN_STAMP))

.PHONY: run test lint bench results artifacts install clean help events retrain

help:
	@echo "make run    - install, make the synthetic dataset, train + export $(MODEL) (and $(COMPARE)), serve on $(HOST):$(PORT)"
	@echo "make test   - install [train,dev] (and Chromium) and run the whole test suite"
	@echo "make lint   - ruff + mypy (strict on service/)"
	@echo "make bench  - engine and HTTP click-path latency (40k-item model)"
	@echo "make results - regenerate the results block of docs/results.md from reports/*/results.json"
	@echo "make events  - export the running service's event log to $(EVENTS)"
	@echo "make retrain - retrain $(MODEL) on $(EVENTS), install it if it is as good, reload"

# torch first and pinned: it is on disk as a CPU build; an unpinned torch pulls CUDA wheels.
# `make run` needs the trainer ([train]); tests and lint add [dev] on top. --no-compile:
# byte-compiling torch's files took 29-79 s of the install on a busy 2-core machine, against
# 10-11 s without; Python compiles what it imports on first use instead (about 3 s).
$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile torch==2.13.0
	$(PY) -m pip install -q --no-compile -e '.[cpu,train]'
	touch $@

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile torch==2.13.0
	$(PY) -m pip install -q --no-compile -e '.[cpu,train,dev]'
	touch $@

install: $(STAMP)

data/synth.csv: | $(STAMP_RUN)
	@mkdir -p data
	$(NEXTCLICK) synth --out $@ --seed $(SEED)

$(DATA_DIR)/stats.json: data/synth.csv | $(STAMP_RUN)
	$(NEXTCLICK) prepare --format csv --input data/synth.csv --protocol last-session --out $(DATA_DIR)

$(RUN_DIR)/checkpoint.pt: $(DATA_DIR)/stats.json | $(STAMP_RUN)
	$(NEXTCLICK) train --model $(MODEL) --data $(DATA_DIR) --out $(RUN_DIR) --seed $(SEED) \
	    --patience $(PATIENCE) $(if $(EPOCHS),--epochs $(EPOCHS))

$(RUN_DIR)/metrics.json: $(RUN_DIR)/checkpoint.pt
	$(NEXTCLICK) evaluate --run $(RUN_DIR)

# One bundle per trained run; re-running reuses it (the stamp records the export).
$(RUN_DIR)/.exported: $(RUN_DIR)/metrics.json
	$(NEXTCLICK) export --run $(RUN_DIR) --out $(ARTIFACTS)
	touch $@

$(COMPARE_DIR)/metrics.json: $(DATA_DIR)/stats.json | $(STAMP_RUN)
	$(NEXTCLICK) train --model $(COMPARE) --data $(DATA_DIR) --out $(COMPARE_DIR) --seed $(SEED) --quiet
	$(NEXTCLICK) evaluate --run $(COMPARE_DIR) --no-plots

$(COMPARE_DIR)/.exported: $(COMPARE_DIR)/metrics.json
	$(NEXTCLICK) export --run $(COMPARE_DIR) --out $(ARTIFACTS)
	touch $@

artifacts: $(RUN_DIR)/.exported $(if $(COMPARE),$(COMPARE_DIR)/.exported)

run: artifacts
	$(NEXTCLICK) serve --artifacts $(ARTIFACTS) --host $(HOST) --port $(PORT)

# The browser tests drive Debian's Chromium (never a Playwright browser download): installed
# here when missing and this is a root shell with apt-get; otherwise say how, and those
# tests fail with the same advice.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "make test: $(CHROMIUM) is missing; install it (apt-get install -y chromium)"; fi

test: $(STAMP) | $(CHROMIUM)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy service

bench: $(STAMP)
	$(NEXTCLICK) bench

results: $(STAMP)
	$(NEXTCLICK) readme-results

# The closed loop (docs/loop.md): export what the running service logged, retrain on it,
# install the candidate only if it is at least as good as the served version, reload.
EVENTS ?= data/events
URL ?= http://$(HOST):$(PORT)
events: $(STAMP)
	$(NEXTCLICK) events export --out $(EVENTS)

# RETRAIN_FLAGS: more `nextclick retrain` options, e.g. --protocol last-session.
RETRAIN_FLAGS ?=
retrain: $(STAMP)
	$(NEXTCLICK) retrain --events $(EVENTS) --model $(MODEL) --artifacts $(ARTIFACTS) \
		$(if $(BASE),--base $(BASE)) --reload $(URL) $(if $(ADMIN_KEY),--admin-key $(ADMIN_KEY)) \
		$(RETRAIN_FLAGS)

clean:
	rm -rf data runs $(ARTIFACTS) var reports/*/runs  # reports/*/results.json etc. are checked in
