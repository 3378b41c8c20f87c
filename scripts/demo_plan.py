#!/usr/bin/env python
"""Sizes `make demo` to this machine: prints shell assignments for scripts/demo.sh.

The demo's cost is mostly training compute (SFT, then the GRPO updates), and that differs
more than tenfold between machines of this project's kind: native bfloat16 on an AVX-512 EPYC
against float32 on an AVX2-only one. So the size is chosen from a measured matmul in the
precision training will use, not from the machine this was written on. The largest size
whose estimate fits the budget wins; DEMO_SIZE=full|small|tiny overrides the choice.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from agentgym.hardware import matmul_tflops, resolve_placement

BUDGET_MINUTES = 13.0  # of the 15 the demo promises: the estimate is rough
# Training tokens/s per TFLOP/s of a 512x2048 @ 2048x2048 matmul, from SmolLM2-135M's SFT and
# GRPO updates on a 2-core AVX-512 EPYC (bf16 and float32 alike, within the noise of a shared machine).
TOKENS_PER_S_PER_TFLOPS = 1500.0


@dataclass(frozen=True)
class DemoSize:
    """One size of the demo: what each stage plays or trains on, and what it costs."""

    name: str
    walkthrough_games: int  # SFT data: one walkthrough episode per game
    sft_epochs: int
    sft_batch: int
    train_steps: int
    tasks_per_step: int  # x 4 rollouts each
    eval_episodes: int
    # Measured wall time that does not scale with training compute (setup check, model loads,
    # vLLM's start, rollouts, the held-out evaluation), and the training work in tokens.
    fixed_minutes: float
    train_tokens: int

    def minutes(self, tokens_per_s: float) -> float:
        """Estimated wall time of the demo at this training speed."""
        return self.fixed_minutes + self.train_tokens / tokens_per_s / 60


SIZES = (
    # 12.8 min with native bf16 (AVX-512): SFT 199 s, two updates 151 s.
    DemoSize("full", 40, 2, 16, 2, 4, 40, fixed_minutes=7.0, train_tokens=81_000),
    # 12.6 min in float32 with AVX2 kernels on a loaded AVX-512 machine: SFT 228 s, one update 165 s.
    DemoSize("small", 20, 1, 8, 1, 2, 16, fixed_minutes=6.0, train_tokens=44_000),
    # For the slowest machines: 6 SFT steps on 12 walkthroughs, one GRPO step on one game's 4 rollouts.
    DemoSize("tiny", 12, 1, 4, 1, 1, 12, fixed_minutes=5.5, train_tokens=24_000),
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
          f"tokens/s: {estimates}; DEMO_SIZE=full|small|tiny to choose)", file=sys.stderr)
    for key, value in (("DEMO_SIZE", size.name), ("WALKTHROUGH_GAMES", size.walkthrough_games),
                       ("SFT_EPOCHS", size.sft_epochs), ("SFT_BATCH", size.sft_batch), ("TRAIN_STEPS", size.train_steps),
                       ("TASKS_PER_STEP", size.tasks_per_step), ("EVAL_EPISODES", size.eval_episodes)):
        print(f"{key}={value}")


if __name__ == "__main__":
    main()
