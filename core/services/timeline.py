"""A meeting's timeline: its events in event-time order, each with its callbacks (SPEC 8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from core.models import Delivery, Event
from core.services import delivery_log, meetings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.models import Meeting, User
    from core.services.delivery_log import LoggedDelivery


@dataclass(frozen=True)
class TimelineEntry:
    """One reported fact: the event shown for it and the callbacks made for any report of it."""

    event: Event
    deliveries: list[LoggedDelivery]


def timeline(session: Session, user: User, meeting_id: int) -> tuple[Meeting, list[TimelineEntry]]:
    """Return the user's meeting and its events by event time, each fact shown once.

    Reports of the same type at the same instant (to the second, as times are shown) are one
    fact told twice: by two platform machines, or by the platform and our presenter link.
    They are shown once, as the report the meeting applied if it is among them, else the
    first received; the entry lists the callbacks made for any of them. A repeated
    `webhook-id` was never stored twice. Reports of different instants stay apart, with the
    outcome the fold gave each (a second start later than the first is a `duplicate`).
    """
    meeting = meetings.get_meeting(session, user, meeting_id)
    rows = session.scalars(
        sa.select(Event).where(Event.meeting_id == meeting.id).order_by(Event.occurred_at, Event.id)
    ).all()
    groups: dict[tuple[str, object], list[Event]] = {}
    for event in rows:
        groups.setdefault((event.type, event.occurred_at.replace(microsecond=0)), []).append(event)
    ids = [event.id for event in rows]
    made = delivery_log.with_attempts(
        session,
        session.scalars(
            sa.select(Delivery).where(Delivery.event_id.in_(ids)).order_by(Delivery.id)
        ).all()
        if ids
        else [],
    )
    by_event: dict[int, list[LoggedDelivery]] = {}
    for logged in made:
        by_event.setdefault(logged.delivery.event_id or 0, []).append(logged)
    entries = []
    for reports in groups.values():
        shown = next((e for e in reports if e.outcome == "applied"), reports[0])
        found = sorted(
            (d for e in reports for d in by_event.get(e.id, [])), key=lambda d: d.delivery.id
        )
        entries.append(TimelineEntry(event=shown, deliveries=found))
    return meeting, entries
