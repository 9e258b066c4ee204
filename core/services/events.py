"""Record lifecycle events once and fold them into the meeting's state by event time."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from core import task_names, wakeups
from core.db import insert_unless_present, insert_unless_present_returning, utcnow
from core.models import Delivery, Event, Meeting, Webhook
from core.security import new_public_id
from core.services import alert_triggers, outbox

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.orm import Session

START = "meeting.start"
END = "meeting.end"
MAX_ROW_ID = 2**31 - 1


@dataclass(frozen=True)
class Applied:
    """What applying one event did: its outcome and the deliveries it made (wake-ups noted)."""

    outcome: str
    delivery_ids: list[int] = field(default_factory=list)
    # True when the event had been processed before: nothing was done this time.
    repeated: bool = False
    # The event's type (`meeting.start`, ...); None when the event does not exist.
    event_type: str | None = None


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
    process_later: bool = True,
) -> tuple[Event, bool]:
    """Insert the event unless (source, source_event_id) exists; return it and whether it is new.

    INSERT ... ON CONFLICT DO NOTHING makes concurrent duplicates safe on both databases
    without relying on catching IntegrityError mid-transaction. A new event notes its
    `workers.events.process_event` wake-up, unless the caller applies it itself
    (`process_later=False`).
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
    new_id = insert_unless_present(session, Event, values, unique=["source", "source_event_id"])
    event = session.scalar(
        sa.select(Event).where(Event.source == source, Event.source_event_id == source_event_id)
    )
    assert event is not None  # noqa: S101  (just inserted or already there)
    if new_id is not None and process_later:
        wakeups.note(session, task_names.PROCESS_EVENT, event_id=event.id)
    return event, new_id is not None


@dataclass(frozen=True)
class Ingested:
    """A platform event as the receiver recorded it: its ids, its meeting, whether it is new."""

    id: int
    public_id: str
    meeting_id: int | None
    created: bool


def ingest_platform_event(
    session: Session,
    *,
    source_event_id: str,
    type: str,
    occurred_at: dt.datetime,
    payload: dict[str, Any],
    meeting_id: int | None,
    conference_id: str | None,
) -> Ingested:
    """Record a platform event for the meeting it names, once per id; note its wake-up.

    The meeting (and its owner, whom the event then belongs to) is looked up inside the
    INSERT itself: with the commit, one round trip per new event, on the receiver's hot path.
    """
    meeting = _platform_meeting_ids(meeting_id=meeting_id, conference_id=conference_id)
    owner: sa.ColumnElement[Any] = sa.null()
    found: sa.ColumnElement[Any] = sa.null()
    if meeting is not None:
        found = meeting.scalar_subquery()
        owner = sa.select(Meeting.user_id).where(Meeting.id == found).scalar_subquery()
    values = {
        "public_id": new_public_id("evt"),
        "source": "platform",
        "source_event_id": source_event_id,
        "type": type,
        "occurred_at": occurred_at,
        "received_at": utcnow(),
        "payload": payload,
        "meeting_id": found,
        "user_id": owner,
        "enqueue_count": 0,
    }
    columns = [Event.id, Event.public_id, Event.meeting_id]
    row = insert_unless_present_returning(
        session, Event, values, unique=["source", "source_event_id"], returning=columns
    )
    if row is not None:
        wakeups.note(session, task_names.PROCESS_EVENT, event_id=row.id)
        return Ingested(id=row.id, public_id=row.public_id, meeting_id=row.meeting_id, created=True)
    existing = session.execute(
        sa.select(*columns).where(
            Event.source == "platform", Event.source_event_id == source_event_id
        )
    ).one()
    return Ingested(
        id=existing.id,
        public_id=existing.public_id,
        meeting_id=existing.meeting_id,
        created=False,
    )


def _platform_meeting_ids(
    *, meeting_id: int | None, conference_id: str | None
) -> sa.Select[int] | None:
    """Select the id of the meeting a platform event names; None when no id could match.

    A conference id names the meeting holding it that has not ended, else the latest that held
    it (conference ids are reused once a meeting ends). A deleted meeting is no meeting.
    """
    live = Meeting.deleted_at.is_(None)
    if meeting_id is not None:
        # Larger ids fit no meetings.id column (INTEGER on PostgreSQL): no such meeting.
        if meeting_id > MAX_ROW_ID:
            return None
        return sa.select(Meeting.id).where(Meeting.id == meeting_id, live)
    return (
        sa.select(Meeting.id)
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
    its deliveries are sent by the workers, woken once the caller commits.
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
        process_later=False,
    )
    return event, apply_event(session, event.id)


