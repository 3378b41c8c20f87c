"""D-RA and G-RA, IGPO's information gain and its batched scorer call, and the composed reward models, on hand-worked numbers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from pydantic import Field

from agentgym.reward_models.base import RewardModel, RewardScores, Scorer
from agentgym.reward_models.compose import GateRewards, ScaleRewards, SumRewards
from agentgym.reward_models.gra import (
    DirectRewards,
    GatedRewards,
    direct_accumulation,
    gated_accumulation,
    immediate_rewards,
)
from agentgym.reward_models.igpo import InformationGainRewards, information_gain, trajectory_contexts
from agentgym.rollout.prompts import ChatHistory
from agentgym.types import Message, PolicyInfo, SamplingParams, Trajectory, Turn

WEIGHTS = {"valid_action": 0.1, "ran_tests": 0.1, "tests_passed_frac": 0.2}


class TaskTrajectory(Trajectory):
    """A trajectory with the env's reset info, whether or not Trajectory has the field yet."""

    reset_info: dict[str, Any] = Field(default_factory=dict)


def trajectory(
    tid: str,
    rewards: Sequence[float],
    signals: Sequence[Mapping[str, Any]] | None = None,
    *,
    answer: str | None = None,
    history_turns: int | None = None,
    success: bool | None = None,
) -> Trajectory:
    """A trajectory whose messages and prompt windows are built the way the rollout engine builds them."""
    messages: list[Message] = []
    history = ChatHistory(messages, "instr", f"{tid} obs 0")
    turns = []
    for t, reward in enumerate(rewards):
        turns.append(Turn(
            index=t, prompt_messages=history.window_indices(history_turns), completion=f"{tid} reply {t}",
            action=f"{tid} reply {t}", observation=f"{tid} obs {t + 1}", reward=reward,
            signals=dict(signals[t]) if signals else {},
        ))
        history.add(f"{tid} reply {t}", f"{tid} obs {t + 1}")
    cls = Trajectory if answer is None else TaskTrajectory
    extra = {} if answer is None else {"reset_info": {"answer": answer}}
    return cls(trajectory_id=tid, env_id="toy", task_id="task", seed=0, group_id="g", policy=PolicyInfo(kind="test"),
               sampling=SamplingParams(), started_at=0.0, messages=messages, turns=turns,
               total_reward=sum(rewards), success=success, **extra)


# ---- D-RA and G-RA --------------------------------------------------------------------------

# A failing trajectory that farms the step signals: 7 turns, tests run from turn 1 on, half of them pass, never solved.
FARMED = [{"valid_action": True}] + [{"valid_action": True, "ran_tests": True, "tests_passed_frac": 0.5}] * 6
# A successful one: tests run at once (none pass), then a fix makes them all pass and the env pays 1.
SOLVED = [{"valid_action": True, "ran_tests": True, "tests_passed_frac": 0.0},
          {"valid_action": True, "ran_tests": True, "tests_passed_frac": 1.0}]


def test_immediate_reward_is_the_weighted_sum_of_signals() -> None:
    # turn 0: 0.1 * 1 (ran_tests missing -> 0, tests_passed_frac missing -> 0) = 0.1
    # turns 1..6: 0.1 * 1 + 0.1 * 1 + 0.2 * 0.5 = 0.3
    assert immediate_rewards(trajectory("f", [0.0] * 7, FARMED), WEIGHTS) == pytest.approx([0.1] + [0.3] * 6)
    # None (no test summary yet) counts 0, an int counts itself (files_modified is a count).
    odd = trajectory("o", [0.0], [{"tests_passed_frac": None, "files_modified": 3, "valid_action": False}])
    weights = {"tests_passed_frac": 1.0, "files_modified": 0.05, "valid_action": 1.0}
    assert immediate_rewards(odd, weights) == pytest.approx([0.15])


def test_a_signal_that_is_not_a_number_is_refused_with_its_place() -> None:
    bad = trajectory("b", [0.0], [{"tool": "bash"}])
    with pytest.raises(TypeError, match=r"trajectory b, turn 0: signal 'tool' is a str"):
        immediate_rewards(bad, {"tool": 1.0})


