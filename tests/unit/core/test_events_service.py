from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.models import Delivery, Event, Meeting
from core.services import events
from core.services.events import END, START, Happened
from tests.conftest import Account
from tests.deliveries_helpers import apply, deliver_event, make_meeting_with_hooks, record

T0 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
STATUS_RANK = {"scheduled": 0, "started": 1, "ended": 2}


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def new_meeting(
    session_factory: sessionmaker[Session], user_id: int, number: int, hooks: tuple[str, ...] = ()
) -> int:
    urls = dict.fromkeys(hooks, "https://93.184.216.34/hook")
    return make_meeting_with_hooks(session_factory, user_id, urls, {"k": "v"}, number=number)


@pytest.fixture
def meeting_id(session_factory: sessionmaker[Session], account: Account) -> int:
    return new_meeting(session_factory, account.id, 1, hooks=(START, END))


def state(session_factory: sessionmaker[Session], meeting_id: int) -> tuple[Any, ...]:
    with session_factory() as session:
        m = session.get(Meeting, meeting_id)
        assert m is not None
        return (m.status, m.started_at, m.ended_at, m.duration_seconds)


def outcomes(session_factory: sessionmaker[Session]) -> list[str | None]:
    with session_factory() as session:
        return list(session.scalars(sa.select(Event.outcome).order_by(Event.id)))


def count(session_factory: sessionmaker[Session], model: type[Any]) -> int:
    with session_factory() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


