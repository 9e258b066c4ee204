"""Helpers to create meetings with registered callbacks and the deliveries their events make."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from core.db import utcnow
from core.models import Delivery, DeliveryAttempt, Meeting, User, Webhook
from core.security import new_public_id, random_digits
from core.services import events

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


def make_meeting_with_hooks(
    session_factory: sessionmaker[Session],
    user_id: int,
    urls: dict[str, str],
    custom: Any = None,
    *,
    number: int | None = None,
) -> int:
    """Create a scheduled meeting with one callback per event type given; return its id.

    With a `number` its codes are that number's (`3000000nn`, `4000000nn`), else random.
    """
    with session_factory.begin() as session:
        meeting = Meeting(
            user_id=user_id,
            kind="adhoc",
            meeting_code=random_digits(9) if number is None else f"{300000000 + number}",
            conference_id=random_digits(9) if number is None else f"{400000000 + number}",
            organizer_code="4821",
        )
        session.add(meeting)
        session.flush()
        for event_type, url in urls.items():
            session.add(
                Webhook(
                    public_id=new_public_id("wh"),
                    user_id=user_id,
                    meeting_id=meeting.id,
                    event_type=event_type,
                    callback_url=url,
                    custom_callback_data=custom,
                )
            )
        return meeting.id


def record(
    session_factory: sessionmaker[Session],
    meeting_id: int | None,
    type_: str,
    when: dt.datetime,
    source_event_id: str | None = None,
) -> int:
    """Record a platform event, as the ingest endpoint does; return its id."""
    with session_factory.begin() as session:
        event, _ = events.record_event(
            session,
            source="platform",
            source_event_id=source_event_id or new_public_id("msg"),
            type=type_,
            occurred_at=when,
            payload={},
            meeting_id=meeting_id,
            user_id=None,
        )
        return event.id


def apply(session_factory: sessionmaker[Session], event_id: int) -> events.Applied:
    """Apply a recorded event, as the worker does."""
    with session_factory.begin() as session:
        return events.apply_event(session, event_id)


def deliver_event(
    session_factory: sessionmaker[Session], meeting_id: int | None, type_: str, when: dt.datetime
) -> events.Applied:
    """Record a platform event and apply it."""
    return apply(session_factory, record(session_factory, meeting_id, type_, when))


def emit(session_factory: sessionmaker[Session], meeting_id: int, event_type: str) -> list[int]:
    """Record and apply an internal event; return the deliveries it created."""
    with session_factory.begin() as session:
        meeting = session.get(Meeting, meeting_id)
        assert meeting is not None
        _, applied = events.emit_internal(session, meeting, event_type, source="api")
        return applied.delivery_ids


def make_delivery(
    session_factory: sessionmaker[Session],
    user_id: int,
    url: str,
    *,
    event_type: str = "meeting.start",
    custom: Any = None,
) -> int:
    """Create a meeting whose callback for `event_type` is `url`, emit the event; one delivery."""
    meeting_id = make_meeting_with_hooks(session_factory, user_id, {event_type: url}, custom)
    (delivery_id,) = emit(session_factory, meeting_id, event_type)
    return delivery_id


def load(session_factory: sessionmaker[Session], delivery_id: int) -> Delivery:
    """Return a fresh copy of a delivery."""
    with session_factory() as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        return delivery


def attempts(session_factory: sessionmaker[Session], delivery_id: int) -> list[DeliveryAttempt]:
    """Return a delivery's attempts, oldest first."""
    with session_factory() as session:
        return list(
            session.scalars(
                sa.select(DeliveryAttempt)
                .where(DeliveryAttempt.delivery_id == delivery_id)
                .order_by(DeliveryAttempt.id)
            )
        )


def make_due(
    session_factory: sessionmaker[Session], delivery_id: int, when: dt.datetime | None = None
) -> None:
    """Pretend the retry wait is over."""
    with session_factory.begin() as session:
        session.execute(
            sa.update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(next_attempt_at=when or utcnow())
        )


def secret_of(session_factory: sessionmaker[Session], user_id: int) -> str:
    """Return the user's current signing secret."""
    with session_factory() as session:
        user = session.get(User, user_id)
        assert user is not None
        return user.signing_secret
