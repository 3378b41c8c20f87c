"""Every RL formula of the trainer, as pure functions (python floats and torch tensors).

Nothing here owns state, a model or an optimizer: the training loop feeds tensors in and gets
losses and statistics out, so each formula can be checked by hand in isolation.

References
    PPO        Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv:1707.06347).
    k3 KL      Schulman 2020, "Approximating KL Divergence" (blog note).
    GRPO       Shao et al. 2024, "DeepSeekMath" (arXiv:2402.03300).
    Dr. GRPO   Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective"
               (arXiv:2503.20783).
    RLOO       Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
               Learning from Human Feedback in LLMs" (arXiv:2402.14740); Kool et al. 2019.
    DAPO       Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale"
               (arXiv:2503.14476).
    EPO        Xu et al. 2025, "EPO: Entropy-regularized Policy Optimization for LLM Agents
               Reinforcement Learning" (arXiv:2509.22576).
    TIS        Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL
               Training" (truncated importance sampling for rollout/trainer mismatch); the
               proximal-policy form follows AReaL's decoupled PPO, Fu et al. 2025 (arXiv:2505.24298).

Conventions: rows of a [B, T] tensor are turns (one policy generation each), T is the token axis,
``mask`` is 1 on the policy's own tokens and 0 on prompt, observation and padding tokens.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "aggregate",
    "discounted_returns",
    "entropy_smoothing_penalty",
    "epo_entropy_weight",
    "kl_penalty",
    "ppo_clip_loss",
    "token_entropy",
    "token_logprobs",
    "trajectory_entropy_bonus",
    "truncated_importance_weights",
    "turn_advantages",
]

_ESTIMATORS = ("grpo", "rloo", "batch")
_MODES = ("token", "sequence")


# --------------------------------------------------------------------------------------------
# Returns and advantages (python floats: one number per turn, computed before the backward pass)
# --------------------------------------------------------------------------------------------


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """Discounted return of every turn of one episode.

        G_t = r_t + gamma * G_{t+1},   G_T = 0      (so G_t = sum_{k>=t} gamma^(k-t) r_k)

    Sutton & Barto, "Reinforcement Learning: An Introduction", eq. 3.9.
    ``gamma`` must lie in [0, 1]; an empty episode has no returns.
    """
    if not 0.0 <= gamma <= 1.0:  # also rejects NaN
        raise ValueError(f"gamma must be within [0, 1], got {gamma}")
    out = [0.0] * len(rewards)
    g = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = float(rewards[t]) + gamma * g
        out[t] = g
    return out


def turn_advantages(
    returns: Sequence[Sequence[float]],
    group_ids: Sequence[str],
    estimator: Literal["grpo", "rloo", "batch"],
    *,
    normalize_std: bool = False,
    eps: float = 1e-6,
    std_floor: float = 1e-3,
) -> list[list[float]]:
    """Critic-free advantage of every turn: its return minus a baseline built from sibling episodes.

    With R_j = returns[j][0] (0.0 for an episode with no turns) and g the group of episode i, n = |g|:

        grpo:   A_{i,t} = G_{i,t} - mean_{j in g} R_j                    (Dr. GRPO, Liu et al. 2025)
                A_{i,t} = (G_{i,t} - mean_{j in g} R_j) / (std_{j in g} R_j + eps)   if normalize_std
                                                                         (GRPO, Shao et al. 2024)
        rloo:   A_{i,t} = G_{i,t} - 1/(n-1) * sum_{j in g, j != i} R_j   (RLOO, Ahmadian et al. 2024)
        batch:  as grpo, with the whole batch as the single group (critic-free PPO-style whitening).

    std is the population standard deviation (divides by n); a group with std <= std_floor is not
    divided (its returns are all alike, and dividing would amplify only turn-to-turn differences of
    G). A group of size 1 (for ``batch``: a
    batch of one episode) gets all-zero advantages: the only baseline it could have is its own
    return, which says nothing about whether the episode was better than expected.
    ``normalize_std`` is only defined for grpo and batch. Returns one list per episode, [] for an
    episode with no turns.
    """
    if len(returns) != len(group_ids):
        raise ValueError(
            f"returns and group_ids must have the same length, got {len(returns)} and {len(group_ids)}"
        )
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {estimator!r}")
    if estimator == "rloo" and normalize_std:
        raise ValueError("normalize_std is not defined for the rloo estimator (use grpo or batch)")
    if not eps >= 0.0:
        raise ValueError(f"eps must be >= 0, got {eps}")

    initial = [float(g[0]) if len(g) else 0.0 for g in returns]

    groups: dict[Hashable, list[int]] = {}
    if estimator == "batch":
        groups[None] = list(range(len(returns)))
    else:
        for i, gid in enumerate(group_ids):
            groups.setdefault(gid, []).append(i)

    out: list[list[float]] = [[] for _ in returns]
    for members in groups.values():
        n = len(members)
        if n == 1:
            i = members[0]
            out[i] = [0.0] * len(returns[i])
            continue
        total = sum(initial[j] for j in members)
        mean = total / n
        scale = 1.0
        if normalize_std:
            std = math.sqrt(sum((initial[j] - mean) ** 2 for j in members) / n)
            # A group whose episodes all returned the same has std 0: dividing would blow up
            # G_{i,t} - mean R, which is not 0 at later turns when rewards come mid-episode or
            # gamma < 1 (seen: advantages of ~1e5 on easy TextWorld). Such a group is not scaled.
            scale = 1.0 / (std + eps) if std > std_floor else 1.0
        for i in members:
            if estimator == "rloo":
                baseline = (total - initial[i]) / (n - 1)
            else:
                baseline = mean
            out[i] = [(float(g) - baseline) * scale for g in returns[i]]
    return out


# --------------------------------------------------------------------------------------------
# Per-token quantities from logits
# --------------------------------------------------------------------------------------------


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy of the next-token distribution at every position: [..., V] logits -> [...] float32.

        H = -sum_v p_v log p_v,   log p_v = z_v - logsumexp(z)

    Shannon 1948. Differentiable; computed in float32 because bf16 log-probabilities are too
    coarse for an entropy that is summed over a large vocabulary.
    """
    z = logits.float()
    logp = z - torch.logsumexp(z, dim=-1, keepdim=True)
    # A logit of -inf (a banned token) gives p = 0 and log p = -inf; 0 * -inf would be NaN in the
    # forward and backward pass, while the finite floor keeps the term at exactly 0.
    logp = logp.clamp(min=torch.finfo(logp.dtype).min)
    return -(logp.exp() * logp).sum(dim=-1)


