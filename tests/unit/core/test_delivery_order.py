"""Issue 13 at the claim: ordered delivery per meeting and URL, and the bound per callback host."""

from __future__ import annotations

import datetime as dt
import threading

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core import task_names, wakeups
from core.db import utcnow
from core.models import Delivery, Webhook
from core.services import delivery_log, delivery_states
from core.services.events import END, START
from core.services.outbound_http import Outcome, destination_host
from tests.conftest import Account
from tests.deliveries_helpers import deliver_event, emit, load, make_meeting_with_hooks

HOOK = "https://hooks.example.com/meetings"
OTHER_HOST = "https://other.example.com/meetings"
SCHEDULE = (5, 300, 1800)
LEASE = dt.timedelta(seconds=50)
OK = Outcome(status_code=204, latency_ms=3, error=None)
FAILED = Outcome(status_code=500, latency_ms=3, error="http-500")
T0 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)


def claim(
    session_factory: sessionmaker[Session],
    *among: int,
    max_in_flight: int | None = None,
    now: dt.datetime | None = None,
) -> delivery_states.Claim | None:
    with session_factory.begin() as session:
        return delivery_states.claim_next(
            session,
            among=list(among) or None,
            lease=LEASE,
            max_attempts=len(SCHEDULE) + 1,
            max_in_flight=max_in_flight,
            now=now,
        )


def record(
    session_factory: sessionmaker[Session], claimed: delivery_states.Claim, outcome: Outcome
) -> list[int]:
    """Record the outcome; return the deliveries whose wake-up it noted."""
    with session_factory.begin() as session:
        delivery_states.record(session, claimed, outcome, schedule=SCHEDULE)
        return [
            kwargs["delivery_id"]
            for name, kwargs in wakeups.pending(session)
            if name == task_names.DELIVER
        ]


def start_and_end(
    session_factory: sessionmaker[Session], user_id: int, *, ordered: bool = True
) -> tuple[int, int]:
    """A meeting whose start and end go to one URL; return the start's and end's deliveries."""
    meeting = make_meeting_with_hooks(session_factory, user_id, {START: HOOK, END: HOOK})
    if not ordered:
        with session_factory.begin() as session:
            session.execute(
                sa.update(Webhook).where(Webhook.meeting_id == meeting).values(ordered=False)
            )
    (start,) = emit(session_factory, meeting, START)
    (end,) = emit(session_factory, meeting, END)
    return start, end


def waiting_for(
    session_factory: sessionmaker[Session], user_id: int, delivery_id: int
) -> int | None:
    with session_factory() as session:
        return delivery_log.show(session, user_id, delivery_id).waiting_for


