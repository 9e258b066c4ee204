from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import is_sqlite
from core.models import Event, Meeting
from core.services import accounts
from receiver import create_app
from tests.integration.conftest import (
    Broker,
    TcpProxy,
    Worker,
    count,
    hold_database_down,
    wait_until,
)
from tests.platform_events import event_body, new_msg_id, post_event, signed_headers

pytestmark = [pytest.mark.integration, pytest.mark.every_broker]
UNPROCESSED = sa.select(sa.func.count()).select_from(Event).where(Event.processed_at.is_(None))
ALL_EVENTS = sa.select(sa.func.count()).select_from(Event)


def make_meetings(sessions: sessionmaker[Session], how_many: int) -> list[int]:
    with sessions.begin() as session:
        user, _ = accounts.create_user(session, email="it@example.com", full_name="IT")
        meetings = [
            Meeting(
                user_id=user.id, kind="adhoc", meeting_code=f"{500000000 + i}",
                conference_id=f"{600000000 + i}", organizer_code="1234", participants=[],
            )
            for i in range(how_many)
        ]  # fmt: skip
        session.add_all(meetings)
        session.flush()
        return [m.id for m in meetings]


def assert_all_stored_once_and_started(engine: Engine, acknowledged: list[str]) -> None:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Event.source_event_id, Event.outcome, Event.processed_at).where(
                Event.source == "platform"
            )
        ).all()
        statuses = conn.execute(sa.select(Meeting.status)).scalars().all()
        sequences = conn.execute(sa.select(Meeting.event_sequence)).scalars().all()
    ids = [row[0] for row in rows]
    assert sorted(ids) == sorted(acknowledged)  # every acknowledged event, each exactly once
    assert all(row[2] is not None for row in rows)
    assert {row[1] for row in rows} == {"applied"}
    assert set(statuses) == {"started"}
    # Each meeting took exactly one state change: no event was applied twice.
    assert set(sequences) == {1}


def test_posted_event_is_processed_within_seconds(
    it_app: Flask, it_sessions: sessionmaker[Session], it_engine: Engine, worker: Worker
) -> None:
    worker.start()
    warm_up, meeting_id = make_meetings(it_sessions, 2)
    # A first event waits out the worker's start-up, which a loaded machine makes slow.
    post_event(it_app, warm_up)
    wait_until(lambda: count(it_engine, UNPROCESSED) == 0, 60, "the worker to be running")
    started = time.monotonic()
    post_event(it_app, meeting_id)
    try:
        # Waits longer than the bound below, so that a slow pipeline fails on the bound.
        wait_until(lambda: count(it_engine, UNPROCESSED) == 0, 60, "the event to be processed")
    except AssertionError:
        print(worker.logs())  # noqa: T201  (the failing test's evidence)
        raise
    elapsed = time.monotonic() - started
    with it_engine.connect() as conn:
        status = conn.scalar(sa.select(Meeting.status).where(Meeting.id == meeting_id))
    assert status == "started"
    assert elapsed < 15, f"processed {elapsed:.1f}s after it was posted"


def waiting_on_a_lock(engine: Engine) -> bool:
    """Whether a session of this PostgreSQL database waits for a row lock."""
    with engine.connect() as conn:
        return bool(
            conn.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            )
        )


def test_worker_killed_mid_stream_loses_nothing(
    it_app: Flask, it_sessions: sessionmaker[Session], it_engine: Engine, worker: Worker
) -> None:
    meeting_ids = make_meetings(it_sessions, 220)
    # 200 wake-ups wait in the broker; the worker starts on them and is killed mid-stream.
    acknowledged = [post_event(it_app, meeting_id) for meeting_id in meeting_ids[:200]]
    # A drain applies a hundred events a transaction, in well under a second: the test holds
    # the worker inside one, so that the kill cannot come after the last. On PostgreSQL it
    # locks the meeting of the 151st event (transactions without it commit; the one holding it
    # waits), on SQLite the whole database (the worker waits in its first transaction).
    holder = it_sessions()
    holder.execute(sa.select(Meeting.id).where(Meeting.id == meeting_ids[150]).with_for_update())
    try:
        worker.start()
        if is_sqlite(it_engine.url):
            wait_until(lambda: " received" in worker.logs(), 60, "the worker to take messages")
        else:
            wait_until(lambda: count(it_engine, UNPROCESSED) < 200, 60, "some events applied")
            wait_until(lambda: waiting_on_a_lock(it_engine), 60, "a batch to wait for the lock")
        worker.kill()  # kill -9 of the whole group: pool children with unacked tasks die too
    finally:
        holder.close()
    in_flight = count(it_engine, UNPROCESSED)
    assert in_flight > 0
    # Events keep arriving while no worker runs.
    acknowledged += [post_event(it_app, meeting_id) for meeting_id in meeting_ids[200:]]
    restarted = time.monotonic()
    worker.start()
    try:
        wait_until(lambda: count(it_engine, UNPROCESSED) == 0, 120, "every event after the restart")
    except AssertionError:
        print(worker.logs())  # noqa: T201
        raise
    print(  # noqa: T201  (the measured figures, shown with -s)
        f"killed with {in_flight} events unprocessed; all {len(acknowledged)} processed "
        f"{time.monotonic() - restarted:.1f}s after the restart"
    )
    assert count(it_engine, ALL_EVENTS) == len(acknowledged)
    assert_all_stored_once_and_started(it_engine, acknowledged)