def test_the_pure_formulas() -> None:
    # D-RA: r_t = o_t + i_t.  G-RA: r_t = o_t + 1[O >= tau] i_t.
    assert direct_accumulation([0.1, 0.3], [0.0, 1.0]) == pytest.approx([0.1, 1.3])
    assert gated_accumulation([0.1, 0.3], [0.0, 1.0], outcome_total=1.0, tau=1.0) == pytest.approx([0.1, 1.3])
    assert gated_accumulation([0.1, 0.3], [0.0, 0.5], outcome_total=0.5, tau=1.0) == [0.0, 0.5]
    with pytest.raises(ValueError, match="one value per turn"):
        direct_accumulation([0.1], [0.0, 1.0])


async def test_dra_pays_the_farmer_more_than_the_solver_and_gra_does_not() -> None:
    farmed = trajectory("farmed", [0.0] * 7, FARMED, success=False)
    solved = trajectory("solved", [0.0, 1.0], SOLVED, success=True)
    # Solved immediate: turn 0: 0.1 + 0.1 + 0.2 * 0 = 0.2; turn 1: 0.1 + 0.1 + 0.2 * 1 = 0.4.
    dra = await DirectRewards(WEIGHTS).score([farmed, solved])
    assert dra.rewards[0] == pytest.approx([0.1] + [0.3] * 6)
    assert dra.rewards[1] == pytest.approx([0.2, 1.4])
    # D-RA returns: farmed 0.1 + 6 * 0.3 = 1.9 > solved 0.2 + 1.4 = 1.6, so the farmer is the one reinforced.
    assert sum(dra.rewards[0]) == pytest.approx(1.9) and sum(dra.rewards[1]) == pytest.approx(1.6)

    gra = await GatedRewards(WEIGHTS).score([farmed, solved])  # tau = 1.0: success
    assert gra.rewards[0] == [0.0] * 7  # O = 0 < 1: the gate stays shut, the farmed signals earn nothing
    assert gra.rewards[1] == pytest.approx([0.2, 1.4])  # O = 1 >= 1: the solver keeps its immediate rewards
    assert gra.diagnostics["gate_open_fraction"] == pytest.approx(0.5)
    assert gra.diagnostics["immediate_dropped"] == pytest.approx(1.9 / 2)  # 1.9 withheld over 2 trajectories
    # mean immediate per turn over the group: (1.9 + 0.6) / 9 turns
    assert gra.diagnostics["immediate_mean"] == pytest.approx(2.5 / 9)


async def test_gra_threshold_below_success() -> None:
    # tau = 0.5 opens the gate for a partial outcome of 0.5 (e.g. half the tests): 0.5 + (0.2, 0.4).
    partial = trajectory("p", [0.0, 0.5], SOLVED)
    out = await GatedRewards(WEIGHTS, tau=0.5).score([partial])
    assert out.rewards == [pytest.approx([0.2, 0.9])]


def test_gra_refuses_non_finite_settings() -> None:
    with pytest.raises(ValueError, match="tau"):
        GatedRewards(WEIGHTS, tau=math.nan)
    with pytest.raises(ValueError, match="finite"):
        DirectRewards({"valid_action": math.inf})


# ---- IGPO -----------------------------------------------------------------------------------

LOG = math.log


