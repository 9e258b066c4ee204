"""A wall-clock limit on one outgoing HTTP attempt, whatever the peer does.

Socket timeouts bound each read, not the whole exchange: a callback receiver that sends its
status line one byte every few seconds never trips them and can hold a worker (and outlive the
delivery's lease) for as long as it likes. A `Deadline` shuts the attempt's socket down when its
time is up, so the blocked read returns at once and the attempt ends as a timeout.

The guarded connections in `core.ssrf` hand every socket they open or reuse to `watch()`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_current = threading.local()


class Deadline:
    """Shuts down the sockets it watches once `seconds` have passed since it started."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def remaining(self) -> float:
        """Seconds left, never below zero."""
        return max(0.0, self.expires_at - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the deadline passes (at once if it already has)."""
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut_down(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    # The base-class shutdown, even on an SSLSocket: it wakes the reading thread with an
    # end-of-file without touching the TLS object that thread is using.
    with contextlib.suppress(OSError):  # already closed: nothing left to wake
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


@contextmanager
def limit(seconds: float) -> Iterator[Deadline]:
    """Run the block under a deadline that sockets opened in this thread are held to."""
    deadline = Deadline(seconds)
    previous = getattr(_current, "deadline", None)
    _current.deadline = deadline
    deadline._timer.start()
    try:
        yield deadline
    finally:
        deadline._timer.cancel()
        _current.deadline = previous


def current() -> Deadline | None:
    """The deadline this thread is running under, if any."""
    deadline: Deadline | None = getattr(_current, "deadline", None)
    return deadline


def watch(sock: socket.socket | None) -> None:
    """Hold `sock` to this thread's deadline; a no-op outside `limit()`."""
    deadline = current()
    if deadline is not None and sock is not None:
        deadline.watch(sock)