def test_lost_broker_messages_are_recovered_by_the_sweep(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    worker: Worker,
    broker: Broker,
) -> None:
    meeting_ids = make_meetings(it_sessions, 50)
    acknowledged = [post_event(it_app, meeting_id) for meeting_id in meeting_ids]
    broker.purge()  # every wake-up message is gone; only the database remembers
    worker.start()
    try:
        wait_until(lambda: count(it_engine, UNPROCESSED) == 0, 60, "the sweep to recover them")
    except AssertionError:
        print(worker.logs())  # noqa: T201
        raise
    assert_all_stored_once_and_started(it_engine, acknowledged)


@pytest.mark.restarts_broker
def test_broker_restart_mid_stream_loses_nothing(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    worker: Worker,
    broker: Broker,
) -> None:
    # Redis: a redis-server of the test's own, killed and started again without persistence.
    # RabbitMQ: the test's own vhost, deleted (connections closed, queues and messages gone)
    # and made again. Embedded: nothing to restart; every queued message is lost at once.
    meeting_ids = make_meetings(it_sessions, 60)
    worker.start()
    acknowledged = [post_event(it_app, meeting_id) for meeting_id in meeting_ids[:30]]
    (broker.down or broker.purge)()
    # Events keep arriving while the broker is down: they are recorded, their wake-ups fail.
    while_down = [post_event(it_app, meeting_id) for meeting_id in meeting_ids[30:45]]
    acknowledged += while_down
    if broker.up is not None:
        broker.up()
    restarted = time.monotonic()
    acknowledged += [post_event(it_app, meeting_id) for meeting_id in meeting_ids[45:]]
    try:
        wait_until(lambda: count(it_engine, UNPROCESSED) == 0, 90, "every event")
    except AssertionError:
        print(worker.logs())  # noqa: T201
        raise
    print(  # noqa: T201  (the measured figures, shown with -s)
        f"{broker.name}: all {len(acknowledged)} events processed "
        f"{time.monotonic() - restarted:.1f}s after the broker came back"
    )
    # The wake-ups of the events posted while it was down reached the broker late (the
    # receiver's sender thread tried once it came back) or never (the inbox sweep sent them):
    # either way each event is stored once and applied.
    assert_all_stored_once_and_started(it_engine, acknowledged)


def post_until_accepted(app: Flask, meeting_id: int, *, within: float = 60) -> tuple[str, int]:
    """Post one event like the platform does: the same message again after a 503."""
    msg_id = new_msg_id()
    body = event_body(meeting_id, at=dt.datetime.now(dt.UTC))
    refused = 0
    deadline = time.monotonic() + within
    while True:
        sent_at = dt.datetime.now(dt.UTC)
        headers = signed_headers(msg_id, body, sent_at)
        response = app.test_client().post("/v1/events", data=body, headers=headers)
        if response.status_code in (200, 202):
            return msg_id, refused
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.headers["Retry-After"].isdigit()
        refused += 1
        assert time.monotonic() < deadline, "the receiver kept answering 503"
        time.sleep(0.1)


@dataclass
class DatabaseTrouble:
    """What `post_through_database_trouble` saw."""

    refused: int  # posts answered 503 (and sent again)
    terminated: int  # connections cut (PostgreSQL only)
    first_post_seconds: float  # the first post made while the database was held
    recovered_in: float  # from the end of the trouble until every event was processed


TROUBLE_SECONDS = 4.0


def post_through_database_trouble(
    app: Flask, sessions: sessionmaker[Session], engine: Engine, url: str, worker: Worker
) -> DatabaseTrouble:
    """Post events before, during and after `hold_database_down`; check none is lost."""
    meeting_ids = make_meetings(sessions, 60)
    worker.start()
    acknowledged = [post_event(app, meeting_ids[0])]
    wait_until(lambda: count(engine, UNPROCESSED) == 0, 60, "the worker to be running")
    terminated = 0
    held = threading.Event()

    def trouble() -> None:
        nonlocal terminated
        terminated = hold_database_down(url, TROUBLE_SECONDS, held)

    cut = threading.Thread(target=trouble)
    cut.start()
    assert held.wait(30), "the database was never held"
    refused = 0
    first_post_seconds = 0.0
    # Events keep arriving meanwhile; the platform retries what got a 503.
    for meeting_id in meeting_ids[1:40]:
        began = time.monotonic()
        msg_id, refusals = post_until_accepted(app, meeting_id)
        first_post_seconds = first_post_seconds or time.monotonic() - began
        acknowledged.append(msg_id)
        refused += refusals
    cut.join()
    over = time.monotonic()
    acknowledged += [post_event(app, meeting_id) for meeting_id in meeting_ids[40:]]
    try:
        wait_until(lambda: count(engine, UNPROCESSED) == 0, 90, "every event after the trouble")
    except AssertionError:
        print(worker.logs())  # noqa: T201
        raise
    recovered_in = time.monotonic() - over
    assert_all_stored_once_and_started(engine, acknowledged)
    return DatabaseTrouble(refused, terminated, first_post_seconds, recovered_in)


