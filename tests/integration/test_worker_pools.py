"""`meetinghooks worker`: events and deliveries in pools of their own, deliveries in threads.

Real processes against the real broker and database: the lease, the SSRF guard and the
attempt deadline hold when one process runs many attempts at once, and callbacks that hang
do not hold up event processing.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.models import Delivery, DeliveryAttempt
from core.services import accounts
from core.services.delivery_statements import IN_PROGRESS
from core.services.delivery_states import lease_duration
from tests.callback_receiver import Answer, CallbackReceiver, Received
from tests.deliveries_helpers import make_delivery, make_meeting_with_hooks
from tests.integration.conftest import PoolsWorker, count, wait_or_show_logs
from tests.integration.test_event_pipeline import UNPROCESSED, make_meetings
from tests.platform_events import post_event

pytestmark = pytest.mark.integration
DELIVER = "workers.deliveries.deliver"


def make_user(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        user, _ = accounts.create_user(session, email="pools@example.com", full_name="Pools")
        return user.id


def finished_attempts(engine: Engine) -> list[tuple[int, str | None]]:
    """(delivery id, error) of every attempt that has ended, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(DeliveryAttempt.delivery_id, DeliveryAttempt.error)
            .where(sa.or_(DeliveryAttempt.error.is_(None), DeliveryAttempt.error != IN_PROGRESS))
            .order_by(DeliveryAttempt.id)
        ).all()
    return [(delivery_id, error) for delivery_id, error in rows]


def statuses(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(Delivery.status)).scalars())


def start_and_wake(worker: PoolsWorker, app: Flask, delivery_ids: list[int]) -> None:
    """Start the worker and send one wake-up per delivery once it is ready."""
    worker.start()
    worker.wait_ready()
    send = app.extensions["meetinghooks.enqueue"]
    for delivery_id in delivery_ids:
        send(DELIVER, {"delivery_id": delivery_id})


@pytest.mark.every_broker
def test_wake_ups_in_bursts_never_make_two_attempts_of_one_delivery_at_once(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    receiver: CallbackReceiver,
    pools_worker: PoolsWorker,
) -> None:
    pools_worker.pool_args, pools_worker.beat = ("deliveries",), False
    delivery_id = make_delivery(it_sessions, make_user(it_sessions), receiver.url())
    slow = 1.0
    receiver.answer(Answer(status=503, delay=slow), Answer(status=500, delay=slow))
    receiver.default = Answer(status=204, delay=slow)
    arrivals: list[float] = []
    receiver.on_request = lambda _got: arrivals.append(time.monotonic())
    pools_worker.start()
    pools_worker.wait_ready()
    send = it_app.extensions["meetinghooks.enqueue"]
    # Bursts of wake-ups, faster than the attempts last, until the third attempt succeeds: 32
    # threads take them at once, and only the lease stands between them and the receiver.
    deadline = time.monotonic() + 60
    while statuses(it_engine) != ["succeeded"] and time.monotonic() < deadline:
        for _ in range(20):
            send(DELIVER, {"delivery_id": delivery_id})
        time.sleep(0.25)
    assert statuses(it_engine) == ["succeeded"], pools_worker.logs()
    time.sleep(1)  # an attempt that slipped past the lease would arrive now
    assert len(receiver.received) == 3
    assert [error for _, error in finished_attempts(it_engine)] == ["http-503", "http-500", None]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert min(gaps) >= slow  # each attempt began after the previous one had its answer


def test_callbacks_to_a_forbidden_address_are_refused_by_every_thread(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    receiver: CallbackReceiver,
    pools_worker: PoolsWorker,
) -> None:
    # Nothing admitted past the guard, as in production: the loopback receiver is forbidden,
    # yet it listens, so a guard that let one through would show at the receiver.
    pools_worker.settings = pools_worker.settings.model_copy(
        update={"callback_allowed_networks": ()}
    )
    pools_worker.pool_args, pools_worker.beat = ("deliveries",), False
    user_id = make_user(it_sessions)
    ids = [make_delivery(it_sessions, user_id, receiver.url()) for _ in range(10)]
    start_and_wake(pools_worker, it_app, ids)
    wait_or_show_logs(
        pools_worker,
        lambda: {d for d, _ in finished_attempts(it_engine)} == set(ids),
        60,
        "an attempt of every delivery",
    )
    assert {error for _, error in finished_attempts(it_engine)} == {"ssrf-refused"}
    assert receiver.received == []
    # The whole log: logs() shows only the end of it.
    log = (pools_worker.workdir / "worker-1.log").read_text()
    assert log.count("error=ssrf-refused") >= len(ids)


