"""The policy's entropy on a fixed set of prompts, measured the same way at every training step.

The entropy of a step's own rollouts mixes two things: how the policy changed, and which tasks
that step happened to draw. A fixed probe set removes the second, so a curve of probe entropy
over steps shows the policy's entropy drift alone (what EPO's smoothing is meant to steady).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agentgym.errors import AgentGymError
from agentgym.store import read_trajectories
from agentgym.trainers.batches import TurnSample, turn_samples
from agentgym.trainers.policy_model import TrainableModel, mean_token_entropy


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
    was_training = trainable.model.training
    trainable.model.eval()
    try:
        return mean_token_entropy(trainable.model, samples, token_budget, trainable.pad_token_id, precision)
    finally:
        trainable.model.train(was_training)
