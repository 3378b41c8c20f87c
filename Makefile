# Two commands on a fresh machine: `make demo` (set up + run the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
AGENTGYM := $(VENV)/bin/agentgym
DEMO_OUT ?= runs/demo-eval

.PHONY: setup demo test test-fast clean-runs

setup:
	bash scripts/setup.sh

# The main job on embedded defaults: the in-process SmolLM2-135M-Instruct policy plays a few TextWorld games.
demo: setup
	rm -rf $(DEMO_OUT)
	$(AGENTGYM) eval --config configs/eval-textworld.yaml --episodes 8 --concurrency 4 --out $(DEMO_OUT)

# Every test, the slow end-to-end ones included (CI runs exactly this).
test: setup
	$(PY) -m pytest -q -rs

# Everything but the slow end-to-end tests, for a quick loop while developing.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean-runs:
	rm -rf runs
