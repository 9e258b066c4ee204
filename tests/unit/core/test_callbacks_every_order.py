"""SPEC 5: for every arrival order, a callback per type of the final history, the last one final."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.models import Delivery, Event, Meeting
from core.services import events
from core.services.events import END, START
from core.validation import isoformat
from tests.conftest import Account
from tests.deliveries_helpers import deliver_event, make_meeting_with_hooks, record

T0 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
STATUS_RANK = {"scheduled": 0, "started": 1, "ended": 2}
# What each callback type carries: the values its last callback must hold at the end.
CARRIES = {START: ("startedAt",), END: ("startedAt", "endedAt", "durationSeconds")}


def at(minute: int | None) -> str | None:
    return None if minute is None else isoformat(T0 + dt.timedelta(minutes=minute))


# (events as (type, minute), final (status, startedAt, endedAt, durationSeconds), outcomes)
CASES: dict[str, tuple[list[tuple[str, int]], tuple[Any, ...], list[str]]] = {
    "start@10 end@5 end@30": (
        [(START, 10), (END, 5), (END, 30)],
        ("ended", 10, 30, 1200),
        ["applied", "applied", "out-of-order"],
    ),
    "start@10 end@30 start@5": (
        [(START, 10), (END, 30), (START, 5)],
        ("ended", 5, 30, 1500),
        ["applied", "applied", "duplicate"],
    ),
    "start@10 end@5 (clock skew)": (
        [(START, 10), (END, 5)],
        ("ended", 10, 10, 0),
        ["applied", "applied"],
    ),
    "start@10 end@5 end@7 (clock skew, two ends)": (
        [(START, 10), (END, 5), (END, 7)],
        ("ended", 10, 10, 0),
        ["applied", "applied", "duplicate"],
    ),
    "end@5 end@30 (no start)": (
        [(END, 5), (END, 30)],
        ("ended", None, 5, None),
        ["applied", "duplicate"],
    ),
    "start@10 start@20 end@30 end@40": (
        [(START, 10), (START, 20), (END, 30), (END, 40)],
        ("ended", 10, 30, 1200),
        ["applied", "applied", "duplicate", "duplicate"],
    ),
    "start@10 end@30 end@30 (same instant)": (
        [(START, 10), (END, 30), (END, 30)],
        ("ended", 10, 30, 1200),
        ["applied", "applied", "duplicate"],
    ),
    "start@10 end@30 start@40": (
        [(START, 10), (END, 30), (START, 40)],
        ("ended", 10, 30, 1200),
        ["applied", "applied", "out-of-order"],
    ),
    "end@5 start@10 start@3 end@30": (
        [(END, 5), (START, 10), (START, 3), (END, 30)],
        ("ended", 3, 5, 120),
        ["applied", "applied", "duplicate", "out-of-order"],
    ),
    "start@10": ([(START, 10)], ("started", 10, None, None), ["applied"]),
    "end@5": ([(END, 5)], ("ended", None, 5, None), ["applied"]),
}


def new_meeting(session_factory: sessionmaker[Session], user_id: int, number: int) -> int:
    urls = {event_type: f"https://93.184.216.34/{event_type}" for event_type in (START, END)}
    return make_meeting_with_hooks(session_factory, user_id, urls, number=number)


def record_and_apply(
    session_factory: sessionmaker[Session], meeting_id: int, type_: str, minute: int
) -> events.Applied:
    return deliver_event(session_factory, meeting_id, type_, T0 + dt.timedelta(minutes=minute))


def shown(meeting: Meeting) -> tuple[Any, ...]:
    return (
        meeting.status,
        isoformat(meeting.started_at),
        isoformat(meeting.ended_at),
        meeting.duration_seconds,
    )


def expected_state(final: tuple[Any, ...]) -> tuple[Any, ...]:
    status, started, ended, duration = final
    return (status, at(started), at(ended), duration)


def problems(session: Session, meeting: Meeting, reported: list[int]) -> list[str]:
    """Tell what a receiver got wrong: a type of the history missing, a last callback not final."""
    sent = session.scalars(
        sa.select(Delivery).where(Delivery.meeting_id == meeting.id).order_by(Delivery.id)
    ).all()
    history = session.scalars(sa.select(Event).where(Event.meeting_id == meeting.id)).all()
    bodies = [json.loads(d.body) for d in sent]
    sequences = [b["data"]["sequence"] for b in bodies]
    found = []
    if sorted(d.id for d in sent) != sorted(reported):
        found.append("a delivery was made but not reported in Applied.delivery_ids")
    if {d.event_type for d in sent} != {e.type for e in history}:
        found.append(f"callback types {sorted({d.event_type for d in sent})}")
    if sequences != sorted(set(sequences)) or sequences != [d.meeting_sequence for d in sent]:
        found.append(f"sequences {sequences}")
    if len({d.message_id for d in sent}) != len(sent):
        found.append("a webhook-id used twice")
    final = {
        "startedAt": isoformat(meeting.started_at),
        "endedAt": isoformat(meeting.ended_at),
        "durationSeconds": meeting.duration_seconds,
    }
    for type_ in sorted({d.event_type for d in sent}):
        last = max((b for b in bodies if b["type"] == type_), key=lambda b: b["data"]["sequence"])
        carried = {key: last["data"][key] for key in CARRIES[type_]}
        if carried != {key: final[key] for key in CARRIES[type_]}:
            found.append(f"last {type_} carries {carried}, the meeting has {final}")
        defining = [e for e in history if e.type == type_ and e.outcome == "applied"]
        if len(defining) != 1:
            found.append(f"{len(defining)} {type_} events stored as applied")
        elif (last["id"], last["timestamp"]) != (
            defining[0].public_id,
            isoformat(defining[0].occurred_at),
        ):
            found.append(f"last {type_} is for {last['timestamp']}, not the applied one")
    return found


def end_problems(
    session_factory: sessionmaker[Session],
    meeting_id: int,
    reported: list[int],
    case: tuple[list[tuple[str, int]], tuple[Any, ...], list[str]],
) -> list[str]:
    """Tell what differs, once every event is in, from the case's meeting, outcomes, callbacks."""
    _, final, expected_outcomes = case
    with session_factory() as session:
        meeting = session.get_one(Meeting, meeting_id)
        found = problems(session, meeting, reported)
        outcomes = Counter(
            session.scalars(sa.select(Event.outcome).where(Event.meeting_id == meeting_id))
        )
    if shown(meeting) != expected_state(final):
        found.append(f"the meeting is {shown(meeting)}")
    if outcomes != Counter(expected_outcomes):
        found.append(f"outcomes {sorted(map(str, outcomes.elements()))}")
    return found


