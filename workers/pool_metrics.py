"""Pool saturation: tasks running against what each Celery worker's pool can run at once.

The pool is named by the queues its worker consumes (`events`, `deliveries`, or both in one
worker: `deliveries,events`), a label with as few values as there are ways to start a worker.
Busy is counted where the task runs: in each prefork pool process, or in the worker's own
process for a threads pool; a process that dies mid-task is forgotten at the next scrape
(`core.metrics_export`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.signals import task_postrun, task_prerun, worker_init

from core.metrics import POOL_BUSY, POOL_BUSY_SECONDS, POOL_CAPACITY

# Set in the worker's main process before its pool forks, so prefork children inherit it.
_pool: str | None = None
# Where a run's start is kept: on its request, one per run even when two threads run copies
# of one message (a broker's redelivery).
_STARTED = "meetinghooks_started"


def pool_label(queues: Any) -> str:
    """Return the pool label of a worker consuming `queues` (names), sorted and joined."""
    return ",".join(sorted(str(name) for name in queues))


@worker_init.connect  # type: ignore[untyped-decorator]
def record_capacity(sender: Any, **_kwargs: Any) -> None:
    """Name this worker's pool and report how many tasks it runs at once."""
    global _pool  # noqa: PLW0603  (one worker per process: its pool's name for its task hooks)
    _pool = pool_label(sender.app.amqp.queues.consume_from)
    POOL_CAPACITY.labels(pool=_pool).set(int(sender.concurrency))


@task_prerun.connect  # type: ignore[untyped-decorator]
def task_started(task: Any, **_kwargs: Any) -> None:
    """Count a task as running."""
    if _pool is None:  # a task run outside a worker (tests calling it in-process)
        return
    setattr(task.request, _STARTED, time.monotonic())
    POOL_BUSY.labels(pool=_pool).inc()


@task_postrun.connect  # type: ignore[untyped-decorator]
def task_ended(task: Any, **_kwargs: Any) -> None:
    """Count a task as done, and the time it kept its slot busy."""
    started: float | None = getattr(task.request, _STARTED, None)
    if _pool is None or started is None:
        return
    setattr(task.request, _STARTED, None)
    POOL_BUSY.labels(pool=_pool).dec()
    POOL_BUSY_SECONDS.labels(pool=_pool).inc(time.monotonic() - started)


@contextmanager
def extra_thread_busy() -> Iterator[None]:
    """Count work a task hands to a thread of its own (a delivery drain's lane) as busy."""
    if _pool is None:
        yield
        return
    started = time.monotonic()
    POOL_BUSY.labels(pool=_pool).inc()
    try:
        yield
    finally:
        POOL_BUSY.labels(pool=_pool).dec()
        POOL_BUSY_SECONDS.labels(pool=_pool).inc(time.monotonic() - started)
