"""Send wake-up messages to the workers, after the transaction that recorded the work."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import current_app
from kombu import pools as kombu_pools

if TYPE_CHECKING:
    from flask import Flask

    from core.config import Settings

log = logging.getLogger(__name__)

Enqueue = Callable[[str, dict[str, Any]], None]


class CeleryEnqueuer:
    """Publish tasks by name through a Celery app for `settings` (no task code imported)."""

    def __init__(self, settings: Settings) -> None:
        from workers.celery_app import make_celery  # noqa: PLC0415  (only needed to send)

        self.celery = make_celery(settings)

    def __call__(self, task_name: str, kwargs: dict[str, Any]) -> None:
        self.celery.send_task(task_name, kwargs=kwargs)

    def close(self) -> None:
        """Release the broker connections."""
        # close() alone leaves the producer pool's AMQP socket open (a ResourceWarning).
        self.celery.producer_pool.connections.force_close_all()
        # kombu keeps one producer pool per broker URL for the whole process: drop the one we
        # just closed, or the next app on this URL would get "Acquire on closed pool".
        connection = self.celery.connection_for_write()
        for group in (kombu_pools.producers, kombu_pools.connections):
            with contextlib.suppress(KeyError):
                del group[connection]
        connection.release()
        self.celery.close()


def publisher(app: Flask) -> Enqueue:
    """Return the app's after-commit publisher: it sends through the enqueuer, never raises.

    The database holds the work, so a lost message only delays it until the next sweep
    (SPEC 1).
    """

    def publish(task_name: str, kwargs: dict[str, Any]) -> None:
        sender: Enqueue = app.extensions["meetinghooks.enqueue"]
        try:
            sender(task_name, kwargs)
        except Exception:
            log.warning("receiver.enqueue.failed task=%s", task_name, exc_info=True)

    return publish


def enqueue(task_name: str, **kwargs: Any) -> None:
    """Publish a task by name now; a broker failure is logged, not raised.

    Services note their wake-ups instead (`core.wakeups`), and the request's commit
    publishes them; this is for a view that must send one outside a transaction.
    """
    publisher(current_app)(task_name, kwargs)
