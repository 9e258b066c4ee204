"""The workers' logging: LOG_FORMAT lines (core.logs), and each task's context on its lines.

Connected by `workers.main`, the worker's and beat's entry point.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any

from celery import Task
from celery.signals import setup_logging, task_postrun, task_prerun
from structlog.contextvars import bind_contextvars, clear_contextvars

from core import logs
from workers.celery_app import DbTask

events_log = logs.get_logger("workers.events")
_JSON_LINES = logs.formatter("json")


@setup_logging.connect  # type: ignore[untyped-decorator]
def configure_logging(loglevel: str | int | None = None, **_kwargs: Any) -> None:
    """Set up the worker's and beat's logging ourselves: LOG_FORMAT lines (core.logs).

    Connected, this signal keeps Celery from configuring logging at all; its own lines then
    take our format too.
    """
    settings = DbTask.settings
    log_format = settings.log_format if settings else logs.DEFAULT_LOG_FORMAT
    logs.configure(log_format, loglevel or (settings.log_level if settings else "INFO"))
    if log_format == "json":
        from celery.apps import worker as celery_worker  # noqa: PLC0415  (workers only)

        # Celery's signal handlers write "worker: Warm shutdown (MainProcess)" and the like
        # straight to the file descriptor (no logging: a signal may interrupt a write).
        celery_worker.safe_say = _say_as_json


def _say_as_json(msg: str, f: IO[str] | None = None) -> None:
    """Write what Celery says from a signal handler as one JSON line, with os.write as it does."""
    record = logging.LogRecord("celery.apps.worker", logging.WARNING, __file__, 0, msg, None, None)
    stream = f or sys.__stderr__
    if stream is not None:
        os.write(stream.fileno(), (_JSON_LINES.format(record) + "\n").encode())


@task_prerun.connect  # type: ignore[untyped-decorator]
def bind_task_context(task: Task, task_id: str, kwargs: dict[str, Any], **_rest: Any) -> None:
    """Bind the task and the request ids its message carries to every line the task logs."""
    clear_contextvars()
    bind_contextvars(task=task.name, task_id=task_id)
    carried = getattr(task.request, logs.REQUEST_IDS, None)
    if not isinstance(carried, list):
        return
    logs.bind_request_ids(carried)
    event_ids = kwargs.get("event_ids")
    if isinstance(event_ids, list) and len(event_ids) == len(carried) > 1:
        # A batch folds several requests' events: say which request each event came from.
        for event_id, request_id in zip(event_ids, carried, strict=True):
            events_log.info(
                "workers.event.received",
                event_id=event_id,
                **({logs.REQUEST_ID: request_id} if logs.is_sane_request_id(request_id) else {}),
            )


@task_postrun.connect  # type: ignore[untyped-decorator]
def unbind_task_context(**_kwargs: Any) -> None:
    """Leave nothing of this task in the context of the next one on this thread."""
    clear_contextvars()
