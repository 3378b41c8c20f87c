"""The socket of a `docker exec`: writing the command's stdin, and reading its multiplexed output frames."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable

_STREAM_STDOUT, _STREAM_STDERR = 1, 2
_RECV_BYTES = 1 << 18


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


def pump(sock: socket.socket, deadline: float, on_stdout: Callable[[bytes], None], on_stderr: Callable[[bytes], None]) -> bool:
    """Read the exec's multiplexed stream to its end; False when the deadline came first.

    Each frame is an 8-byte header (stream type, 3 zero bytes, big-endian length) and its payload.
    Frames are handed on as they come, so memory stays bounded whatever the output's size.
    """
    buffer = bytearray()
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
        buffer += data
        pos, end = 0, len(buffer)
        while end - pos >= 8:
            size = int.from_bytes(buffer[pos + 4:pos + 8], "big")
            if end - pos - 8 < size:
                break
            kind = buffer[pos]
            payload = bytes(buffer[pos + 8:pos + 8 + size])
            (on_stderr if kind == _STREAM_STDERR else on_stdout)(payload)
            pos += 8 + size
        del buffer[:pos]