def token_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    """Log-probability of each target token: [B, T, V] logits, [B, T] ids -> [B, T] float32.

        log p(y_t) = z_{t, y_t} - logsumexp_v z_{t, v}      (= log_softmax(z)[y_t])

    Differentiable. Gathering before normalising avoids materialising a second [B, T, V] tensor.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"targets must have the shape of logits without the vocabulary axis: "
            f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)}"
        )
    z = logits.float()
    picked = z.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(z, dim=-1)


# --------------------------------------------------------------------------------------------
# Reduction over tokens
# --------------------------------------------------------------------------------------------


def _check_positive(name: str, value: float) -> None:
    if not value > 0:  # also rejects NaN
        raise ValueError(f"{name} must be > 0, got {value}")


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shapes must match, got {shapes}")


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    mode: Literal["token", "sequence"],
    *,
    num_tokens: float,
    num_sequences: float,
) -> Tensor:
    """Reduce a [B, T] per-token quantity to a scalar over the positions where mask == 1.

        token:     sum_{b,t} m_{b,t} x_{b,t} / N_tokens                       (DAPO, Yu et al. 2025)
        sequence:  sum_b ( sum_t m_{b,t} x_{b,t} / sum_t m_{b,t} ) / N_sequences   (GRPO, Shao et al. 2024)

    ``token`` weighs every token of the batch the same, so long generations are not diluted;
    ``sequence`` weighs every row the same. A row whose mask is all zero contributes 0.
    N_tokens and N_sequences are totals over the whole batch (all gradient-accumulation
    micro-batches), so the sum of aggregate() over micro-batches equals the full-batch value.
    """
    _check_same_shape(per_token=per_token, mask=mask)
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    _check_positive("num_tokens", num_tokens)
    _check_positive("num_sequences", num_sequences)
    m = mask.to(per_token.dtype)
    masked = per_token * m
    if mode == "token":
        return masked.sum() / num_tokens
    lengths = m.sum(dim=-1)
    # Dividing an empty row by 1 instead of 0 keeps 0/0 = NaN out of both passes.
    per_row = masked.sum(dim=-1) / torch.where(lengths > 0, lengths, torch.ones_like(lengths))
    return per_row.sum() / num_sequences


# --------------------------------------------------------------------------------------------
# Policy loss and KL
# --------------------------------------------------------------------------------------------


def ppo_clip_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float | None = None,
    mode: Literal["token", "sequence"] = "token",
    num_tokens: float,
    num_sequences: float,
    token_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate loss, aggregated over the masked tokens, and its diagnostics.

        r = exp(log pi(a) - log pi_old(a))
        l = -w min( r A, clip(r, 1 - eps_low, 1 + eps_high) A )

    w is 1 unless ``token_weights`` gives per-token importance weights (truncated_importance_weights:
    pi_old is then the proximal policy, the trainer's weights before this update, and w corrects
    for the rollouts having been sampled by another policy).

    Schulman et al. 2017 (PPO); eps_high > eps_low is DAPO's clip-higher (Yu et al. 2025);
    ``clip_high`` defaults to ``clip_low``. ``advantages`` is [B, T], or [B] for one advantage per
    row (turn). The loss is reduced with aggregate(); the statistics, detached and reduced the same
    way so they too sum over micro-batches, are:

        clip_fraction  share of tokens where the clipped branch is the active min, i.e.
                       (A > 0 and r > 1 + eps_high) or (A < 0 and r < 1 - eps_low)
        ratio_mean     mean of r
        approx_kl      mean of (r - 1) - log r   (k3 estimator of KL(pi_old || pi), Schulman 2020)
    """
    if advantages.dim() == logprobs.dim() - 1:
        advantages = advantages.unsqueeze(-1).expand_as(logprobs)
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    high = clip_low if clip_high is None else clip_high
    if not 0.0 <= clip_low < 1.0:
        raise ValueError(f"clip_low must be within [0, 1), got {clip_low}")
    if not high >= 0.0:
        raise ValueError(f"clip_high must be >= 0, got {high}")

    # The behaviour policy and the advantages are data for this update, never something to train.
    log_ratio = logprobs - old_logprobs.detach()
    adv = advantages.detach().to(logprobs.dtype)
    ratio = torch.exp(log_ratio)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + high) * adv
    surrogate = torch.minimum(unclipped, clipped)
    if token_weights is not None:
        _check_same_shape(logprobs=logprobs, token_weights=token_weights)
        surrogate = token_weights.detach().to(surrogate.dtype) * surrogate
    loss = aggregate(-surrogate, mask, mode, num_tokens=num_tokens, num_sequences=num_sequences)

    with torch.no_grad():
        was_clipped = ((adv > 0) & (ratio > 1.0 + high)) | ((adv < 0) & (ratio < 1.0 - clip_low))

        def reduce(x: Tensor) -> Tensor:
            return aggregate(
                x.to(ratio.dtype), mask, mode, num_tokens=num_tokens, num_sequences=num_sequences
            )

        stats = {
            "clip_fraction": reduce(was_clipped),
            "ratio_mean": reduce(ratio),
            "approx_kl": reduce((ratio - 1.0) - log_ratio),
        }
    return loss, stats


