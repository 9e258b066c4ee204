"""The attempt deadline wakes a read that socket timeouts would let block for ever."""

from __future__ import annotations

import socket
import threading
import time

from core import http_deadline


def test_a_blocked_read_ends_when_the_deadline_passes() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        ours.settimeout(None)  # no socket timeout at all: only the deadline can end the read
        # Without the deadline the read would block for ever; end it at 30 s so that fails here.
        backstop = threading.Timer(30, peer.shutdown, (socket.SHUT_WR,))
        backstop.start()
        started = time.monotonic()
        try:
            with http_deadline.limit(0.3) as deadline:
                http_deadline.watch(ours)
                assert ours.recv(1) == b""  # woken with an end-of-file
        finally:
            backstop.cancel()
        assert deadline.expired
        assert 0.25 < time.monotonic() - started < 10


def test_a_socket_watched_after_expiry_is_shut_at_once() -> None:
    ours, peer = socket.socketpair()
    with ours, peer, http_deadline.limit(0.05) as deadline:
        time.sleep(0.2)
        deadline.watch(ours)
        ours.settimeout(5)
        assert ours.recv(1) == b""


def test_an_attempt_that_ends_in_time_leaves_its_socket_alone() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        with http_deadline.limit(0.2) as deadline:
            http_deadline.watch(ours)
        time.sleep(0.4)
        peer.sendall(b"x")
        ours.settimeout(5)
        assert ours.recv(1) == b"x"
        assert not deadline.expired
        assert http_deadline.current() is None


def test_watch_outside_a_deadline_does_nothing() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        http_deadline.watch(ours)
        peer.sendall(b"y")
        ours.settimeout(5)
        assert ours.recv(1) == b"y"
