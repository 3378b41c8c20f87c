"""Gymnasium spaces for free text observations and actions."""

from __future__ import annotations

import string
from typing import Any

import numpy as np
from gymnasium import spaces

_PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " \n"


class FreeText(spaces.Text):
    """Any Python string up to `max_length` characters.

    gymnasium's `Text` only admits characters from its charset (alphanumerics by default),
    which rejects ordinary prose; agent observations and actions are arbitrary text.
    Sampling still draws from printable ASCII so `space.sample()` stays useful.
    """

    def __init__(self, max_length: int = 100_000, seed: int | np.random.Generator | None = None) -> None:
        super().__init__(max_length=max_length, min_length=0, charset=_PRINTABLE, seed=seed)

    def contains(self, x: Any) -> bool:
        """True for any str no longer than `max_length`."""
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"FreeText(max_length={self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, FreeText) and other.max_length == self.max_length
