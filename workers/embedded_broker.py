"""kombu's SQLAlchemy transport, made safe for several processes sharing one database.

The embedded mode (`make run`) uses this transport so that nothing but SQLite is needed. kombu
creates a queue's row on first use with a SELECT then an INSERT, guarded by a lock that only
works inside one process. When the receiver and a worker start on a fresh database they race:
the loser's INSERT fails on the unique name, kombu leaves its session in a failed transaction,
and every later publish or fetch on that channel fails too. CI saw the worker never consume.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import sqlalchemy as sqla_transport
from sqlalchemy.exc import IntegrityError


class RaceSafeChannel(sqla_transport.Channel):
    """A channel whose queue creation tolerates another process creating it first."""

    def _get_or_create(self, queue: str) -> Any:
        try:
            return super()._get_or_create(queue)  # type: ignore[no-untyped-call]
        except IntegrityError:
            # Another process inserted the row between our SELECT and INSERT: use theirs.
            self.session.rollback()
            return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()


def tune_sqlalchemy_transport(polling_interval: float) -> None:
    """Install the race-safe channel and the polling interval on kombu's transport class."""
    # The transport's `polling_interval` option is also passed on to create_engine(), which
    # refuses it, so the class attribute is the only place to set it.
    sqla_transport.Transport.polling_interval = polling_interval
    sqla_transport.Transport.Channel = RaceSafeChannel
