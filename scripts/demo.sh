#!/usr/bin/env bash
# The main job on embedded defaults, sized to this machine (scripts/demo_plan.py): SmolLM2-135M-Instruct
# learns easy TextWorld games (SFT on walkthroughs, then GRPO with vLLM rollouts), is evaluated on
# held-out games, and plotted.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-runs/demo}
VENV=${VENV:-.venv}
AG="$VENV/bin/agentgym"
eval "$("$VENV/bin/python" scripts/demo_plan.py)"
rm -rf "$OUT"
"$AG" eval --env textworld --policy walkthrough --episodes "$WALKTHROUGH_GAMES" --env-opt num_games="$WALKTHROUGH_GAMES" \
  --quiet --out "$OUT/walkthrough"
"$AG" sft --data "$OUT/walkthrough/trajectories.jsonl" --epochs "$SFT_EPOCHS" --out "$OUT/sft" batch_size="$SFT_BATCH"
"$AG" train --config configs/train-textworld.yaml --model "$OUT/sft/model" --steps "$TRAIN_STEPS" --out "$OUT/train" \
  tasks_per_step="$TASKS_PER_STEP" eval_episodes="$EVAL_EPISODES"
"$AG" plot "$OUT/train"
cat "$OUT/train/eval/step-$(printf %06d "$TRAIN_STEPS")/summary.md"
