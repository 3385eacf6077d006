# The README's two commands: `make run` (dashboard) and `make test` (lint + whole suite, the gate
# CI runs). `make test-fast` is the inner loop: lint + every test that is neither slow nor e2e.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PORT ?= 8501

.PHONY: run test test-fast lint format browser bench clean-venv

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.runtime-installed: requirements.txt | $(PY)
	$(PIP) install -q -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements-dev.txt $(VENV)/.runtime-installed
	$(PIP) install -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime-installed
	$(PY) -m streamlit run app.py --server.port=$(PORT) --server.headless=true

browser: $(VENV)/.dev-installed
	PY=$(PY) bash scripts/ensure_browser.sh

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check .

test: $(VENV)/.dev-installed browser
	$(PY) -m ruff check .
	$(PY) -m pytest

test-fast: $(VENV)/.dev-installed
	$(PY) -m ruff check .
	$(PY) -m pytest -m "not slow and not e2e"

format: $(VENV)/.dev-installed
	$(PY) -m ruff format .

clean-venv:
	rm -rf $(VENV)
