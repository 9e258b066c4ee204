"""SIGTERM, as a deploy or a scale-down sends it, loses nothing and ends within a bound.

The receiver (`meetinghooks serve`, gunicorn) refuses new connections at once and finishes the
requests in flight; the workers (`meetinghooks worker`) finish the tasks in flight or, past
GRACEFUL_TIMEOUT_SECONDS, are killed and the work is done again once a worker is back. Every
outcome is read from the database.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import is_sqlite
from core.models import Delivery, Event
from core.services import accounts
from tests.callback_receiver import Answer, CallbackReceiver
from tests.deliveries_helpers import make_meeting_with_hooks
from tests.integration.conftest import (
    ROOT,
    PoolsWorker,
    answers_ok,
    count,
    free_port,
    wait_or_show_logs,
    wait_until,
)
from tests.integration.test_event_pipeline import make_meetings
from tests.platform_events import event_body, new_msg_id, post_event, signed_headers

pytestmark = pytest.mark.integration

START_SECONDS = 60


@dataclass
class Serve:
    """A `meetinghooks serve` (gunicorn master and workers) on a port of its own."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def refuses_connections(self) -> bool:
        try:
            self.connect().close()
        except ConnectionRefusedError:
            return True
        return False


def _serve(settings: Settings, workdir: Path, graceful_seconds: int) -> Iterator[Serve]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": settings.database_url,
        "BROKER_URL": settings.broker_url,
        "BROKER_KEY_PREFIX": settings.broker_key_prefix,
        "INGEST_SIGNING_SECRET": settings.ingest_signing_secret or "",
        "PORT": str(port),
        "GRACEFUL_TIMEOUT_SECONDS": str(graceful_seconds),
        "RATE_LIMIT_STORAGE_URL": "memory://",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = workdir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "meetinghooks", "serve"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    handle = Serve(process, port, log)
    try:
        wait_until(lambda: answers_ok(f"http://127.0.0.1:{port}/healthz"), START_SECONDS, "serve")
        yield handle
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@pytest.fixture
def serve(it_settings: Settings, tmp_path: Path) -> Iterator[Serve]:
    yield from _serve(it_settings, tmp_path, graceful_seconds=30)


@pytest.fixture
def quick_serve(it_settings: Settings, tmp_path: Path) -> Iterator[Serve]:
    yield from _serve(it_settings, tmp_path, graceful_seconds=3)


def _start_slow_ingest(serve: Serve, meeting_id: int, msg_id: str) -> tuple[socket.socket, bytes]:
    """Send an ingest request's headers and the start of its body; return the socket, the rest."""
    now = dt.datetime.now(dt.UTC)
    body = event_body(meeting_id, "meeting.start", at=now).encode()
    headers = signed_headers(msg_id, body.decode(), now)
    head = (
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        + "\r\n"
    )
    sock = serve.connect()
    sock.sendall(head.encode() + body[:10])
    return sock, body[10:]


def _status(sock: socket.socket) -> int:
    sock.settimeout(30)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    return int(answer.split(b" ", 2)[1])


def _stored(engine: Engine, msg_id: str) -> int:
    return count(
        engine, sa.select(sa.func.count()).select_from(Event).where(Event.source_event_id == msg_id)
    )


def test_sigterm_refuses_new_connections_and_finishes_the_request_in_flight(
    serve: Serve, it_sessions: sessionmaker[Session], it_engine: Engine
) -> None:
    (meeting_id,) = make_meetings(it_sessions, 1)
    msg_id = new_msg_id()
    sock, rest = _start_slow_ingest(serve, meeting_id, msg_id)
    time.sleep(1)  # a worker thread is reading the body now
    serve.process.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    # The request is still in flight (half its body is not sent) while new connections fail.
    wait_until(serve.refuses_connections, 10, "new connections to be refused")
    assert serve.process.poll() is None
    time.sleep(1)
    sock.sendall(rest)
    assert _status(sock) == 202
    assert serve.process.wait(timeout=20) == 0
    # It left as soon as its last request was answered, not at the end of the 30 s allowed.
    assert time.monotonic() - stopping < 15
    assert _stored(it_engine, msg_id) == 1


def test_a_request_that_outlasts_the_graceful_timeout_is_cut_off_at_it(
    quick_serve: Serve, it_sessions: sessionmaker[Session], it_engine: Engine
) -> None:
    (meeting_id,) = make_meetings(it_sessions, 1)
    msg_id = new_msg_id()
    sock, _ = _start_slow_ingest(quick_serve, meeting_id, msg_id)  # the rest never comes
    time.sleep(1)
    quick_serve.process.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    quick_serve.process.wait(timeout=30)
    # GRACEFUL_TIMEOUT_SECONDS=3, and a second of gunicorn's own polling on each side.
    assert time.monotonic() - stopping < 3 + 5
    sock.close()
    assert _stored(it_engine, msg_id) == 0  # never acknowledged: the platform sends it again


# Workers ---------------------------------------------------------------------------------