def test_database_outage_delays_events_and_loses_none(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    it_database_url: str,
    worker: Worker,
) -> None:
    """PostgreSQL: every connection is cut for seconds, again and again."""
    if is_sqlite(it_database_url):
        pytest.skip("SQLite has no server to cut: test_locked_database_... holds its lock instead")
    seen = post_through_database_trouble(it_app, it_sessions, it_engine, it_database_url, worker)
    assert seen.terminated > 0  # the outage really cut connections
    print(  # noqa: T201  (the measured figures, shown with -s)
        f"outage {TROUBLE_SECONDS}s: {seen.refused} posts answered 503 and retried, "
        f"{seen.terminated} connections cut, all processed {seen.recovered_in:.1f}s after it"
    )


def test_locked_database_delays_events_and_loses_none(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    it_database_url: str,
    worker: Worker,
) -> None:
    """SQLite: the write lock is held for seconds, less than the busy timeout: a slow database."""
    if not is_sqlite(it_database_url):
        pytest.skip("PostgreSQL: test_database_outage_delays_events_and_loses_none cuts it")
    seen = post_through_database_trouble(it_app, it_sessions, it_engine, it_database_url, worker)
    # The first post waited for the lock (it began right after the lock was taken)...
    assert seen.first_post_seconds >= TROUBLE_SECONDS / 2
    assert seen.refused == 0  # ...and waited it out: slower, not refused
    print(  # noqa: T201  (the measured figures, shown with -s)
        f"write lock held {TROUBLE_SECONDS}s: the first post took "
        f"{seen.first_post_seconds:.1f}s, all processed {seen.recovered_in:.1f}s after it"
    )


def test_database_unreachable_for_seconds_delays_events_and_loses_none(
    it_settings: Settings,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    it_database_url: str,
    tmp_path: Path,
) -> None:
    if is_sqlite(it_database_url):
        pytest.skip("SQLite has no server to lose: test_locked_database_... holds its lock")
    # Receiver and worker reach PostgreSQL only through a proxy that the test cuts: for the
    # outage every connection is closed and every new one refused, as a restart would.
    server = sa.make_url(it_database_url)
    proxy = TcpProxy(server.host or "127.0.0.1", server.port or 5432)
    through_proxy = server.set(host="127.0.0.1", port=proxy.port)
    settings = it_settings.model_copy(
        update={"database_url": through_proxy.render_as_string(hide_password=False)}
    )
    app = create_app(settings)  # the real Celery publisher and its own engine, via the proxy
    app.testing = True
    (tmp_path / "proxied").mkdir()
    worker = Worker(settings=settings, workdir=tmp_path / "proxied")
    outage_seconds = 4.0
    try:
        meeting_ids = make_meetings(it_sessions, 130)
        acknowledged = [post_event(app, meeting_id) for meeting_id in meeting_ids[:100]]
        worker.start()
        wait_until(lambda: count(it_engine, UNPROCESSED) < 100, 60, "the worker to get going")
        proxy.pause()
        in_flight = count(it_engine, UNPROCESSED)  # read directly, past the proxy
        threading.Timer(outage_seconds, proxy.resume).start()
        refused = 0
        for meeting_id in meeting_ids[100:115]:
            msg_id, refusals = post_until_accepted(app, meeting_id)
            acknowledged.append(msg_id)
            refused += refusals
        back = time.monotonic()
        acknowledged += [post_event(app, meeting_id) for meeting_id in meeting_ids[115:]]
        try:
            wait_until(lambda: count(it_engine, UNPROCESSED) == 0, 90, "every event after it")
        except AssertionError:
            print(worker.logs())  # noqa: T201
            raise
        drained = time.monotonic() - back
    finally:
        worker.stop()
        app.extensions["meetinghooks.enqueue"].close()
        app.extensions["meetinghooks.session_factory"].kw["bind"].dispose()
        proxy.close()
    assert in_flight > 0  # the outage caught events the worker had not finished
    assert refused > 0  # the receiver answered 503 while the database was unreachable
    assert proxy.refused > 0
    assert_all_stored_once_and_started(it_engine, acknowledged)
    print(  # noqa: T201  (the measured figures, shown with -s)
        f"database unreachable {outage_seconds}s with {in_flight} events in flight: "
        f"{refused} posts answered 503, {proxy.refused} connections refused; "
        f"all {len(acknowledged)} processed {drained:.1f}s after it came back"
    )