class TestRecordEvent:
    def test_same_source_id_is_stored_once(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        with session_factory.begin() as session:
            first, created = events.record_event(
                session, source="platform", source_event_id="same", type=END,
                occurred_at=at(3), payload={}, meeting_id=meeting_id, user_id=None,
            )  # fmt: skip
            again, created_again = events.record_event(
                session, source="platform", source_event_id="same", type=END,
                occurred_at=at(4), payload={"other": 1}, meeting_id=meeting_id, user_id=None,
            )  # fmt: skip
        assert (created, created_again) == (True, False)
        assert first.id == again.id
        assert again.occurred_at == at(3)  # the first copy wins; a replay changes nothing
        assert count(session_factory, Event) == 1

    def test_same_id_from_another_source_is_another_event(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        with session_factory.begin() as session:
            for source in ("platform", "api"):
                events.record_event(
                    session, source=source, source_event_id="same", type=END,
                    occurred_at=at(3), payload={}, meeting_id=meeting_id, user_id=None,
                )  # fmt: skip
        assert count(session_factory, Event) == 2


_ingested = itertools.count()


def ingested_for(
    session_factory: sessionmaker[Session], *, meeting_id: int | None, conference_id: str | None
) -> tuple[int | None, int | None]:
    """Ingest a platform event naming a meeting; return the meeting and owner it was filed under."""
    with session_factory.begin() as session:
        recorded = events.ingest_platform_event(
            session, source_event_id=f"msg_{next(_ingested)}", type=END, occurred_at=at(1),
            payload={}, meeting_id=meeting_id, conference_id=conference_id,
        )  # fmt: skip
    with session_factory() as session:
        event = session.get_one(Event, recorded.id)
        assert (event.public_id, event.meeting_id) == (recorded.public_id, recorded.meeting_id)
        return event.meeting_id, event.user_id


class TestIngestPlatformEvent:
    def test_by_id_and_unknown_ids(
        self, session_factory: sessionmaker[Session], meeting_id: int, account: Account
    ) -> None:
        found = ingested_for(session_factory, meeting_id=meeting_id, conference_id=None)
        assert found == (meeting_id, account.id)
        for unknown in (meeting_id + 1000, 2**31, 2**70):
            assert ingested_for(session_factory, meeting_id=unknown, conference_id=None) == (
                None,
                None,
            )

    def test_a_replay_returns_the_first_copy(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        def ingest(minute: int) -> events.Ingested:
            return events.ingest_platform_event(
                session, source_event_id="same", type=END, occurred_at=at(minute),
                payload={}, meeting_id=meeting_id, conference_id=None,
            )  # fmt: skip

        with session_factory.begin() as session:
            first, again = ingest(3), ingest(4)
        assert (first.created, again.created) == (True, False)
        assert (again.id, again.public_id, again.meeting_id) == (
            first.id,
            first.public_id,
            meeting_id,
        )
        assert count(session_factory, Event) == 1

    def test_a_deleted_meeting_is_no_meeting(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        with session_factory.begin() as session:
            meeting = session.get(Meeting, meeting_id)
            assert meeting is not None
            meeting.deleted_at = at(0)
            conference_id = meeting.conference_id
        assert ingested_for(session_factory, meeting_id=meeting_id, conference_id=None) == (
            None,
            None,
        )
        assert ingested_for(session_factory, meeting_id=None, conference_id=conference_id) == (
            None,
            None,
        )

    def test_conference_id_names_the_live_meeting_else_the_latest(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        older, newer, live = (new_meeting(session_factory, account.id, n) for n in (1, 2, 3))
        with session_factory.begin() as session:
            for mid, status in ((older, "ended"), (newer, "ended"), (live, "scheduled")):
                session.execute(
                    sa.update(Meeting)
                    .where(Meeting.id == mid)
                    .values(conference_id="123456789", status=status)
                )
        found = ingested_for(session_factory, meeting_id=None, conference_id="123456789")
        assert found == (live, account.id)
        with session_factory.begin() as session:
            session.execute(sa.update(Meeting).where(Meeting.id == live).values(status="ended"))
        found = ingested_for(session_factory, meeting_id=None, conference_id="123456789")
        assert found == (live, account.id)  # all ended: the latest that held it


class TestApplyEvent:
    def test_start_then_end(self, session_factory: sessionmaker[Session], meeting_id: int) -> None:
        start = deliver_event(session_factory, meeting_id, START, at(0))
        assert start.outcome == "applied"
        assert len(start.delivery_ids) == 1
        assert state(session_factory, meeting_id) == ("started", at(0), None, None)
        end = deliver_event(session_factory, meeting_id, END, at(30))
        assert end.outcome == "applied"
        assert len(end.delivery_ids) == 1
        assert state(session_factory, meeting_id) == ("ended", at(0), at(30), 1800)

    def test_callbacks_carry_the_sequence_and_the_state_after_the_event(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        deliver_event(session_factory, meeting_id, START, at(0))
        deliver_event(session_factory, meeting_id, END, at(30))
        with session_factory() as session:
            bodies = [
                json.loads(body)
                for body in session.scalars(sa.select(Delivery.body).order_by(Delivery.id))
            ]
        assert [(b["type"], b["data"]["sequence"]) for b in bodies] == [(START, 1), (END, 2)]
        assert bodies[1]["data"]["durationSeconds"] == 1800

    def test_duplicate_start_changes_nothing_and_calls_nobody(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        deliver_event(session_factory, meeting_id, START, at(0))
        again = deliver_event(session_factory, meeting_id, START, at(1))
        assert again.outcome == "duplicate"
        assert again.delivery_ids == []
        assert state(session_factory, meeting_id) == ("started", at(0), None, None)

    def test_start_at_the_same_instant_is_a_duplicate(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        deliver_event(session_factory, meeting_id, START, at(0))
        again = deliver_event(session_factory, meeting_id, START, at(0))
        assert again.outcome == "duplicate"
        assert again.delivery_ids == []

    def test_second_end_is_a_duplicate_and_calls_nobody(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        deliver_event(session_factory, meeting_id, START, at(0))
        deliver_event(session_factory, meeting_id, END, at(10))
        second = deliver_event(session_factory, meeting_id, END, at(20))
        assert second.outcome == "duplicate"
        assert second.delivery_ids == []
        assert state(session_factory, meeting_id) == ("ended", at(0), at(10), 600)

    def test_earlier_end_arriving_late_corrects_the_end(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        deliver_event(session_factory, meeting_id, START, at(0))
        deliver_event(session_factory, meeting_id, END, at(20))
        earlier = deliver_event(session_factory, meeting_id, END, at(10))
        assert earlier.outcome == "applied"
        assert state(session_factory, meeting_id) == ("ended", at(0), at(10), 600)

    def test_end_without_start_then_the_late_start(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        assert deliver_event(session_factory, meeting_id, END, at(30)).outcome == "applied"
        assert state(session_factory, meeting_id) == ("ended", None, at(30), None)
        late = deliver_event(session_factory, meeting_id, START, at(5))
        assert late.outcome == "applied"
        assert state(session_factory, meeting_id) == ("ended", at(5), at(30), 1500)

    def test_start_after_the_end_is_out_of_order(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        deliver_event(session_factory, meeting_id, START, at(0))
        deliver_event(session_factory, meeting_id, END, at(30))
        late = deliver_event(session_factory, meeting_id, START, at(45))
        assert late.outcome == "out-of-order"
        assert late.delivery_ids == []
        assert state(session_factory, meeting_id) == ("ended", at(0), at(30), 1800)

    def test_end_before_its_start_ends_the_meeting_without_a_negative_duration(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        deliver_event(session_factory, meeting_id, START, at(10))
        end = deliver_event(session_factory, meeting_id, END, at(5))
        # Ended is final and the known start stays; the platform's clocks disagree, so the end
        # is taken at the start, as the end call does: no negative duration.
        assert end.outcome == "applied"
        assert len(end.delivery_ids) == 1
        assert state(session_factory, meeting_id) == ("ended", at(10), at(10), 0)

    def test_end_first_then_its_late_start_sends_both_callbacks(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        deliver_event(session_factory, meeting_id, END, at(5))
        start = deliver_event(session_factory, meeting_id, START, at(10))
        # The start is applied, and the end's callback is sent again with the values it now has.
        assert start.outcome == "applied"
        assert len(start.delivery_ids) == 2
        assert state(session_factory, meeting_id) == ("ended", at(10), at(10), 0)
        later = deliver_event(session_factory, meeting_id, END, at(30))
        assert later.outcome == "applied"
        assert state(session_factory, meeting_id) == ("ended", at(10), at(30), 1200)
        assert outcomes(session_factory) == ["out-of-order", "applied", "applied"]
        with session_factory() as session:
            sent = session.execute(
                sa.select(Delivery.event_type, Delivery.meeting_sequence, Delivery.body).order_by(
                    Delivery.id
                )
            ).all()
        assert [(type_, sequence) for type_, sequence, _ in sent] == [
            (END, 1), (START, 2), (END, 3), (END, 4),
        ]  # fmt: skip
        last_end = json.loads(sent[-1].body)
        assert last_end["timestamp"] == "2026-11-24T10:30:00Z"
        assert last_end["data"]["durationSeconds"] == 1200

    def test_an_earlier_start_corrects_both_callbacks(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        deliver_event(session_factory, meeting_id, START, at(10))
        deliver_event(session_factory, meeting_id, END, at(30))
        earlier = deliver_event(session_factory, meeting_id, START, at(5))
        assert earlier.outcome == "applied"
        assert len(earlier.delivery_ids) == 2
        assert outcomes(session_factory) == ["duplicate", "applied", "applied"]
        with session_factory() as session:
            bodies = [
                json.loads(body)
                for body in session.scalars(
                    sa.select(Delivery.body).where(Delivery.id.in_(earlier.delivery_ids))
                )
            ]
        assert sorted(
            (b["data"]["sequence"], b["type"], b["data"]["startedAt"], b["data"]["durationSeconds"])
            for b in bodies
        ) == [(3, START, "2026-11-24T10:05:00Z", 1500), (4, END, "2026-11-24T10:05:00Z", 1500)]

    def test_end_before_its_start_is_out_of_order_once_a_real_end_is_known(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        deliver_event(session_factory, meeting_id, START, at(10))
        deliver_event(session_factory, meeting_id, END, at(30))
        early = deliver_event(session_factory, meeting_id, END, at(5))
        assert early.outcome == "out-of-order"
        assert early.delivery_ids == []
        assert state(session_factory, meeting_id) == ("ended", at(10), at(30), 1200)

    def test_unknown_meeting_is_recorded_as_such(
        self, session_factory: sessionmaker[Session]
    ) -> None:
        applied = deliver_event(session_factory, None, START, at(0))
        assert applied.outcome == "unknown-meeting"
        assert applied.delivery_ids == []
        with session_factory() as session:
            event = session.scalars(sa.select(Event)).one()
        assert event.processed_at is not None
        assert event.outcome == "unknown-meeting"

    def test_missing_event_is_reported_not_raised(
        self, session_factory: sessionmaker[Session]
    ) -> None:
        assert apply(session_factory, 424242).outcome == "missing"

    def test_applying_twice_is_a_no_op(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        event_id = record(session_factory, meeting_id, END, at(3))
        first = apply(session_factory, event_id)
        second = apply(session_factory, event_id)
        assert first.outcome == second.outcome == "applied"
        assert len(first.delivery_ids) == 1
        assert second.delivery_ids == []
        assert count(session_factory, Delivery) == 1
        with session_factory() as session:
            meeting = session.get(Meeting, meeting_id)
            assert meeting is not None
            assert meeting.event_sequence == 1

    def test_unprocessed_events_do_not_count_until_processed(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        record(session_factory, meeting_id, START, at(0))  # recorded, its worker not there yet
        end = deliver_event(session_factory, meeting_id, END, at(30))
        assert end.outcome == "applied"
        assert state(session_factory, meeting_id) == ("ended", None, at(30), None)


class TestApplyBatch:
    def test_concurrent_batches_over_the_same_meetings_apply_each_event_once(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        meetings = [
            new_meeting(session_factory, account.id, n, hooks=(START, END)) for n in range(6)
        ]
        starts = [record(session_factory, m, START, at(0)) for m in meetings]
        ends = [record(session_factory, m, END, at(30)) for m in meetings]
        # Both batches name every meeting, in opposite orders: applied in the order they came
        # in, one would lock meetings upwards and the other downwards until they deadlocked.
        batches = [starts, list(reversed(ends))]
        barrier = threading.Barrier(len(batches))
        applied: list[list[events.Applied]] = []
        errors: list[BaseException] = []

        def run(batch: list[int]) -> None:
            try:
                with session_factory.begin() as session:
                    barrier.wait(10)
                    applied.append(events.apply_batch(session, batch))
            except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(batch,)) for batch in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert sum(len(results) for results in applied) == len(starts) + len(ends)
        for m in meetings:
            assert state(session_factory, m) == ("ended", at(0), at(30), 1800)
        # A start and an end callback per meeting, and a corrected end where the end was
        # applied before its start (the other batch held the start).
        with session_factory() as session:
            per_meeting = session.execute(
                sa.select(Delivery.meeting_id, sa.func.count()).group_by(Delivery.meeting_id)
            ).all()
        assert sorted(m for m, _ in per_meeting) == meetings
        assert all(n in (2, 3) for _, n in per_meeting)


class TestEmitInternal:
    def test_end_call_is_applied_in_the_callers_transaction(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        deliver_event(session_factory, meeting_id, START, at(0))
        with session_factory.begin() as session:
            meeting = session.get(Meeting, meeting_id)
            assert meeting is not None
            event, applied = events.emit_internal(session, meeting, END, source="api")
            assert meeting.status == "ended"
        assert applied.outcome == "applied"
        assert event.source == "api"
        assert len(applied.delivery_ids) == 1

    def test_end_now_never_precedes_a_start_reported_by_a_clock_ahead_of_ours(
        self, session_factory: sessionmaker[Session], meeting_id: int
    ) -> None:
        ahead = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90)
        deliver_event(session_factory, meeting_id, START, ahead)
        with session_factory.begin() as session:
            meeting = session.get(Meeting, meeting_id)
            assert meeting is not None
            event, applied = events.emit_internal(session, meeting, END, source="api")
        assert applied.outcome == "applied"
        assert event.occurred_at == ahead
        assert state(session_factory, meeting_id) == ("ended", ahead, ahead, 0)


# --- the fold: a pure function of the set of events ------------------------------------------


def h(number: int, type_: str, minute: float) -> Happened:
    return Happened(id=number, type=type_, at=at(minute))


def timeline_state(timeline: events.Timeline) -> tuple[Any, ...]:
    return (timeline.status, timeline.started_at, timeline.ended_at, timeline.duration_seconds)


class TestFold:
    @pytest.mark.parametrize(
        ("happened", "expected", "roles"),
        [
            ([], ("scheduled", None, None, None), []),
            ([h(1, START, 0)], ("started", at(0), None, None), ["applied"]),
            ([h(1, END, 5)], ("ended", None, at(5), None), ["applied"]),
            ([h(1, START, 0), h(2, END, 30)], ("ended", at(0), at(30), 1800),
             ["applied", "applied"]),
            ([h(1, START, 0), h(2, START, 5)], ("started", at(0), None, None),
             ["applied", "duplicate"]),
            ([h(1, START, 0), h(2, END, 30), h(3, END, 40)], ("ended", at(0), at(30), 1800),
             ["applied", "applied", "duplicate"]),
            ([h(1, START, 0), h(2, END, 30), h(3, START, 40)], ("ended", at(0), at(30), 1800),
             ["applied", "applied", "out-of-order"]),
            ([h(1, START, 10), h(2, END, 5)], ("ended", at(10), at(10), 0),
             ["applied", "applied"]),
            ([h(1, START, 10), h(2, END, 5), h(3, END, 7)], ("ended", at(10), at(10), 0),
             ["applied", "duplicate", "applied"]),
            ([h(1, START, 10), h(2, START, 20), h(3, END, 5)], ("ended", at(10), at(10), 0),
             ["applied", "out-of-order", "applied"]),
            ([h(1, END, 5), h(2, END, 30)], ("ended", None, at(5), None),
             ["applied", "duplicate"]),
            ([h(1, START, 10), h(2, END, 30), h(3, START, 5)], ("ended", at(5), at(30), 1500),
             ["duplicate", "applied", "applied"]),
            ([h(1, START, 0), h(2, END, 30), h(3, END, -5), h(4, START, -10)],
             ("ended", at(-10), at(-5), 300), ["out-of-order", "duplicate", "applied", "applied"]),
            ([h(1, START, 10), h(2, END, 5), h(3, END, 30)], ("ended", at(10), at(30), 1200),
             ["applied", "out-of-order", "applied"]),
            ([h(1, START, 10), h(2, END, 10)], ("ended", at(10), at(10), 0),
             ["applied", "applied"]),
            ([h(2, START, 10), h(1, END, 10)], ("ended", at(10), at(10), 0),
             ["applied", "applied"]),
        ],
    )  # fmt: skip
    def test_cases(
        self, happened: list[Happened], expected: tuple[Any, ...], roles: list[str]
    ) -> None:
        timeline = events.fold(happened)
        assert timeline_state(timeline) == expected
        assert [timeline.roles[x.id] for x in happened] == roles

    def test_at_the_same_instant_the_event_applied_before_keeps_its_place(self) -> None:
        start = h(1, START, 10)
        first = Happened(id=3, type=END, at=at(30), was_applied=True)
        second = Happened(id=2, type=END, at=at(30))
        timeline = events.fold([start, first, second])
        assert (timeline.end_id, timeline.roles[2]) == (3, "duplicate")
        # Neither applied before: the lower id wins.
        assert events.fold([start, h(3, END, 30), h(2, END, 30)]).end_id == 2

    def test_duration_truncates_to_whole_seconds(self) -> None:
        start = Happened(id=1, type=START, at=T0)
        end = Happened(id=2, type=END, at=T0 + dt.timedelta(seconds=59, microseconds=999_999))
        assert events.fold([start, end]).duration_seconds == 59


GRID = [(type_, minute) for type_ in (START, END) for minute in (0, 10, 20)]


def all_event_sets(max_size: int) -> list[tuple[tuple[str, int], ...]]:
    return [
        combo
        for size in range(1, max_size + 1)
        for combo in itertools.combinations_with_replacement(GRID, size)
    ]


def test_fold_invariants_over_every_event_set_and_arrival_order() -> None:
    checked = 0
    for combo in all_event_sets(4):
        happened = [h(number, type_, minute) for number, (type_, minute) in enumerate(combo)]
        final = events.fold(happened)
        assert final.status == (
            "ended" if final.ended_at else "started" if final.started_at else "scheduled"
        )
        if final.started_at is not None and final.ended_at is not None:
            assert final.started_at <= final.ended_at
            assert final.duration_seconds is not None
            assert final.duration_seconds >= 0
        applied = [x for x in happened if final.roles[x.id] == "applied"]
        assert sorted(x.type for x in applied) == sorted(
            ([START] if final.started_at else []) + ([END] if final.ended_at else [])
        )
        for order in itertools.permutations(happened):
            rank = 0
            for size in range(1, len(order) + 1):
                # Events arrive one by one: the meeting never moves backwards.
                now = STATUS_RANK[events.fold(order[:size]).status]
                assert now >= rank
                rank = now
            assert timeline_state(events.fold(order)) == timeline_state(final)
            checked += 1
    assert checked > 1000


SCENARIOS = [
    [(START, 0), (END, 30)],
    [(START, 0), (END, 30), (END, 40)],
    [(START, 0), (START, 5), (END, 30)],
    [(START, 10), (END, 5), (END, 30)],
    [(END, 30), (START, 40), (START, 0)],
    [(START, 10), (END, 10), (START, 10)],
    [(END, 5), (END, 30), (START, 40)],
    [(START, 0), (START, 5), (END, 20), (END, 30), (START, 40)],
]


@pytest.mark.parametrize(
    "scenario", SCENARIOS, ids=lambda s: " ".join(f"{t[8:]}@{m}" for t, m in s)
)
def test_every_arrival_order_gives_the_same_meeting(
    session_factory: sessionmaker[Session], account: Account, scenario: list[tuple[str, int]]
) -> None:
    expected = timeline_state(
        events.fold([h(n, type_, minute) for n, (type_, minute) in enumerate(scenario)])
    )
    finals = set()
    for number, order in enumerate(itertools.permutations(scenario)):
        meeting_id = new_meeting(session_factory, account.id, number, hooks=(START, END))
        rank = 0
        applied = 0
        for type_, minute in order:
            result = deliver_event(session_factory, meeting_id, type_, at(minute))
            applied += result.outcome == "applied"
            current = state(session_factory, meeting_id)
            assert STATUS_RANK[current[0]] >= rank  # never backwards, whatever arrives
            rank = STATUS_RANK[current[0]]
        assert applied >= 1
        finals.add(state(session_factory, meeting_id))
        with session_factory() as session:
            meeting = session.get(Meeting, meeting_id)
            assert meeting is not None
            # One webhook per type: one callback per batch, each batch numbered after the last.
            sequences = session.scalars(
                sa.select(Delivery.meeting_sequence)
                .where(Delivery.meeting_id == meeting_id)
                .order_by(Delivery.id)
            ).all()
            assert sequences == list(range(1, meeting.event_sequence + 1))
            assert len(sequences) >= applied
    assert finals == {expected}