PROCESSED = sa.select(sa.func.count()).select_from(Event).where(Event.processed_at.is_not(None))


def _make_user(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        user, _ = accounts.create_user(session, email="stop@example.com", full_name="Stop")
        return user.id


def _deliveries(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(Delivery.status).order_by(Delivery.id)).scalars())


def _stop(worker: PoolsWorker) -> float:
    """SIGTERM `meetinghooks worker` as a process manager does; return how long it took to end."""
    assert worker.process is not None
    worker.process.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    assert worker.process.wait(timeout=60) == 0, worker.logs()
    return time.monotonic() - stopping


def _hold_write_lock(database_url: str, held: threading.Event, release: threading.Event) -> None:
    """Keep every writer of the database waiting until `release` (no outage: nothing is cut)."""
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if is_sqlite(database_url):
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
        else:
            conn.exec_driver_sql("BEGIN")
            conn.exec_driver_sql("LOCK TABLE events IN EXCLUSIVE MODE")
        held.set()
        release.wait(25)  # under SQLite's 30 s busy timeout (core/db.py)
        conn.exec_driver_sql("ROLLBACK")
    engine.dispose()


@pytest.mark.every_broker
def test_sigterm_lets_the_callback_attempt_in_flight_finish(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    receiver: CallbackReceiver,
    pools_worker: PoolsWorker,
) -> None:
    receiver.default = Answer(status=204, delay=2)  # well within the 3 s callback timeout
    meeting_id = make_meeting_with_hooks(
        it_sessions, _make_user(it_sessions), {"meeting.start": receiver.url()}
    )
    pools_worker.start()
    pools_worker.wait_ready()
    post_event(it_app, meeting_id, "meeting.start")
    receiver.wait_for(1, timeout=60)  # the attempt is in flight: the answer takes 2 s
    took = _stop(pools_worker)
    # Default bound: the longest attempt (2 x CALLBACK_TIMEOUT_SECONDS) + 10 s.
    assert took < 2 * 3 + 10
    assert _deliveries(it_engine) == ["succeeded"]
    assert len(receiver.received) == 1


@pytest.mark.every_broker
def test_sigterm_lets_the_event_in_flight_be_processed_and_its_callback_sent_later(
    it_app: Flask,
    it_settings: Settings,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    receiver: CallbackReceiver,
    pools_worker: PoolsWorker,
) -> None:
    meeting_id = make_meeting_with_hooks(
        it_sessions, _make_user(it_sessions), {"meeting.start": receiver.url()}
    )
    post_event(it_app, meeting_id, "meeting.start")  # waits in the broker for a worker
    held, release = threading.Event(), threading.Event()
    locker = threading.Thread(
        target=_hold_write_lock, args=(it_settings.database_url, held, release), daemon=True
    )
    locker.start()
    assert held.wait(10)
    pools_worker.start()  # takes the event and waits for the lock
    taken = re.compile(r"Task workers\.events\.process_events?\[[^]]+\] received")
    log = pools_worker.workdir / "worker-1.log"
    wait_or_show_logs(pools_worker, lambda: bool(taken.search(log.read_text())), 60, "the event")
    time.sleep(1)  # and started: it waits for the lock now
    process = pools_worker.process
    assert process is not None
    process.send_signal(signal.SIGTERM)
    stopping = time.monotonic()
    time.sleep(2)
    assert process.poll() is None  # waiting for the event in flight
    release.set()
    assert process.wait(timeout=60) == 0, pools_worker.logs()
    locker.join()
    assert time.monotonic() - stopping < 2 * 3 + 10
    assert count(it_engine, PROCESSED) == 1  # finished before the worker left
    # Its callback was left to the next worker: given back, not lost.
    pools_worker.start()
    receiver.wait_for(1, timeout=60)
    wait_until(lambda: _deliveries(it_engine) == ["succeeded"], 30, "the delivery to succeed")


@pytest.mark.every_broker
def test_an_attempt_that_outlasts_the_bound_is_cut_off_and_sent_again_later(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    receiver: CallbackReceiver,
    pools_worker: PoolsWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRACEFUL_TIMEOUT_SECONDS", "1")
    # The first answer dribbles in until the attempt's deadline; the next is quick.
    receiver.answer(Answer(status=204, trickle=0.5))
    meeting_id = make_meeting_with_hooks(
        it_sessions, _make_user(it_sessions), {"meeting.start": receiver.url()}
    )
    pools_worker.start()
    pools_worker.wait_ready()
    post_event(it_app, meeting_id, "meeting.start")
    receiver.wait_for(1, timeout=60)
    took = _stop(pools_worker)
    assert took < 1 + 5  # GRACEFUL_TIMEOUT_SECONDS, then killed
    assert _deliveries(it_engine) == ["pending"]  # claimed, never recorded
    # Once the claim's lease (3 x 3 + 5 s) runs out, the sweep hands it to a worker again.
    pools_worker.start()
    receiver.wait_for(2, timeout=90)
    wait_until(lambda: _deliveries(it_engine) == ["succeeded"], 30, "the delivery to succeed")
