"""Record lifecycle events once and fold them into the meeting's state by event time."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from core.db import utcnow
from core.models import Event, Meeting
from core.security import new_public_id
from core.services import deliveries

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.orm import Session

START = "meeting.start"
END = "meeting.end"
MAX_ROW_ID = 2**31 - 1


@dataclass(frozen=True)
class Applied:
    """What applying one event did: its outcome and the deliveries it queued."""

    outcome: str
    delivery_ids: list[int] = field(default_factory=list)
    # True when the event had been processed before: nothing was done this time.
    repeated: bool = False


def record_event(
    session: Session,
    *,
    source: str,
    source_event_id: str,
    type: str,
    occurred_at: dt.datetime,
    payload: dict[str, Any],
    meeting_id: int | None,
    user_id: int | None,
) -> tuple[Event, bool]:
    """Insert the event unless (source, source_event_id) exists; return it and whether it is new.

    INSERT ... ON CONFLICT DO NOTHING makes concurrent duplicates safe on both databases
    without relying on catching IntegrityError mid-transaction.
    """
    values = {
        "public_id": new_public_id("evt"),
        "source": source,
        "source_event_id": source_event_id,
        "type": type,
        "occurred_at": occurred_at,
        "received_at": utcnow(),
        "payload": payload,
        "meeting_id": meeting_id,
        "user_id": user_id,
        "enqueue_count": 0,
    }
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(Event)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["source", "source_event_id"])
        .returning(Event.id)
    )
    new_id = session.execute(statement).scalar()
    event = session.scalar(
        sa.select(Event).where(Event.source == source, Event.source_event_id == source_event_id)
    )
    assert event is not None  # noqa: S101  (just inserted or already there)
    return event, new_id is not None


def find_platform_meeting(
    session: Session, *, meeting_id: int | None, conference_id: str | None
) -> Meeting | None:
    """Return the meeting a platform event names, or None when we know no such meeting.

    A conference id names the meeting holding it that has not ended, else the latest that held
    it (conference ids are reused once a meeting ends). A deleted meeting is no meeting.
    """
    live = Meeting.deleted_at.is_(None)
    if meeting_id is not None:
        # Larger ids fit no meetings.id column (INTEGER on PostgreSQL): no such meeting.
        if meeting_id > MAX_ROW_ID:
            return None
        return session.scalar(sa.select(Meeting).where(Meeting.id == meeting_id, live))
    return session.scalar(
        sa.select(Meeting)
        .where(Meeting.conference_id == conference_id, live)
        .order_by((Meeting.status == "ended").asc(), Meeting.id.desc())
        .limit(1)
    )


def emit_internal(
    session: Session,
    meeting: Meeting,
    type: str,
    *,
    source: str,
    occurred_at: dt.datetime | None = None,
) -> tuple[Event, Applied]:
    """Record and apply an event we raised ourselves (presenter link, end call).

    It is applied in the caller's transaction so that the API answers with the new state;
    its deliveries are sent by the workers. The caller commits, then enqueues `delivery_ids`.
    """
    # Whole seconds, as every time is shown: a duration then matches the times it is read from.
    occurred_at = occurred_at or utcnow().replace(microsecond=0)
    if type == END and meeting.started_at is not None and occurred_at < meeting.started_at:
        # "End it now" cannot mean before its start: the platform's clock may run ahead of ours.
        occurred_at = meeting.started_at
    event, _ = record_event(
        session,
        source=source,
        source_event_id=new_public_id("int"),
        type=type,
        occurred_at=occurred_at,
        payload={"type": type, "data": {"meetingId": meeting.id}},
        meeting_id=meeting.id,
        user_id=meeting.user_id,
    )
    return event, apply_event(session, event.id)


def apply_event(session: Session, event_id: int, *, now: dt.datetime | None = None) -> Applied:
    """Apply a recorded event to its meeting; a no-op for an event already applied."""
    now = now or utcnow()
    event = session.get(Event, event_id, with_for_update=True)
    if event is None:
        return Applied(outcome="missing")
    if event.processed_at is not None:
        return Applied(outcome=event.outcome or "applied", repeated=True)
    meeting = (
        session.get(Meeting, event.meeting_id, with_for_update=True, populate_existing=True)
        if event.meeting_id is not None
        else None
    )
    if meeting is None:
        event.outcome = "unknown-meeting"
        event.processed_at = now
        return Applied(outcome=event.outcome)

    # Every processed event of the meeting plus this one, whatever each one's outcome was:
    # the meeting is a function of the set of its events, never of their arrival order.
    history = session.execute(
        sa.select(Event.id, Event.type, Event.occurred_at).where(
            Event.meeting_id == meeting.id,
            sa.or_(Event.processed_at.is_not(None), Event.id == event.id),
        )
    ).all()
    timeline = fold([Happened(id=id_, type=type_, at=at) for id_, type_, at in history])
    before = (meeting.status, meeting.started_at, meeting.ended_at)
    after = (timeline.status, timeline.started_at, timeline.ended_at)
    outcome = timeline.roles[event.id]
    if outcome == "applied" and after == before:
        outcome = "duplicate"  # the same instant as an event applied before it
    event.outcome = outcome
    event.processed_at = now
    if outcome != "applied":
        return Applied(outcome=outcome)
    meeting.status, meeting.started_at, meeting.ended_at = after
    meeting.duration_seconds = timeline.duration_seconds
    meeting.event_sequence += 1
    session.flush()
    return Applied(
        outcome=outcome, delivery_ids=deliveries.create_for_event(session, event, meeting, now=now)
    )


@dataclass(frozen=True)
class Happened:
    """One event as the fold sees it: what happened, when, and its id (the tie-breaker)."""

    id: int
    type: str
    at: dt.datetime


@dataclass(frozen=True)
class Timeline:
    """A meeting's state as its events tell it, and each event's part in it."""

    status: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    roles: dict[int, str]

    @property
    def duration_seconds(self) -> int | None:
        """Return the whole seconds between start and end, when both are known."""
        if self.started_at is None or self.ended_at is None:
            return None
        return int((self.ended_at - self.started_at).total_seconds())


def fold(happened: Sequence[Happened]) -> Timeline:
    """Tell a meeting's state from its events, by event time, whatever order they came in.

    The first start starts the meeting; the first end at or after it ends it. An end with no
    start before it still ends the meeting (ended is final) and leaves `startedAt` unknown;
    then every start is out of order. Roles: `applied` for the start and the end that define
    the meeting, `out-of-order` for an end before that start or a start after that end,
    `duplicate` for every other start or end.
    """
    ordered = sorted(happened, key=lambda h: (h.at, h.id))
    starts = [h for h in ordered if h.type == START]
    ends = [h for h in ordered if h.type == END]
    start = starts[0] if starts else None
    end = next((h for h in ends if start is None or h.at >= start.at), None)
    if end is None and ends:
        end = ends[0]  # every end precedes every start: the meeting ended, start unknown
    if start is not None and end is not None and start.at > end.at:
        start = None
    roles: dict[int, str] = {}
    for h in ordered:
        if h is start or h is end:
            roles[h.id] = "applied"
        elif h.type == START:
            roles[h.id] = "out-of-order" if end is not None and h.at > end.at else "duplicate"
        else:
            roles[h.id] = "out-of-order" if start is not None and h.at < start.at else "duplicate"
    status = "ended" if end is not None else "started" if start is not None else "scheduled"
    return Timeline(
        status=status,
        started_at=start.at if start is not None else None,
        ended_at=end.at if end is not None else None,
        roles=roles,
    )
