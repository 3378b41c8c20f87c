"""A bounded collector for a command's output: keeps the head and the tail, counts what it dropped."""

from __future__ import annotations

TRUNCATION_MARK = "\n[agentgym: {dropped} bytes of output truncated]\n"


class CappedOutput:
    """Collects a byte stream in at most `cap` bytes of memory, whatever the stream's length.

    The first cap/2 bytes are kept as they come and the last cap/2 in a sliding tail, so an agent
    sees how a huge output started and how it ended; the text says how much was dropped between.
    """

    def __init__(self, cap: int) -> None:
        if cap < 2:
            raise ValueError(f"output cap must be at least 2 bytes, got {cap}")
        self.cap = cap
        self._head_cap = cap // 2
        self._tail_cap = cap - self._head_cap
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        """Take the next piece of the stream."""
        if not chunk:
            return
        self.total += len(chunk)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self._tail += chunk[-self._tail_cap:]
            if len(self._tail) > self._tail_cap:
                del self._tail[: len(self._tail) - self._tail_cap]

    @property
    def dropped(self) -> int:
        """Bytes of the stream not kept."""
        return self.total - len(self._head) - len(self._tail)

    def text(self) -> str:
        """The kept output as text (invalid UTF-8 replaced), with a marker where bytes were dropped."""
        head = self._head.decode("utf-8", errors="replace")
        if not self._tail:
            return head
        tail = self._tail.decode("utf-8", errors="replace")
        middle = TRUNCATION_MARK.format(dropped=self.dropped) if self.dropped else ""
        return head + middle + tail
