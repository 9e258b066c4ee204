"""Callbacks through real worker processes to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook as StandardWebhook

from core.db import is_sqlite
from core.models import Delivery, DeliveryAttempt, Event
from core.services import accounts
from tests.callback_receiver import Answer, CallbackReceiver, Received
from tests.deliveries_helpers import emit, make_meeting_with_hooks
from tests.integration.conftest import Worker, hold_database_down, wait_or_show_logs
from tests.platform_events import post_event

pytestmark = pytest.mark.integration


def make_user(sessions: sessionmaker[Session]) -> tuple[int, str]:
    with sessions.begin() as session:
        user, _ = accounts.create_user(session, email="cb@example.com", full_name="Callbacks")
        return user.id, user.signing_secret


def deliveries_by_status(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Delivery.status, sa.func.count()).group_by(Delivery.status)
        ).all()
    return {status: number for status, number in rows}


def message_ids(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(Delivery.message_id)).scalars())


def processed_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).where(Event.processed_at.is_not(None))
            ).scalar_one()
        )


def deliveries_that_failed_once(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count(sa.distinct(DeliveryAttempt.delivery_id))).where(
                    DeliveryAttempt.error == "connection-error"
                )
            ).scalar_one()
        )


def attempt_errors(engine: Engine) -> list[str | None]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(DeliveryAttempt.error).order_by(DeliveryAttempt.id)).scalars()
        )


def test_receiver_down_then_back_gets_every_callback(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    worker: Worker,
    receiver: CallbackReceiver,
) -> None:
    user_id, secret = make_user(it_sessions)
    url = receiver.url("/hook")
    meetings = [
        make_meeting_with_hooks(it_sessions, user_id, {"meeting.start": url, "meeting.end": url})
        for _ in range(4)
    ]
    receiver.stop()  # the receiver is down when the events happen
    worker.start()
    for meeting_id in meetings:
        post_event(it_app, meeting_id, "meeting.start")
    # Starts first: an end processed before its start would make a third callback (the end
    # again, with the start it now knows), and this test counts exactly two per meeting.
    wait_or_show_logs(worker, lambda: processed_events(it_engine) == 4, 60, "the starts")
    for meeting_id in meetings:
        post_event(it_app, meeting_id, "meeting.end")
    # Each end waits while its start is pending (ordered delivery): only the starts fail.
    wait_or_show_logs(
        worker,
        lambda: processed_events(it_engine) == 8 and deliveries_that_failed_once(it_engine) == 4,
        60,
        "the ends, and a failed attempt of every start",
    )
    receiver.start()  # back on the same port
    wait_or_show_logs(
        worker,
        lambda: deliveries_by_status(it_engine) == {"succeeded": 8},
        60,
        "every delivery to succeed once the receiver is back",
    )
    got = receiver.wait_for(8)
    assert {r.headers["webhook-id"] for r in got} == message_ids(it_engine)
    types = []
    for request in got:
        payload = StandardWebhook(secret).verify(request.body, request.headers)
        types.append(payload["type"])
    assert sorted(types) == ["meeting.end"] * 4 + ["meeting.start"] * 4
    for meeting_id in meetings:  # each meeting's start reached the receiver before its end
        mine = [json.loads(r.body) for r in got if json.loads(r.body)["meetingId"] == meeting_id]
        assert [m["type"] for m in mine] == ["meeting.start", "meeting.end"]


@pytest.mark.every_broker
def test_worker_killed_mid_delivery_redelivers_with_the_same_webhook_id(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    worker: Worker,
    receiver: CallbackReceiver,
) -> None:
    user_id, secret = make_user(it_sessions)
    meeting_id = make_meeting_with_hooks(it_sessions, user_id, {"meeting.start": receiver.url()})
    arrived = threading.Event()

    def first_request(_got: Received) -> None:
        arrived.set()

    receiver.on_request = first_request
    # The first request hangs long enough for the test to kill the worker that sent it.
    receiver.answer(Answer(status=200, delay=2.0))
    worker.start()
    post_event(it_app, meeting_id)
    assert arrived.wait(60), worker.logs()
    worker.kill()  # SIGKILL while the worker waits for the receiver's answer
    with it_engine.connect() as conn:
        assert conn.execute(sa.select(Delivery.status)).scalar_one() == "pending"
    worker.start()
    wait_or_show_logs(
        worker,
        lambda: deliveries_by_status(it_engine) == {"succeeded": 1},
        90,
        "the delivery to be sent again after the lease ran out",
    )
    first, second = receiver.wait_for(2)
    (message_id,) = message_ids(it_engine)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == message_id
    assert first.body == second.body
    StandardWebhook(secret).verify(second.body, second.headers)
    assert attempt_errors(it_engine) == ["interrupted", None]


def deliver_through_database_trouble(
    app: Flask,
    sessions: sessionmaker[Session],
    engine: Engine,
    url: str,
    worker: Worker,
    receiver: CallbackReceiver,
    while_held: Callable[[], None],
) -> int:
    """Send 20 callbacks while `hold_database_down` holds the database; return cuts made."""
    user_id, _ = make_user(sessions)
    meetings = [
        make_meeting_with_hooks(sessions, user_id, {"meeting.start": receiver.url()})
        for _ in range(20)
    ]
    # Slow answers keep callbacks in flight (between claim and record) while the database goes.
    receiver.default = Answer(status=204, delay=0.3)
    first_arrived = threading.Event()
    receiver.on_request = lambda _got: first_arrived.set()
    worker.start()
    for meeting_id in meetings:
        post_event(app, meeting_id)
    assert first_arrived.wait(60), worker.logs()
    in_flight = 20 - deliveries_by_status(engine).get("succeeded", 0)
    held = threading.Event()
    cuts: list[int] = []
    holder = threading.Thread(target=lambda: cuts.append(hold_database_down(url, 4.0, held)))
    holder.start()
    assert held.wait(30), "the database was never held"
    while_held()
    holder.join()
    assert in_flight > 0  # the trouble began with callbacks still to send or record
    wait_or_show_logs(
        worker,
        lambda: deliveries_by_status(engine) == {"succeeded": 20},
        90,
        "every delivery to succeed after the database came back",
    )
    got = receiver.wait_for(20)
    # At least once: an attempt whose result could not be recorded is sent again, same id.
    assert {request.headers["webhook-id"] for request in got} == message_ids(engine)
    print(  # noqa: T201  (the measured figure, shown with -s)
        f"database held mid-delivery: {in_flight} in flight, {cuts[0]} connections cut, "
        f"20 callbacks, {len(got)} requests received"
    )
    return cuts[0]


@pytest.mark.every_broker
def test_database_outage_mid_delivery_still_delivers_every_callback(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    it_database_url: str,
    worker: Worker,
    receiver: CallbackReceiver,
) -> None:
    """PostgreSQL: every connection is cut for seconds, again and again."""
    if is_sqlite(it_database_url):
        pytest.skip("SQLite has no server to cut: test_locked_database_... holds its lock instead")
    cut = deliver_through_database_trouble(
        it_app, it_sessions, it_engine, it_database_url, worker, receiver, lambda: None
    )
    assert cut > 0  # connections really were cut


def test_locked_database_mid_delivery_still_delivers_every_callback(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    it_database_url: str,
    worker: Worker,
    receiver: CallbackReceiver,
) -> None:
    """SQLite: the write lock is held for seconds, less than the busy timeout: a slow database."""
    if not is_sqlite(it_database_url):
        pytest.skip("PostgreSQL: test_database_outage_mid_delivery_... cuts it instead")

    def nothing_recorded_while_locked() -> None:
        # Reads pass the write lock (WAL); no delivery can record its result until it is gone.
        when_held = deliveries_by_status(it_engine)
        time.sleep(2.0)
        assert deliveries_by_status(it_engine) == when_held

    deliver_through_database_trouble(
        it_app,
        it_sessions,
        it_engine,
        it_database_url,
        worker,
        receiver,
        nothing_recorded_while_locked,
    )


@pytest.mark.every_broker
def test_deliveries_whose_wake_up_messages_were_lost_are_sent_by_the_sweep(
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    worker: Worker,
    receiver: CallbackReceiver,
) -> None:
    user_id, _ = make_user(it_sessions)
    # Events applied and their outbox rows written, but no message ever reached the broker:
    # as if the broker lost them, or the process died right after its commit. The rows say a
    # wake-up was sent, so the sweep re-sends once nothing came of it for a lease (14 s here).
    for _ in range(10):
        meeting_id = make_meeting_with_hooks(it_sessions, user_id, {"meeting.end": receiver.url()})
        emit(it_sessions, meeting_id, "meeting.end")
    assert deliveries_by_status(it_engine) == {"pending": 10}
    worker.start()
    wait_or_show_logs(
        worker,
        lambda: deliveries_by_status(it_engine) == {"succeeded": 10},
        60,
        "the delivery sweep to send every pending delivery",
    )
    got = receiver.wait_for(10)
    assert {request.headers["webhook-id"] for request in got} == message_ids(it_engine)