@pytest.mark.parametrize("name", list(CASES))
def test_every_arrival_order_sends_the_same_callbacks(
    session_factory: sessionmaker[Session],
    make_account: Callable[..., Account],
    name: str,
) -> None:
    happened = CASES[name][0]
    account = make_account(email="orders@example.com", personal_url="orders")
    broken: list[str] = []
    for number, order in enumerate(itertools.permutations(range(len(happened)))):
        meeting_id = new_meeting(session_factory, account.id, number)
        reported: list[int] = []
        rank = 0
        for index in order:
            applied = record_and_apply(session_factory, meeting_id, *happened[index])
            reported += applied.delivery_ids
            with session_factory() as session:
                meeting = session.get(Meeting, meeting_id)
                assert meeting is not None
                assert STATUS_RANK[meeting.status] >= rank  # never backwards
                rank = STATUS_RANK[meeting.status]
        arrival = " ".join(f"{happened[i][0][8:]}@{happened[i][1]}" for i in order)
        broken += [
            f"{arrival}: {problem}"
            for problem in end_problems(session_factory, meeting_id, reported, CASES[name])
        ]
    # Every arrival order: the same meeting, the same outcomes, the same callbacks.
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("name", list(CASES))
def test_the_same_events_applied_in_batches_send_the_same_callbacks(
    session_factory: sessionmaker[Session],
    make_account: Callable[..., Account],
    name: str,
) -> None:
    """A wake-up's drain applies many events per transaction: the result must not change."""
    happened = CASES[name][0]
    account = make_account(email="batches@example.com", personal_url="batches")
    broken: list[str] = []
    for number, order in enumerate(itertools.permutations(range(len(happened)))):
        # The first events of the order one at a time, the rest in one batch: 0..n of them.
        alone = number % (len(happened) + 1)
        meeting_id = new_meeting(session_factory, account.id, number)
        reported: list[int] = []
        for index in order[:alone]:
            reported += record_and_apply(session_factory, meeting_id, *happened[index]).delivery_ids
        batch = [
            record(
                session_factory,
                meeting_id,
                happened[i][0],
                T0 + dt.timedelta(minutes=happened[i][1]),
            )
            for i in order[alone:]
        ]
        with session_factory.begin() as session:
            applied = events.apply_batch(session, batch)
        assert len(applied) == len(batch)
        reported += [i for a in applied for i in a.delivery_ids]
        arrival = " ".join(f"{happened[i][0][8:]}@{happened[i][1]}" for i in order)
        broken += [
            f"{arrival} ({alone} alone): {problem}"
            for problem in end_problems(session_factory, meeting_id, reported, CASES[name])
        ]
    assert not broken, "\n".join(broken)