def apply_event(session: Session, event_id: int, *, now: dt.datetime | None = None) -> Applied:
    """Apply a recorded event to its meeting; a no-op for an event already applied."""
    now = now or utcnow()
    event = session.get(Event, event_id, with_for_update=True)
    if event is None:
        return Applied(outcome="missing")
    if event.processed_at is not None:
        return Applied(outcome=event.outcome or "applied", repeated=True, event_type=event.type)
    meeting = (
        session.get(Meeting, event.meeting_id, with_for_update=True, populate_existing=True)
        if event.meeting_id is not None
        else None
    )
    others: list[Event] = []
    if meeting is not None:
        others = list(
            session.scalars(
                sa.select(Event).where(
                    Event.meeting_id == meeting.id,
                    Event.processed_at.is_not(None),
                    Event.id != event.id,
                )
            )
        )
    made = _apply(session, event, meeting, others, now=now)
    return Applied(
        outcome=event.outcome or "applied",
        delivery_ids=outbox.wake(session, made),
        event_type=event.type,
    )


def _apply(
    session: Session,
    event: Event,
    meeting: Meeting | None,
    others: Sequence[Event],
    *,
    now: dt.datetime,
    hooks: Sequence[Webhook] | None = None,
) -> list[Delivery]:
    """Fold `event` into its locked meeting, given the meeting's processed events (`others`).

    Return the deliveries it made, added but not yet flushed: the caller wakes them.
    """
    if meeting is None:
        event.outcome = "unknown-meeting"
        event.processed_at = now
        return []

    # Every processed event of the meeting, whatever each one's outcome was: the meeting is a
    # function of the set of its events, never of their arrival order.
    known = [
        Happened(id=e.id, type=e.type, at=e.occurred_at, was_applied=e.outcome == "applied")
        for e in others
    ]
    before = fold(known)
    after = fold([*known, Happened(id=event.id, type=event.type, at=event.occurred_at)])
    # Outcomes follow the fold of the whole set, so the same events end with the same outcomes
    # whatever order they came in (an end filed out of order ends the meeting once an earlier
    # start arrives).
    for other in others:
        other.outcome = after.roles[other.id]
    event.outcome = after.roles[event.id]
    event.processed_at = now
    by_id = {e.id: e for e in (*others, event)}

    # What each callback type carries, as the meeting stands now and as the new set tells it.
    start_was = (before.start_id, meeting.started_at)
    end_was = (before.end_id, meeting.started_at, meeting.ended_at, meeting.duration_seconds)
    start_is = (after.start_id, after.started_at)
    end_is = (after.end_id, after.started_at, after.ended_at, after.duration_seconds)
    meeting.status, meeting.started_at, meeting.ended_at = (
        after.status,
        after.started_at,
        after.ended_at,
    )
    meeting.duration_seconds = after.duration_seconds
    made: list[Delivery] = []
    for defining_id, was, is_ in (
        (after.start_id, start_was, start_is),
        (after.end_id, end_was, end_is),
    ):
        if defining_id is None or was == is_:
            continue
        # One sequence number per batch: a correction is numbered after what it corrects.
        meeting.event_sequence += 1
        made += outbox.create_for_event(session, by_id[defining_id], meeting, now=now, hooks=hooks)
    if meeting.status == "ended" and end_was != end_is:
        alert_triggers.meeting_ended(session, meeting, now)
    return made


