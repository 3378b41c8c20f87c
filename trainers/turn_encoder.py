"""Turn features from a frozen causal LM: what the SPA progress estimator and the ArCHer critic read.

One forward pass over a turn's context (the prompt the policy had, then its completion) gives
two features from the backbone's last hidden states:

    state  s = h[last prompt token]                          [H]   what the model makes of the history
    turn   x = h[last token] ++ mean(h[completion tokens])   [2H]  the history and this turn's action

The state feature cannot see the completion (the model is causal), so V(s) and Q(s, a) come from
the same pass. The backbone is frozen: features are computed once under no_grad and cached, and
whatever is trained on them (a progress head, twin Q/V heads) trains for many epochs in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from agentgym.errors import AgentGymError
from agentgym.types import Trajectory

__all__ = ["Backbone", "TurnEncoder", "TurnEncoderError", "TurnFeatures", "backbone_reference", "clip_context", "length_batches", "load_backbone"]

DEFAULT_MAX_CONTEXT_TOKENS = 2048
DEFAULT_TOKEN_BUDGET = 8192


class TurnEncoderError(AgentGymError, ValueError):
    """A turn the encoder cannot read (token ids outside its vocabulary: another model's tokenizer)."""


def clip_context(prompt_ids: Sequence[int], completion_ids: Sequence[int], max_tokens: int) -> tuple[list[int], int]:
    """The last `max_tokens` ids of prompt + completion, and how many of those are the completion's (at least 1).

    The end is kept because the turn's action and the history nearest to it are what its
    features depend on most. An empty completion (a recorded turn cut at 0 tokens) is
    represented by the context's last token.
    """
    ids = (list(prompt_ids) + list(completion_ids))[-max_tokens:]
    if not ids:
        raise ValueError("a turn with neither prompt nor completion tokens has no context to score")
    return ids, max(1, min(len(completion_ids), len(ids)))


def length_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Indices grouped, shortest first, so that each batch's padded size (rows x longest) stays within the budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted ascending, so the newcomer is the batch's longest.
        if current and (len(current) + 1) * lengths[i] > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@dataclass
class Backbone:
    """The frozen causal LM: its decoder, tokenizer and where it runs."""

    decoder: Any
    tokenizer: Any
    eos_token_id: int
    vocab_size: int
    hidden_size: int
    device: torch.device
    precision: str


def load_backbone(backbone: str, device: str) -> Backbone:
    """The backbone's decoder (no LM head needed), frozen, on the device and precision this machine supports."""
    from agentgym.hardware import resolve_placement
    from agentgym.trainers.policy_model import load_trainable

    placement = resolve_placement(device, "auto")
    trainable = load_trainable(backbone, device=placement.device)
    net = trainable.base_model()
    net.requires_grad_(False)
    net.eval()
    return Backbone(
        decoder=net.get_decoder(), tokenizer=trainable.tokenizer, eos_token_id=trainable.eos_token_id,
        vocab_size=int(net.get_input_embeddings().num_embeddings), hidden_size=int(net.config.hidden_size),
        device=placement.device, precision=placement.precision,
    )


def backbone_reference(backbone: str) -> str:
    """What a saved config records of a backbone: an alias as it is, a directory or file as an absolute path."""
    from pathlib import Path

    from agentgym.models import MODEL_ALIASES

    return backbone if backbone in MODEL_ALIASES else str(Path(backbone).expanduser().resolve())


@dataclass
class TurnFeatures:
    """Features of N turns: `state` [N, H] and `turn` [N, 2H], float32 on the CPU."""

    state: torch.Tensor
    turn: torch.Tensor


class TurnEncoder:
    """Frozen-backbone features of every turn of recorded trajectories.

    Contexts are the turn's recorded `prompt_token_ids + completion_token_ids` when the rollout
    kept them, else `trajectory.prompt(t)` through the tokenizer's chat template plus the
    completion and EOS (as SFT tokenises text-only turns). Recorded ids must come from the
    backbone's tokenizer: use the policy's base model. Contexts longer than
    `max_context_tokens` keep their end. Batches hold at most `token_budget` padded tokens.
    """

    def __init__(
        self, backbone: str | Backbone, *, max_context_tokens: int = DEFAULT_MAX_CONTEXT_TOKENS,
        token_budget: int = DEFAULT_TOKEN_BUDGET, device: str = "auto", name: str | None = None,
    ) -> None:
        if max_context_tokens < 1 or token_budget < 1:
            raise ValueError("max_context_tokens and token_budget must be >= 1")
        self.backbone = backbone if isinstance(backbone, Backbone) else load_backbone(backbone, device)
        self.name = name or (backbone if isinstance(backbone, str) else "backbone")
        self.max_context_tokens = int(max_context_tokens)
        self.token_budget = int(token_budget)

    @property
    def hidden_size(self) -> int:
        """H, the backbone's hidden size (a state feature has H values, a turn feature 2H)."""
        return self.backbone.hidden_size

    def turn_contexts(self, trajectory: Trajectory) -> list[tuple[list[int], int]]:
        """(context ids, completion length in them) for every turn, from recorded ids or the chat template."""
        from agentgym.trainers.batches import tokenize_turn

        out = []
        for turn in trajectory.turns:
            if turn.prompt_token_ids is not None and turn.completion_token_ids is not None:
                prompt, completion = turn.prompt_token_ids, turn.completion_token_ids
            else:
                prompt, completion = tokenize_turn(
                    self.backbone.tokenizer, trajectory.prompt(turn), turn.completion, self.backbone.eos_token_id
                )
            ids, n = clip_context(prompt, completion, self.max_context_tokens)
            if max(ids) >= self.backbone.vocab_size or min(ids) < 0:
                raise TurnEncoderError(
                    f"trajectory {trajectory.trajectory_id}, turn {turn.index}: token id {max(ids)} is outside the "
                    f"backbone's vocabulary ({self.backbone.vocab_size}); the encoder's backbone must be "
                    f"the policy's base model ({self.name} is not)"
                )
            out.append((ids, n))
        return out

    def trajectory_features(self, trajectories: Sequence[Trajectory]) -> list[TurnFeatures]:
        """Per trajectory, the features of its turns (all turns of all trajectories batched together)."""
        contexts = [ctx for traj in trajectories for ctx in self.turn_contexts(traj)]
        flat = self.encode(contexts)
        sizes = [t.num_turns for t in trajectories]
        return [TurnFeatures(s, x) for s, x in zip(torch.split(flat.state, sizes), torch.split(flat.turn, sizes))]

    def encode(self, contexts: Sequence[tuple[list[int], int]]) -> TurnFeatures:
        """Features of N (ids, completion length) contexts, in their order."""
        from agentgym.trainers.policy_model import autocast_context

        size = self.hidden_size
        state = torch.zeros(len(contexts), size)
        turn = torch.zeros(len(contexts), 2 * size)
        lengths = [len(ids) for ids, _ in contexts]
        bb = self.backbone
        for batch in length_batches(lengths, self.token_budget):
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), bb.eos_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            span = torch.zeros((len(batch), width))
            prompt_last = []
            for row, i in enumerate(batch):
                tokens, n_completion = contexts[i]
                ids[row, : len(tokens)] = torch.tensor(tokens)
                mask[row, : len(tokens)] = 1
                span[row, len(tokens) - n_completion : len(tokens)] = 1.0
                # A clip that kept only completion tokens leaves no prompt: its first token stands in.
                prompt_last.append(max(0, len(tokens) - n_completion - 1))
            # Right padding: a causal model's states at real positions never see the pads after them.
            with torch.no_grad(), autocast_context(bb.precision, bb.device):
                hidden = bb.decoder(input_ids=ids.to(bb.device), attention_mask=mask.to(bb.device)).last_hidden_state
            hidden = hidden.float().cpu()
            rows = torch.arange(len(batch))
            last = hidden[rows, torch.tensor([lengths[i] - 1 for i in batch])]
            mean = (hidden * span.unsqueeze(-1)).sum(1) / span.sum(1, keepdim=True)
            at = torch.tensor(batch)
            state[at] = hidden[rows, torch.tensor(prompt_last)]
            turn[at] = torch.cat([last, mean], dim=-1)
        return TurnFeatures(state, turn)
