"""Trajectories → training sequences: the exact sampled token ids, a loss mask over the policy's own tokens.

Each turn becomes one sequence: the prompt the policy saw (masked out: instructions,
observations, earlier turns) followed by the tokens it sampled (trained on). Token ids come
from the rollout, never from re-tokenising text, so the trainer scores exactly what was
sampled; the rollout's logprobs ride along as the "old" policy of importance ratios.

Turns recorded without token ids (a scripted or walkthrough policy, for SFT data) can be
tokenised from their messages with `tokenize_turn`, which appends the EOS a model must
learn to emit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from agentgym.errors import AgentGymError
from agentgym.policies.chat_template import prompt_token_ids
from agentgym.types import Message, Trajectory


@dataclass
class TurnSample:
    """One turn as a training sequence; per-token lists are aligned with `input_ids`."""

    input_ids: list[int]
    loss_mask: list[int]  # 1 where the token was produced by the policy
    old_logprobs: list[float]  # rollout log p of each policy token, 0.0 elsewhere
    advantage: float = 0.0
    trajectory_index: int = 0
    row_weight: float = 0.0  # 1 / (trajectories in batch × policy tokens of this trajectory): EPO's trajectory entropy

    @property
    def num_policy_tokens(self) -> int:
        """How many tokens of this sequence are trained on."""
        return sum(self.loss_mask)


def tokenize_turn(tokenizer: Any, prompt: Sequence[Message], completion: str, eos_token_id: int) -> tuple[list[int], list[int]]:
    """Prompt ids (chat template with the assistant header) and completion ids ending in EOS, for text-only turns."""
    prompt_ids = prompt_token_ids(tokenizer, prompt)
    completion_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"]) + [eos_token_id]
    return prompt_ids, completion_ids


def turn_samples(
    trajectories: Sequence[Trajectory],
    advantages: Sequence[Sequence[float]] | None = None,
    *,
    max_length: int | None = None,
    tokenizer: Any = None,
    eos_token_id: int | None = None,
    require_logprobs: bool = False,
) -> tuple[list[TurnSample], int]:
    """One TurnSample per turn of every trajectory; returns the samples and how many turns were skipped.

    `advantages[i][t]` is broadcast to every token of turn t of trajectory i. Turns without
    token ids are tokenised from their messages when `tokenizer` is given (SFT on scripted
    trajectories) and refused otherwise. With `require_logprobs` (RL: the rollout's logprobs are
    the behaviour policy of the importance ratio) a turn without logprobs is refused: a stand-in
    of 0.0 would make the ratio p instead of about 1 and clip nearly every token. Turns longer
    than `max_length` and turns with no completion tokens are skipped and counted.
    """
    if advantages is not None and len(advantages) != len(trajectories):
        raise ValueError(f"{len(advantages)} advantage lists for {len(trajectories)} trajectories")
    samples: list[TurnSample] = []
    skipped = 0
    for i, traj in enumerate(trajectories):
        for turn in traj.turns:
            if turn.prompt_token_ids is not None and turn.completion_token_ids is not None:
                prompt_ids, completion_ids = turn.prompt_token_ids, turn.completion_token_ids
                if turn.completion_logprobs is None and require_logprobs and completion_ids:
                    raise AgentGymError(
                        f"trajectory {traj.trajectory_id} turn {turn.index} has token ids but no logprobs; the update "
                        "needs the rollout's logprobs for its importance ratio: play rollouts with a backend that "
                        "returns them (vLLM, or the in-process transformers policy)"
                    )
                logprobs = turn.completion_logprobs or [0.0] * len(completion_ids)
            elif require_logprobs:
                raise AgentGymError(
                    f"trajectory {traj.trajectory_id} turn {turn.index} has no token ids or logprobs; RL needs rollouts "
                    "from a policy that records them (vLLM or the in-process transformers policy)"
                )
            elif tokenizer is not None and eos_token_id is not None:
                prompt_ids, completion_ids = tokenize_turn(tokenizer, traj.prompt(turn), turn.completion, eos_token_id)
                logprobs = [0.0] * len(completion_ids)
            else:
                raise AgentGymError(
                    f"trajectory {traj.trajectory_id} turn {turn.index} has no token ids; RL needs rollouts from a "
                    "policy that records them (vLLM or the in-process transformers policy)"
                )
            if len(logprobs) != len(completion_ids):
                raise AgentGymError(
                    f"trajectory {traj.trajectory_id} turn {turn.index}: {len(completion_ids)} completion tokens "
                    f"but {len(logprobs)} logprobs"
                )
            length = len(prompt_ids) + len(completion_ids)
            if not completion_ids or not prompt_ids or (max_length is not None and length > max_length):
                skipped += 1
                continue
            samples.append(TurnSample(
                input_ids=[*prompt_ids, *completion_ids],
                loss_mask=[0] * len(prompt_ids) + [1] * len(completion_ids),
                old_logprobs=[0.0] * len(prompt_ids) + list(logprobs),
                advantage=float(advantages[i][turn.index]) if advantages is not None else 0.0,
                trajectory_index=i,
            ))
    _set_row_weights(samples)
    return samples, skipped


def _set_row_weights(samples: list[TurnSample]) -> None:
    """row_weight = 1 / (N_traj × policy tokens of the sample's trajectory), for trajectory-level entropy."""
    tokens: dict[int, int] = {}
    for s in samples:
        tokens[s.trajectory_index] = tokens.get(s.trajectory_index, 0) + s.num_policy_tokens
    for s in samples:
        s.row_weight = 1.0 / (len(tokens) * tokens[s.trajectory_index])


@dataclass
class MicroBatch:
    """Right-padded tensors for one forward/backward pass."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    loss_mask: torch.Tensor  # [B, L], float
    old_logprobs: torch.Tensor  # [B, L]
    advantages: torch.Tensor  # [B, L]: each row's advantage on its policy tokens
    row_weights: torch.Tensor  # [B]
    num_tokens: int  # policy tokens in this micro-batch

    @property
    def padded_tokens(self) -> int:
        """Positions the forward pass computes, padding included."""
        return int(self.input_ids.numel())

    @property
    def device(self) -> torch.device:
        """Where this micro-batch's tensors are."""
        return self.input_ids.device

    def to(self, device: torch.device | str) -> MicroBatch:
        """This micro-batch with every tensor on `device` (itself when already there)."""
        device = torch.device(device)
        if self.input_ids.device == device:
            return self
        # Collation builds on the CPU; the model may sit on a GPU. Every tensor field moves, so a field added later does too.
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)


