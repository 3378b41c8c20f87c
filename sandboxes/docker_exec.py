"""The socket of a `docker exec`: writing the command's stdin, and reading its multiplexed output frames."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable

_STREAM_STDOUT, _STREAM_STDERR = 1, 2
_HEADER_BYTES = 8
_RECV_BYTES = 1 << 18


class Demuxer:
    """Splits an exec's multiplexed stream into its stdout and stderr callbacks, one frame at a time.

    Each frame is an 8-byte header (stream type, 3 zero bytes, big-endian length) and its payload.
    The unfinished frame is kept between reads, so a stream read in several pumps (up to a timeout,
    then to its end after the kill) is split where its frames are, not where a pump stopped.
    """

    def __init__(self, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> None:
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        """Take the next bytes of the stream and hand on every frame they complete."""
        buffer = self._buffer
        buffer += data
        pos, end = 0, len(buffer)
        while end - pos >= _HEADER_BYTES:
            size = int.from_bytes(buffer[pos + 4:pos + _HEADER_BYTES], "big")
            if end - pos - _HEADER_BYTES < size:
                break
            start = pos + _HEADER_BYTES
            payload = bytes(buffer[start:start + size])
            (self._on_stderr if buffer[pos] == _STREAM_STDERR else self._on_stdout)(payload)
            pos = start + size
        del buffer[:pos]


def send_all(sock: socket.socket, chunks: Iterable[bytes], deadline: float) -> bool:
    """Write stdin and close our side so the command sees end of file; False at the deadline."""
    try:
        for chunk in chunks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            sock.settimeout(remaining)
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
    except socket.timeout:
        return False
    return True


def pump(sock: socket.socket, deadline: float, frames: Demuxer) -> bool:
    """Read the exec's stream into `frames` to its end; False when the deadline came first.

    Frames are handed on as they come, so memory stays bounded whatever the output's size.
    """
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            data = sock.recv(_RECV_BYTES)
        except socket.timeout:
            return False
        except OSError:
            return True  # the engine closed the stream (the container went away)
        if not data:
            return True
        frames.feed(data)
