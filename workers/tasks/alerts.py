"""The alert sweep: time-based rules (`meeting.long_running`, `meeting.no_start`)."""

from __future__ import annotations

import logging

from celery import shared_task

from core import task_names
from core.db import utcnow
from core.services import alerts
from workers.celery_app import DbTask

log = logging.getLogger(__name__)


@shared_task(  # type: ignore[untyped-decorator]  # celery ships no annotations
    name=task_names.SWEEP_ALERTS,
    base=DbTask,
    bind=True,
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
)
def sweep_alerts(self: DbTask, **_compat: object) -> int:
    """Fire the time-based alert rules whose condition holds now; safe to run twice."""
    # The alerts' deliveries are woken once this transaction commits (core.wakeups).
    with self.session_scope() as session:
        fired = alerts.sweep(session, now=utcnow())
    if fired:
        log.info("workers.sweep.alerts fired=%d", fired)
    return fired
