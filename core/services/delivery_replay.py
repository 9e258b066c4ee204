"""Bulk replay: re-send a user's callbacks in a time range, each with a new `webhook-id`.

Redelivery (`delivery_log.redeliver`) puts one delivery back in the queue with the same
`webhook-id`, for a receiver that missed it. A replay is a recovery after an outage: the
receiver may have seen some of these messages and deduplicated them by `webhook-id`, so each
one goes out as a new delivery row with a new id, the same body bytes, the same meeting and
sequence, and the next `generation`. The deliveries it replays stay as they were, as history.

Only the newest generation of a callback is a candidate, so a second replay of the same range
re-sends what the first one's copies did not deliver, never the originals again. The replay,
its `Idempotency-Key` and the new rows are written in the caller's transaction; the wake-ups
go out when it commits (`core.wakeups`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from core import task_names, wakeups
from core.db import utcnow
from core.errors import Conflict, DomainError, NotFound, ValidationFailed
from core.models import Delivery, DeliveryReplay, Event, Meeting, Webhook
from core.pagination import MAX_ROW_ID
from core.replay_schemas import MAX_REPLAY, ReplayIn
from core.security import new_public_id

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# How long a replay's Idempotency-Key answers a repeat; after that it is free again.
KEY_LIFETIME = dt.timedelta(hours=24)
# The Idempotency-Key draft: a key reused with another request is 422 Unprocessable Content.
KEY_REUSED_STATUS = 422


@dataclass(frozen=True)
class Replayed:
    """A replay's answer: its record, and whether a repeated key answered it from the record."""

    replay: DeliveryReplay
    repeated: bool


