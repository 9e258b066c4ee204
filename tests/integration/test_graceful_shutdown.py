"""SIGTERM, as a deploy or a scale-down sends it, loses nothing and ends within a bound.

The receiver (`meetinghooks serve`, gunicorn) refuses new connections at once and finishes the
requests in flight; the workers (`meetinghooks worker`) finish the tasks in flight or, past
GRACEFUL_TIMEOUT_SECONDS, are killed and the work is done again once a worker is back. Every
outcome is read from the database.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.models import Event
from tests.integration.conftest import ROOT, answers_ok, count, free_port, wait_until
from tests.integration.test_event_pipeline import make_meetings
from tests.platform_events import event_body, new_msg_id, signed_headers

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
