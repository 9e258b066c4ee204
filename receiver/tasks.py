"""Send wake-up messages to the workers, after the transaction that recorded the work."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import current_app
from kombu import pools as kombu_pools

from core import logs, wakeups

if TYPE_CHECKING:
    from flask import Flask

    from core.config import Settings

log = logging.getLogger(__name__)

Enqueue = Callable[[str, dict[str, Any]], None]


# How long close() waits for the sender to hand over what it holds.
CLOSE_TIMEOUT_SECONDS = 5
# A wake-up and the request id that caused it (core.logs), as the sender thread gets them.
Traced = tuple[wakeups.WakeUp, wakeups.Origin]
_STOP: Traced = (("", {}), None)


class CeleryEnqueuer:
    """Publish tasks by name through a Celery app for `settings` (no task code imported).

    A request hands its wake-ups to this process's sender thread and answers at once: the
    rows are committed, so the publish need not hold the request. The sender folds the
    `process_event` wake-ups it finds waiting into `process_events` batches, so under load
    one message (and one worker transaction) carries many events. A wake-up still queued
    when the process dies is a lost message: the inbox sweep re-sends its event.

    Each message carries the ids of the requests that caused it in its `request_ids` header
    (lined up with `event_ids` in a batch), so that the workers' log lines name them.
    """

    def __init__(self, settings: Settings) -> None:
        from workers.celery_app import make_celery  # noqa: PLC0415  (only needed to send)

        self.celery = make_celery(settings)
        self._waiting: queue.SimpleQueue[Traced] = queue.SimpleQueue()
        self._sender: threading.Thread | None = None
        self._sender_pid: int | None = None
        self._starting = threading.Lock()

    def __call__(self, task_name: str, kwargs: dict[str, Any]) -> None:
        self._ensure_sender()
        # Read here, in the request's thread: the sender thread has no request context.
        self._waiting.put(((task_name, kwargs), logs.current_request_id()))

    def _ensure_sender(self) -> None:
        # Started on first use, in the process that uses it: gunicorn forks after loading.
        if self._sender is not None and self._sender_pid == os.getpid():
            return
        with self._starting:
            if self._sender is None or self._sender_pid != os.getpid():
                self._sender = threading.Thread(
                    target=self._send_forever, name="meetinghooks-enqueuer", daemon=True
                )
                self._sender_pid = os.getpid()
                self._sender.start()
                atexit.register(self.flush)

    def _send_forever(self) -> None:
        while True:
            batch = [self._waiting.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < wakeups.BATCH_LIMIT * 10:
                    batch.append(self._waiting.get_nowait())
            stop = _STOP in batch
            self._send([item for item in batch if item != _STOP])
            if stop:
                return

    def _send(self, batch: list[Traced]) -> None:
        for (task_name, kwargs), origins in wakeups.fold_traced(batch):
            extra = {"headers": {logs.REQUEST_IDS: origins}} if any(origins) else {}
            try:
                self.celery.send_task(task_name, kwargs=kwargs, **extra)
            except Exception:
                log.warning("receiver.enqueue.failed task=%s", task_name, exc_info=True)

    def flush(self) -> None:
        """Send what is waiting and stop the sender (at exit, or before close)."""
        sender = self._sender
        if sender is None or self._sender_pid != os.getpid() or not sender.is_alive():
            return
        self._waiting.put(_STOP)
        sender.join(CLOSE_TIMEOUT_SECONDS)
        self._sender = None

    def close(self) -> None:
        """Send what is waiting, then release the broker connections."""
        self.flush()
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
