"""IGPO's turn rewards: how much each turn raised the policy's belief in the ground-truth answer.

Wang et al. 2025, "Information Gain-based Policy Optimization: A Simple and Effective Approach for
Multi-Turn LLM Agents" (arXiv:2510.14967). With a the ground-truth answer (L tokens) and c_t the
context the policy has before turn t (c_0: the task; c_{t+1}: c_t plus turn t's reply and the
env's answer), the paper scores a context by the length-normalised probability of the answer

    p_t = pi(a | c_t) = exp( 1/L sum_{j=1}^{L} log pi(a_j | c_t, a_<j) )

and rewards turn t with the gain  r_t = p_{t+1} - p_t  (the probability form, the paper's). The
last turn, where the agent answers, gets the outcome reward instead. Rewards are normalised across
the group afterwards, by the advantage estimator (`trainers.advantages`, "igpo" or "turn_norm").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

from agentgym.reward_models.base import RewardModel, RewardScores, Scorer
from agentgym.types import Message, Trajectory

__all__ = ["InformationGainRewards", "answer_loglik", "information_gain", "trajectory_contexts"]

GainForm = Literal["prob", "logprob"]
_FORMS = ("prob", "logprob")
_LOGP_SLACK = 1e-4


def information_gain(logp_answer_before_and_after: Sequence[float], *, form: GainForm = "prob") -> list[float]:
    """Turn t's information gain from the answer log-likelihoods l_0..l_T at contexts c_0..c_T (T gains).

        prob     (IGPO):  r_t = exp(l_{t+1}) - exp(l_t)      the gain in probability, in [-1, 1]
        logprob:          r_t = l_{t+1} - l_t                the gain in log-probability (nats)

    l_t is log pi(a | c_t): per-token mean (the paper's length normalisation) or sum, as
    `answer_loglik` computed it. The probability form is bounded, which keeps one turn that makes
    an unlikely answer merely less unlikely from dominating the group.
    """
    if form not in _FORMS:
        raise ValueError(f"form must be one of {_FORMS}, got {form!r}")
    ls = [float(x) for x in logp_answer_before_and_after]
    if not ls:
        raise ValueError("information_gain needs the answer log-likelihood at the context before the first turn at least")
    # A hair above 0 is rounding in a low-precision forward pass, not a probability above 1.
    bad = [x for x in ls if math.isnan(x) or x > _LOGP_SLACK]
    if bad:
        raise ValueError(f"answer log-likelihoods must be <= 0 and not NaN, got {bad}")
    values = [math.exp(x) for x in ls] if form == "prob" else ls
    return [after - before for before, after in zip(values, values[1:])]


def answer_loglik(token_logprobs: Sequence[float], *, length_normalize: bool = True) -> float:
    """log pi(a | c) from the answer's token log-probabilities: their mean (IGPO) or their sum.

        mean:  1/L sum_j log pi(a_j | c, a_<j)        sum:  sum_j log pi(a_j | c, a_<j)
    """
    if not token_logprobs:
        raise ValueError("the scorer returned no answer tokens; an answer must tokenize to at least one token")
    total = math.fsum(float(x) for x in token_logprobs)
    return total / len(token_logprobs) if length_normalize else total


def trajectory_contexts(trajectory: Trajectory, count: int) -> list[list[Message]]:
    """The first `count` contexts c_0..c_{count-1} of a trajectory (at most T + 1).

        c_t = trajectory.prompt(t)                                        for t < T
        c_T = trajectory.prompt(T-1) + turn T-1's reply and the env's answer to it

    c_t for t < T is the prompt the policy was actually given at turn t, after its history window:
    with a window, c_{t+1} drops the exchange that fell out of it, and the gain of turn t includes
    that loss. c_T is built from the messages after turn T-1's prompt, all of which belong to turn
    T-1's exchange (its reply, the observation, and a tool message per extra call).
    """
    turns = trajectory.turns
    if not 0 <= count <= len(turns) + 1:
        raise ValueError(f"a trajectory of {len(turns)} turns has {len(turns) + 1} contexts, {count} asked")
    contexts = [trajectory.prompt(t) for t in range(min(count, len(turns)))]
    if count == len(turns) + 1 and turns:
        last = turns[-1]
        end = max(last.prompt_messages, default=-1) + 1
        contexts.append(trajectory.prompt(last) + list(trajectory.messages[end:]))
    return contexts


def _ground_truth(trajectory: Trajectory) -> str:
    """The task's answer, from the reset info the env gave (`reset_info["answer"]`)."""
    info = getattr(trajectory, "reset_info", None) or {}
    answer = info.get("answer")
    # A number is a fine answer (math tasks); a bool, a list of aliases or a blank string is not one text.
    usable = isinstance(answer, (str, int, float)) and not isinstance(answer, bool) and str(answer).strip() != ""
    if not usable:
        shown = "none" if answer is None else f"{answer!r}, which is not one non-empty text"
        raise ValueError(
            f"IGPO needs tasks with a ground-truth answer; env {trajectory.env_id!r} gives {shown} "
            f"(trajectory {trajectory.trajectory_id}, task {trajectory.task_id!r}, reset_info['answer'])"
        )
    return str(answer)


class InformationGainRewards(RewardModel):
    """IGPO: per-turn information gain about the ground-truth answer, plus the env's reward.

        r_t = g_t + o_t       for t < T-1,       g_t = p_{t+1} - p_t (see `information_gain`)
        r_t = o_t             for t = T-1        (the answer turn; the paper's default)

    o_t is the env's reward of turn t: for the envs IGPO studies it is 0 until the outcome at the
    last turn. With ``final_turn_gain=True`` the last turn also gets g_{T-1} from c_T, the context
    after its observation; off by default because an env that reveals or confirms the answer in its
    final observation would hand a gain to failures and successes alike. ``form`` and
    ``length_normalize`` choose the paper's probability of the mean token log-probability
    (defaults) or a log-probability gain and/or a summed log-probability. The answer comes from
    ``trajectory.reset_info["answer"]``; all contexts of the group go to the scorer in one call.
    """

    name: ClassVar[str] = "igpo"
    needs_scorer: ClassVar[bool] = True

    def __init__(self, *, form: GainForm = "prob", length_normalize: bool = True, final_turn_gain: bool = False) -> None:
        if form not in _FORMS:
            raise ValueError(f"form must be one of {_FORMS}, got {form!r}")
        self.form: GainForm = form
        self.length_normalize = bool(length_normalize)
        self.final_turn_gain = bool(final_turn_gain)

    def _context_count(self, trajectory: Trajectory) -> int:
        """Contexts to score for one trajectory: T + 1 with the final turn's gain, else T (0 when T < 2)."""
        turns = trajectory.num_turns
        if self.final_turn_gain:
            return turns + 1 if turns else 0
        return turns if turns >= 2 else 0  # one turn is the answer turn alone: no gain to compute

    async def score(self, group: Sequence[Trajectory], scorer: Scorer | None = None) -> RewardScores:
        """Gains from one batched scorer call over every context of the group, plus the env's rewards."""
        if scorer is None:
            raise ValueError("InformationGainRewards needs a Scorer (teacher-forced log p(answer | context) under the policy)")
        answers = [_ground_truth(traj) for traj in group]
        contexts = [trajectory_contexts(traj, self._context_count(traj)) for traj in group]
        pairs = [(ctx, answer) for answer, ctxs in zip(answers, contexts) for ctx in ctxs]
        # One call for the whole group: the scorer batches it into as few forward passes as it can.
        token_logprobs = await scorer.answer_logprobs(pairs) if pairs else []
        if len(token_logprobs) != len(pairs):
            raise ValueError(f"the scorer returned {len(token_logprobs)} results for {len(pairs)} (context, answer) pairs")
        logliks = [answer_loglik(lps, length_normalize=self.length_normalize) for lps in token_logprobs]

        rewards, gains_all, start = [], [], 0
        for traj, ctxs in zip(group, contexts):
            ls = logliks[start:start + len(ctxs)]
            start += len(ctxs)
            gains = information_gain(ls, form=self.form) if ls else []
            gains_all.extend(gains)
            outcome = [float(t.reward) for t in traj.turns]
            # Turns without a gain (the answer turn by default) keep their env reward alone.
            rewards.append([o + (gains[t] if t < len(gains) else 0.0) for t, o in enumerate(outcome)])
        return RewardScores(rewards, self._diagnostics(gains_all, logliks, contexts))

    def _diagnostics(
        self, gains: Sequence[float], logliks: Sequence[float], contexts: Sequence[Sequence[object]]
    ) -> dict[str, float]:
        """Mean gain, share of positive gains, and the answer's probability at the first and last contexts."""
        firsts, lasts, at = [], [], 0
        for ctxs in contexts:
            if ctxs:
                firsts.append(math.exp(logliks[at]))
                lasts.append(math.exp(logliks[at + len(ctxs) - 1]))
            at += len(ctxs)

        def mean(xs: Sequence[float]) -> float:
            return math.fsum(xs) / len(xs) if xs else math.nan

        return {
            "gain_mean": mean(gains),
            "gain_positive_fraction": mean([1.0 if g > 0 else 0.0 for g in gains]),
            "answer_prob_first": mean(firsts),
            "answer_prob_last": mean(lasts),
            "contexts_scored": float(len(logliks)),
        }
