"""A small history of two users' meetings, built through the event services, for analytics.

Every meeting's state comes from events recorded and applied by `core.services.events`, in
the arrival orders below (duplicates, out-of-order ends, late starts, a repeated webhook-id);
only the callbacks' outcomes are written by hand, as a worker would have logged them.
The expected figures in the tests are worked out by hand from the comments here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa

from core.models import Delivery, DeliveryAttempt, Meeting
from core.security import new_public_id
from core.services import events, meetings
from tests.deliveries_helpers import make_meeting_with_hooks

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from tests.conftest import Account

START, END = "meeting.start", "meeting.end"
DAY = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
HOOK = "https://hooks.example.test/cb"


def at(hhmm: str, day: int = 0) -> dt.datetime:
    """Return 2026-11-02 (plus `day` days) at `hhmm` UTC."""
    hours, minutes = (int(part) for part in hhmm.split(":"))
    return DAY + dt.timedelta(days=day, hours=hours, minutes=minutes)


@dataclass
class History:
    """The meetings made, by name, and the callbacks of the first user in creation order."""

    meetings: dict[str, int] = field(default_factory=dict)
    deliveries: list[int] = field(default_factory=list)


def report(
    session_factory: sessionmaker[Session],
    meeting_id: int,
    type: str,
    when: dt.datetime,
    *,
    webhook_id: str | None = None,
) -> None:
    """Record and apply one platform event, as the ingest endpoint and the worker do."""
    with session_factory.begin() as session:
        meeting = session.get(Meeting, meeting_id)
        assert meeting is not None
        event, _ = events.record_event(
            session,
            source="platform",
            source_event_id=webhook_id or new_public_id("wh"),
            type=type,
            occurred_at=when,
            payload={"type": type, "data": {"meetingId": meeting_id}},
            meeting_id=meeting_id,
            user_id=meeting.user_id,
        )
        events.apply_event(session, event.id)


def _meeting(
    session_factory: sessionmaker[Session],
    user_id: int,
    reports: list[tuple[str, dt.datetime]],
    hooks: tuple[str, ...] = (),
) -> int:
    meeting_id = make_meeting_with_hooks(session_factory, user_id, dict.fromkeys(hooks, HOOK))
    for type, when in reports:
        report(session_factory, meeting_id, type, when)
    return meeting_id


# Attempt latencies (ms) and final status of the first user's callbacks, in creation order.
OUTCOMES: list[tuple[str, list[int | None]]] = [
    ("succeeded", [120]),
    ("failed", [200, 210, 220, 230, 240, 250, 260, 2000]),
    ("pending", [40]),
    ("succeeded", [310]),
    ("succeeded", [75, 60]),
    ("failed", [1000, 1100, 1200, 1300, 1400, 1500, 1600]),
    ("pending", [None]),  # an attempt in progress: no latency yet
]


def build(session_factory: sessionmaker[Session], alice: Account, bob: Account) -> History:
    """Write the history; see the comments for what each meeting is."""
    history = History()
    m = history.meetings
    sf, a = session_factory, alice.id
    # m1 10:00-11:00 (3600 s): the end arrives first, then the start twice from two platform
    # machines (two webhook-ids, one instant), then the first webhook-id again.
    m["m1"] = make_meeting_with_hooks(sf, a, {START: HOOK, END: HOOK})
    report(sf, m["m1"], END, at("11:00"))
    report(sf, m["m1"], START, at("10:00"), webhook_id="wh_m1_start_a")
    report(sf, m["m1"], START, at("10:00"), webhook_id="wh_m1_start_b")
    report(sf, m["m1"], START, at("10:00"), webhook_id="wh_m1_start_a")
    # m2 10:30-10:45 (900 s): ends at 10:50, 10:20 (before the start: out of order), then the
    # start, then the 10:45 end that defines it. Each change re-made its end callback.
    m["m2"] = _meeting(
        sf,
        a,
        [(END, at("10:50")), (END, at("10:20")), (START, at("10:30")), (END, at("10:45"))],
        hooks=(END,),
    )
    # m3 from 10:40, still running.
    m["m3"] = _meeting(sf, a, [(START, at("10:40"))])
    # m4: an end at 12:00 and no start: ended, duration unknown.
    m["m4"] = _meeting(sf, a, [(END, at("12:00"))])
    # m5 the day before 23:00 to 01:00 (7200 s): ends in the range, started before it.
    m["m5"] = _meeting(sf, a, [(END, at("01:00")), (START, at("23:00", day=-1))])
    # m6 23:30 to 00:30 the next day: starts in the range, ends after it.
    m["m6"] = _meeting(sf, a, [(START, at("23:30")), (END, at("00:30", day=1))])
    # m7 12:30-14:00 (5400 s): start 13:00 and end 14:00, then a late start at 12:30.
    m["m7"] = _meeting(sf, a, [(START, at("13:00")), (END, at("14:00")), (START, at("12:30"))])
    # m8 from 20:00 the day before, still running.
    m["m8"] = _meeting(sf, a, [(START, at("20:00", day=-1))])
    # m9 15:00-15:00: no length (0 s), never running.
    m["m9"] = _meeting(sf, a, [(START, at("15:00")), (END, at("15:00"))])
    # m10: an end at 16:00 before the only start, 16:10 (clock skew): ended at 16:10, 0 s.
    m["m10"] = _meeting(sf, a, [(END, at("16:00")), (START, at("16:10"))])
    # m11 10:00-10:30, then deleted: analytics leaves it out, as the meetings API does.
    m["deleted"] = _meeting(sf, a, [(START, at("10:00")), (END, at("10:30"))])
    with sf.begin() as session:
        meetings.delete_meeting(session, alice.user, m["deleted"])
    # A scheduled meeting that never started.
    m["never"] = _meeting(sf, a, [])
    # Bob's meetings at the same times, and his callbacks: never in Alice's figures.
    m["bob1"] = _meeting(sf, bob.id, [(START, at("10:00")), (END, at("11:00"))], (START, END))
    m["bob2"] = _meeting(sf, bob.id, [(START, at("10:05"))])

    with sf.begin() as session:
        history.deliveries = list(
            session.scalars(
                sa.select(Delivery.id).where(Delivery.user_id == a).order_by(Delivery.id)
            )
        )
        assert len(history.deliveries) == len(OUTCOMES)
        for delivery_id, (status, latencies) in zip(history.deliveries, OUTCOMES, strict=True):
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            delivery.status = status
            delivery.attempt_count = len(latencies)
            for n, latency in enumerate(latencies):
                session.add(
                    DeliveryAttempt(
                        delivery_id=delivery_id,
                        attempted_at=at("18:00") + dt.timedelta(minutes=n),
                        status_code=None if latency is None else 200,
                        latency_ms=latency,
                        error="in-progress" if latency is None else None,
                    )
                )
        # Bob's callbacks all failed slowly: they would move every figure of Alice's.
        for delivery in session.scalars(sa.select(Delivery).where(Delivery.user_id == bob.id)):
            delivery.status = "failed"
            session.add(DeliveryAttempt(delivery_id=delivery.id, latency_ms=99_999))
    return history
