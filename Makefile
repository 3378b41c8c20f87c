# Two commands on a fresh machine: `make demo` (set up + run the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
AGENTGYM := $(VENV)/bin/agentgym
DEMO_OUT ?= runs/demo

.PHONY: setup demo test test-fast clean-runs

setup:
	bash scripts/setup.sh

# The main job on embedded defaults: SmolLM2-135M-Instruct learns easy TextWorld games (SFT on the
# games' walkthroughs, then two GRPO steps with vLLM rollouts), is evaluated on held-out games, and plotted.
demo: setup
	rm -rf $(DEMO_OUT)
	$(AGENTGYM) eval --env textworld --policy walkthrough --episodes 40 --env-opt num_games=40 --quiet --out $(DEMO_OUT)/walkthrough
	$(AGENTGYM) sft --data $(DEMO_OUT)/walkthrough/trajectories.jsonl --out $(DEMO_OUT)/sft
	$(AGENTGYM) train --config configs/train-textworld.yaml --model $(DEMO_OUT)/sft/model --steps 2 --out $(DEMO_OUT)/train
	$(AGENTGYM) plot $(DEMO_OUT)/train
	cat $(DEMO_OUT)/train/eval/step-000002/summary.md

# Every test, the slow end-to-end ones included (CI runs exactly this).
test: setup
	$(PY) -m pytest -q -rs

# Everything but the slow end-to-end tests, for a quick loop while developing.
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean-runs:
	rm -rf runs
