"""The embedded broker: kombu's SQLAlchemy transport, fixed for several processes and quick stops.

`make run` uses this transport so that nothing but SQLite is needed. Two things in kombu's own
transport hurt here, so `install()` makes `sqla+...` broker URLs load this subclass instead:

- kombu creates a queue's row on first use with a SELECT then an INSERT, guarded by a lock that
  only works inside one process. When the receiver and a worker start on a fresh database they
  race: the loser's INSERT fails on the unique name, kombu leaves its session in a failed
  transaction, and every later publish or fetch on that channel fails too (CI saw a worker that
  never consumed).
- Celery's blocking consumer loop asks the transport for messages up to 2 s at a time and only
  looks for a shutdown request in between, twice on the way out: Ctrl-C took 5 s or more. Our
  transport waits in short steps and gives up early once the worker has been asked to stop.
"""

from __future__ import annotations

import time
from typing import Any

from celery.worker import state as worker_state
from kombu import transport
from kombu.transport import sqlalchemy as sqla_transport
from sqlalchemy.exc import IntegrityError

URL_PREFIXES = ("sqla+", "sqlalchemy+")
ALIASES = ("sqla", "sqlalchemy")
TRANSPORT_PATH = "workers.embedded_broker:EmbeddedTransport"
# How often a wait for messages looks for a stop request.
STOP_CHECK_SECONDS = 0.25


class RaceSafeChannel(sqla_transport.Channel):
    """A channel whose queue creation tolerates another process creating it first."""

    def _get_or_create(self, queue: str) -> Any:
        try:
            return super()._get_or_create(queue)  # type: ignore[no-untyped-call]
        except IntegrityError:
            # Another process inserted the row between our SELECT and INSERT: use theirs.
            self.session.rollback()
            return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()


class EmbeddedTransport(sqla_transport.Transport):
    """kombu's SQLAlchemy transport with the race-safe channel and short waits."""

    Channel = RaceSafeChannel
    # kombu polls once a second, which makes `make run` feel slow; `make_celery` sets this from
    # BROKER_POLLING_INTERVAL. (The transport option of that name would be handed on to
    # create_engine(), which refuses it, so the class attribute is the place to set it.)
    polling_interval = 0.1

    # kombu's own base classes disagree on this signature; this is the virtual transport's.
    def drain_events(self, connection: Any, timeout: float | None = None) -> Any:  # type: ignore[override]
        """Wait for a message as kombu does, but stop waiting once the worker is asked to stop."""
        if timeout is None:
            return super().drain_events(connection)  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + timeout
        while True:
            step = min(STOP_CHECK_SECONDS, max(0.0, deadline - time.monotonic()))
            try:
                return super().drain_events(connection, timeout=step)  # type: ignore[no-untyped-call]
            except TimeoutError:
                if time.monotonic() >= deadline or _stop_requested():
                    raise


def _stop_requested() -> bool:
    # The flags Celery's signal handlers set, judged as its maybe_shutdown() does: by identity,
    # because a warm shutdown sets should_stop to 0 (EX_OK), which equals False.
    return any(
        flag is not None and flag is not False
        for flag in (worker_state.should_stop, worker_state.should_terminate)
    )


def is_embedded(broker_url: str) -> bool:
    """Whether `broker_url` names the SQLAlchemy transport (`sqla+...` or `sqlalchemy+...`)."""
    return broker_url.startswith(URL_PREFIXES)


def install(polling_interval: float) -> None:
    """Make kombu load EmbeddedTransport for `sqla+` URLs in this process, polling this often.

    The URL's prefix names the transport, and it wins over any transport Celery is configured
    with (Celery's own CLI also copies BROKER_URL over the app's broker setting), so the alias
    is the one place that every connection of the process goes through.
    """
    EmbeddedTransport.polling_interval = polling_interval
    for alias in ALIASES:
        transport.TRANSPORT_ALIASES[alias] = TRANSPORT_PATH
        # kombu caches what an alias resolved to; a connection made before must not stick.
        transport._transport_cache.pop(alias, None)