def micro_batches(
    samples: Sequence[TurnSample], token_budget: int, pad_id: int, device: torch.device | str | None = None,
) -> Iterator[MicroBatch]:
    """Group samples by length into micro-batches of at most `token_budget` padded tokens (one sample at least), on `device` (CPU when None)."""
    if token_budget < 1:
        raise ValueError(f"token_budget must be at least 1, got {token_budget}")
    order = sorted(range(len(samples)), key=lambda k: len(samples[k].input_ids))
    batch: list[TurnSample] = []
    for k in order:
        s = samples[k]
        # Sorted by length, so the newest sample sets the padded width.
        if batch and len(s.input_ids) * (len(batch) + 1) > token_budget:
            yield _collate(batch, pad_id, device)
            batch = []
        batch.append(s)
    if batch:
        yield _collate(batch, pad_id, device)


def _collate(batch: list[TurnSample], pad_id: int, device: torch.device | str | None = None) -> MicroBatch:
    width = max(len(s.input_ids) for s in batch)
    n = len(batch)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    mask = torch.zeros((n, width))
    old = torch.zeros((n, width))
    adv = torch.zeros((n, width))
    for row, s in enumerate(batch):
        length = len(s.input_ids)
        ids[row, :length] = torch.tensor(s.input_ids)
        attention[row, :length] = 1
        mask[row, :length] = torch.tensor(s.loss_mask, dtype=torch.float)
        old[row, :length] = torch.tensor(s.old_logprobs)
        adv[row, :length] = s.advantage * mask[row, :length]
    weights = torch.tensor([s.row_weight for s in batch])
    collated = MicroBatch(ids, attention, mask, old, adv, weights, int(mask.sum().item()))
    return collated if device is None else collated.to(device)


def batch_totals(samples: Sequence[TurnSample]) -> tuple[int, int]:
    """(policy tokens, sequences) of the whole batch: the normalisers of token- and sequence-level losses."""
    tokens = sum(s.num_policy_tokens for s in samples)
    return tokens, len(samples)


def mean_or_nan(values: Sequence[float]) -> float:
    """Arithmetic mean; NaN for no values (a metric with nothing to average)."""
    return sum(values) / len(values) if values else math.nan