def test_receivers_trickling_their_answer_are_cut_off_at_twice_the_timeout_each(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    receiver: CallbackReceiver,
    pools_worker: PoolsWorker,
) -> None:
    pools_worker.pool_args, pools_worker.beat = ("deliveries",), False
    timeout = pools_worker.settings.callback_timeout_seconds  # 3 s
    # A byte every 0.3 s: each read gets data well within the timeout, the answer takes 70 s.
    receiver.default = Answer(status=200, trickle=0.3)
    arrived: dict[str, float] = {}
    first_ended = threading.Event()

    def arrival(got: Received) -> None:
        if not first_ended.is_set():
            arrived.setdefault(got.headers["webhook-id"], time.monotonic())

    receiver.on_request = arrival
    user_id = make_user(it_sessions)
    ids = [make_delivery(it_sessions, user_id, receiver.url()) for _ in range(5)]
    with it_engine.connect() as conn:
        message_of = dict(conn.execute(sa.select(Delivery.id, Delivery.message_id)).all())
    start_and_wake(pools_worker, it_app, ids)
    ended: dict[int, tuple[float, str | None]] = {}
    deadline = time.monotonic() + 60
    while len(ended) < len(ids) and time.monotonic() < deadline:
        for delivery_id, error in finished_attempts(it_engine):
            ended.setdefault(delivery_id, (time.monotonic(), error))
        if ended:
            first_ended.set()
        time.sleep(0.05)
    assert len(ended) == len(ids), pools_worker.logs()
    # All five were in flight at once, each on its own deadline.
    assert len(arrived) == len(ids)
    lasted = {d: at - arrived[message_of[d]] for d, (at, _) in ended.items()}
    print(f"trickled attempts lasted {sorted(round(s, 2) for s in lasted.values())} s")  # noqa: T201
    assert {error for _, error in ended.values()} == {"timeout"}
    # The deadline starts just before the request reaches the receiver, and the lease must
    # outlast the attempt: an attempt still running then could be sent twice at once.
    assert all(2 * timeout - 1 <= s < lease_duration(pools_worker.settings).total_seconds()
               for s in lasted.values()), lasted  # fmt: skip


@pytest.mark.every_broker
def test_hanging_callbacks_do_not_hold_up_event_processing(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    receiver: CallbackReceiver,
    pools_worker: PoolsWorker,
) -> None:
    # Attempts to this receiver cannot end before the read timeout, 60 s after they began.
    # All 20 go to one host: its bound (8 by default) is raised so that all hang at once.
    pools_worker.settings = pools_worker.settings.model_copy(
        update={"callback_timeout_seconds": 60, "delivery_max_in_flight_per_host": 20}
    )
    receiver.default = Answer(status=204, delay=150)
    first_hung: list[float] = []
    receiver.on_request = lambda _got: first_hung.append(time.monotonic())
    user_id = make_user(it_sessions)
    hooked = [
        make_meeting_with_hooks(it_sessions, user_id, {"meeting.start": receiver.url()})
        for _ in range(20)
    ]
    plain = make_meetings(it_sessions, 100)
    pools_worker.start()
    pools_worker.wait_ready()
    for meeting_id in hooked:
        post_event(it_app, meeting_id)
    receiver.wait_for(20, timeout=60)  # 20 callbacks in flight at once, none answered
    for meeting_id in plain:
        post_event(it_app, meeting_id)
    wait_or_show_logs(
        pools_worker, lambda: count(it_engine, UNPROCESSED) == 0, 50, "every event processed"
    )
    took = time.monotonic() - first_hung[0]
    # Every event was processed while all 20 attempts still hung: not one has ended.
    assert finished_attempts(it_engine) == []
    assert statuses(it_engine) == ["pending"] * 20
    assert took < 60  # what the assertions above already imply: attempts end at 60 s at best
    print(f"100 events processed {took:.1f} s after 20 callbacks began to hang")  # noqa: T201
