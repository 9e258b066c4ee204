"""A beat scheduler that outlives broker outages."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from celery.beat import PersistentScheduler

log = logging.getLogger(__name__)

# How soon beat tries the broker again after a failed tick.
RETRY_AFTER_SECONDS = 1.0


class ResilientScheduler(PersistentScheduler):  # type: ignore[misc]
    """Celery's PersistentScheduler, but a broker error never ends the beat process.

    Celery's own tick() lets an error raised while connecting escape (RabbitMQ's
    NOT_ALLOWED while a vhost is recreated, or a connection that stays down past
    `broker_connection_max_retries`), which kills an embedded beat (`worker -B`) silently.
    The sweeps are what make a lost message harmless (SPEC 1), so beat must keep beating.
    """

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Run due entries; on a broker error, reconnect and try again shortly."""
        try:
            return float(super().tick(*args, **kwargs))
        except Exception:  # whatever the broker raised, beat must go on
            log.warning("beat.tick.failed retry_in=%ss", RETRY_AFTER_SECONDS, exc_info=True)
        self._forget_broker_connection()
        # The failed entry was already popped from the heap: rebuild it from the schedule.
        self._heap = None
        return RETRY_AFTER_SECONDS

    def _forget_broker_connection(self) -> None:
        # `producer` and `connection` are cached properties: drop them so the next tick
        # connects again instead of reusing a dead connection.
        self.__dict__.pop("producer", None)
        connection = self.__dict__.pop("connection", None)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.collect()
