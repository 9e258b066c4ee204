"""Event processing tasks: apply one event or a batch, then drain the inbox; the inbox sweep.

Every wake-up, once its own events are applied, goes on applying the fresh events waiting in
the inbox, DRAIN_BATCH to a transaction, until fewer than that wait (or DRAIN_SECONDS pass).
Under a backlog one message then does the work of many, whose own messages find their events
applied; with nothing waiting the drain costs one empty claim.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

from celery import shared_task
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from core import metrics, task_names
from core.db import utcnow
from core.services import events, inbox
from workers.celery_app import EVENTS_QUEUE, DbTask

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger(__name__)

SWEEP_BATCH = 500
# The database is unreachable, restarting or failing over: worth a retry, unlike a bug.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError, PoolTimeout)
# Re-sent this often, an event is stuck rather than unlucky: say so in the log.
STUCK_AFTER_RESENDS = 5
# A drain's transaction applies up to this many events; the drain stops claiming after
# DRAIN_SECONDS, well within the tasks' soft time limit (the messages left carry on).
DRAIN_BATCH = 100
DRAIN_SECONDS = 5.0


@shared_task(  # type: ignore[untyped-decorator]  # celery ships no annotations
    name=task_names.PROCESS_EVENT,
    base=DbTask,
    bind=True,
    acks_late=True,
    ignore_result=True,
    # A database that is down for a while delays events. Short countdowns only (SPEC 1): once
    # they are spent the inbox sweep re-sends the event, as it does for any lost message.
    autoretry_for=TRANSIENT_DB_ERRORS,
    retry_backoff=True,
    retry_backoff_max=10,
    retry_jitter=True,
    max_retries=5,
    soft_time_limit=60,
    time_limit=90,
)
def process_event(self: DbTask, event_id: int, **_compat: object) -> str:
    """Apply one recorded event to its meeting; safe to run twice."""
    # The commit publishes the new deliveries' wake-ups: each row exists before its message.
    with self.session_scope() as session:
        applied = events.apply_event(session, event_id)
    metrics.event_processed(applied)
    if applied.outcome != "applied" and not applied.repeated:
        log.info("workers.event.not_applied event=%s outcome=%s", event_id, applied.outcome)
    _drain(self)
    return applied.outcome


@shared_task(  # type: ignore[untyped-decorator]  # celery ships no annotations
    name=task_names.PROCESS_EVENTS,
    base=DbTask,
    bind=True,
    acks_late=True,
    ignore_result=True,
    autoretry_for=TRANSIENT_DB_ERRORS,
    retry_backoff=True,
    retry_backoff_max=10,
    retry_jitter=True,
    max_retries=5,
    soft_time_limit=60,
    time_limit=90,
)
def process_events(self: DbTask, event_ids: list[int], **_compat: object) -> int:
    """Apply a batch of recorded events in one transaction, then drain; safe to run twice.

    The receiver folds the wake-ups of concurrent requests into one such message.
    """
    _, applied = _apply_batch(self, event_ids)
    _drain(self)
    return applied


def _apply_batch(task: DbTask, event_ids: Sequence[int] | None) -> tuple[int, int]:
    """Apply `event_ids`, or (None) a fresh batch claimed from the inbox, in one transaction.

    Return how many events were named or claimed, and how many of them were applied. An event
    that cannot be applied must not hold back the rest: on any error but a transient one the
    batch is applied again one event per transaction, and each that still fails is counted as
    a second try (`enqueue_count`), which leaves it to the sweep's back-off, out of drains.
    """
    claimed = list(event_ids or [])
    try:
        with task.session_scope() as session:
            if event_ids is None:
                claimed = inbox.claim_fresh(session, limit=DRAIN_BATCH)
            results = events.apply_batch(session, claimed)
    except TRANSIENT_DB_ERRORS:
        raise
    except Exception:
        log.exception("workers.event.batch_failed events=%d", len(claimed))
        results, failed = [], []
        for event_id in claimed:
            try:
                with task.session_scope() as session:
                    results.append(events.apply_event(session, event_id))
            except Exception:
                log.exception("workers.event.failed event=%s", event_id)
                failed.append(event_id)
        if failed:
            with task.session_scope() as session:
                inbox.mark_enqueued(session, failed, utcnow())
    for applied in results:
        metrics.event_processed(applied)
    skipped = len(claimed) - len(results)
    if skipped:
        # Applied before, or being applied by another worker right now.
        metrics.events_skipped(skipped)
    return len(claimed), len(results)


def _drain(task: DbTask) -> None:
    """Apply fresh inbox events a batch per transaction while a full batch waits."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while _apply_batch(task, None)[0] == DRAIN_BATCH and time.monotonic() < deadline:
        pass


@shared_task(  # type: ignore[untyped-decorator]  # celery ships no annotations
    name=task_names.SWEEP_INBOX,
    base=DbTask,
    bind=True,
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
)
def sweep_inbox(self: DbTask, **_compat: object) -> int:
    """Re-enqueue events still unprocessed a few seconds after they were recorded."""
    settings = self.get_settings()
    now = utcnow()
    with self.session_scope() as session:
        ids = inbox.stale_unprocessed(
            session,
            now=now,
            older_than=dt.timedelta(seconds=settings.inbox_sweep_after_seconds),
            limit=SWEEP_BATCH,
        )
        inbox.mark_enqueued(session, ids, now)
        stuck = inbox.often_resent(session, ids, STUCK_AFTER_RESENDS)
    if stuck:
        log.warning("workers.sweep.inbox_stuck events=%s", stuck)
    for event_id in ids:
        # Sent here, not noted: the commit above recorded the re-send, and a failed publish
        # (broker down) leaves the event to a later sweep.
        process_event.apply_async(kwargs={"event_id": event_id}, queue=EVENTS_QUEUE)
    if ids:
        log.info("workers.sweep.inbox woke=%d", len(ids))
    return len(ids)
