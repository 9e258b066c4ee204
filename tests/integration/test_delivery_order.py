"""Issue 13 with real worker processes: ordered delivery under failure, and the per-host bound."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.models import Delivery
from core.services import accounts, delivery_log
from core.services.events import END, START
from tests.callback_receiver import Answer, CallbackReceiver, Received
from tests.deliveries_helpers import emit, make_meeting_with_hooks
from tests.integration.conftest import PoolsWorker, wait_or_show_logs

pytestmark = pytest.mark.integration
DELIVER = "workers.deliveries.deliver"
# Longest a held request waits before it is answered anyway.
PATIENCE = 60.0


def make_user(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        user, _ = accounts.create_user(session, email="order@example.com", full_name="Order")
        return user.id


def statuses(engine: Engine, ids: list[int]) -> dict[int, str]:
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.select(Delivery.id, Delivery.status).where(Delivery.id.in_(ids))).all()
        )


def wake(app: Flask, ids: list[int]) -> None:
    """Send one `deliver` message per delivery, as after the commits that made them."""
    for delivery_id in ids:
        app.extensions["meetinghooks.enqueue"](DELIVER, {"delivery_id": delivery_id})


def meeting_and_type(got: Received) -> tuple[int, str]:
    body = json.loads(got.body)
    return body["meetingId"], body["type"]


def test_every_receiver_sees_each_meetings_start_before_its_end_when_first_answers_fail(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    pools_worker: PoolsWorker,
    tmp_path: Path,
) -> None:
    receivers = [CallbackReceiver().start() for _ in range(3)]
    try:
        rng = random.Random(13)  # seeded: which answers fail is fixed, whatever the timing
        for receiver in receivers:
            # Half of the first answers fail, then every one succeeds: a start that failed is
            # retried (the sweep wakes its retry) while its end is already due.
            receiver.answer(*(Answer(500 if rng.random() < 0.5 else 204) for _ in range(16)))
        user_id = make_user(it_sessions)
        meetings = {
            make_meeting_with_hooks(
                it_sessions, user_id, {START: receiver.url(), END: receiver.url()}
            ): receiver
            for receiver in receivers
            for _ in range(6)
        }
        pools_worker.pool_args, pools_worker.beat = (), True  # the sweep wakes the retries
        pools_worker.start()
        pools_worker.wait_ready()
        ids = []
        for meeting in meetings:
            ids += emit(it_sessions, meeting, START) + emit(it_sessions, meeting, END)
        wake(it_app, ids)
        wait_or_show_logs(
            pools_worker,
            lambda: set(statuses(it_engine, ids).values()) == {"succeeded"},
            120,
            "every start and end to succeed",
        )
        failed_first = 0
        for receiver in receivers:
            arrivals = [meeting_and_type(got) for got in receiver.received]
            for meeting, owner in meetings.items():
                if owner is not receiver:
                    continue
                starts = [i for i, got in enumerate(arrivals) if got == (meeting, START)]
                ends = [i for i, got in enumerate(arrivals) if got == (meeting, END)]
                assert starts, meeting
                assert ends, meeting
                # Every attempt of the start (failed ones included) came before the end's.
                assert max(starts) < min(ends), (meeting, arrivals)
                failed_first += len(starts) > 1
        assert failed_first >= 3  # the failures really made starts wait for their retries
    finally:
        for receiver in receivers:
            receiver.stop()


def test_the_end_goes_once_its_start_succeeds_without_the_sweep(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    receiver: CallbackReceiver,
    pools_worker: PoolsWorker,
) -> None:
    # No beat, so no sweep: the end, found waiting by its own wake-up (the start is answered
    # late), goes once the start succeeds: the drain that sent the start looks on for its
    # host's due deliveries, and the success also sends the end a wake-up after commit (which
    # test_delivery_order.py in tests/unit checks; here either one suffices).
    receiver.answer(Answer(delay=2.0))
    pools_worker.pool_args, pools_worker.beat = ("deliveries",), False
    pools_worker.start()
    pools_worker.wait_ready()
    user_id = make_user(it_sessions)
    meeting = make_meeting_with_hooks(
        it_sessions, user_id, {START: receiver.url(), END: receiver.url()}
    )
    ids = emit(it_sessions, meeting, START) + emit(it_sessions, meeting, END)
    wake(it_app, ids)
    got = receiver.wait_for(2, timeout=60)
    assert [meeting_and_type(request) for request in got] == [(meeting, START), (meeting, END)]
    wait_or_show_logs(
        pools_worker,
        lambda: set(statuses(it_engine, ids).values()) == {"succeeded"},
        30,
        "both callbacks to succeed",
    )


def test_a_hanging_receiver_holds_only_its_own_meeting(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    receiver: CallbackReceiver,
    pools_worker: PoolsWorker,
) -> None:
    hanging = CallbackReceiver().start()
    released = threading.Event()
    hanging.on_request = lambda _got: bool(released.wait(PATIENCE))
    try:
        user_id = make_user(it_sessions)
        held = make_meeting_with_hooks(
            it_sessions, user_id, {START: hanging.url(), END: hanging.url()}
        )
        others = [
            make_meeting_with_hooks(
                it_sessions, user_id, {START: receiver.url(), END: receiver.url()}
            )
            for _ in range(5)
        ]
        # No beat: the ends of the other meetings go only by the wake-up their start's success
        # sends after its commit.
        pools_worker.pool_args, pools_worker.beat = ("deliveries",), False
        pools_worker.start()
        pools_worker.wait_ready()
        held_start, held_end = emit(it_sessions, held, START) + emit(it_sessions, held, END)
        ids = [held_start, held_end]
        for meeting in others:
            ids += emit(it_sessions, meeting, START) + emit(it_sessions, meeting, END)
        wake(it_app, ids)
        hanging.wait_for(1)
        others_ids = ids[2:]
        wait_or_show_logs(
            pools_worker,
            lambda: set(statuses(it_engine, others_ids).values()) == {"succeeded"},
            60,
            "the other meetings' callbacks to succeed while one receiver hangs",
        )
        assert len(hanging.received) == 1  # its end was never sent: it waits for the start
        assert statuses(it_engine, [held_start, held_end]) == {
            held_start: "pending",
            held_end: "pending",
        }
        with it_sessions() as session:
            assert delivery_log.show(session, user_id, held_end).waiting_for == held_start
    finally:
        released.set()
        hanging.stop()


@pytest.fixture
def second_worker(it_settings: Settings, tmp_path: Path) -> Iterator[PoolsWorker]:
    workdir = tmp_path / "second"
    workdir.mkdir()
    handle = PoolsWorker(settings=it_settings, workdir=workdir)
    yield handle
    handle.stop()


def attempted(worker: PoolsWorker) -> bool:
    return "workers.delivery.attempted" in worker.logs()


def test_two_workers_keep_to_the_per_host_bound_and_serve_another_host_meanwhile(
    it_app: Flask,
    it_settings: Settings,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    receiver: CallbackReceiver,
    pools_worker: PoolsWorker,
    second_worker: PoolsWorker,
) -> None:
    bound = 4
    # Three sending threads each: only the two workers together can reach the bound.
    settings = it_settings.model_copy(
        update={"delivery_max_in_flight_per_host": bound, "delivery_concurrency": 3}
    )
    other_host = CallbackReceiver().start()
    in_flight = most = 0
    counting = threading.Lock()

    def slow(_got: Received) -> None:
        nonlocal in_flight, most
        with counting:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.5)
        with counting:
            in_flight -= 1

    receiver.on_request = slow
    try:
        user_id = make_user(it_sessions)

        def callback_to(url: str) -> int:
            meeting = make_meeting_with_hooks(it_sessions, user_id, {END: url})
            (delivery_id,) = emit(it_sessions, meeting, END)
            return delivery_id

        burst = [callback_to(receiver.url()) for _ in range(40)]
        elsewhere = [callback_to(other_host.url()) for _ in range(8)]
        workers = (pools_worker, second_worker)
        for handle in workers:
            handle.settings = settings
            handle.pool_args, handle.beat = ("deliveries",), False
            handle.start()
        for handle in workers:
            handle.wait_ready()
        # One wake-up at a time until both workers are sending: a drain claims whatever is
        # due, so one message each is enough (the first worker would take every message
        # sent at once, answering those it has no free thread for with a hint to itself).
        pending = list(burst)
        while pending and not all(attempted(handle) for handle in workers):
            wake(it_app, [pending.pop(0)])
            time.sleep(0.2)
        wake(it_app, pending + elsewhere)
        wait_or_show_logs(
            pools_worker,
            lambda: set(statuses(it_engine, elsewhere).values()) == {"succeeded"},
            60,
            "the other host's deliveries to succeed",
        )
        # 40 held 0.5 s each, 4 at a time, take 5 s at least: the other host did not wait.
        assert "pending" in statuses(it_engine, burst).values()
        wait_or_show_logs(
            second_worker,
            lambda: set(statuses(it_engine, burst).values()) == {"succeeded"},
            120,
            "the burst to succeed",
        )
        assert all(attempted(handle) for handle in workers)
        assert most == bound  # never more; and reached, which one worker alone cannot
        assert len(receiver.received) == len(burst)
    finally:
        other_host.stop()
