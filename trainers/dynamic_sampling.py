"""Dynamic sampling (DAPO, Yu et al. 2025, sec. 3.2): train only on groups whose rollouts disagree.

With a group baseline (GRPO, RLOO), a group whose episodes all earned the same returns has an
advantage of zero on every turn: it costs a forward and backward pass and teaches nothing. Once a
policy solves (or always fails) most tasks, whole steps go by without an update. Dynamic sampling
draws more groups for the step until `tasks_per_step` informative ones are in, or a draw limit is hit.
"""

from __future__ import annotations

from collections.abc import Sequence


def informative_groups(group_ids: Sequence[str], advantages: Sequence[Sequence[float]]) -> list[str]:
    """The groups, in order of first appearance, in which at least one turn has a non-zero advantage."""
    if len(group_ids) != len(advantages):
        raise ValueError(f"group_ids and advantages must have the same length, got {len(group_ids)} and {len(advantages)}")
    seen: dict[str, bool] = {}
    for group, turns in zip(group_ids, advantages):
        seen[group] = seen.get(group, False) or any(a != 0.0 for a in turns)
    return [group for group, useful in seen.items() if useful]
