"""Seeds derived from names: per-request sampling seeds, and disjoint seed spaces for training and evaluation.

Every seed is a pure function of what it is for, so a rerun with the same run seed draws the
same episodes and asks the policy for the same samples. Training episodes take their env
seeds from [0, 2**31) and held-out evaluations from [2**31, 2**32): the two can never share
a seed, whatever the run seed or the number of steps.
"""

from __future__ import annotations

import hashlib

SEED_SPACE = 2**31  # seeds fit a signed 32-bit int: vLLM, numpy and torch all take them
EVAL_SEED_BASE = SEED_SPACE  # held-out episodes: [2**31, 2**32)
_EVAL_GROUPS = 2**30  # room for this many held-out groups above an eval base


def derive_seed(*parts: object) -> int:
    """A seed in [0, 2**31) that depends only on `parts` (stable across processes and Python versions)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % SEED_SPACE


def train_seed(value: int) -> int:
    """A training episode's env seed: folded into [0, 2**31), below every evaluation seed."""
    return value % SEED_SPACE


def eval_seed_base(run_seed: int) -> int:
    """The first env seed of a run's held-out episodes: at or above 2**31, above every training seed."""
    return EVAL_SEED_BASE + derive_seed("eval", run_seed) % _EVAL_GROUPS


def request_seed(run_seed: int, group_id: str, sample_index: int, turn: int) -> int:
    """The sampling seed of one policy call: fixed by (run seed, episode, turn), so reruns sample alike."""
    return derive_seed("request", run_seed, group_id, sample_index, turn)
