"""Trajectories → training sequences: exact token ids, loss masks, advantages, micro-batching, policy-token scoring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agentgym.errors import AgentGymError
from agentgym.trainers.batches import batch_totals, micro_batches, turn_samples
from agentgym.trainers.policy_model import load_trainable, score_policy_tokens
from agentgym.types import Message, PolicyInfo, SamplingParams, Trajectory, Turn


def _traj(turns: list[tuple[list[int], list[int], list[float] | None]], tid: str = "t") -> Trajectory:
    messages = [Message(role="system", content="sys"), Message(role="user", content="obs 0")]
    out = []
    for i, (prompt, completion, lps) in enumerate(turns):
        out.append(Turn(
            index=i, prompt_messages=[0, 1], completion=f"reply {i}", action=f"reply {i}",
            prompt_token_ids=prompt, completion_token_ids=completion, completion_logprobs=lps, observation="o",
        ))
    return Trajectory(trajectory_id=tid, env_id="toy", task_id="a", seed=0, group_id="g", policy=PolicyInfo(kind="x"),
                      sampling=SamplingParams(), started_at=0.0, messages=messages, turns=out)


def test_turn_samples_keep_sampled_ids_and_mask_only_policy_tokens() -> None:
    traj = _traj([([1, 2, 3], [7, 8], [-0.5, -0.25]), ([1, 2, 3, 7, 8, 4], [9], [-1.0])])
    samples, skipped = turn_samples([traj], [[0.5, -2.0]])
    assert skipped == 0
    first, second = samples
    assert first.input_ids == [1, 2, 3, 7, 8]
    assert first.loss_mask == [0, 0, 0, 1, 1]
    assert first.old_logprobs == [0.0, 0.0, 0.0, -0.5, -0.25]
    assert first.advantage == 0.5 and second.advantage == -2.0
    assert second.input_ids == [1, 2, 3, 7, 8, 4, 9] and second.loss_mask == [0] * 6 + [1]
    # One trajectory with 3 policy tokens: each row weighs 1 / (1 × 3).
    assert first.row_weight == pytest.approx(1 / 3) and second.row_weight == pytest.approx(1 / 3)


def test_row_weights_average_per_trajectory_then_across_trajectories() -> None:
    a = _traj([([1], [5, 6, 7], None)], "a")
    b = _traj([([1], [5], None)], "b")
    samples, _ = turn_samples([a, b])
    # 2 trajectories: 1 / (2 × 3) for a's tokens, 1 / (2 × 1) for b's.
    assert [s.row_weight for s in samples] == pytest.approx([1 / 6, 1 / 2])


def test_turns_without_token_ids_are_refused_unless_a_tokenizer_is_given(tiny_model_dir: Path) -> None:
    traj = _traj([([1, 2], [3], [-0.1])])
    traj.turns[0].prompt_token_ids = None
    traj.turns[0].completion_token_ids = None
    with pytest.raises(AgentGymError, match="no token ids"):
        turn_samples([traj])
    trainable = load_trainable(str(tiny_model_dir))
    samples, _ = turn_samples([traj], tokenizer=trainable.tokenizer, eos_token_id=trainable.eos_token_id)
    ids = samples[0].input_ids
    completion = [t for t, m in zip(ids, samples[0].loss_mask, strict=True) if m]
    assert completion[-1] == trainable.eos_token_id  # the model learns to end its turn
    assert trainable.tokenizer.decode(completion[:-1]) == "reply 0"


def test_too_long_and_empty_turns_are_skipped_and_counted() -> None:
    traj = _traj([([1] * 10, [2, 3], None), ([1, 2], [], None), ([1], [4], None)])
    samples, skipped = turn_samples([traj], max_length=8)
    assert skipped == 2 and [s.input_ids for s in samples] == [[1, 4]]


def test_rl_refuses_turns_without_rollout_logprobs() -> None:
    # A stand-in of 0.0 for log mu would make the importance ratio p instead of about 1.
    traj = _traj([([1, 2], [3, 4], [-0.1, -0.2]), ([1, 2, 3, 4], [5], None)])
    with pytest.raises(AgentGymError, match="turn 1 has token ids but no logprobs"):
        turn_samples([traj], [[1.0, 1.0]], require_logprobs=True)
    samples, _ = turn_samples([traj], [[1.0, 1.0]])  # SFT and entropy probes need no logprobs
    assert len(samples) == 2
    traj.turns[1].completion_logprobs = [-0.3]
    samples, _ = turn_samples([traj], [[1.0, 1.0]], require_logprobs=True)
    assert samples[1].old_logprobs[-1] == pytest.approx(-0.3)


def test_mismatched_logprobs_are_an_error() -> None:
    with pytest.raises(AgentGymError, match="2 completion tokens but 1 logprobs"):
        turn_samples([_traj([([1], [2, 3], [-0.1])])])


def test_micro_batches_respect_the_token_budget_and_cover_every_sample() -> None:
    trajs = [_traj([([1] * n, [2, 3], None)], str(n)) for n in (3, 9, 4, 12, 5)]
    samples, _ = turn_samples(trajs, [[1.0]] * 5)
    batches = list(micro_batches(samples, token_budget=20, pad_id=0))
    assert all(b.padded_tokens <= 20 or b.input_ids.shape[0] == 1 for b in batches)
    assert sum(b.num_tokens for b in batches) == batch_totals(samples)[0] == 10
    assert sum(int(b.attention_mask.sum()) for b in batches) == sum(len(s.input_ids) for s in samples)
    for b in batches:  # advantages sit exactly on the policy tokens
        assert torch.equal(b.advantages != 0, b.loss_mask.bool())


def test_policy_token_scores_equal_a_full_forward_pass(tiny_model_dir: Path) -> None:
    trainable = load_trainable(str(tiny_model_dir))
    trajs = [_traj([([5, 6, 7, 8], [9, 10, 11], None)], "a"), _traj([([5, 6], [12], None)], "b")]
    samples, _ = turn_samples(trajs)
    (batch,) = micro_batches(samples, token_budget=10_000, pad_id=trainable.pad_token_id)
    logprobs, entropy = score_policy_tokens(trainable.model, batch)
    with torch.no_grad():
        full = torch.log_softmax(trainable.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, -1)
    for row in range(batch.input_ids.shape[0]):
        for pos in range(1, batch.input_ids.shape[1]):
            if batch.loss_mask[row, pos]:
                expected = full[row, pos - 1, batch.input_ids[row, pos]]
                assert logprobs[row, pos].item() == pytest.approx(expected.item(), abs=1e-5)
                assert entropy is not None and entropy[row, pos] > 0
            else:
                assert logprobs[row, pos] == 0
