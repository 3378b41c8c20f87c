#!/usr/bin/env python
"""Sizes `make demo` to this machine: prints shell assignments for scripts/demo.sh.

The demo's cost is mostly training compute (SFT, then the GRPO updates), and that differs
more than tenfold between machines of this project's kind: native bfloat16 on an AVX-512 EPYC
against float32 on an AVX2-only one. So the size is chosen from a measured matmul in the
precision training will use, not from the machine this was written on. The largest size
whose estimate fits the budget wins; DEMO_SIZE=full|small overrides the choice.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from agentgym.hardware import matmul_tflops, resolve_placement

BUDGET_MINUTES = 13.0  # of the 15 the demo promises: the estimate is rough
# Setup when already done, vLLM's start (1.7 min on AVX-512, 2.5 on AVX2), the rollouts and
# the held-out evaluation on vLLM: what does not scale with training compute.
FIXED_MINUTES = 6.0
# SmolLM2-135M SFT ran at 234 tokens/s where a 512x2048 @ 2048x2048 matmul ran at 0.117
# TFLOP/s (bf16, 2-core AVX-512 EPYC): training tokens/s per matmul TFLOP/s.
TOKENS_PER_S_PER_TFLOPS = 2000.0


@dataclass(frozen=True)
class DemoSize:
    """One size of the demo: what each stage plays or trains on, and its training tokens."""

    name: str
    walkthrough_games: int  # SFT data: one walkthrough episode per game
    sft_epochs: int
    sft_batch: int
    train_steps: int
    tasks_per_step: int  # x 4 rollouts each
    eval_episodes: int
    train_tokens: int  # tokens through forward+backward, SFT and updates together (measured on the full size)

    def minutes(self, tokens_per_s: float) -> float:
        """Estimated wall time of the demo at this training speed."""
        return FIXED_MINUTES + self.train_tokens / tokens_per_s / 60


SIZES = (
    DemoSize("full", 40, 2, 16, 2, 4, 40, 88_000),
    # Half the SFT data once over in smaller batches (5 steps, enough to learn the action format),
    # one GRPO step on 8 rollouts, a smaller held-out evaluation.
    DemoSize("small", 20, 1, 8, 1, 2, 16, 23_000),
)


def choose(tokens_per_s: float, forced: str | None) -> DemoSize:
    """The size DEMO_SIZE names, else the largest that fits BUDGET_MINUTES, else the smallest."""
    by_name = {s.name: s for s in SIZES}
    if forced:
        if forced not in by_name:
            raise SystemExit(f"DEMO_SIZE must be one of {', '.join(by_name)}, got {forced!r}")
        return by_name[forced]
    return next((s for s in SIZES if s.minutes(tokens_per_s) <= BUDGET_MINUTES), SIZES[-1])


def main() -> None:
    placement = resolve_placement("auto", "auto")
    tflops = matmul_tflops(placement)
    rate = tflops * TOKENS_PER_S_PER_TFLOPS
    size = choose(rate, os.environ.get("DEMO_SIZE") or None)
    estimates = ", ".join(f"{s.name} about {s.minutes(rate):.0f} min" for s in SIZES)
    print(f"demo: size {size.name} ({placement.precision} matmul {tflops:.3f} TFLOP/s, so about {rate:.0f} training "
          f"tokens/s: {estimates}; DEMO_SIZE=full|small to choose)", file=sys.stderr)
    for key, value in (("DEMO_SIZE", size.name), ("WALKTHROUGH_GAMES", size.walkthrough_games),
                       ("SFT_EPOCHS", size.sft_epochs), ("SFT_BATCH", size.sft_batch), ("TRAIN_STEPS", size.train_steps),
                       ("TASKS_PER_STEP", size.tasks_per_step), ("EVAL_EPISODES", size.eval_episodes)):
        print(f"{key}={value}")


if __name__ == "__main__":
    main()
