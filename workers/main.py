"""Worker entry point: `celery -A workers.main worker`."""

from __future__ import annotations

from typing import Any

from celery import concurrency
from celery.concurrency.thread import TaskPool as ThreadsPool
from celery.signals import worker_init

from core import logs
from core.config import Settings
from workers import (
    pool_metrics,  # noqa: F401  (its signal handlers count pool saturation)
    task_logs,  # noqa: F401  (connects the logging signals)
)
from workers.celery_app import DbTask, make_celery

settings = Settings.from_env()
# Now, not at Celery's setup_logging: the worker warns (running as root...) before that.
logs.configure(settings.log_format, settings.log_level)
app = make_celery(settings)


@worker_init.connect  # type: ignore[untyped-decorator]
def size_pools_for_threads(sender: Any, **_kwargs: Any) -> None:
    """Size this process's database and HTTP pools for the worker's threads, if it has any.

    A prefork pool process runs one task at a time; a threads pool runs `concurrency` tasks
    in this very process, all sharing one engine and one HTTP session.
    """
    pool = concurrency.get_implementation(sender.pool_cls)  # a name or the class itself
    if isinstance(pool, type) and issubclass(pool, ThreadsPool):
        DbTask.threads = int(sender.concurrency)
