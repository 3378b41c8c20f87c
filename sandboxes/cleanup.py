"""Close every open sandbox when the process ends: normal exit, an uncaught exception, SIGINT or SIGTERM.

`kill -9` cannot be caught; what it leaves behind is found by its dead owner and removed by
`agentgym sandbox gc` (SandboxBackend.gc).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from types import FrameType

from agentgym.sandboxes.base import live_sandboxes

log = logging.getLogger("agentgym.sandboxes")  # one logger for the package, as in messages.py

_installed = False
_install_lock = threading.Lock()


def close_all() -> int:
    """Stop every sandbox pool, then close every open sandbox of this process; returns how many were closed."""
    from agentgym.sandboxes.pool import close_all_pools  # the pool module imports this package's base

    # Pools first: a pool's worker may be resetting or creating a sandbox right now, and closing that
    # sandbox under it would let the reset make a new container that nobody then closes.
    close_all_pools()
    closed = 0
    for sandbox in live_sandboxes():
        try:
            sandbox.close()
            closed += 1
        except Exception as exc:  # one failing close must not keep the others open
            log.warning("could not close sandbox %s: %s", sandbox.id, exc)
    return closed


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    close_all()
    # Die of SIGTERM as the default action would, so the parent sees the usual exit status.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def install_handlers() -> None:
    """Register the exit hook, and a SIGTERM handler unless the program installed its own; idempotent.

    SIGINT needs no handler: it raises KeyboardInterrupt, which unwinds `with` blocks and reaches
    the exit hook. A program that handles SIGTERM itself keeps its handler and should close its
    sandboxes there (or let close_all() run at exit).
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
        atexit.register(close_all)
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
