"""One wake-up brings a pool to what is due: drains, lanes, their bounds, and the messages."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import requests_mock as rm
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.models import Delivery
from core.services import outbound_http, outbox
from tests.callback_receiver import CallbackReceiver, Received
from tests.conftest import Account
from tests.deliveries_helpers import attempts, load, make_delivery
from workers import celery_app as celery_module
from workers import delivery_drain
from workers.celery_app import DELIVERIES_QUEUE, DbTask, make_celery
from workers.delivery_drain import SendingSlots, run_deliveries
from workers.tasks.deliveries import deliver, sweep_deliveries

HOOK = "https://93.184.216.34/hook"
# Longest a step of a test may wait for another before the test gives up.
PATIENCE = 30.0


Slots = tuple[SendingSlots, concurrent.futures.ThreadPoolExecutor]


def make_slots(size: int) -> Iterator[Slots]:
    lanes = concurrent.futures.ThreadPoolExecutor(size)
    yield SendingSlots(size), lanes
    lanes.shutdown(wait=True)


@pytest.fixture
def four_slots() -> Iterator[Slots]:
    yield from make_slots(4)


@pytest.fixture
def one_slot() -> Iterator[Slots]:
    yield from make_slots(1)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = outbound_http.make_http_session()
    yield session
    session.close()


def statuses(session_factory: sessionmaker[Session]) -> dict[int, str]:
    with session_factory() as session:
        return {
            row.id: row.status for row in session.execute(sa.select(Delivery.id, Delivery.status))
        }


def message_ids(session_factory: sessionmaker[Session]) -> set[str]:
    with session_factory() as session:
        return set(session.scalars(sa.select(Delivery.message_id)))


class TestDrain:
    def test_one_wake_up_sends_every_due_delivery_exactly_once(
        self,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        http: requests.Session,
        account: Account,
        four_slots: Slots,
    ) -> None:
        ids = [make_delivery(session_factory, account.id, HOOK) for _ in range(12)]
        requests_mock.post(HOOK, status_code=204)
        made, unfinished = run_deliveries(
            session_factory, [ids[0]], settings=settings, http=http, slots=four_slots
        )
        assert (made, unfinished) == (12, False)
        assert set(statuses(session_factory).values()) == {"succeeded"}
        sent = [r.headers["webhook-id"] for r in requests_mock.request_history]
        assert sorted(sent) == sorted(message_ids(session_factory))  # each once
        for delivery_id in ids:
            assert [a.error for a in attempts(session_factory, delivery_id)] == [None]

    def test_lanes_send_at_once_but_never_more_than_the_slots(
        self,
        receiver: CallbackReceiver,
        session_factory: sessionmaker[Session],
        settings: Settings,
        account: Account,
        four_slots: Slots,
    ) -> None:
        local = settings.model_copy(
            update={"callback_allowed_networks": (ipaddress.ip_network("127.0.0.0/8"),)}
        )
        ids = [make_delivery(session_factory, account.id, receiver.url()) for _ in range(10)]
        in_flight = answered = most = 0
        company = threading.Condition()

        def hold(_got: Received) -> None:
            # Each request is held until four are in flight (or all that are left): with
            # four lanes they come; with fewer the wait runs out and `most` tells.
            nonlocal in_flight, answered, most
            with company:
                in_flight += 1
                most = max(most, in_flight)
                company.notify_all()
                company.wait_for(lambda: in_flight >= min(4, 10 - answered), timeout=PATIENCE)
                in_flight -= 1
                answered += 1
                company.notify_all()

        receiver.on_request = hold
        http = outbound_http.make_http_session(local.callback_allowed_networks)
        try:
            made, _ = run_deliveries(
                session_factory, [ids[0]], settings=local, http=http, slots=four_slots
            )
        finally:
            http.close()
        assert made == 10
        assert most == 4  # the slots, all of them, and never more
        assert set(statuses(session_factory).values()) == {"succeeded"}
        assert len(receiver.received) == 10

    def test_a_wake_up_whose_deliveries_are_gone_sends_what_else_is_due(
        self,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        http: requests.Session,
        account: Account,
        four_slots: Slots,
    ) -> None:
        done = make_delivery(session_factory, account.id, HOOK)
        requests_mock.post(HOOK, status_code=204)
        run_deliveries(session_factory, [done], settings=settings, http=http, slots=four_slots)
        waiting = make_delivery(session_factory, account.id, HOOK)  # its own wake-up was lost
        made, _ = run_deliveries(
            session_factory, [done], settings=settings, http=http, slots=four_slots
        )
        assert made == 1
        assert statuses(session_factory) == {done: "succeeded", waiting: "succeeded"}
        assert requests_mock.call_count == 2

    def test_with_one_slot_a_wake_up_sends_only_what_it_names(
        self,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        http: requests.Session,
        account: Account,
        one_slot: Slots,
    ) -> None:
        first, second, other = (make_delivery(session_factory, account.id, HOOK) for _ in range(3))
        requests_mock.post(HOOK, status_code=204)
        made, unfinished = run_deliveries(
            session_factory, [first, second], settings=settings, http=http, slots=one_slot
        )
        assert (made, unfinished) == (2, False)
        assert statuses(session_factory) == {
            first: "succeeded",
            second: "succeeded",
            other: "pending",  # a prefork child must not drain: events wait on it
        }

    def test_a_drain_stops_claiming_when_its_time_is_up(
        self,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        http: requests.Session,
        account: Account,
        four_slots: Slots,
    ) -> None:
        named, *rest = (make_delivery(session_factory, account.id, HOOK) for _ in range(5))
        requests_mock.post(HOOK, status_code=204)
        made, unfinished = run_deliveries(
            session_factory,
            [named],
            settings=settings,
            http=http,
            slots=four_slots,
            drain_seconds=0,
        )
        assert (made, unfinished) == (1, True)  # what it was woken for, then no more
        assert statuses(session_factory)[named] == "succeeded"
        assert {statuses(session_factory)[i] for i in rest} == {"pending"}
        assert {a.error for i in rest for a in attempts(session_factory, i)} == set()

    def test_a_stopping_worker_claims_nothing_more(
        self,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        http: requests.Session,
        account: Account,
        four_slots: Slots,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        named, other = (make_delivery(session_factory, account.id, HOOK) for _ in range(2))
        requests_mock.post(HOOK, status_code=204)
        # A warm shutdown: Celery keeps its exit code there, 0 here.
        monkeypatch.setattr(delivery_drain.worker_state, "should_stop", 0)
        made, unfinished = run_deliveries(
            session_factory, [named], settings=settings, http=http, slots=four_slots
        )
        assert (made, unfinished) == (1, True)
        assert statuses(session_factory) == {named: "succeeded", other: "pending"}

    def test_a_lane_that_fails_leaves_its_delivery_to_the_lease_and_its_slot_free(
        self,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        http: requests.Session,
        account: Account,
        four_slots: Slots,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        requests_mock.post(HOOK, status_code=204)

        def lost(*_args: Any, **_kwargs: Any) -> None:
            raise sa.exc.OperationalError("UPDATE", {}, Exception("connection lost"))

        monkeypatch.setattr(delivery_drain, "record", lost)
        slots, lanes = four_slots
        drain = delivery_drain.Drain(
            session_factory, settings, http, slots, lanes, stop_claiming=float("inf")
        )
        assert slots.try_take()  # as _widen takes it for the lane
        assert drain._lane() == 0  # the error is the lane's own: logged, not raised
        assert "workers.delivery.lane_failed" in caplog.text
        row = load(session_factory, delivery_id)
        assert row.status == "pending"
        assert row.locked_until is not None  # leased: the sweep sends it once the lease ends
        assert [a.error for a in attempts(session_factory, delivery_id)] == ["in-progress"]
        assert all(slots.try_take() for _ in range(4))  # its slot came back


class TestBusySlots:
    def test_a_wake_up_finding_every_slot_busy_leaves_a_hint_its_holder_sees(self) -> None:
        slots = SendingSlots(1)
        assert slots.take_or_hint()  # a drain holds the only slot
        assert not slots.take_or_hint()  # a wake-up comes meanwhile
        assert not slots.give_unless_hinted()  # so the drain keeps it and looks again
        assert slots.give_unless_hinted()  # nothing new: now it goes
        assert slots.take_or_hint()
        slots.give()

    def test_its_delivery_is_sent_by_a_drain_already_running(
        self,
        receiver: CallbackReceiver,
        session_factory: sessionmaker[Session],
        settings: Settings,
        account: Account,
    ) -> None:
        local = settings.model_copy(
            update={"callback_allowed_networks": (ipaddress.ip_network("127.0.0.0/8"),)}
        )
        first = make_delivery(session_factory, account.id, receiver.url())
        arrived, go = threading.Event(), threading.Event()

        def hold_the_first(_got: Received) -> None:
            if not arrived.is_set():
                arrived.set()
                go.wait(PATIENCE)

        receiver.on_request = hold_the_first
        lanes = concurrent.futures.ThreadPoolExecutor(2)
        slots = SendingSlots(2)
        http = outbound_http.make_http_session(local.callback_allowed_networks)
        results: list[tuple[int, bool]] = []
        try:
            drain = threading.Thread(
                target=lambda: results.append(
                    run_deliveries(
                        session_factory, [first], settings=local, http=http, slots=(slots, lanes)
                    )
                )
            )
            drain.start()
            assert arrived.wait(PATIENCE)  # the drain holds one slot, sending `first`
            assert slots.try_take()  # and something else holds the other
            later = make_delivery(session_factory, account.id, receiver.url())
            # Returns at once (its message is acknowledged), having sent nothing itself.
            assert run_deliveries(
                session_factory, [later], settings=local, http=http, slots=(slots, lanes)
            ) == (0, False)
            assert statuses(session_factory)[later] == "pending"
            go.set()
            drain.join(PATIENCE)
            assert not drain.is_alive()
        finally:
            go.set()
            http.close()
            lanes.shutdown(wait=True)
        assert results == [(2, False)]  # the drain took `later` before it gave its slot back
        assert statuses(session_factory) == {first: "succeeded", later: "succeeded"}
        slots.give()
        assert slots.try_take()
        assert slots.try_take()  # both slots came back


@pytest.fixture
def worker_context(
    settings: Settings,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    four_slots: Slots,
) -> list[dict[str, Any]]:
    """Bind the tasks to a memory:// app, the test database and four slots; record publishes."""
    make_celery(settings)
    monkeypatch.setattr(DbTask, "_session_factory", session_factory)
    monkeypatch.setattr(delivery_drain, "sending_slots", lambda: four_slots)
    sent: list[dict[str, Any]] = []

    def apply_async(*, kwargs: dict[str, Any], queue: str, **_options: Any) -> None:
        sent.append({"kwargs": kwargs, "queue": queue})

    monkeypatch.setattr(deliver, "apply_async", apply_async)
    return sent