class TestOrdered:
    def test_the_end_waits_while_the_start_is_pending_and_goes_once_it_succeeds(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        start, end = start_and_end(session_factory, account.id)
        assert claim(session_factory, end) is None
        assert waiting_for(session_factory, account.id, end) == start
        assert waiting_for(session_factory, account.id, start) is None
        claimed = claim(session_factory)
        assert claimed is not None
        assert claimed.delivery_id == start
        assert claim(session_factory) is None  # the end still waits: its start is in flight
        # The success wakes the end at once (after commit), not at the next sweep.
        assert record(session_factory, claimed, OK) == [end]
        assert waiting_for(session_factory, account.id, end) is None
        following = claim(session_factory)
        assert following is not None
        assert following.delivery_id == end

    def test_a_failing_start_holds_the_end_until_it_is_failed_for_good(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        start, end = start_and_end(session_factory, account.id)
        now = utcnow()
        for attempt in range(len(SCHEDULE) + 1):
            claimed = claim(session_factory, now=now)
            assert claimed is not None, attempt
            assert claimed.delivery_id == start
            woken = record(session_factory, claimed, FAILED)
            # A retry's wait is over: the end still waits behind it.
            now = utcnow() + dt.timedelta(hours=2 * (attempt + 1))
        assert load(session_factory, start).status == "failed"
        assert woken == [end]  # the last failure ended the wait
        claimed = claim(session_factory, now=now)
        assert claimed is not None
        assert claimed.delivery_id == end

    def test_ordered_false_sends_the_end_while_the_start_is_pending(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        start, end = start_and_end(session_factory, account.id, ordered=False)
        assert waiting_for(session_factory, account.id, end) is None
        claimed = claim(session_factory, end)
        assert claimed is not None
        assert claimed.delivery_id == end
        assert load(session_factory, start).status == "pending"

    def test_another_meeting_is_not_held_by_a_pending_start(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        start_and_end(session_factory, account.id)
        _, other_end = start_and_end(session_factory, account.id)
        first = claim(session_factory)
        assert first is not None
        # The first meeting's start is in flight; the second's start goes, then its end.
        second = claim(session_factory)
        assert second is not None
        assert second.delivery_id != first.delivery_id
        record(session_factory, second, OK)
        third = claim(session_factory)
        assert third is not None
        assert third.delivery_id == other_end

    def test_other_urls_of_the_same_meeting_are_not_held(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        meeting = make_meeting_with_hooks(
            session_factory, account.id, {START: HOOK, END: OTHER_HOST}
        )
        emit(session_factory, meeting, START)
        (end,) = emit(session_factory, meeting, END)
        claimed = claim(session_factory, end)
        assert claimed is not None
        assert claimed.delivery_id == end

    def test_a_correction_goes_after_what_it_corrects_by_sequence_not_event_time(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        # end@5 then start@10: end (1), start (2), the corrected end (3). By event time the
        # corrected end (5) would go before the start (10), and the receiver's last word would
        # be "started" for a meeting that ended.
        meeting = make_meeting_with_hooks(session_factory, account.id, {START: HOOK, END: HOOK})
        deliver_event(session_factory, meeting, END, T0 + dt.timedelta(minutes=5))
        deliver_event(session_factory, meeting, START, T0 + dt.timedelta(minutes=10))
        with session_factory() as session:
            line = session.execute(
                sa.select(Delivery.id, Delivery.event_type, Delivery.meeting_sequence)
                .where(Delivery.meeting_id == meeting)
                .order_by(Delivery.id)
            ).all()
        assert [(row.event_type, row.meeting_sequence) for row in line] == [
            (END, 1),
            (START, 2),
            (END, 3),
        ]
        sent = []
        while (claimed := claim(session_factory)) is not None:
            assert claim(session_factory) is None  # one at a time: each waits for the one ahead
            sent.append(claimed.delivery_id)
            record(session_factory, claimed, OK)
        assert sent == [row.id for row in line]

    def test_a_callback_carries_its_webhooks_order_and_its_host(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        start, _ = start_and_end(session_factory, account.id)
        with session_factory() as session:
            delivery = session.get(Delivery, start)
            assert delivery is not None
            assert delivery.ordered is True
            assert delivery.destination_host == "hooks.example.com:443"


class TestPerHostBound:
    def test_a_full_host_waits_while_another_host_is_served(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        busy = [
            emit(
                session_factory,
                make_meeting_with_hooks(session_factory, account.id, {START: HOOK}),
                START,
            )[0]
            for _ in range(3)
        ]
        (other,) = emit(
            session_factory,
            make_meeting_with_hooks(session_factory, account.id, {START: OTHER_HOST}),
            START,
        )
        first = claim(session_factory, busy[0], max_in_flight=2)
        second = claim(session_factory, busy[1], max_in_flight=2)
        assert first is not None
        assert second is not None
        assert second.more_due  # the third waits for a slot of the host: lanes look on
        assert claim(session_factory, busy[2], max_in_flight=2) is None
        served = claim(session_factory, max_in_flight=2)
        assert served is not None
        assert served.delivery_id == other
        record(session_factory, first, OK)
        third = claim(session_factory, max_in_flight=2)
        assert third is not None
        assert third.delivery_id == busy[2]

    def test_a_lease_that_ran_out_frees_its_slot(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        ids = [
            emit(
                session_factory,
                make_meeting_with_hooks(session_factory, account.id, {START: HOOK}),
                START,
            )[0]
            for _ in range(2)
        ]
        assert claim(session_factory, ids[0], max_in_flight=1) is not None
        assert claim(session_factory, ids[1], max_in_flight=1) is None
        later = utcnow() + LEASE + dt.timedelta(seconds=1)  # its worker died
        assert claim(session_factory, ids[1], max_in_flight=1, now=later) is not None

    def test_a_429_holds_the_hosts_other_deliveries_and_no_other_host(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        ids = [
            emit(
                session_factory,
                make_meeting_with_hooks(session_factory, account.id, {START: HOOK}),
                START,
            )[0]
            for _ in range(3)
        ]
        (other,) = emit(
            session_factory,
            make_meeting_with_hooks(session_factory, account.id, {START: OTHER_HOST}),
            START,
        )
        claimed = claim(session_factory, ids[0])
        assert claimed is not None
        slow_down = Outcome(
            status_code=429, latency_ms=3, error="http-429", retry_after=dt.timedelta(minutes=10)
        )
        record(session_factory, claimed, slow_down)
        retry_at = load(session_factory, ids[0]).next_attempt_at
        assert retry_at is not None
        assert retry_at >= utcnow() + dt.timedelta(minutes=9)
        for held in ids[1:]:
            assert load(session_factory, held).next_attempt_at == retry_at
        assert claim(session_factory, *ids) is None
        assert load(session_factory, other).next_attempt_at <= utcnow()  # type: ignore[operator]
        served = claim(session_factory)
        assert served is not None
        assert served.delivery_id == other


def test_destination_host_names_host_and_port() -> None:
    assert destination_host("https://Hooks.Example.com/x") == "hooks.example.com:443"
    assert destination_host("http://127.0.0.1:8080/x?y") == "127.0.0.1:8080"
    assert destination_host("http://[::1]/x") == "::1:80"
    assert destination_host("not a url") == ""


def test_claims_racing_for_one_host_never_take_more_than_its_slots(
    session_factory: sessionmaker[Session], account: Account
) -> None:
    # On PostgreSQL two claims can count the same free slot: the host lock and recount stop it.
    for _ in range(20):
        meeting = make_meeting_with_hooks(session_factory, account.id, {START: HOOK})
        emit(session_factory, meeting, START)
    claimed: list[int] = []
    barrier = threading.Barrier(6)

    def claimer() -> None:
        barrier.wait()
        while (got := claim(session_factory, max_in_flight=3)) is not None:
            claimed.append(got.delivery_id)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert len(claimed) == 3
    with session_factory() as session:
        leased = session.scalar(
            sa.select(sa.func.count()).where(Delivery.locked_until.is_not(None))
        )
    assert leased == 3
