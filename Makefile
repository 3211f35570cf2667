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
EPOCHS ?= 10
DATA_DIR ?= data/synth
RUN_DIR ?= runs/$(MODEL)
ARTIFACTS ?= artifacts
STAMP := $(VENV)/.installed

.PHONY: run test lint bench results artifacts install clean help events retrain

help:
	@echo "make run    - install, make the synthetic dataset, train + export $(MODEL), serve on $(HOST):$(PORT)"
	@echo "make test   - install [train,dev] and run the whole test suite"
	@echo "make lint   - ruff + mypy (strict on service/)"
	@echo "make bench  - engine and HTTP click-path latency (40k-item model)"
	@echo "make results - regenerate the results block of docs/results.md from reports/*/results.json"
	@echo "make events  - export the running service's event log to $(EVENTS)"
	@echo "make retrain - retrain $(MODEL) on $(EVENTS), install it if it is as good, reload"

# torch first and pinned: it is on disk as a CPU build; an unpinned torch pulls CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[cpu,train,dev]'
	touch $@

install: $(STAMP)

data/synth.csv: | $(STAMP)
	@mkdir -p data
	$(NEXTCLICK) synth --out $@ --seed $(SEED)

$(DATA_DIR)/stats.json: data/synth.csv | $(STAMP)
	$(NEXTCLICK) prepare --format csv --input data/synth.csv --protocol last-session --out $(DATA_DIR)

$(RUN_DIR)/checkpoint.pt: $(DATA_DIR)/stats.json | $(STAMP)
	$(NEXTCLICK) train --model $(MODEL) --data $(DATA_DIR) --out $(RUN_DIR) --epochs $(EPOCHS) --seed $(SEED)

$(RUN_DIR)/metrics.json: $(RUN_DIR)/checkpoint.pt
	$(NEXTCLICK) evaluate --run $(RUN_DIR)

# One bundle per trained run; re-running reuses it (the stamp records the export).
$(RUN_DIR)/.exported: $(RUN_DIR)/metrics.json
	$(NEXTCLICK) export --run $(RUN_DIR) --out $(ARTIFACTS)
	touch $@

artifacts: $(RUN_DIR)/.exported

run: artifacts
	$(NEXTCLICK) serve --artifacts $(ARTIFACTS) --host $(HOST) --port $(PORT)

test: $(STAMP)
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

retrain: $(STAMP)
	$(NEXTCLICK) retrain --events $(EVENTS) --model $(MODEL) --artifacts $(ARTIFACTS) \
		$(if $(BASE),--base $(BASE)) --reload $(URL) $(if $(ADMIN_KEY),--admin-key $(ADMIN_KEY))

clean:
	rm -rf data runs $(ARTIFACTS) var reports/*/runs  # reports/*/results.json etc. are checked in
