# Two commands on a fresh machine: `make demo` (set up + run the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
AGENTGYM := $(VENV)/bin/agentgym
DEMO_OUT ?= runs/demo

.PHONY: setup demo test test-fast clean-runs

setup:
	bash scripts/setup.sh

# The main job on embedded defaults: SmolLM2-135M-Instruct learns easy TextWorld games (SFT on the
# games' walkthroughs, then GRPO with vLLM rollouts), is evaluated on held-out games, and plotted.
# Its size is chosen from a measured matmul (scripts/demo_plan.py), so it fits 15 minutes on an
# AVX2-only CPU as well as on one with native bf16; DEMO_SIZE=full|small overrides.
demo: setup
	DEMO_OUT=$(DEMO_OUT) VENV=$(VENV) bash scripts/demo.sh

# Every test, the slow end-to-end ones included (CI runs exactly this).
test: setup
	$(PY) -m pytest -q -rs

# Everything but the slow end-to-end tests, for a quick loop while developing.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean-runs:
	rm -rf runs
