# Quick start: `make demo` (install + index a sample folder + two queries), `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?=

.PHONY: install demo test bench clean

$(BIN)/searchengine: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/searchengine

demo: install
	$(BIN)/python scripts/demo.py

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

bench: install
	$(BIN)/python scripts/bench_index.py
	$(BIN)/python scripts/bench_search.py

clean:
	rm -rf $(VENV) sample demo-library .bench *.egg-info
