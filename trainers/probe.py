"""The policy's entropy on a fixed set of prompts, measured the same way at every training step.

The entropy of a step's own rollouts mixes two things: how the policy changed, and which tasks
that step happened to draw. A fixed probe set removes the second, so a curve of probe entropy
over steps shows the policy's entropy drift alone (what EPO's smoothing is meant to steady).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from agentgym.errors import AgentGymError
from agentgym.store import read_trajectories
from agentgym.trainers.batches import TurnSample, micro_batches, turn_samples
from agentgym.trainers.policy_model import TrainableModel, score_policy_tokens


def load_probe(path: str | Path, trainable: TrainableModel, turns: int, max_length: int) -> list[TurnSample]:
    """The first `turns` turns of a trajectories file as scoring sequences (text-only turns are tokenised)."""
    source = Path(path)
    if not source.is_file():
        raise AgentGymError(f"entropy probe {str(source)!r} is not a file; give a trajectories JSONL (e.g. an eval's trajectories.jsonl)")
    samples, _ = turn_samples(
        read_trajectories(source), max_length=max_length,
        tokenizer=trainable.tokenizer, eos_token_id=trainable.tokenizer.eos_token_id,
    )
    if not samples:
        raise AgentGymError(f"entropy probe {str(source)!r} holds no usable turns")
    return samples[:turns]


def probe_entropy(trainable: TrainableModel, samples: Sequence[TurnSample], token_budget: int, precision: str) -> float:
    """Mean entropy (nats) of the policy's next-token distribution over every completion token of the probe."""
    total, count = 0.0, 0
    was_training = trainable.model.training
    trainable.model.eval()
    try:
        with torch.no_grad():
            for mb in micro_batches(samples, token_budget, trainable.pad_token_id):
                _, entropy = score_policy_tokens(trainable.model, mb, precision=precision)
                assert entropy is not None
                total += float((entropy * mb.loss_mask).sum())
                count += int(mb.loss_mask.sum())
    finally:
        trainable.model.train(was_training)
    return total / count
