"""Critic-free advantage estimators over one group, as registered functions.

Every estimator takes the per-turn rewards of one group (rewards[i][t]: trajectory i, turn t;
trajectories may have different lengths) and returns one advantage per turn, same shape:

    fn(rewards, *, gamma, normalize_std) -> advantages

Notation, for one group:
    T_i                    number of turns of trajectory i
    G_{i,t}                discounted return, sum_{k=t}^{T_i-1} gamma^(k-t) r_{i,k}
    N_t = {j : T_j > t}    the trajectories that reach turn index t; n_t = |N_t|
    mean_t x, std_t x      mean and population std (divides by n_t) of x_{j,t} over j in N_t
    eps                    EPS below, keeps a division by a zero std finite

Baselines are taken per turn index over the trajectories that reach it: G_{i,t} is compared with
the returns of siblings at the same depth, not with their G_0. (trainers/objectives.turn_advantages
compares every G_{i,t} with mean_j G_{j,0}; when rewards arrive mid-episode, G_{i,t} shrinks as t
grows while that baseline does not, so late turns of every trajectory come out negative.)
A turn index that only one trajectory reaches has no sibling to compare with: its advantage is 0.

References
    GRPO    Shao et al. 2024, "DeepSeekMath" (arXiv:2402.03300); Dr. GRPO (no std) Liu et al. 2025
            (arXiv:2503.20783).
    RLOO    Ahmadian et al. 2024 (arXiv:2402.14740); Kool et al. 2019, "Buy 4 REINFORCE Samples".
    IGPO    Wang et al. 2025, "Information Gain-based Policy Optimization" (arXiv:2510.14967).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from agentgym.errors import AgentGymError
from agentgym.trainers.objectives import discounted_returns, turn_advantages

__all__ = [
    "EPS",
    "AdvantageFn",
    "AdvantageRegistry",
    "UnknownAdvantageError",
    "advantage_names",
    "get_advantage",
    "register_advantage",
    "zero_advantage_fraction",
]

EPS = 1e-6


class AdvantageFn(Protocol):
    """An advantage estimator over one group: per-turn rewards in, per-turn advantages out."""

    def __call__(self, rewards: Sequence[Sequence[float]], *, gamma: float, normalize_std: bool) -> list[list[float]]:
        """Advantages with the shape of `rewards`."""
        ...


class UnknownAdvantageError(AgentGymError, KeyError):
    """An advantage estimator name that is not registered."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        close = difflib.get_close_matches(name, self.known, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        super().__init__(f"unknown advantage estimator {name!r}; {hint}known: {', '.join(self.known) or 'none'}")

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0])


class AdvantageRegistry:
    """Advantage estimators by name; tests build their own so that registrations do not leak."""

    def __init__(self) -> None:
        self._fns: dict[str, AdvantageFn] = {}

    def register(self, name: str) -> Callable[[AdvantageFn], AdvantageFn]:
        """Decorator: register an estimator under `name`; a name already taken is an error."""
        if not name or not name.strip():
            raise ValueError("an advantage estimator needs a non-empty name")

        def decorate(fn: AdvantageFn) -> AdvantageFn:
            if name in self._fns:
                raise ValueError(f"advantage estimator {name!r} is already registered (by {self._fns[name]!r})")
            self._fns[name] = fn
            return fn

        return decorate

    def get(self, name: str) -> AdvantageFn:
        """The estimator registered under `name`."""
        try:
            return self._fns[name]
        except KeyError:
            raise UnknownAdvantageError(name, self._fns) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._fns)


_REGISTRY = AdvantageRegistry()


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: register an estimator in agentgym's registry under `name`."""
    return _REGISTRY.register(name)


def get_advantage(name: str) -> AdvantageFn:
    """The estimator registered under `name`; UnknownAdvantageError lists the known ones."""
    return _REGISTRY.get(name)


def advantage_names() -> list[str]:
    """Names of agentgym's registered estimators, sorted."""
    return _REGISTRY.names()


# --------------------------------------------------------------------------------------------
# Shared steps
# --------------------------------------------------------------------------------------------


