"""Helpers to create meetings with registered callbacks and the deliveries their events make."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from core.db import utcnow
from core.models import Delivery, DeliveryAttempt, Meeting, Webhook
from core.security import new_public_id, random_digits
from core.services import events

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


def make_meeting_with_hooks(
    session_factory: sessionmaker[Session], user_id: int, urls: dict[str, str], custom: Any = None
) -> int:
    """Create a scheduled meeting with one callback per event type given; return its id."""
    with session_factory.begin() as session:
        meeting = Meeting(
            user_id=user_id,
            kind="adhoc",
            meeting_code=random_digits(9),
            conference_id=random_digits(9),
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
