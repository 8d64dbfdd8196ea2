PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test run lint bench scenarios clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q

run: $(STAMP)
	-$(BIN)/orsim scenario run scenarios/primary-crash-under-load.yaml \
		--run-dir .orsim/scenarios --report .orsim/primary-crash-report.html
	@echo "report: .orsim/primary-crash-report.html"
	$(BIN)/orsim demo --ports auto

lint: $(STAMP)
	$(BIN)/ruff check orsim tests
	$(BIN)/ruff format --check orsim tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m orsim.bench

scenarios: $(STAMP)
	$(BIN)/orsim scenario run scenarios/*.yaml --junit .orsim/scenarios.xml --report .orsim/scenarios.html

clean:
	rm -rf $(VENV) .orsim .pytest_cache .mypy_cache .hypothesis