def _checked(rewards: Sequence[Sequence[float]], gamma: float) -> list[list[float]]:
    """Rewards as floats, after refusing a gamma outside [0, 1] and non-finite rewards."""
    if not 0.0 <= gamma <= 1.0:  # also rejects NaN
        raise ValueError(f"gamma must be within [0, 1], got {gamma}")
    out = [[float(r) for r in row] for row in rewards]
    for i, row in enumerate(out):
        for t, r in enumerate(row):
            if not math.isfinite(r):
                raise ValueError(f"reward of trajectory {i}, turn {t} is {r}; rewards must be finite")
    return out


def _pstd(xs: Sequence[float], mean: float) -> float:
    """Population standard deviation of `xs` around `mean`."""
    return math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / len(xs))


def _center_per_index(values: Sequence[Sequence[float]], *, normalize_std: bool, leave_one_out: bool) -> list[list[float]]:
    """x_{i,t} minus a baseline over the trajectories reaching index t, optionally over their std.

        plain:          x_{i,t} - mean_t x
        leave_one_out:  x_{i,t} - 1/(n_t - 1) sum_{j in N_t, j != i} x_{j,t}
        normalize_std:  the above divided by (std_t x + eps)
        n_t = 1:        0
    """
    out = [[0.0] * len(row) for row in values]
    horizon = max((len(row) for row in values), default=0)
    for t in range(horizon):
        members = [i for i, row in enumerate(values) if len(row) > t]
        if len(members) < 2:
            continue  # a lone trajectory at this index keeps advantage 0
        column = [values[i][t] for i in members]
        n = len(column)
        total = math.fsum(column)
        mean = total / n
        scale = 1.0 / (_pstd(column, mean) + EPS) if normalize_std else 1.0
        for i, x in zip(members, column):
            baseline = (total - x) / (n - 1) if leave_one_out else mean
            out[i][t] = (x - baseline) * scale
    return out


def _returns(rewards: Sequence[Sequence[float]], gamma: float) -> list[list[float]]:
    """G_{i,t} for every trajectory of the group."""
    return [discounted_returns(row, gamma) for row in rewards]


# --------------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------------


@register_advantage("grpo")
def grpo(rewards: Sequence[Sequence[float]], *, gamma: float, normalize_std: bool) -> list[list[float]]:
    """GRPO with the episode-level baseline: every turn's return against the group's mean first-turn return.

    The formula is `objectives.turn_advantages` (estimator "grpo"), written there once:
    A_{i,t} = G_{i,t} - mean_j G_{j,0}, over (std_j G_{j,0} + eps) if normalize_std. Right for
    outcome rewards (with gamma = 1, G_{i,t} = G_{i,0}); with rewards mid-episode use
    `grpo_turn`, which compares returns at the same turn index.
    """
    returns = _returns(_checked(rewards, gamma), gamma)
    return turn_advantages(returns, ["group"] * len(returns), "grpo", normalize_std=normalize_std)


@register_advantage("rloo")
def rloo(rewards: Sequence[Sequence[float]], *, gamma: float, normalize_std: bool) -> list[list[float]]:
    """RLOO with the episode-level baseline (`objectives.turn_advantages`, estimator "rloo"): no std division.

    A_{i,t} = G_{i,t} - 1/(n-1) sum_{j != i} G_{j,0}; `normalize_std` is ignored (the leave-one-out
    baseline is already on the returns' scale). `rloo_turn` is the per-turn-index variant.
    """
    returns = _returns(_checked(rewards, gamma), gamma)
    return turn_advantages(returns, ["group"] * len(returns), "rloo", normalize_std=False)



@register_advantage("grpo_turn")
def grpo_turn(rewards: Sequence[Sequence[float]], *, gamma: float, normalize_std: bool) -> list[list[float]]:
    """GRPO on returns, with the group baseline taken at each turn index.

        A_{i,t} = G_{i,t} - mean_t G                          (Dr. GRPO, normalize_std=False)
        A_{i,t} = (G_{i,t} - mean_t G) / (std_t G + eps)      (GRPO,     normalize_std=True)
        A_{i,t} = 0                                           when n_t = 1

    At t = 0 this is GRPO's trajectory-level advantage; with outcome-only rewards and gamma = 1,
    G_{i,t} = G_{i,0} and later indices compare the same outcome among the trajectories still going.
    """
    return _center_per_index(_returns(_checked(rewards, gamma), gamma), normalize_std=normalize_std, leave_one_out=False)


