"""Clients that trickle their requests a byte at a time against a real `meetinghooks serve`.

The receiver runs as deployed (gunicorn), made small on purpose: one process of two threads
and a 2 s read deadline, so that six trickling clients outnumber its threads three to one.
Without the deadline they held both threads for as long as they kept sending, and nobody
else was answered.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meetinghooks import slow_clients
from tests.conftest import INGEST_SECRET
from tests.integration.conftest import answers_ok, free_port, wait_until

pytestmark = pytest.mark.integration

READ_DEADLINE = 2.0
TRICKLERS = 6
BYTE_EVERY = 0.25
# Each round of two tricklers holds the threads for at most the deadline: three rounds, with
# room for a loaded machine.
NORMAL_ANSWER_BOUND = 20.0
CUT_OFF_BOUND = 25.0
GIVE_UP = 45.0  # a trickler still connected then has not been cut off at all


@pytest.fixture
def served(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "BROKER_URL": "memory://",
        "INGEST_SIGNING_SECRET": INGEST_SECRET,
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "WEB_THREADS": "2",
        "REQUEST_READ_TIMEOUT_SECONDS": str(READ_DEADLINE),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # `serve` makes a fresh one
    cli = [sys.executable, "-m", "meetinghooks"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen([*cli, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: answers_ok(f"http://127.0.0.1:{port}/healthz"), 60, "serve")
            yield port
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def trickled_requests() -> list[bytes]:
    """Half trickle their headers (classic slowloris), half a body the app reads."""
    headers = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: a\r\n" * 1000
    body = (
        b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"webhook-id: msg_slow\r\nwebhook-timestamp: 1\r\nwebhook-signature: v1,AAAA\r\n"
        b"Content-Length: 60000\r\n\r\n" + b" " * 60000
    )
    return [headers if n % 2 else body for n in range(TRICKLERS)]


def trickle(port: int, request: bytes, cut_off_after: list[float]) -> None:
    """Send `request` a byte at a time; note how long the server let us go on."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for byte in request:
            if time.monotonic() - started > GIVE_UP:
                return
            try:
                sock.sendall(bytes([byte]))
                readable, _, _ = select.select([sock], [], [], BYTE_EVERY)
                if readable and not sock.recv(4096):
                    break  # closed by the server
            except OSError:
                break  # reset by the server
        cut_off_after.append(time.monotonic() - started)


def timed_get(port: int) -> tuple[float, bytes]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=NORMAL_ANSWER_BOUND) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        try:
            status = sock.recv(64)
        except TimeoutError:
            status = b""
    return time.monotonic() - started, status


def test_trickling_clients_neither_starve_others_nor_stay_connected(served: int) -> None:
    cut_off_after: list[float] = []
    threads = [
        threading.Thread(target=trickle, args=(served, request, cut_off_after), daemon=True)
        for request in trickled_requests()
    ]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # every trickler is connected and holding what it can

    waited, status = timed_get(served)
    assert status.startswith(b"HTTP/1.1 200"), f"no answer within {waited:.1f} s: {status!r}"
    assert waited < NORMAL_ANSWER_BOUND

    for thread in threads:
        thread.join(timeout=GIVE_UP + 5)
    assert len(cut_off_after) == TRICKLERS, "a trickling client was never cut off"
    assert max(cut_off_after) < CUT_OFF_BOUND, sorted(cut_off_after)


@pytest.mark.parametrize("value", ["0", "-1", "abc", "inf", "nan", ""])
def test_an_unusable_read_deadline_stops_serve_with_a_message(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(slow_clients.READ_TIMEOUT_ENV, value)
    with pytest.raises(ValueError, match=slow_clients.READ_TIMEOUT_ENV):
        slow_clients.read_timeout()


class TestDeadlineSocket:
    def test_bytes_already_arrived_are_read_even_past_the_deadline(self) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            sock = slow_clients.DeadlineSocket(ours)
            sock.deadline = time.monotonic() - 1  # the server, not the client, was slow
            theirs.sendall(b"body")
            assert sock.recv(16) == b"body"
            with pytest.raises(ConnectionResetError):
                sock.recv(16)
            assert ours.gettimeout() is None  # blocking again for gunicorn

    def test_waiting_for_more_ends_at_the_deadline(self) -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            sock = slow_clients.DeadlineSocket(ours)
            sock.deadline = time.monotonic() + 0.2
            started = time.monotonic()
            with pytest.raises(ConnectionResetError):
                sock.recv(16)
            assert time.monotonic() - started < 5
            sock.deadline = None
            theirs.sendall(b"x")
            assert sock.recv(16) == b"x"
