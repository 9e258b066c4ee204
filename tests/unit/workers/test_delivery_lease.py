"""The lease is counted from when the claim holds the lock, not from before the wait for it.

SQLite: a claim waits for the database's write lock, and counts its lease from then.
PostgreSQL: a claim never waits for a delivery's row lock (FOR NO KEY UPDATE SKIP LOCKED): it
leaves that delivery to whoever holds it, and a later wake-up leases it from its own claim.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import is_sqlite, utcnow
from core.services import delivery_states, outbound_http
from tests.callback_receiver import CallbackReceiver, Received
from tests.conftest import Account
from tests.deliveries_helpers import attempts, load, make_delivery
from workers.tasks.deliveries import run_delivery

# The shortest lease there is: 3 x 0.5 s + 5 s = 6.5 s.
TIMEOUT = 0.5
# Longest a step of the test may wait for another before the test gives up.
PATIENCE = 30.0


@contextlib.contextmanager
def database_locked(database_url: str, delivery_id: int) -> Iterator[None]:
    """Hold what a claim must wait for: SQLite's write lock, or PostgreSQL's row lock."""
    if is_sqlite(database_url):
        path = sa.make_url(database_url).database
        assert path is not None
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as pg:
            pg.execute(
                sa.text("SELECT id FROM deliveries WHERE id = :id FOR UPDATE"), {"id": delivery_id}
            )
            yield
            pg.rollback()
    finally:
        engine.dispose()


@dataclass
class Spans:
    """When each request was in the receiver's hands, by `webhook-id` (monotonic seconds)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    spans: list[tuple[str, float, float]] = field(default_factory=list)

    def add(self, message_id: str, start: float, end: float) -> None:
        with self.lock:
            self.spans.append((message_id, start, end))

    def overlapping(self) -> list[tuple[tuple[str, float, float], tuple[str, float, float]]]:
        """Return the pairs of requests of the same delivery that were in flight together."""
        with self.lock:
            spans = sorted(self.spans, key=lambda span: span[1])
        return [
            (a, b)
            for i, a in enumerate(spans)
            for b in spans[i + 1 :]
            if a[0] == b[0] and b[1] < a[2]
        ]


def test_a_lease_outlasting_a_long_wait_for_the_lock_keeps_a_second_worker_out(
    receiver: CallbackReceiver,
    settings: Settings,
    database_url: str,
    session_factory: sessionmaker[Session],
    account: Account,
) -> None:
    if not is_sqlite(database_url):
        pytest.skip("PostgreSQL claims do not wait for a row lock: see the test below")
    local = settings.model_copy(
        update={
            "callback_allowed_networks": (ipaddress.ip_network("127.0.0.0/8"),),
            "callback_timeout_seconds": TIMEOUT,
        }
    )
    lease = delivery_states.lease_duration(local)
    delivery_id = make_delivery(session_factory, account.id, receiver.url())

    # Worker A's request is held until worker B has finished. B starts as soon as A's
    # request arrives, while A is still sending: had A's lease been counted from before its
    # wait for the lock (longer than the lease), it would already be over, B would claim the
    # delivery and send it too, and its request would arrive inside A's. Not a race: B's
    # claim always comes after A's (A's request is already here) and always before A's
    # lease can run out, counted from when A held the lock.
    spans = Spans()
    first_arrived = threading.Event()
    second_done = threading.Event()

    def hold(got: Received) -> None:
        start = time.monotonic()
        with spans.lock:
            first = not first_arrived.is_set()
            first_arrived.set()
        if first:
            second_done.wait(PATIENCE)
        spans.add(got.headers["webhook-id"], start, time.monotonic())

    receiver.on_request = hold
    results: dict[str, delivery_states.Recorded | None] = {}

    def worker(name: str) -> None:
        http = outbound_http.make_http_session(local.callback_allowed_networks)
        try:
            results[name] = run_delivery(session_factory, delivery_id, settings=local, http=http)
        finally:
            http.close()

    a = threading.Thread(target=worker, args=("a",), daemon=True)
    with database_locked(database_url, delivery_id):
        a.start()
        # A is waiting for the lock now; hold it a second longer than a whole lease.
        time.sleep(lease.total_seconds() + 1.0)
        released_at = utcnow()
    assert first_arrived.wait(PATIENCE), "worker A never sent the callback"
    b = threading.Thread(target=worker, args=("b",), daemon=True)
    b.start()
    b.join(PATIENCE)
    second_done.set()
    a.join(PATIENCE)
    assert not a.is_alive()
    assert not b.is_alive()

    assert spans.overlapping() == [], "two workers sent the same delivery at the same time"
    assert len(receiver.received) == 1
    assert results["b"] is None  # A's lease still held when B came
    assert results["a"] is not None
    assert not results["a"].stale  # and A's result was recorded under its own lease
    (attempt,) = attempts(session_factory, delivery_id)
    # The lease was counted from when A held the lock, not from before the wait.
    assert attempt.attempted_at >= released_at
    assert load(session_factory, delivery_id).attempt_count == 1


def test_a_claim_leaves_a_held_delivery_and_a_later_one_leases_it_from_its_own_claim(
    receiver: CallbackReceiver,
    settings: Settings,
    database_url: str,
    session_factory: sessionmaker[Session],
    account: Account,
) -> None:
    if is_sqlite(database_url):
        pytest.skip("SQLite claims wait for the write lock: see the test above")
    local = settings.model_copy(
        update={
            "callback_allowed_networks": (ipaddress.ip_network("127.0.0.0/8"),),
            "callback_timeout_seconds": TIMEOUT,
        }
    )
    delivery_id = make_delivery(session_factory, account.id, receiver.url())
    results: dict[str, delivery_states.Recorded | None] = {}

    def worker(name: str) -> None:
        http = outbound_http.make_http_session(local.callback_allowed_networks)
        try:
            results[name] = run_delivery(session_factory, delivery_id, settings=local, http=http)
        finally:
            http.close()

    with database_locked(database_url, delivery_id):
        a = threading.Thread(target=worker, args=("a",), daemon=True)
        a.start()
        a.join(PATIENCE)  # the lock is held all along: a claim that waited would still wait
        assert not a.is_alive(), "the claim waited for the row lock"
    released_at = utcnow()
    assert results["a"] is None
    assert receiver.received == []
    assert attempts(session_factory, delivery_id) == []
    worker("b")  # the next wake-up: the sweep's, or the holder's own
    assert results["b"] == delivery_states.Recorded(status="succeeded")
    (got,) = receiver.wait_for(1)
    assert got.headers["webhook-id"] == load(session_factory, delivery_id).message_id
    (attempt,) = attempts(session_factory, delivery_id)
    assert attempt.attempted_at >= released_at
    assert load(session_factory, delivery_id).attempt_count == 1
