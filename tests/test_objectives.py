"""The trainer's RL formulas, each checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from agentgym.trainers.objectives import (
    aggregate,
    discounted_returns,
    entropy_smoothing_penalty,
    epo_entropy_weight,
    kl_penalty,
    ppo_clip_loss,
    token_entropy,
    token_logprobs,
    trajectory_entropy_bonus,
    truncated_importance_weights,
    turn_advantages,
)


def _close(actual: list[list[float]], expected: list[list[float]]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a == pytest.approx(e, abs=1e-9)


# ----------------------------------------------------------------------------- returns


def test_discounted_returns_by_hand() -> None:
    # G_2 = 1; G_1 = 0 + 0.9 * 1 = 0.9; G_0 = 0 + 0.9 * 0.9 = 0.81
    assert discounted_returns([0.0, 0.0, 1.0], 0.9) == pytest.approx([0.81, 0.9, 1.0])
    # gamma = 1: suffix sums 1+2+3, 2+3, 3
    assert discounted_returns([1.0, 2.0, 3.0], 1.0) == pytest.approx([6.0, 5.0, 3.0])
    # gamma = 0: each turn keeps only its own reward
    assert discounted_returns([1.0, 2.0, 3.0], 0.0) == pytest.approx([1.0, 2.0, 3.0])
    assert discounted_returns([], 0.9) == []


@pytest.mark.parametrize("gamma", [-0.1, 1.5, float("nan")])
def test_discounted_returns_rejects_bad_gamma(gamma: float) -> None:
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns([1.0], gamma)


# ----------------------------------------------------------------------------- advantages


def test_grpo_without_std_is_return_minus_group_mean() -> None:
    # Group "a": R = [1, 0, 0, 1], mean 0.5 -> A = R - 0.5 = [0.5, -0.5, -0.5, 0.5].
    # Episode 0 has two turns with returns [1, 1]: both turns get 1 - 0.5 = 0.5.
    returns = [[1.0, 1.0], [0.0], [0.0], [1.0]]
    out = turn_advantages(returns, ["a", "a", "a", "a"], "grpo")
    _close(out, [[0.5, 0.5], [-0.5], [-0.5], [0.5]])


def test_grpo_with_std_divides_by_population_std() -> None:
    # R = [1, 0, 0, 1]: mean 0.5, population std = sqrt(4 * 0.25 / 4) = 0.5
    # A = (R - 0.5) / (0.5 + eps) = +-1 (eps = 0 to keep the hand value exact)
    out = turn_advantages([[1.0], [0.0], [0.0], [1.0]], ["g"] * 4, "grpo", normalize_std=True, eps=0.0)
    _close(out, [[1.0], [-1.0], [-1.0], [1.0]])
    # With the default eps the value is 0.5 / (0.5 + 1e-6), a hair under 1.
    out = turn_advantages([[1.0], [0.0]], ["g", "g"], "grpo", normalize_std=True)
    assert out[0][0] == pytest.approx(0.5 / (0.5 + 1e-6), rel=1e-12)


def test_grpo_per_turn_uses_initial_returns_for_the_baseline() -> None:
    # Episode 0: rewards [0, 1], gamma 0.5 -> returns [0.5, 1.0]; episode 1: returns [0.0].
    # Baseline = mean(R_0 = 0.5, R_1 = 0.0) = 0.25 -> A_0 = [0.25, 0.75], A_1 = [-0.25].
    returns = [discounted_returns([0.0, 1.0], 0.5), [0.0]]
    _close(turn_advantages(returns, ["g", "g"], "grpo"), [[0.25, 0.75], [-0.25]])


def test_groups_are_independent_and_size_one_groups_get_zeros() -> None:
    # "a": R = [2, 0], mean 1, std 1 -> [1, -1] / (1 + eps); "b" alone -> zeros of its length;
    # "c": R = [3, 3], std 0 -> (3 - 3) / (0 + eps) = 0, not NaN.
    returns = [[2.0], [5.0, 4.0], [0.0], [3.0], [3.0]]
    out = turn_advantages(returns, ["a", "b", "a", "c", "c"], "grpo", normalize_std=True)
    _close(out, [[1.0 / (1.0 + 1e-6)], [0.0, 0.0], [-1.0 / (1.0 + 1e-6)], [0.0], [0.0]])
    # RLOO: "a" baselines are the other's R: 2 - 0 = 2, 0 - 2 = -2; "b" alone -> zeros; "c" -> 0
    rloo = turn_advantages(returns, ["a", "b", "a", "c", "c"], "rloo")
    _close(rloo, [[2.0], [0.0, 0.0], [-2.0], [0.0], [0.0]])


def test_rloo_leave_one_out_baseline() -> None:
    # R = [1, 0, 0, 1], n = 4, sum 2; baseline_i = (2 - R_i) / 3
    # i=0: 1 - 1/3 = 2/3; i=1: 0 - 2/3 = -2/3; i=2: -2/3; i=3: 2/3
    out = turn_advantages([[1.0], [0.0], [0.0], [1.0]], ["g"] * 4, "rloo")
    _close(out, [[2 / 3], [-2 / 3], [-2 / 3], [2 / 3]])
    # RLOO = n/(n-1) times the mean-baseline advantage: 4/3 * 0.5 = 2/3. Checks the two agree.
    grpo = turn_advantages([[1.0], [0.0], [0.0], [1.0]], ["g"] * 4, "grpo")
    assert out[0][0] == pytest.approx(4 / 3 * grpo[0][0])


def test_batch_mode_ignores_groups() -> None:
    # Whole batch R = [3, 1, 0, 0]: mean 1 -> A = [2, 0, -1, -1] whatever the group ids.
    returns = [[3.0], [1.0], [0.0], [0.0]]
    _close(turn_advantages(returns, ["a", "b", "c", "d"], "batch"), [[2.0], [0.0], [-1.0], [-1.0]])
    # Population std: deviations [2, 0, -1, -1] -> var = (4 + 0 + 1 + 1) / 4 = 1.5
    s = math.sqrt(1.5)
    out = turn_advantages(returns, ["a", "b", "c", "d"], "batch", normalize_std=True, eps=0.0)
    _close(out, [[2 / s], [0.0], [-1 / s], [-1 / s]])
    # A batch of a single episode has no baseline either.
    _close(turn_advantages([[1.0, 2.0]], ["x"], "batch"), [[0.0, 0.0]])


def test_empty_episodes_count_as_zero_return() -> None:
    # Episode 1 has no turns: R_1 = 0.0, so the mean of [1, 0] is 0.5 and it gets [].
    _close(turn_advantages([[1.0], []], ["g", "g"], "grpo"), [[0.5], []])
    assert turn_advantages([], [], "grpo") == []


def test_turn_advantages_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="same length"):
        turn_advantages([[1.0]], ["a", "b"], "grpo")
    with pytest.raises(ValueError, match="estimator"):
        turn_advantages([[1.0]], ["a"], "ppo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="normalize_std"):
        turn_advantages([[1.0]], ["a"], "rloo", normalize_std=True)


# ----------------------------------------------------------------------------- logits


def test_token_entropy_uniform_and_peaked() -> None:
    v = 5
    assert token_entropy(torch.zeros(v)).item() == pytest.approx(math.log(v), abs=1e-6)
    peaked = torch.tensor([100.0, 0.0, 0.0, 0.0])
    assert token_entropy(peaked).item() == pytest.approx(0.0, abs=1e-6)
    # p = [1, 1, 2] / 4 -> H = 2 * 0.25 * ln 4 + 0.5 * ln 2 = 1.5 ln 2
    mixed = torch.log(torch.tensor([1.0, 1.0, 2.0]))
    assert token_entropy(mixed).item() == pytest.approx(1.5 * math.log(2), abs=1e-6)


def test_token_entropy_shape_dtype_grad_and_masked_vocab() -> None:
    logits = torch.zeros(2, 3, 4, dtype=torch.bfloat16, requires_grad=True)
    h = token_entropy(logits)
    assert h.shape == (2, 3) and h.dtype == torch.float32
    h.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad.float()).all()
    # A banned token (-inf) leaves log 3 for the 3 others, with finite gradients.
    z = torch.tensor([0.0, 0.0, 0.0, float("-inf")], requires_grad=True)
    h = token_entropy(z)
    assert h.item() == pytest.approx(math.log(3), abs=1e-6)
    h.backward()
    assert torch.isfinite(z.grad).all()


def test_token_logprobs_by_hand() -> None:
    # Both positions: p = [0.25, 0.25, 0.5]. Targets 2 and 0 -> [ln 0.5, ln 0.25].
    z = torch.log(torch.tensor([1.0, 1.0, 2.0])).repeat(1, 2, 1).requires_grad_(True)
    lp = token_logprobs(z, torch.tensor([[2, 0]]))
    assert lp.shape == (1, 2) and lp.dtype == torch.float32
    assert lp.tolist()[0] == pytest.approx([math.log(0.5), math.log(0.25)], abs=1e-6)
    # d log p_y / d z = onehot(y) - p
    lp[0, 0].backward()
    assert z.grad[0, 0].tolist() == pytest.approx([-0.25, -0.25, 0.5], abs=1e-6)
    with pytest.raises(ValueError, match="shape"):
        token_logprobs(torch.zeros(1, 2, 3), torch.zeros(1, 3, dtype=torch.long))


# ----------------------------------------------------------------------------- aggregation

X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
M = torch.tensor([[1, 1, 1], [1, 0, 0]])


def test_token_and_sequence_aggregation_differ_on_unequal_rows() -> None:
    # token: (1 + 2 + 3 + 4) / 4 tokens = 2.5
    assert aggregate(X, M, "token", num_tokens=4, num_sequences=2).item() == pytest.approx(2.5)
    # sequence: (6/3 + 4/1) / 2 rows = (2 + 4) / 2 = 3
    assert aggregate(X, M, "sequence", num_tokens=4, num_sequences=2).item() == pytest.approx(3.0)


@pytest.mark.parametrize("mode", ["token", "sequence"])
def test_micro_batches_sum_to_the_full_batch(mode: str) -> None:
    # token: 6/4 + 4/4 = 2.5; sequence: 2/2 + 4/2 = 3 -- the totals of the full batch.
    full = aggregate(X, M, mode, num_tokens=4, num_sequences=2)
    parts = sum(aggregate(X[i : i + 1], M[i : i + 1], mode, num_tokens=4, num_sequences=2) for i in range(2))
    assert parts.item() == pytest.approx(full.item())


def test_all_zero_mask_row_contributes_zero() -> None:
    # Row 1 is masked out: sequence = (mean(1, 1) + 0) / 2 = 0.5, no NaN in value or gradient.
    x = torch.ones(2, 2, requires_grad=True)
    out = aggregate(x, torch.tensor([[1, 1], [0, 0]]), "sequence", num_tokens=2, num_sequences=2)
    assert out.item() == pytest.approx(0.5)
    out.backward()
    assert x.grad.tolist() == [[0.25, 0.25], [0.0, 0.0]]


def test_aggregate_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="num_tokens"):
        aggregate(X, M, "token", num_tokens=0, num_sequences=2)
    with pytest.raises(ValueError, match="num_sequences"):
        aggregate(X, M, "sequence", num_tokens=4, num_sequences=-1)
    with pytest.raises(ValueError, match="mode"):
        aggregate(X, M, "row", num_tokens=4, num_sequences=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shapes"):
        aggregate(X, M[:, :2], "token", num_tokens=4, num_sequences=2)


# ----------------------------------------------------------------------------- PPO


def _ppo(ratios: list[float], advs: list[float], **kw: float) -> tuple[torch.Tensor, dict, torch.Tensor]:
    lp = torch.log(torch.tensor([ratios])).requires_grad_(True)
    loss, stats = ppo_clip_loss(
        lp, torch.zeros(1, len(ratios)), torch.tensor([advs]), torch.ones(1, len(ratios)),
        num_tokens=len(ratios), num_sequences=1, **kw,
    )
    return loss, stats, lp


def test_ppo_clip_loss_by_hand() -> None:
    # clip 0.2 -> band [0.8, 1.2]
    # t0: r = 1.1, A = +1: inside the band        -> min(1.1, 1.1)   = 1.1  -> loss -1.1, not clipped
    # t1: r = 1.5, A = +1: above, and A > 0       -> min(1.5, 1.2)   = 1.2  -> loss -1.2, clipped
    # t2: r = 0.5, A = -1: below, and A < 0       -> min(-0.5, -0.8)  = -0.8 -> loss +0.8, clipped
    # token mean: (-1.1 - 1.2 + 0.8) / 3 = -0.5; clip_fraction 2/3; ratio_mean 3.1/3
    loss, stats, lp = _ppo([1.1, 1.5, 0.5], [1.0, 1.0, -1.0])
    assert loss.item() == pytest.approx(-0.5, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 3)
    assert stats["ratio_mean"].item() == pytest.approx(3.1 / 3, abs=1e-6)
    # k3 = (r - 1) - ln r per token, then the mean
    k3 = [(r - 1) - math.log(r) for r in (1.1, 1.5, 0.5)]
    assert stats["approx_kl"].item() == pytest.approx(sum(k3) / 3, abs=1e-6)
    assert not any(s.requires_grad for s in stats.values())
    # Clipped tokens get no gradient; t0: d(-r A / 3)/d lp = -r A / 3 = -1.1 / 3
    loss.backward()
    assert lp.grad.tolist()[0] == pytest.approx([-1.1 / 3, 0.0, 0.0], abs=1e-6)


def test_truncated_importance_weights_by_hand() -> None:
    # pi_prox = [0.5, 0.2, 0.9], mu = [0.25, 0.4, 0.3], the third token is padding (mask 0).
    # rho = [2.0, 0.5, -]; C = 1.5 -> w = [1.5, 0.5, 0]; ratio_mean (2.0 + 0.5) / 2 = 1.25;
    # ratio_max 2.0 (the padding's 3.0 is never seen); truncated 1 of 2 tokens.
    prox = torch.tensor([[math.log(0.5), math.log(0.2), math.log(0.9)]])
    mu = torch.tensor([[math.log(0.25), math.log(0.4), math.log(0.3)]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    w, stats = truncated_importance_weights(prox, mu, mask, cap=1.5, num_tokens=2, num_sequences=1)
    assert w.tolist()[0] == pytest.approx([1.5, 0.5, 0.0], abs=1e-6)
    assert stats["ratio_mean"].item() == pytest.approx(1.25, abs=1e-6)
    assert stats["ratio_max"].item() == pytest.approx(2.0, abs=1e-6)
    assert stats["truncated_fraction"].item() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        truncated_importance_weights(prox, mu, mask, cap=0.0, num_tokens=2, num_sequences=1)


def test_ppo_clip_loss_with_importance_weights_by_hand() -> None:
    # r = 1 (logprobs equal to the proximal policy's), A = +1 on both policy tokens, w = [1.5, 0.5]:
    # l = -w * min(r A, clip(r) A) = [-1.5, -0.5] -> token mean over 2 tokens: -1.0.
    # The gradient of each token is -w A / 2: [-0.75, -0.25]; padding gets none.
    lp = torch.zeros((1, 3), requires_grad=True)
    loss, _ = ppo_clip_loss(
        lp, torch.zeros((1, 3)), torch.tensor([1.0]), torch.tensor([[1.0, 1.0, 0.0]]),
        num_tokens=2, num_sequences=1, token_weights=torch.tensor([[1.5, 0.5, 0.0]]),
    )
    assert loss.item() == pytest.approx(-1.0, abs=1e-6)
    loss.backward()
    assert lp.grad.tolist()[0] == pytest.approx([-0.75, -0.25, 0.0], abs=1e-6)


def test_ppo_clip_only_counts_the_direction_that_matters() -> None:
    # t0: r = 0.5, A = +1: below the band but the unclipped 0.5 < 0.8 is the min -> loss -0.5
    # t1: r = 1.5, A = -1: above the band but -1.5 < -1.2 is the min            -> loss +1.5
    # mean (-0.5 + 1.5) / 2 = 0.5, nothing clipped, and both tokens keep their gradient.
    loss, stats, lp = _ppo([0.5, 1.5], [1.0, -1.0])
    assert loss.item() == pytest.approx(0.5, abs=1e-6)
    assert stats["clip_fraction"].item() == 0.0
    loss.backward()
    assert lp.grad.tolist()[0] == pytest.approx([-0.5 / 2, 1.5 / 2], abs=1e-6)


def test_ppo_clip_higher() -> None:
    # clip_low 0.2, clip_high 0.3 -> band [0.8, 1.3]
    # t0: r = 1.25, A = +1 -> inside now -> loss -1.25; t1: r = 0.75, A = -1 -> clipped at 0.8 -> +0.8
    # mean (-1.25 + 0.8) / 2 = -0.225, clip_fraction 1/2
    loss, stats, _ = _ppo([1.25, 0.75], [1.0, -1.0], clip_low=0.2, clip_high=0.3)
    assert loss.item() == pytest.approx(-0.225, abs=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(0.5)


def test_ppo_row_advantages_and_sequence_mode() -> None:
    # r = 1 everywhere; row advantages [2, -1] broadcast over tokens; row 1 has one real token.
    # sequence: (mean(-2, -2) + mean(+1)) / 2 = (-2 + 1) / 2 = -0.5
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, stats = ppo_clip_loss(
        torch.zeros(2, 2), torch.zeros(2, 2), torch.tensor([2.0, -1.0]), mask,
        mode="sequence", num_tokens=3, num_sequences=2,
    )
    assert loss.item() == pytest.approx(-0.5)
    assert stats["ratio_mean"].item() == pytest.approx(1.0)
    assert stats["approx_kl"].item() == pytest.approx(0.0)


def test_ppo_rejects_bad_inputs() -> None:
    z = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="shapes"):
        ppo_clip_loss(z, torch.zeros(1, 2), z, z, num_tokens=3, num_sequences=1)
    with pytest.raises(ValueError, match="clip_low"):
        ppo_clip_loss(z, z, z, z, clip_low=1.0, num_tokens=3, num_sequences=1)


# ----------------------------------------------------------------------------- KL


def test_kl_penalty_by_hand() -> None:
    lp = torch.log(torch.tensor([0.5, 0.25, 0.3])).requires_grad_(True)
    ref = torch.log(torch.tensor([0.25, 0.5, 0.3]))
    k = kl_penalty(lp, ref)
    # d = ln(0.25/0.5) = -ln 2: 0.5 + ln 2 - 1 = 0.193147
    # d = ln(0.5/0.25) = +ln 2: 2 - ln 2 - 1 = 0.306853
    # equal: 1 - 0 - 1 = 0
    assert k.tolist() == pytest.approx([0.5 + math.log(2) - 1, 1 - math.log(2), 0.0], abs=1e-6)
    # d k3 / d lp = 1 - exp(d): 1 - 0.5, 1 - 2, 1 - 1
    k.sum().backward()
    assert lp.grad.tolist() == pytest.approx([0.5, -1.0, 0.0], abs=1e-6)
    with pytest.raises(ValueError, match="shapes"):
        kl_penalty(torch.zeros(2), torch.zeros(3))


# ----------------------------------------------------------------------------- EPO


def test_trajectory_entropy_bonus_by_hand() -> None:
    # Trajectory A = rows 0, 1 (2 + 1 = 3 tokens); trajectory B = row 2 (2 tokens); N_traj = 2.
    # Mean entropy of A = (0.3 + 0.6 + 0.9) / 3 = 0.6; of B = (1 + 2) / 2 = 1.5
    # H_traj = (0.6 + 1.5) / 2 = 1.05; row weights 1/(2*3), 1/(2*3), 1/(2*2). Masked 9s are ignored.
    h = torch.tensor([[0.3, 0.6, 9.0], [0.9, 9.0, 9.0], [1.0, 2.0, 9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 0]])
    w = torch.tensor([1 / 6, 1 / 6, 1 / 4])
    out = trajectory_entropy_bonus(h, mask, w)
    assert out.item() == pytest.approx(1.05, abs=1e-6)
    # Micro-batches [rows 0-1] and [row 2]: 0.3 + 0.75
    parts = trajectory_entropy_bonus(h[:2], mask[:2], w[:2])
    parts = parts + trajectory_entropy_bonus(h[2:], mask[2:], w[2:])
    assert parts.item() == pytest.approx(1.05, abs=1e-6)
    out.backward()
    assert h.grad[0].tolist() == pytest.approx([1 / 6, 1 / 6, 0.0])
    with pytest.raises(ValueError, match="row_weights"):
        trajectory_entropy_bonus(h, mask, w[:2])


def test_entropy_smoothing_penalty_values() -> None:
    hist = [1.0, 1.0, 1.0]  # Hbar = 1, band 0.2 -> no penalty on [0.8, 1.2]
    assert entropy_smoothing_penalty(torch.tensor(1.1), hist).item() == 0.0
    assert entropy_smoothing_penalty(torch.tensor(0.8), hist).item() == 0.0
    # H = 1.5: (0.5 - 0.2)^2 = 0.09; H = 0.5 with coef 2: 2 * (0.5 - 0.2)^2 = 0.18
    assert entropy_smoothing_penalty(torch.tensor(1.5), hist).item() == pytest.approx(0.09)
    assert entropy_smoothing_penalty(torch.tensor(0.5), hist, coef=2.0).item() == pytest.approx(0.18)
    # Hbar = mean(0.5, 1.5) = 1 as well
    assert entropy_smoothing_penalty(torch.tensor(1.5), [0.5, 1.5]).item() == pytest.approx(0.09)
    # dP/dH at H = 1.5 = 2 * (0.5 - 0.2) = 0.6
    h = torch.tensor(1.5, requires_grad=True)
    entropy_smoothing_penalty(h, hist).backward()
    assert h.grad.item() == pytest.approx(0.6)


def test_entropy_smoothing_penalty_empty_history_is_zero_but_attached() -> None:
    h = torch.tensor(2.0, requires_grad=True)
    p = entropy_smoothing_penalty(h, [])
    assert p.item() == 0.0 and p.requires_grad
    p.backward()
    assert h.grad.item() == 0.0
    with pytest.raises(ValueError, match="scalar"):
        entropy_smoothing_penalty(torch.zeros(2), [1.0])


def _entropy_of_tiny_policy() -> tuple[torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 6)
    logits = layer(torch.randn(3, 4))
    return layer, token_entropy(logits).mean()


def test_entropy_smoothing_penalty_changes_the_gradient_outside_the_band() -> None:
    layer, h = _entropy_of_tiny_policy()
    hbar = 2.0 * h.item()  # H = Hbar / 2: |H - Hbar| = Hbar / 2 > 0.2 Hbar, outside the band
    penalty = entropy_smoothing_penalty(h, [hbar])
    assert penalty.item() > 0.0
    (g_plain,) = torch.autograd.grad(h, layer.weight, retain_graph=True)
    (g_reg,) = torch.autograd.grad(h + penalty, layer.weight)
    assert not torch.allclose(g_plain, g_reg)
    # Chain rule: d(H + P)/dW = (1 + dP/dH) dH/dW with dP/dH = 2 (|H - Hbar| - 0.2 Hbar) * sign(H - Hbar)
    dp_dh = 2.0 * (abs(h.item() - hbar) - 0.2 * hbar) * -1.0
    assert torch.allclose(g_reg, (1.0 + dp_dh) * g_plain, atol=1e-6)


def test_entropy_smoothing_penalty_has_no_gradient_inside_the_band() -> None:
    layer, h = _entropy_of_tiny_policy()
    penalty = entropy_smoothing_penalty(h, [h.item() * 1.05])
    assert penalty.item() == 0.0
    (g,) = torch.autograd.grad(penalty, layer.weight)
    assert torch.count_nonzero(g) == 0


def test_epo_entropy_weight_phases() -> None:
    # Default phases: x1 on [0, 0.3), x0.5 on [0.3, 0.7), x0.1 from 0.7 on; base 0.01, 100 steps.
    expected = {0: 0.01, 29: 0.01, 30: 0.005, 69: 0.005, 70: 0.001, 99: 0.001, 150: 0.001}
    for step, value in expected.items():
        assert epo_entropy_weight(step, 100, 0.01) == pytest.approx(value), step
    # Custom: a single phase is a constant weight
    assert epo_entropy_weight(7, 10, 0.5, phases=[(0.0, 2.0)]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"phases": []}, "empty"),
        ({"phases": [(0.1, 1.0)]}, "start at 0.0"),
        ({"phases": [(0.0, 1.0), (0.5, 0.5), (0.5, 0.1)]}, "increasing"),
        ({"phases": [(0.0, 1.0), (0.6, 0.5), (0.4, 0.1)]}, "increasing"),
        ({"total_steps": 0}, "total_steps"),
        ({"step": -1}, "step"),
    ],
)
def test_epo_entropy_weight_validation(kwargs: dict, message: str) -> None:
    args = {"step": 0, "total_steps": 10, "base": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        epo_entropy_weight(**args)


def test_grpo_std_normalisation_leaves_groups_of_equal_returns_unscaled() -> None:
    # All four episodes return R = 0.9 at turn 0; later turns have G = 1.0 (gamma 0.9, reward at the end).
    # Dividing 1.0 - 0.9 = 0.1 by std 0 (+eps) would give 1e5; the group is left unscaled instead.
    returns = [[0.9, 1.0]] * 4
    adv = turn_advantages(returns, ["g"] * 4, "grpo", normalize_std=True)
    assert adv == [[pytest.approx(0.0), pytest.approx(0.1)]] * 4