def request_hash(request: ReplayIn) -> str:
    """Return the sha256 of the request's canonical JSON."""
    canonical = json.dumps(request.canonical(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _live_key(session: Session, user_id: int, key: str, now: dt.datetime) -> DeliveryReplay | None:
    """Return the replay that holds this key of the user, clearing the key once expired."""
    found = session.scalar(
        sa.select(DeliveryReplay).where(
            DeliveryReplay.user_id == user_id, DeliveryReplay.idempotency_key == key
        )
    )
    if found is None:
        return None
    if found.key_expires_at is not None and found.key_expires_at > now:
        return found
    # Expired: the record stays, the key is free for a new replay.
    found.idempotency_key = None
    found.key_expires_at = None
    session.flush()
    return None


def _answer(found: DeliveryReplay, digest: str) -> Replayed:
    if found.request_hash != digest:
        raise DomainError(
            "this Idempotency-Key was used for a different replay; use a new key",
            code="idempotency-key-reused",
            status=KEY_REUSED_STATUS,
        )
    return Replayed(replay=found, repeated=True)


def _candidates(session: Session, user_id: int, request: ReplayIn) -> list[Any]:
    """Return the user's matching callbacks, newest generation only, in delivery order.

    The order is the ordering rule's: by meeting, then event time, then sequence; so the new
    rows' ids follow it too. Callbacks whose webhook is disabled (410) or deleted are left out:
    the receiver asked not to get them.
    """
    later = aliased(Delivery)
    superseded = sa.exists().where(
        later.event_id == Delivery.event_id,
        later.webhook_id == Delivery.webhook_id,
        later.meeting_sequence == Delivery.meeting_sequence,
        later.generation > Delivery.generation,
    )
    query = (
        sa.select(Delivery)
        .join(Event, Event.id == Delivery.event_id)
        .join(Webhook, Webhook.id == Delivery.webhook_id)
        .where(
            Delivery.user_id == user_id,
            Delivery.status == request.status,
            Event.occurred_at >= request.from_,
            Event.occurred_at < request.to,
            Webhook.disabled_at.is_(None),
            ~superseded,
        )
        .order_by(Delivery.meeting_id, Event.occurred_at, Delivery.meeting_sequence, Delivery.id)
        .limit(MAX_REPLAY + 1)
    )
    if request.meetingId is not None:
        query = query.where(Delivery.meeting_id == request.meetingId)
    if request.eventType is not None:
        query = query.where(Delivery.event_type == request.eventType)
    return list(session.scalars(query))


def _check_meeting(session: Session, user_id: int, meeting_id: int) -> None:
    # Another user's meeting is a 404, as in the delivery log: never confirm it exists.
    owner = (
        session.scalar(sa.select(Meeting.user_id).where(Meeting.id == meeting_id))
        if meeting_id <= MAX_ROW_ID
        else None
    )
    if owner != user_id:
        raise NotFound(f"meeting {meeting_id} not found", code="meeting-not-found")


def replay(
    session: Session,
    user_id: int,
    request: ReplayIn,
    *,
    idempotency_key: str | None = None,
    now: dt.datetime | None = None,
) -> Replayed:
    """Queue a new delivery for each matching callback of the user; note their wake-ups.

    A live key with the same request answers its replay again and sends nothing; with another
    request it is a 422. More than MAX_REPLAY matches are a 400 and change nothing.
    """
    now = utcnow() if now is None else now
    digest = request_hash(request)
    if idempotency_key is not None:
        found = _live_key(session, user_id, idempotency_key, now)
        if found is not None:
            return _answer(found, digest)
    if request.meetingId is not None:
        _check_meeting(session, user_id, request.meetingId)
    sources = _candidates(session, user_id, request)
    if len(sources) > MAX_REPLAY:
        raise ValidationFailed(
            f"more than {MAX_REPLAY} deliveries match; a replay re-sends at most {MAX_REPLAY}:"
            " narrow the range, or name a meeting or an event type",
            code="replay-too-large",
        )
    record = DeliveryReplay(
        user_id=user_id,
        idempotency_key=idempotency_key,
        request_hash=digest,
        request=request.canonical(),
        delivery_count=len(sources),
        created_at=now,
        key_expires_at=now + KEY_LIFETIME if idempotency_key is not None else None,
    )
    try:
        # A savepoint, so that losing a race leaves the caller's transaction usable.
        with session.begin_nested():
            session.add(record)
            session.flush()  # a concurrent replay with the same key waits here, then fails
            new_ids = _insert_copies(session, sources, now) if sources else []
    except IntegrityError:
        if idempotency_key is not None:
            found = _live_key(session, user_id, idempotency_key, now)
            if found is not None:
                return _answer(found, digest)
        raise Conflict(
            "another replay re-sent some of these deliveries at the same moment; "
            "repeat the request to re-send what is left",
            code="replay-in-progress",
        ) from None
    # Noted only once the rows are certain: a savepoint's rollback would not take them back.
    for delivery_id in new_ids:
        wakeups.note(session, task_names.DELIVER, delivery_id=delivery_id)
    return Replayed(replay=record, repeated=False)


def _insert_copies(session: Session, sources: list[Delivery], now: dt.datetime) -> list[int]:
    """Insert a pending copy of each delivery, due now, with a new `webhook-id`; return ids."""
    rows = [
        {
            "message_id": new_public_id("msg"),
            "event_id": source.event_id,
            "webhook_id": source.webhook_id,
            "user_id": source.user_id,
            "meeting_id": source.meeting_id,
            "event_type": source.event_type,
            "meeting_sequence": source.meeting_sequence,
            "generation": source.generation + 1,
            "callback_url": source.callback_url,
            # The copy waits its turn and counts against its host like the original.
            "destination_host": source.destination_host,
            "ordered": source.ordered,
            "body": source.body,
            "status": "pending",
            "attempt_count": 0,
            "next_attempt_at": now,
            "last_enqueued_at": now,
            "enqueue_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        for source in sources
    ]
    inserted = session.scalars(
        sa.insert(Delivery).returning(Delivery.id, sort_by_parameter_order=True), rows
    )
    return list(inserted)