def truncated_importance_weights(
    proximal_logprobs: Tensor,
    behaviour_logprobs: Tensor,
    mask: Tensor,
    *,
    cap: float,
    mode: Literal["token", "sequence"] = "token",
    num_tokens: float,
    num_sequences: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Per-token truncated importance weights from the policy that sampled a rollout to the trainer's, and diagnostics.

        rho = exp(log pi_prox(a) - log mu(a))
        w   = min(rho, C)

    mu is the behaviour policy (the rollout's logprobs: an older weights version under asynchronous
    rollouts, or the same weights computed by another engine, vLLM, at max_staleness 0); pi_prox is
    the trainer's policy before this update. Truncating at C bounds the variance a rare token with
    mu(a) << pi_prox(a) would add (Yao et al. 2025, TIS). Weights are 0 off the mask. Statistics,
    reduced with aggregate() so they sum over micro-batches (except ratio_max, a maximum):

        ratio_mean          mean of rho
        ratio_max           max of rho over the masked tokens
        truncated_fraction  share of tokens with rho > C
    """
    _check_same_shape(proximal_logprobs=proximal_logprobs, behaviour_logprobs=behaviour_logprobs, mask=mask)
    _check_positive("cap", cap)
    with torch.no_grad():
        m = mask.to(proximal_logprobs.dtype)
        # Off the mask the logprobs are padding (0 - 0): keep them out of exp and of the maximum.
        log_rho = (proximal_logprobs.detach() - behaviour_logprobs.detach()) * m
        rho = torch.exp(log_rho)
        weights = rho.clamp(max=cap) * m

        def reduce(x: Tensor) -> Tensor:
            return aggregate(x, mask, mode, num_tokens=num_tokens, num_sequences=num_sequences)

        masked_rho = torch.where(m > 0, rho, torch.zeros_like(rho))
        stats = {
            "ratio_mean": reduce(rho),
            "ratio_max": masked_rho.max() if masked_rho.numel() else torch.zeros(()),
            "truncated_fraction": reduce((rho > cap).to(rho.dtype)),
        }
    return weights, stats


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref) from tokens sampled by pi.

        d = log pi_ref(a) - log pi(a),   k3 = exp(d) - d - 1  >= 0

    Schulman 2020, "Approximating KL Divergence"; used as the KL term of GRPO (Shao et al. 2024).
    Unbiased and never negative, unlike the plain -d. Differentiable with respect to ``logprobs``;
    the reference policy is frozen, so ``ref_logprobs`` is detached.
    """
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    d = ref_logprobs.detach() - logprobs
    return torch.exp(d) - d - 1.0


# --------------------------------------------------------------------------------------------
# EPO: entropy regularisation for multi-turn agents
# --------------------------------------------------------------------------------------------


def trajectory_entropy_bonus(entropy: Tensor, mask: Tensor, row_weights: Tensor) -> Tensor:
    """Trajectory-level entropy of EPO: the mean over trajectories of each one's mean token entropy.

        H_traj = 1/N_traj * sum_k ( sum_{turns of k} sum_t m H_t / |tokens of k| )
               = sum_{b,t} m_{b,t} H_{b,t} w_b,     w_b = 1 / (N_traj * |tokens of traj(b)|)

    Xu et al. 2025, "EPO: Entropy-regularized Policy Optimization for LLM Agents Reinforcement
    Learning", trajectory-level entropy regularisation. Rows are turns; the caller precomputes
    ``row_weights`` (w_b) over the whole batch, so the value sums exactly over micro-batches.
    Every trajectory weighs the same whatever its number of turns and tokens. Differentiable
    scalar.
    """
    _check_same_shape(entropy=entropy, mask=mask)
    if row_weights.dim() != 1 or row_weights.shape[0] != entropy.shape[0]:
        raise ValueError(
            f"row_weights must have shape ({entropy.shape[0]},), got {tuple(row_weights.shape)}"
        )
    w = row_weights.detach().to(entropy.dtype).unsqueeze(-1)
    return (entropy * mask.to(entropy.dtype) * w).sum()


def entropy_smoothing_penalty(
    entropy: Tensor,
    history: Sequence[float],
    *,
    band: float = 0.2,
    coef: float = 1.0,
) -> Tensor:
    """EPO's entropy-smoothing penalty: squared excess of the entropy beyond a band around its recent mean.

        Hbar = mean(history),   P = coef * max(0, |H - Hbar| - band * Hbar)^2

    Xu et al. 2025 (EPO), entropy smoothing regulariser. ``entropy`` is the current mean token
    entropy as a differentiable scalar; ``history`` holds the mean entropies of the last W steps
    as plain floats. Inside the band [Hbar (1 - band), Hbar (1 + band)] the penalty and its
    gradient are 0; outside, the gradient pulls H back toward the band. With no history the
    penalty is 0 but still attached to the graph, so backward() through it works.
    """
    if entropy.numel() != 1:
        raise ValueError(f"entropy must be a scalar tensor, got shape {tuple(entropy.shape)}")
    if not band >= 0.0:
        raise ValueError(f"band must be >= 0, got {band}")
    if not coef >= 0.0:
        raise ValueError(f"coef must be >= 0, got {coef}")
    h = entropy.reshape(())
    if len(history) == 0:
        return h * 0.0
    # The public reference implementation builds this penalty from detached numbers (.item()),
    # which makes it a constant: it shifts the reported loss and contributes no gradient, so it
    # regularises nothing. Here only Hbar is a constant; H keeps its graph to the policy weights.
    hbar = math.fsum(float(x) for x in history) / len(history)
    excess = torch.clamp((h - hbar).abs() - band * hbar, min=0.0)
    return coef * excess.pow(2)


def epo_entropy_weight(
    step: int,
    total_steps: int,
    base: float,
    phases: Sequence[tuple[float, float]] = ((0.0, 1.0), (0.3, 0.5), (0.7, 0.1)),
) -> float:
    """Phase-dependent weight beta_k of EPO's entropy term at a training step.

        beta_k = base * m_p,   p = the last phase with start_p <= k / K

    Xu et al. 2025 (EPO), adaptive phase-based weighting: explore hard early, then let the
    entropy term fade so the policy can exploit. ``phases`` are (start_fraction, multiplier)
    pairs with the first start at 0.0 and starts strictly increasing; steps past the end stay in
    the last phase.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if len(phases) == 0:
        raise ValueError("phases must not be empty")
    starts = [float(s) for s, _ in phases]
    if starts[0] != 0.0:
        raise ValueError(f"the first phase must start at 0.0, got {starts[0]}")
    if any(b <= a for a, b in zip(starts, starts[1:])):
        raise ValueError(f"phase starts must be strictly increasing, got {starts}")
    # Compare fractions, not start * total_steps: 0.3 * 100 is 30.000000000000004 in floating
    # point, which would put step 30 in the wrong phase, while 30 / 100 == 0.3 exactly.
    progress = step / total_steps
    multiplier = phases[0][1]
    for start, mult in phases:
        if start <= progress:
            multiplier = mult
        else:
            break
    return float(base * multiplier)
