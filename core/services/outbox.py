"""The outbox: one pending delivery row per outbound message, and the sweep that wakes them.

Every outbound message is a `Delivery`: a meeting's callback (subject: an event,
destination: the meeting's webhook) or an alert (subject: the alert, destination: its rule's
URL). The body is fixed when the row is written, so retries and redeliveries send the same
bytes. Each new row notes its `workers.deliveries.deliver` wake-up (`core.wakeups`), which
goes out once the transaction commits; the sweep catches what was lost on the way.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from core import task_names, wakeups
from core.models import Delivery, Webhook
from core.security import new_public_id
from core.services import backoff
from core.services.outbound_http import destination_host
from core.validation import isoformat

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.models import Alert, AlertRule, Event, Meeting

# However often a delivery's wake-up was re-sent, the sweep re-sends it at least this often
# (once a lease, when the lease is longer), as the inbox sweep does: a lost wake-up is never
# noticed more than this late.
MAX_RESEND_WAIT = dt.timedelta(minutes=5)


def callback_body(event: Event, meeting: Meeting, webhook: Webhook) -> dict[str, Any]:
    """Return the callback payload of SPEC 6 for this event."""
    return {
        "id": event.public_id,
        "type": event.type,
        "timestamp": isoformat(event.occurred_at),
        "meetingId": meeting.id,
        "customCallbackData": webhook.custom_callback_data,
        "data": {
            "meetingId": meeting.id,
            "conferenceId": meeting.conference_id,
            "meetingName": meeting.meeting_name,
            "startedAt": isoformat(meeting.started_at),
            "endedAt": isoformat(meeting.ended_at),
            "durationSeconds": meeting.duration_seconds,
            "sequence": meeting.event_sequence,
        },
    }


def _pending(body: dict[str, Any], *, now: dt.datetime, **columns: Any) -> Delivery:
    """Return a new pending delivery due now, with its own `webhook-id` (not yet added)."""
    return Delivery(
        message_id=new_public_id("msg"),
        destination_host=destination_host(columns["callback_url"]),
        body=json.dumps(body, separators=(",", ":")),
        status="pending",
        next_attempt_at=now,
        last_enqueued_at=now,
        **columns,
    )


def wake(session: Session, deliveries: Sequence[Delivery]) -> list[int]:
    """Flush new deliveries (one flush for all: their ids) and note each one's wake-up."""
    if deliveries:
        session.flush()
    for delivery in deliveries:
        wakeups.note(session, task_names.DELIVER, delivery_id=delivery.id)
    return [delivery.id for delivery in deliveries]


def create_for_event(
    session: Session,
    event: Event,
    meeting: Meeting,
    *,
    now: dt.datetime,
    hooks: Sequence[Webhook] | None = None,
) -> list[Delivery]:
    """Add one pending delivery per live webhook registered for the event's type.

    The body is the meeting as it stands now, at its current `event_sequence`: when a late
    event corrects what an event's callback said, the callback is made again, as a new row with
    a new `webhook-id` at the new sequence. `hooks` are the meeting's live webhooks when the
    caller loaded them already (a batch), else they are read here. The caller flushes and
    notes their wake-ups (`wake`), so that the sweep counts them as woken (`last_enqueued_at`)
    and leaves them alone unless that message is lost.
    """
    if hooks is None:
        hooks = session.scalars(
            sa.select(Webhook).where(
                Webhook.meeting_id == meeting.id,
                Webhook.event_type == event.type,
                Webhook.disabled_at.is_(None),
            )
        ).all()
    created = [
        _pending(
            callback_body(event, meeting, hook),
            now=now,
            event_id=event.id,
            webhook_id=hook.id,
            user_id=meeting.user_id,
            meeting_id=meeting.id,
            event_type=event.type,
            meeting_sequence=meeting.event_sequence,
            callback_url=hook.callback_url,
            ordered=hook.ordered,
        )
        for hook in hooks
        if hook.event_type == event.type and hook.disabled_at is None
    ]
    session.add_all(created)
    return created


def create_for_alert(
    session: Session, alert: Alert, rule: AlertRule, body: dict[str, Any], *, now: dt.datetime
) -> Delivery:
    """Write the pending delivery of a fired alert to its rule's URL; note its wake-up."""
    delivery = _pending(
        body,
        now=now,
        alert_id=alert.id,
        alert_rule_id=rule.id,
        user_id=alert.user_id,
        meeting_id=alert.meeting_id,
        event_type=f"alert.{alert.type}",
        callback_url=rule.callback_url,
    )
    session.add(delivery)
    wake(session, [delivery])
    return delivery


def due_ids(
    session: Session,
    now: dt.datetime,
    limit: int = 500,
    *,
    resend_after: dt.timedelta | None = None,
) -> list[int]:
    """Return pending deliveries that are due, not leased, and need a wake-up message.

    A delivery needs one when no message was sent since it became due, or (with
    `resend_after`) when the last one went out that long ago and nothing came of it: the
    message was lost, or its worker died and the lease has run out. Each re-send doubles
    the wait before the next (`enqueue_count`, up to MAX_RESEND_WAIT), so a delivery that
    only waits in a long queue backlog is not copied into it again every lease.
    """
    woken = Delivery.last_enqueued_at
    needs_wakeup = sa.or_(woken.is_(None), woken < Delivery.next_attempt_at)
    if resend_after is not None:
        resend = backoff.resend_due(
            Delivery.enqueue_count, woken, now=now, first=resend_after, cap=MAX_RESEND_WAIT
        )
        needs_wakeup = sa.or_(needs_wakeup, resend)
    return list(
        session.scalars(
            sa.select(Delivery.id)
            .where(
                Delivery.status == "pending",
                Delivery.next_attempt_at <= now,
                sa.or_(Delivery.locked_until.is_(None), Delivery.locked_until <= now),
                needs_wakeup,
            )
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
        )
    )


def mark_enqueued(session: Session, ids: Sequence[int], now: dt.datetime) -> None:
    """Remember that a wake-up message was sent for these deliveries, and count re-sends.

    The first wake-up since a delivery became due is not a re-send: it leaves the count at 0,
    so the first re-send waits `resend_after`, whoever sent that first wake-up.
    """
    if ids:
        woken = Delivery.last_enqueued_at
        resent = sa.and_(woken.is_not(None), woken >= Delivery.next_attempt_at)
        session.execute(
            sa.update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(
                last_enqueued_at=now,
                enqueue_count=sa.case((resent, Delivery.enqueue_count + 1), else_=0),
            )
        )


def wakeup_messages(delivery_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Return the `deliver` messages that wake these deliveries, folded as after a commit.

    One message names up to `wakeups.BATCH_LIMIT` of them, and one is enough to bring a whole
    deliveries pool to a batch (its task widens while more is due, `workers.delivery_drain`).
    """
    return [
        kwargs
        for _, kwargs in wakeups.fold(
            [(task_names.DELIVER, {"delivery_id": i}) for i in delivery_ids]
        )
    ]
