"""gunicorn settings that take code; `meetinghooks serve` loads them (`-c python:<this module>`).

On SIGTERM gunicorn stops gracefully: each worker finishes the requests it has, for at most
the graceful timeout. But its workers keep the shared listening socket open until then, so the
kernel still completes new connections into the backlog, where they wait unanswered until they
are reset at exit. Here the master stops listening the moment a SIGTERM arrives (shutdown() on
the socket every worker shares): new connections are refused at once and a load balancer moves
on, while the requests in flight finish. Only on SIGTERM: a reload (HUP) or fewer workers
(TTOU) also stop workers gracefully, but the service goes on listening.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

# gunicorn reads these names as settings; the command line wins over them. `serve` names the
# subclass that also bounds how long a request may take to arrive (meetinghooks/slow_clients.py).
worker_class = "meetinghooks.slow_clients.DeadlineThreadWorker"


def when_ready(server: Any) -> None:
    """Make the master's SIGTERM stop listening before the graceful stop of its workers."""
    graceful_stop = server.handle_term

    def stop_listening_then_stop() -> None:
        for listener in server.LISTENERS:
            with contextlib.suppress(OSError):  # not connected, or gone already
                listener.sock.shutdown(socket.SHUT_RDWR)
        graceful_stop()

    # The arbiter looks its signal handlers up by name on each signal.
    server.handle_term = stop_listening_then_stop


class StoppingThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn ships no annotations
    """gunicorn's threaded worker, untroubled by a listening socket its master shut down."""

    def accept(self, listener: Any) -> None:
        """Accept as usual; a socket that stopped listening (EINVAL) has nothing to accept."""
        try:
            super().accept(listener)
        except OSError as exc:
            # Until its own SIGTERM arrives, a worker still polls the socket, which reads as
            # ready once it is shut down.
            if exc.errno != errno.EINVAL:
                raise
