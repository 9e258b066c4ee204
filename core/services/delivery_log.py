"""The delivery log: list and show a user's deliveries with their attempts, and redeliver.

`list_deliveries` lists callbacks only (their subject is an event), as SPEC 6 defines the
log; one delivery and redelivery accept any of the user's deliveries, alerts included.
The API renders what these return (`core.responses`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from core import task_names, wakeups
from core.db import utcnow
from core.errors import Conflict, NotFound
from core.models import Alert, Delivery, DeliveryAttempt, Event, Meeting, Webhook
from core.pagination import DEFAULT_PAGE_SIZE, MAX_ROW_ID, Page, newest_first

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class LoggedDelivery:
    """A delivery as the log shows it: the row, its subject's public id, its attempts."""

    delivery: Delivery
    # The `id` its body carries: the event's (`evt_...`) or the alert's.
    subject_id: str | None
    attempts: list[DeliveryAttempt]
    # The delivery ahead of it while it waits (ordered delivery); None when it does not wait.
    waiting_for: int | None = None


def list_deliveries(
    session: Session,
    user_id: int,
    *,
    meeting_id: int | None = None,
    status: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> Page[LoggedDelivery]:
    """Return one page of the user's callbacks, newest first, and the next page's cursor."""
    if meeting_id is not None:
        owner = (
            session.scalar(sa.select(Meeting.user_id).where(Meeting.id == meeting_id))
            if 1 <= meeting_id <= MAX_ROW_ID
            else None
        )
        if owner != user_id:
            raise NotFound(f"meeting {meeting_id} not found", code="meeting-not-found")
    query = sa.select(Delivery).where(Delivery.user_id == user_id, Delivery.event_id.is_not(None))
    if meeting_id is not None:
        query = query.where(Delivery.meeting_id == meeting_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    page = newest_first(session, query, Delivery.id, limit=limit, cursor=cursor)
    return Page(items=with_attempts(session, page.items), next_cursor=page.next_cursor)


def get_delivery(session: Session, user_id: int, delivery_id: int) -> Delivery:
    """Return the user's delivery (a callback or an alert); another user's is NotFound."""
    delivery = session.get(Delivery, delivery_id) if 1 <= delivery_id <= MAX_ROW_ID else None
    if delivery is None or delivery.user_id != user_id:
        raise NotFound(f"delivery {delivery_id} not found", code="delivery-not-found")
    return delivery


def show(session: Session, user_id: int, delivery_id: int) -> LoggedDelivery:
    """Return the user's delivery with its attempts."""
    return with_attempts(session, [get_delivery(session, user_id, delivery_id)])[0]


def with_attempts(session: Session, deliveries: Sequence[Delivery]) -> list[LoggedDelivery]:
    """Load the subjects' public ids and the attempts (oldest first) of these deliveries."""
    if not deliveries:
        return []
    ids = [d.id for d in deliveries]
    events = {d.event_id for d in deliveries if d.event_id is not None}
    alerts = {d.alert_id for d in deliveries if d.alert_id is not None}
    public_ids: dict[tuple[str, int], str] = {}
    if events:
        for row in session.execute(
            sa.select(Event.id, Event.public_id).where(Event.id.in_(events))
        ):
            public_ids["event", row.id] = row.public_id
    if alerts:
        for row in session.execute(
            sa.select(Alert.id, Alert.public_id).where(Alert.id.in_(alerts))
        ):
            public_ids["alert", row.id] = row.public_id
    attempts: dict[int, list[DeliveryAttempt]] = {i: [] for i in ids}
    for attempt in session.scalars(
        sa.select(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id.in_(ids))
        .order_by(DeliveryAttempt.attempted_at, DeliveryAttempt.id)
    ):
        attempts[attempt.delivery_id].append(attempt)
    return [
        LoggedDelivery(
            delivery=d,
            subject_id=(
                public_ids.get(("event", d.event_id))
                if d.event_id is not None
                else public_ids.get(("alert", d.alert_id or 0))
            ),
            attempts=attempts[d.id],
            waiting_for=waiting_for(session, d),
        )
        for d in deliveries
    ]


def waiting_for(session: Session, delivery: Delivery) -> int | None:
    """Return the id of the pending callback an ordered delivery waits for, if any.

    The first of its meeting to its URL still pending ahead of it (by the meeting's
    sequence, then id; `delivery_statements.ahead_of` is the claim's side of the rule): the
    one being attempted, which the rest of the line waits behind.
    """
    if not delivery.ordered or delivery.status != "pending" or delivery.event_id is None:
        return None
    sequence = delivery.meeting_sequence
    return session.scalar(
        sa.select(Delivery.id)
        .where(
            Delivery.meeting_id == delivery.meeting_id,
            Delivery.callback_url == delivery.callback_url,
            Delivery.status == "pending",
            Delivery.event_id.is_not(None),
            sa.or_(
                Delivery.meeting_sequence < sequence,
                sa.and_(Delivery.meeting_sequence == sequence, Delivery.id < delivery.id),
            ),
        )
        .order_by(Delivery.meeting_sequence, Delivery.id)
        .limit(1)
    )


def redeliver(
    session: Session,
    user_id: int,
    delivery_id: int,
    *,
    now: dt.datetime | None = None,
    max_attempts: int | None = None,
) -> Delivery:
    """Make a delivery due at once with the same `webhook-id`, and note its wake-up.

    A pending delivery just skips the rest of its wait. A succeeded or failed one starts a
    new round: one attempt now, and the full retry schedule if that fails. So does a
    pending one with no attempt left (its last worker died), which `claim` would otherwise
    fail without sending. Leave `now` out (tests pin it): the clock is read once the row
    is locked, so a lease that ran out while we waited for the lock is seen as ended.
    """
    delivery = get_delivery(session, user_id, delivery_id)
    session.refresh(delivery, with_for_update=True)
    now = utcnow() if now is None else now
    if delivery.locked_until is not None and delivery.locked_until > now:
        raise Conflict(
            "an attempt of this delivery is in progress; try again in a moment",
            code="delivery-in-progress",
        )
    webhook = session.get(Webhook, delivery.webhook_id) if delivery.webhook_id else None
    if webhook is not None and webhook.disabled_at is not None:
        raise Conflict(
            "the callback answered 410 Gone and its webhook is disabled; register it again",
            code="webhook-disabled",
        )
    if delivery.status != "pending" or (
        max_attempts is not None and delivery.attempt_count >= max_attempts
    ):
        delivery.attempt_count = 0
    delivery.status = "pending"
    delivery.next_attempt_at = now
    delivery.completed_at = None
    delivery.locked_until = None
    delivery.last_enqueued_at = now
    delivery.enqueue_count = 0
    wakeups.note(session, task_names.DELIVER, delivery_id=delivery.id)
    return delivery
