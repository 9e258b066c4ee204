"""Queue lag, read from the database when /metrics is scraped.

How long the oldest due delivery and the oldest unprocessed event have waited: the database is
the queue (the broker only carries wake-ups), so it is asked, not the broker. Each read is one
indexed MIN() under a short statement timeout on its own small connection pool, cached for a few
seconds per process; a database that is down or slow costs the scrape at most a few seconds and
never fails it: the ages are left out and `meetinghooks_scrape_collector_success` says 0.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily

from core.db import is_sqlite, make_engine, make_session_factory, utcnow
from core.models import Delivery, Event

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client.metrics_core import Metric
    from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

CACHE_SECONDS: Final = 5.0
STATEMENT_TIMEOUT_MS: Final = 1000
CONNECT_TIMEOUT_SECONDS: Final = 2
POOL_TIMEOUT_SECONDS: Final = 1.0
COLLECTOR: Final = "queue_lag"


@dataclass(frozen=True)
class Lag:
    """Ages in seconds (0 when nothing waits); None when the database could not be read."""

    oldest_due_delivery: float | None
    oldest_unprocessed_event: float | None


def read_lag(session: Session, now: dt.datetime) -> Lag:
    """Return how long the oldest due delivery and the oldest unprocessed event have waited.

    A delivery is due as the sweep sees it (`outbox.due_ids`): pending, its time come, and not
    leased by a worker attempting it right now.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
    due_since = session.scalar(
        sa.select(Delivery.next_attempt_at)
        .where(
            Delivery.status == "pending",
            Delivery.next_attempt_at <= now,
            sa.or_(Delivery.locked_until.is_(None), Delivery.locked_until <= now),
        )
        .order_by(Delivery.next_attempt_at)
        .limit(1)
    )
    received = session.scalar(
        sa.select(Event.received_at)
        .where(Event.processed_at.is_(None))
        .order_by(Event.received_at)
        .limit(1)
    )
    return Lag(_age(due_since, now), _age(received, now))


def _age(since: dt.datetime | None, now: dt.datetime) -> float:
    return 0.0 if since is None else max(0.0, (now - since).total_seconds())


def lag_session_factory(database_url: str) -> sessionmaker[Session]:
    """Return sessions on a pool of their own: a scrape never waits for the requests' pool."""
    if is_sqlite(database_url):
        # Deferred transactions: in WAL mode a reader takes no lock and waits for no writer.
        engine = make_engine(database_url, sqlite_immediate=False)
    else:
        engine = make_engine(
            database_url,
            pool_size=1,
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT_SECONDS,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS},
        )
    return make_session_factory(engine)


class QueueLagCollector:
    """Expose the queue lag, read at most once per CACHE_SECONDS in this process."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._lag = Lag(None, None)

    def lag(self) -> Lag:
        """Return the cached lag, reading the database again once the cache is stale."""
        with self._lock:  # concurrent scrapes wait for one read instead of each making one
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.cache_seconds:
                self._lag = self._read()
                self._read_at = self.clock()  # a slow read still gets its full cache time
            return self._lag

    def _read(self) -> Lag:
        try:
            with self.sessions() as session, session.begin():
                return read_lag(session, utcnow())
        except Exception:  # a scrape must answer whatever the database does
            log.warning("receiver.metrics.queue_lag_unavailable", exc_info=True)
            return Lag(None, None)

    def collect(self) -> Iterator[Metric]:
        """Yield the two ages (when read) and whether reading them worked."""
        lag = self.lag()
        read = lag.oldest_due_delivery is not None and lag.oldest_unprocessed_event is not None
        success = GaugeMetricFamily(
            "meetinghooks_scrape_collector_success",
            "Whether a collector that reads at scrape time succeeded (1) or not (0)",
            labels=["collector"],
        )
        success.add_metric([COLLECTOR], 1.0 if read else 0.0)
        yield success
        if lag.oldest_due_delivery is not None:
            yield GaugeMetricFamily(
                "meetinghooks_delivery_queue_lag_seconds",
                "Age of the oldest due delivery not yet attempted (0: none waits)",
                value=lag.oldest_due_delivery,
            )
        if lag.oldest_unprocessed_event is not None:
            yield GaugeMetricFamily(
                "meetinghooks_inbox_lag_seconds",
                "Age of the oldest recorded event not yet processed (0: none waits)",
                value=lag.oldest_unprocessed_event,
            )
