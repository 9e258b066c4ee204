"""The deliveries pool as production runs it: one wake-up for a batch, a kill mid-drain."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.models import Delivery, DeliveryAttempt
from core.services import accounts
from tests.callback_receiver import CallbackReceiver, Received
from tests.deliveries_helpers import make_delivery
from tests.integration.conftest import PoolsWorker, wait_or_show_logs

pytestmark = pytest.mark.integration
DELIVER = "workers.deliveries.deliver"
# Longest a held request waits for company before it is answered anyway.
PATIENCE = 30.0


def make_user(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        user, _ = accounts.create_user(session, email="pool@example.com", full_name="Pool")
        return user.id


def statuses(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return {row.id: row.status for row in conn.execute(sa.select(Delivery.id, Delivery.status))}


def errors_by_delivery(engine: Engine) -> dict[int, list[str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(DeliveryAttempt.delivery_id, DeliveryAttempt.error).order_by(
                DeliveryAttempt.id
            )
        ).all()
    found: dict[int, list[str | None]] = {}
    for delivery_id, error in rows:
        found.setdefault(delivery_id, []).append(error)
    return found


def test_one_wake_up_sends_a_whole_batch_on_many_threads(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    receiver: CallbackReceiver,
    pools_worker: PoolsWorker,
) -> None:
    # No beat, so no sweep: only the one message below can wake anything.
    pools_worker.pool_args, pools_worker.beat = ("deliveries",), False
    user_id = make_user(it_sessions)
    total, together = 24, 6
    ids = [make_delivery(it_sessions, user_id, receiver.url()) for _ in range(total)]
    in_flight = answered = most = 0
    company = threading.Condition()

    def hold(_got: Received) -> None:
        # Held until `together` are in flight (or all that are left): only lanes bring them.
        nonlocal in_flight, answered, most
        with company:
            in_flight += 1
            most = max(most, in_flight)
            company.notify_all()
            company.wait_for(lambda: in_flight >= min(together, total - answered), timeout=PATIENCE)
            in_flight -= 1
            answered += 1
            company.notify_all()

    receiver.on_request = hold
    pools_worker.start()
    pools_worker.wait_ready()
    it_app.extensions["meetinghooks.enqueue"](DELIVER, {"delivery_id": ids[0]})
    wait_or_show_logs(
        pools_worker,
        lambda: set(statuses(it_engine).values()) == {"succeeded"},
        90,
        "every delivery of the batch to succeed",
    )
    assert most >= together
    got = receiver.wait_for(total)
    with it_engine.connect() as conn:
        sent = set(conn.execute(sa.select(Delivery.message_id)).scalars())
    assert sorted(r.headers["webhook-id"] for r in got) == sorted(sent)  # each once


@pytest.mark.every_broker
def test_a_pool_killed_mid_drain_sends_each_held_callback_again_with_its_webhook_id(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    receiver: CallbackReceiver,
    pools_worker: PoolsWorker,
) -> None:
    # Both pools and beat: the delivery sweep runs in the events pool.
    pools_worker.pool_args, pools_worker.beat = (), True
    user_id = make_user(it_sessions)
    ids = [make_delivery(it_sessions, user_id, receiver.url()) for _ in range(8)]
    three_held = threading.Event()
    released = threading.Event()

    def hold(_got: Received) -> None:
        if len(receiver.received) >= 3:
            three_held.set()
        if not released.is_set():  # the first worker's requests never get an answer
            released.wait(PATIENCE)

    receiver.on_request = hold
    pools_worker.start()
    pools_worker.wait_ready()
    it_app.extensions["meetinghooks.enqueue"](DELIVER, {"delivery_id": ids[0]})
    assert three_held.wait(60), pools_worker.logs()
    pools_worker.kill()  # SIGKILL with attempts in flight and their wake-ups taken
    # A request the killed worker sent may still be on its way to the receiver, so the first
    # sends are told apart by their signed send time, not by when they arrive: every second
    # send waits for a lease to run out and a new worker to boot, well over a second later.
    killed_at = int(time.time())
    released.set()
    pools_worker.start()  # with beat: the sweep finds them once their leases have run out
    wait_or_show_logs(
        pools_worker,
        lambda: set(statuses(it_engine).values()) == {"succeeded"},
        120,
        "every delivery to succeed after the kill",
    )
    with it_engine.connect() as conn:
        message_of = dict(conn.execute(sa.select(Delivery.id, Delivery.message_id)).all())
    killed = {
        request.headers["webhook-id"]
        for request in receiver.received
        if int(request.headers["webhook-timestamp"]) <= killed_at
    }
    assert len(killed) >= 3
    by_delivery = errors_by_delivery(it_engine)
    for delivery_id in ids:
        # Sent (or only claimed) by the killed worker: that attempt is interrupted.
        *before, last = by_delivery[delivery_id]
        assert last is None
        assert before in ([], ["interrupted"])
        if message_of[delivery_id] in killed:
            assert before == ["interrupted"]
    arrivals: dict[str, int] = {}
    for request in receiver.received:
        arrivals[request.headers["webhook-id"]] = arrivals.get(request.headers["webhook-id"], 0) + 1
    assert set(arrivals) == set(message_of.values())
    assert {m for m, n in arrivals.items() if n == 2} == killed  # again, with the same id
    assert all(n <= 2 for n in arrivals.values())
