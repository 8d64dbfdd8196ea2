PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install bytecode test run lint bench soak scenarios fuzz search ha clean

install: $(STAMP)

# Cached bytecode even where PYTHONDONTWRITEBYTECODE is set: every cluster process
# imports orsim, and compiling it from source costs each of them ~0.3 s.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q orsim

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

test: bytecode
	$(BIN)/pytest -q --durations=15

run: bytecode
	-$(BIN)/orsim scenario run scenarios/primary-crash-under-load.yaml \
		--run-dir .orsim/scenarios --report .orsim/primary-crash-report.html
	@echo "report: .orsim/primary-crash-report.html"
	$(BIN)/orsim demo --ports auto

lint: $(STAMP)
	$(BIN)/ruff check orsim tests
	$(BIN)/ruff format --check orsim tests
	$(BIN)/mypy

bench: bytecode
	$(BIN)/python -m orsim.bench

# Failover runs in a row (SIGKILL, SIGSTOP, switchover in turn), each ok or failed;
# fails if any run lost or duplicated a call, never took over or took over too late.
SOAK_RUNS ?= 200
soak: bytecode
	$(BIN)/python -m orsim.bench --soak $(SOAK_RUNS)

# In-process fuzzing (no sockets) of the wire codec and of each server's dispatch:
# FUZZ_INPUTS per target (1M by default), two targets at once; fails on a crash or hang.
FUZZ_INPUTS ?= 1000000
fuzz: bytecode
	$(BIN)/python -m orsim.fuzz --inputs $(FUZZ_INPUTS) --jobs 2

# Fault-schedule search in simulation over the shipped topologies, two processes:
# SEARCH_SCHEDULES per topology (about 10 minutes on 2 cores by default); fails on a
# violation, which it shrinks and writes under .orsim/search with summary.json.
SEARCH_SCHEDULES ?= 4000
SEARCH_SEED ?= 0
search: bytecode
	$(BIN)/orsim search scenarios/topologies/two-nodes.yaml \
		scenarios/topologies/three-nodes-two-dc.yaml \
		--schedules $(SEARCH_SCHEDULES) --seed $(SEARCH_SEED) --jobs 2 --out .orsim/search

# The stateful HA test (three NodeCores under random faults) explored: HA_EXAMPLES
# examples for each hypothesis seed in HA_SEEDS (~45 s each); make test runs a fixed 300.
HA_EXAMPLES ?= 2000
HA_SEEDS ?= 1 2 3 4 5 6 7 8 9 10
ha: bytecode
	@for seed in $(HA_SEEDS); do echo "== hypothesis seed $$seed, $(HA_EXAMPLES) examples"; \
		HA_EXAMPLES=$(HA_EXAMPLES) $(BIN)/pytest -q -p no:cacheprovider -k TestNodeCores \
			tests/test_node_core_stateful.py --hypothesis-seed=$$seed || exit 1; done

scenarios: bytecode
	$(BIN)/orsim scenario run scenarios/*.yaml --junit .orsim/scenarios.xml --report .orsim/scenarios.html

clean:
	rm -rf $(VENV) .orsim .pytest_cache .mypy_cache .hypothesis