class DictScorer:
    """A fake Scorer: answer token logprobs looked up by the context's message contents; records its calls."""

    def __init__(self, table: Mapping[tuple[str, ...], list[float]], answer: str = "Paris") -> None:
        self.table = dict(table)
        self.answer = answer
        self.calls: list[list[tuple[tuple[str, ...], str]]] = []

    async def answer_logprobs(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> list[list[float]]:
        self.calls.append([(tuple(m.content for m in ctx), answer) for ctx, answer in pairs])
        if any(answer != self.answer for _, answer in pairs):
            raise AssertionError("the fake scorer was asked about the wrong answer")
        return [self.table[tuple(m.content for m in ctx)] for ctx, _ in pairs]


# Trajectory A: 3 turns, a history window of 1 exchange, the outcome 1 at the end.
A_C0 = ("instr", "A obs 0")
A_C1 = ("instr", "A obs 0", "A reply 0", "A obs 1")
A_C2 = ("instr", "A obs 0", "A reply 1", "A obs 2")  # the window dropped exchange 0
A_C3 = ("instr", "A obs 0", "A reply 1", "A obs 2", "A reply 2", "A obs 3")
# Trajectory B: 2 turns, full history, outcome 0.
B_C0 = ("instr", "B obs 0")
B_C1 = ("instr", "B obs 0", "B reply 0", "B obs 1")
B_C2 = ("instr", "B obs 0", "B reply 0", "B obs 1", "B reply 1", "B obs 2")
TABLE = {
    A_C0: [LOG(0.2), LOG(0.05)],  # geometric mean sqrt(0.2 * 0.05) = 0.1 (a sum would be log 0.01)
    A_C1: [LOG(0.25), LOG(1.0)],  # 0.5                                  (sum: log 0.25)
    A_C2: [LOG(0.4), LOG(0.4)],   # 0.4                                  (sum: log 0.16)
    A_C3: [LOG(0.9)],             # 0.9
    B_C0: [LOG(0.3)],             # 0.3
    B_C1: [LOG(0.3), LOG(0.3)],   # 0.3
    B_C2: [LOG(0.6)],             # 0.6
}


def igpo_group() -> list[Trajectory]:
    return [trajectory("A", [0.0, 0.0, 1.0], answer="Paris", history_turns=1),
            trajectory("B", [0.0, 0.0], answer="Paris")]


def test_information_gain_in_probability_and_in_log_probability() -> None:
    # prob: r_t = exp(l_{t+1}) - exp(l_t): 0.5 - 0.1 = 0.4, 0.4 - 0.5 = -0.1
    assert information_gain([LOG(0.1), LOG(0.5), LOG(0.4)]) == pytest.approx([0.4, -0.1])
    # logprob: r_t = l_{t+1} - l_t: log(0.25 / 0.01) = log 25, log(0.16 / 0.25) = log 0.64
    assert information_gain([LOG(0.01), LOG(0.25), LOG(0.16)], form="logprob") == pytest.approx([LOG(25), LOG(0.64)])
    assert information_gain([LOG(0.3)]) == []  # one context, no turn
    with pytest.raises(ValueError, match="at least"):
        information_gain([])
    with pytest.raises(ValueError, match="<= 0"):
        information_gain([0.5, -1.0])


def test_contexts_follow_the_prompt_windows_and_end_after_the_last_observation() -> None:
    a = igpo_group()[0]
    contexts = [tuple(m.content for m in ctx) for ctx in trajectory_contexts(a, 4)]
    assert contexts == [A_C0, A_C1, A_C2, A_C3]


async def test_igpo_scores_the_whole_group_in_one_call_and_adds_the_outcome() -> None:
    scorer = DictScorer(TABLE)
    out = await InformationGainRewards().score(igpo_group(), scorer)
    # One batched call with every needed context of the group, in order: A's c_0..c_2, then B's c_0..c_1.
    assert scorer.calls == [[(c, "Paris") for c in (A_C0, A_C1, A_C2, B_C0, B_C1)]]
    # A: gains (0.5 - 0.1, 0.4 - 0.5) on turns 0 and 1; turn 2 answers and gets its outcome 1 alone.
    # B: gain 0.3 - 0.3 = 0 on turn 0; turn 1 gets its outcome 0.
    assert out.rewards[0] == pytest.approx([0.4, -0.1, 1.0])
    assert out.rewards[1] == pytest.approx([0.0, 0.0])
    d = out.diagnostics
    assert d["gain_mean"] == pytest.approx((0.4 - 0.1 + 0.0) / 3)
    assert d["gain_positive_fraction"] == pytest.approx(1 / 3)
    assert d["answer_prob_first"] == pytest.approx((0.1 + 0.3) / 2)
    assert d["answer_prob_last"] == pytest.approx((0.4 + 0.3) / 2)  # A's c_2, B's c_1
    assert d["contexts_scored"] == 5


async def test_igpo_final_turn_gain_scores_the_context_after_the_last_observation() -> None:
    scorer = DictScorer(TABLE)
    out = await InformationGainRewards(final_turn_gain=True).score(igpo_group(), scorer)
    assert scorer.calls == [[(c, "Paris") for c in (A_C0, A_C1, A_C2, A_C3, B_C0, B_C1, B_C2)]]
    # A turn 2: 1 + (0.9 - 0.4) = 1.5;  B turn 1: 0 + (0.6 - 0.3) = 0.3.
    assert out.rewards[0] == pytest.approx([0.4, -0.1, 1.5])
    assert out.rewards[1] == pytest.approx([0.0, 0.3])


async def test_igpo_log_probability_gain_of_summed_token_logprobs() -> None:
    out = await InformationGainRewards(form="logprob", length_normalize=False).score(igpo_group(), DictScorer(TABLE))
    # A: l = (log 0.01, log 0.25, log 0.16) -> gains log 25, log 0.64; B: l = (log 0.3, log 0.09) -> log 0.3.
    assert out.rewards[0] == pytest.approx([LOG(25), LOG(0.64), 1.0])
    assert out.rewards[1] == pytest.approx([LOG(0.3), 0.0])


async def test_igpo_one_turn_trajectories_need_no_scoring() -> None:
    scorer = DictScorer(TABLE)
    out = await InformationGainRewards().score([trajectory("A", [1.0], answer="Paris")], scorer)
    assert out.rewards == [[1.0]] and scorer.calls == []


async def test_igpo_without_an_answer_says_so_before_scoring() -> None:
    scorer = DictScorer(TABLE)
    group = [igpo_group()[0], trajectory("plain", [0.0, 1.0])]  # a Trajectory without reset_info
    with pytest.raises(ValueError, match=r"IGPO needs tasks with a ground-truth answer; env 'toy' gives none"):
        await InformationGainRewards().score(group, scorer)
    assert scorer.calls == []
    aliases = TaskTrajectory.model_validate({**igpo_group()[1].model_dump(), "reset_info": {"answer": ["Paris", "paris"]}})
    with pytest.raises(ValueError, match="not one non-empty text"):
        await InformationGainRewards().score([aliases], scorer)


async def test_igpo_needs_a_scorer_that_answers_every_pair() -> None:
    assert InformationGainRewards.needs_scorer
    with pytest.raises(ValueError, match="needs a Scorer"):
        await InformationGainRewards().score(igpo_group(), None)

    class ShortScorer(DictScorer):
        async def answer_logprobs(self, pairs: Sequence[tuple[Sequence[Message], str]]) -> list[list[float]]:
            return (await super().answer_logprobs(pairs))[:-1]

    with pytest.raises(ValueError, match="4 results for 5"):
        await InformationGainRewards().score(igpo_group(), ShortScorer(TABLE))


# ---- composition ----------------------------------------------------------------------------


class Fixed(RewardModel):
    """A reward model that returns given rewards per trajectory id, and remembers the scorer it got."""

    def __init__(self, name: str, rewards: Mapping[str, list[float]], diagnostics: dict[str, float] | None = None) -> None:
        self.name = name  # type: ignore[misc]  # tests need several names for one class
        self.table = dict(rewards)
        self.diagnostics = dict(diagnostics or {})
        self.scorers: list[Scorer | None] = []

    async def score(self, group: Sequence[Trajectory], scorer: Scorer | None = None) -> RewardScores:
        self.scorers.append(scorer)
        return RewardScores([list(self.table[t.trajectory_id]) for t in group], dict(self.diagnostics))


def two() -> list[Trajectory]:
    return [trajectory("x", [0.0, 0.0, 1.0]), trajectory("y", [0.0, 0.5])]


async def test_sum_adds_per_turn_and_prefixes_diagnostics() -> None:
    a = Fixed("a", {"x": [1.0, 2.0, 3.0], "y": [1.0, 1.0]}, {"mean": 1.6})
    b = Fixed("b", {"x": [0.5, 0.0, -1.0], "y": [0.0, 2.0]}, {"mean": 0.3})
    a2 = Fixed("a", {"x": [0.0, 0.0, 0.0], "y": [0.0, 0.0]}, {"mean": 0.0})
    out = await SumRewards(a, b, a2).score(two())
    assert out.rewards == [[1.5, 2.0, 2.0], [1.0, 3.0]]
    assert out.diagnostics == {"a/mean": 1.6, "b/mean": 0.3, "a_2/mean": 0.0}


async def test_scale_and_gate() -> None:
    a = Fixed("a", {"x": [1.0, 2.0, 3.0], "y": [1.0, 1.0]}, {"mean": 1.6})
    scaled = await ScaleRewards(a, 0.5).score(two())
    assert scaled.rewards == [[0.5, 1.0, 1.5], [0.5, 0.5]] and scaled.diagnostics == {"a/mean": 1.6}
    # Outcomes: x sums its env rewards to 1 (>= 1, kept), y to 0.5 (< 1, zeroed).
    gated = await GateRewards(a, on_outcome_at_least=1.0).score(two())
    assert gated.rewards == [[1.0, 2.0, 3.0], [0.0, 0.0]]
    assert gated.diagnostics == {"a/mean": 1.6, "open_fraction": 0.5}


async def test_composition_reproduces_gra() -> None:
    # env reward + gate(immediate), where env reward = D-RA without signals and immediate = D-RA minus env reward.
    env = DirectRewards({})
    immediate = SumRewards(DirectRewards(WEIGHTS), ScaleRewards(DirectRewards({}), -1.0))
    composed = SumRewards(env, GateRewards(immediate, on_outcome_at_least=1.0))
    group = [trajectory("farmed", [0.0] * 7, FARMED), trajectory("solved", [0.0, 1.0], SOLVED)]
    got, want = await composed.score(group), await GatedRewards(WEIGHTS).score(group)
    for row_got, row_want in zip(got.rewards, want.rewards):
        assert row_got == pytest.approx(row_want)


async def test_a_wrong_number_of_rewards_names_the_model_and_the_trajectory() -> None:
    short = Fixed("short", {"x": [1.0, 2.0], "y": [1.0, 1.0]})  # x has 3 turns
    for composite in (SumRewards(short), ScaleRewards(short, 2.0), GateRewards(short, on_outcome_at_least=0.0)):
        message = r"reward model 'short' \(Fixed\) returned 2 rewards for trajectory x, which has 3 turns"
        with pytest.raises(ValueError, match=message):
            await composite.score(two())

    class OneList(Fixed):
        async def score(self, group: Sequence[Trajectory], scorer: Scorer | None = None) -> RewardScores:
            return RewardScores([[0.0, 0.0, 0.0]])

    with pytest.raises(ValueError, match=r"'lists' \(OneList\) returned 1 reward lists for a group of 2"):
        await SumRewards(OneList("lists", {})).score(two())


async def test_composites_need_a_scorer_when_a_part_does_and_pass_it_on() -> None:
    a = Fixed("a", {"x": [0.0, 0.0, 0.0], "y": [0.0, 0.0]})
    assert not SumRewards(a).needs_scorer
    assert SumRewards(a, InformationGainRewards()).needs_scorer
    assert ScaleRewards(InformationGainRewards(), 2.0).needs_scorer
    assert GateRewards(InformationGainRewards(), on_outcome_at_least=1.0).needs_scorer
    scorer = DictScorer(TABLE)
    await SumRewards(a).score(two(), scorer)
    assert a.scorers == [scorer]
    with pytest.raises(ValueError, match="at least one"):
        SumRewards()