@register_advantage("rloo_turn")
def rloo_turn(rewards: Sequence[Sequence[float]], *, gamma: float, normalize_std: bool) -> list[list[float]]:
    """REINFORCE leave-one-out on returns, the baseline taken at each turn index.

        A_{i,t} = G_{i,t} - 1/(n_t - 1) sum_{j in N_t, j != i} G_{j,t}
                = n_t/(n_t - 1) (G_{i,t} - mean_t G)
        A_{i,t} = that / (std_t G + eps)        if normalize_std (not in Ahmadian et al.; offered so
                                                that every estimator takes the same switches)
        A_{i,t} = 0                             when n_t = 1

    The baseline of trajectory i never contains its own return, so it is unbiased.
    """
    return _center_per_index(_returns(_checked(rewards, gamma), gamma), normalize_std=normalize_std, leave_one_out=True)


@register_advantage("turn_norm")
def turn_norm(rewards: Sequence[Sequence[float]], *, gamma: float, normalize_std: bool) -> list[list[float]]:
    """Rewards normalised across the group at each turn index, then summed with discount.

        rhat_{i,t} = (r_{i,t} - mean_t r) / (std_t r + eps)     (r_{i,t} - mean_t r without std)
        rhat_{i,t} = 0                                           when n_t = 1
        A_{i,t}    = sum_{k=t}^{T_i-1} gamma^(k-t) rhat_{i,k}

    Each turn is judged against the siblings' turns at the same depth, so a reward every
    trajectory collects at turn t (a format bonus, an easy first step) cancels out.
    IGPO itself pools the group's rewards over all turns: see `igpo`.
    """
    normalized = _center_per_index(_checked(rewards, gamma), normalize_std=normalize_std, leave_one_out=False)
    return _returns(normalized, gamma)


@register_advantage("igpo")
def igpo(rewards: Sequence[Sequence[float]], *, gamma: float, normalize_std: bool) -> list[list[float]]:
    """IGPO's advantage: rewards normalised over all turns of the group, then summed with discount.

        R          = { r_{j,k} : every trajectory j of the group, every turn k }
        rhat_{i,t} = (r_{i,t} - mean R) / (std R + eps)          (r_{i,t} - mean R without std)
        A_{i,t}    = sum_{k=t}^{T_i-1} gamma^(k-t) rhat_{i,k}
        A_{i,t}    = 0                                           when fewer than 2 trajectories have turns

    Wang et al. 2025 (IGPO) normalise the information-gain and outcome rewards of a group jointly
    in one pool, as here. Pooling compares turns of different depths with each other; `turn_norm`
    is the per-depth variant.
    """
    checked = _checked(rewards, gamma)
    if sum(1 for row in checked if row) < 2:
        return [[0.0] * len(row) for row in checked]  # no sibling to compare with
    pool = [r for row in checked for r in row]
    mean = math.fsum(pool) / len(pool)
    scale = 1.0 / (_pstd(pool, mean) + EPS) if normalize_std else 1.0
    return _returns([[(r - mean) * scale for r in row] for row in checked], gamma)


# --------------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------------


def zero_advantage_fraction(groups_of_advantages: Sequence[Sequence[Sequence[float]]], *, tol: float = 1e-8) -> float:
    """Fraction of groups whose advantages are all within `tol` of 0: IGPO's "advantage collapse".

        collapse = |{ g : max_{i,t} |A^g_{i,t}| <= tol }| / |groups|

    A collapsed group gives the policy no gradient (all its rollouts scored alike). A group without
    a single turn counts as collapsed; with no groups at all the fraction is undefined (NaN).
    """
    if not tol >= 0.0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    if not groups_of_advantages:
        return math.nan
    collapsed = sum(1 for group in groups_of_advantages if all(abs(a) <= tol for row in group for a in row))
    return collapsed / len(groups_of_advantages)