def apply_batch(session: Session, event_ids: Sequence[int]) -> list[Applied]:
    """Apply recorded events in one transaction; skip those applied or held by another worker.

    Each event is locked up front without waiting (SKIP LOCKED: a worker holding one is
    applying it), then their meetings in id order, so two batches never deadlock (SQLite's
    write lock serializes batches instead). What the events need is read in a few statements
    for the whole batch (the meetings' processed events, their live webhooks), and the new
    deliveries are written in one flush: the work per event is the fold.
    """
    now = utcnow()
    claimed = session.scalars(
        sa.select(Event)
        .where(Event.id.in_(event_ids), Event.processed_at.is_(None))
        .order_by(Event.meeting_id, Event.id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).all()
    meeting_ids = sorted({e.meeting_id for e in claimed if e.meeting_id is not None})
    meetings = {
        m.id: m
        for m in session.scalars(
            sa.select(Meeting)
            .where(Meeting.id.in_(meeting_ids))
            .order_by(Meeting.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    processed: dict[int, list[Event]] = {meeting_id: [] for meeting_id in meetings}
    hooks: dict[int, list[Webhook]] = {meeting_id: [] for meeting_id in meetings}
    if meetings:
        for known in session.scalars(
            sa.select(Event).where(
                Event.meeting_id.in_(meeting_ids), Event.processed_at.is_not(None)
            )
        ):
            processed[known.meeting_id or 0].append(known)
        for hook in session.scalars(
            sa.select(Webhook).where(
                Webhook.meeting_id.in_(meeting_ids), Webhook.disabled_at.is_(None)
            )
        ):
            hooks[hook.meeting_id].append(hook)
    made: list[tuple[Event, list[Delivery]]] = []
    for event in claimed:
        meeting = meetings.get(event.meeting_id) if event.meeting_id is not None else None
        if meeting is None:
            made.append((event, _apply(session, event, None, [], now=now)))
            continue
        others = processed[meeting.id]
        made.append(
            (event, _apply(session, event, meeting, list(others), now=now, hooks=hooks[meeting.id]))
        )
        others.append(event)  # the next event of this meeting in the batch knows it
    return [
        Applied(
            outcome=event.outcome or "applied",
            delivery_ids=outbox.wake(session, deliveries),
            event_type=event.type,
        )
        for event, deliveries in made
    ]


@dataclass(frozen=True)
class Happened:
    """One event as the fold sees it: what happened, when, its id, and whether it was applied.

    Among events at the same instant the one applied before keeps its place, then the lower id
    wins: a second report of the same instant stays a duplicate.
    """

    id: int
    type: str
    at: dt.datetime
    was_applied: bool = False


@dataclass(frozen=True)
class Timeline:
    """A meeting's state as its events tell it, the events that define it, and each one's part."""

    status: str
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    roles: dict[int, str]
    start_id: int | None = None
    end_id: int | None = None

    @property
    def duration_seconds(self) -> int | None:
        """Return the whole seconds between start and end, when both are known."""
        if self.started_at is None or self.ended_at is None:
            return None
        return int((self.ended_at - self.started_at).total_seconds())


def fold(happened: Sequence[Happened]) -> Timeline:
    """Tell a meeting's state from its events, by event time, whatever order they came in.

    The earliest start starts the meeting; the earliest end at or after it ends it. When every
    end precedes the start the meeting still ended (ended is final) and keeps its start: the
    latest of those ends defines it, its time clamped to the start (clock skew), duration 0.
    With no start, the earliest end ends it and `startedAt` stays unknown. Roles: `applied`
    for the start and the end that define the meeting, `out-of-order` for a start after the
    end or an end before the start when an end after the start defines the meeting,
    `duplicate` for every other start or end.
    """
    ordered = sorted(happened, key=lambda h: (h.at, not h.was_applied, h.id))
    starts = [h for h in ordered if h.type == START]
    ends = [h for h in ordered if h.type == END]
    start = starts[0] if starts else None
    end = next((h for h in ends if start is None or h.at >= start.at), None)
    skewed = end is None and bool(ends)
    if skewed:
        # Every end precedes every start: the latest of them, the one nearest the start.
        end = next(h for h in ends if h.at == ends[-1].at)
    started_at = start.at if start is not None else None
    ended_at = None
    if end is not None:
        ended_at = end.at if started_at is None else max(end.at, started_at)
    roles: dict[int, str] = {}
    for h in ordered:
        if h is start or h is end:
            roles[h.id] = "applied"
        elif h.type == START:
            roles[h.id] = (
                "out-of-order" if ended_at is not None and h.at > ended_at else "duplicate"
            )
        else:
            early = started_at is not None and h.at < started_at and not skewed
            roles[h.id] = "out-of-order" if early else "duplicate"
    status = "ended" if end is not None else "started" if start is not None else "scheduled"
    return Timeline(
        status=status,
        started_at=started_at,
        ended_at=ended_at,
        roles=roles,
        start_id=start.id if start is not None else None,
        end_id=end.id if end is not None else None,
    )
