"""A gunicorn worker that gives each request a deadline to arrive: slow clients cannot starve it.

gunicorn's threaded worker gives a connection a thread once its first byte arrives, and the
thread then waits for as long as the client takes to send the rest of the request. A few
clients that trickle their headers or body a byte at a time (slowloris) held every thread of
every worker, and the service answered no one else. Here the whole request, headers and body,
must arrive within `REQUEST_READ_TIMEOUT_SECONDS` of its first byte; a client still sending
then is disconnected (the app, if it was reading the body, answers 400 client-disconnected).
"""

from __future__ import annotations

import errno
import math
import os
import socket
import time
from typing import Any

from meetinghooks.gunicorn_config import StoppingThreadWorker

READ_TIMEOUT_ENV = "REQUEST_READ_TIMEOUT_SECONDS"
# Long enough for a 64 KiB body over a slow mobile link; short enough that a thread held by a
# trickling client is soon free again.
DEFAULT_READ_TIMEOUT_SECONDS = 10.0


def read_timeout() -> float:
    """Return the configured per-request read deadline in seconds; ValueError if unusable."""
    raw = os.environ.get(READ_TIMEOUT_ENV, str(DEFAULT_READ_TIMEOUT_SECONDS))
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(f"{READ_TIMEOUT_ENV} must be a positive number of seconds, not {raw!r}")
    return value


class DeadlineSocket:
    """A client socket whose reads fail once the current request's deadline has passed."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.deadline: float | None = None

    def recv(self, size: int, *flags: int) -> bytes:
        if self.deadline is None:
            return self._sock.recv(size, *flags)
        # Past the deadline, bytes that have arrived are still read (the server may have been
        # the slow one); only waiting for more is refused.
        remaining = max(0.0, self.deadline - time.monotonic())
        previous = self._sock.gettimeout()
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(size, *flags)
        except (TimeoutError, BlockingIOError):
            raise self._too_slow() from None
        finally:
            self._sock.settimeout(previous)

    @staticmethod
    def _too_slow() -> ConnectionResetError:
        # A reset, as far as gunicorn and werkzeug are concerned: the client is gone. gunicorn
        # closes the connection quietly; a body being read becomes werkzeug's ClientDisconnected.
        return ConnectionResetError(errno.ECONNRESET, "request not received in time")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class DeadlineThreadWorker(StoppingThreadWorker):
    """gunicorn's gthread worker that stops listening on SIGTERM, with a deadline for each
    request to arrive."""

    def init_process(self) -> None:
        self.read_timeout = read_timeout()
        super().init_process()

    def handle(self, conn: Any) -> Any:
        if self.cfg.is_ssl:
            # ssl wraps the socket object itself; TLS belongs to the proxy in front (docs).
            return super().handle(conn)
        if not isinstance(conn.sock, DeadlineSocket):
            conn.sock = DeadlineSocket(conn.sock)
        # The clock starts when the thread takes the connection: gunicorn has waited for the
        # first byte without one, so an idle connection costs no thread.
        conn.sock.deadline = time.monotonic() + self.read_timeout
        try:
            return super().handle(conn)
        finally:
            conn.sock.deadline = None