class TestMessages:
    def test_deliver_takes_a_batch_and_the_previous_releases_shape(
        self,
        worker_context: list[dict[str, Any]],
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        account: Account,
        monkeypatch: pytest.MonkeyPatch,
        one_slot: Slots,
    ) -> None:
        a, b, c = (make_delivery(session_factory, account.id, HOOK) for _ in range(3))
        requests_mock.post(HOOK, status_code=204)
        monkeypatch.setattr(delivery_drain, "sending_slots", lambda: one_slot)  # names only
        deliver(delivery_id=a)  # as queued by the previous release
        assert statuses(session_factory) == {a: "succeeded", b: "pending", c: "pending"}
        deliver(delivery_id=b, more_delivery_ids=[c])
        assert statuses(session_factory) == {a: "succeeded", b: "succeeded", c: "succeeded"}
        assert worker_context == []

    def test_a_drain_out_of_time_sends_a_wake_up_that_carries_on(
        self,
        worker_context: list[dict[str, Any]],
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        account: Account,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        named, *rest = (make_delivery(session_factory, account.id, HOOK) for _ in range(4))
        requests_mock.post(HOOK, status_code=204)
        monkeypatch.setattr(delivery_drain, "DRAIN_SECONDS", 0)
        deliver(delivery_id=named)
        assert worker_context == [{"kwargs": {}, "queue": DELIVERIES_QUEUE}]
        monkeypatch.setattr(delivery_drain, "DRAIN_SECONDS", PATIENCE)
        deliver(**worker_context[0]["kwargs"])
        assert set(statuses(session_factory).values()) == {"succeeded"}
        assert requests_mock.call_count == 1 + len(rest)
        assert len(worker_context) == 1  # nothing left: no further wake-up

    def test_the_sweep_wakes_a_batch_with_one_message(
        self,
        worker_context: list[dict[str, Any]],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        ids = [make_delivery(session_factory, account.id, HOOK) for _ in range(3)]
        with session_factory.begin() as session:
            session.execute(sa.update(Delivery).values(last_enqueued_at=None))  # lost
        assert sweep_deliveries() == 3
        assert worker_context == [
            {
                "kwargs": {"delivery_id": ids[0], "more_delivery_ids": ids[1:]},
                "queue": DELIVERIES_QUEUE,
            }
        ]

    def test_wake_up_messages_name_at_most_a_batch_each(self) -> None:
        ids = list(range(1, 251))
        messages = outbox.wakeup_messages(ids)
        assert [len(m.get("more_delivery_ids", [])) + 1 for m in messages] == [100, 100, 50]
        named = [i for m in messages for i in [m["delivery_id"], *m.get("more_delivery_ids", [])]]
        assert named == ids
        assert outbox.wakeup_messages([7]) == [{"delivery_id": 7}]
        assert outbox.wakeup_messages([]) == []


class TestDeliveriesPoolBroker:
    def test_a_redis_worker_of_the_deliveries_queue_alone_takes_messages_without_ack_emulation(
        self,
    ) -> None:
        base = {"visibility_timeout": 3600, "global_keyprefix": "x:"}
        tuned = celery_module.deliveries_pool_transport("redis://h:6379/0", ["deliveries"], base)
        assert tuned == {**base, "ack_emulation": False}
        assert base == {"visibility_timeout": 3600, "global_keyprefix": "x:"}  # not changed
        assert (
            celery_module.deliveries_pool_transport("rediss://h/0", "deliveries", base)[
                "ack_emulation"
            ]
            is False
        )

    @pytest.mark.parametrize(
        ("url", "queues"),
        [
            ("redis://h:6379/0", ["events"]),
            ("redis://h:6379/0", ["events", "deliveries"]),  # the single pool of old
            ("redis://h:6379/0", None),  # every queue
            ("amqp://guest@h//", ["deliveries"]),  # RabbitMQ acknowledges for real
            ("sqla+sqlite:///var/broker.sqlite3", ["deliveries"]),  # the embedded broker
        ],
    )
    def test_every_other_worker_keeps_the_apps_options(self, url: str, queues: Any) -> None:
        base = {"visibility_timeout": 3600}
        assert celery_module.deliveries_pool_transport(url, queues, base) == base

    def test_the_worker_start_applies_it(self, settings: Settings) -> None:
        app = make_celery(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
        celery_module._tune_deliveries_pool(
            sender="deliveries@host", conf=app.conf, options={"queues": ["deliveries"]}
        )
        assert app.conf.broker_transport_options["ack_emulation"] is False
        assert app.conf.broker_transport_options["visibility_timeout"] == (
            celery_module.VISIBILITY_TIMEOUT
        )


def test_a_drain_plans_without_bitmap_scans_and_gives_its_connection_back_as_it_was(
    session_factory: sessionmaker[Session],
) -> None:
    """Its probes must stop at the first match, whatever the statistics say (a backlog)."""
    engine = session_factory.kw["bind"]
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL planner setting")
    show = sa.text("SHOW enable_bitmapscan")
    with delivery_drain.one_connection(session_factory) as begin:
        for _ in range(2):  # and it stays so from one attempt's transaction to the next
            with begin() as session:
                assert session.scalar(show) == "off"
                held = session.connection().connection.dbapi_connection
    assert held is not None
    # Back in the pool, the same server session plans as every other again.
    with held.cursor() as cursor:
        cursor.execute("SHOW enable_bitmapscan")
        assert cursor.fetchone() == ("on",)
    held.rollback()
