"""The inbox: events recorded but not yet processed, the drain's claim and the sweep."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import sqlalchemy as sa

from core.models import Event
from core.services import backoff

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# However often an event was re-sent, it is tried again at least this often.
MAX_RESEND_WAIT = dt.timedelta(minutes=5)


def stale_unprocessed(
    session: Session, *, now: dt.datetime, older_than: dt.timedelta, limit: int
) -> list[int]:
    """Return unprocessed events due for another wake-up, least recently (en)queued first.

    The receiver enqueues once after commit; only what still waits `older_than` later is a
    lost message, a crash between commit and enqueue, or a worker killed mid-task. Each
    re-send doubles the next wait (up to MAX_RESEND_WAIT), so a long queue backlog is not
    flooded with copies and an event that keeps failing cannot keep a worker busy.
    """
    last_try = sa.func.coalesce(Event.last_enqueued_at, Event.received_at)
    due = backoff.resend_due(
        Event.enqueue_count, last_try, now=now, first=older_than, cap=MAX_RESEND_WAIT
    )
    return list(
        session.scalars(
            sa.select(Event.id)
            .where(Event.processed_at.is_(None), due)
            .order_by(last_try, Event.id)
            .limit(limit)
        )
    )


def claim_fresh(session: Session, *, limit: int) -> list[int]:
    """Lock up to `limit` unprocessed events no other worker holds, oldest first.

    Only events that never needed a second try (`enqueue_count` 0): one the sweep re-sent, or
    that failed in a drain, is tried again by its own message, on the sweep's back-off, so a
    poisoned event cannot fail every drain. The lock is held until the caller's commit.
    """
    return list(
        session.scalars(
            sa.select(Event.id)
            .where(Event.processed_at.is_(None), Event.enqueue_count == 0)
            .order_by(Event.received_at, Event.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def mark_enqueued(session: Session, event_ids: list[int], now: dt.datetime) -> None:
    """Count a second try of these events: the sweep re-sent them, or they failed in a drain.

    Either way the sweep waits its back-off before the next re-send, and a growing count
    flags a poisoned event.
    """
    if event_ids:
        session.execute(
            sa.update(Event)
            .where(Event.id.in_(event_ids))
            .values(last_enqueued_at=now, enqueue_count=Event.enqueue_count + 1)
        )


def often_resent(session: Session, event_ids: list[int], at_least: int) -> list[int]:
    """Return those of `event_ids` re-sent at least `at_least` times."""
    if not event_ids:
        return []
    return list(
        session.scalars(
            sa.select(Event.id).where(Event.id.in_(event_ids), Event.enqueue_count >= at_least)
        )
    )
