"""The delivery sweep's back-off: each re-sent wake-up doubles the wait before the next."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import utcnow
from core.models import Delivery
from core.services import backoff, delivery_log, delivery_states, outbound_http, outbox
from tests.conftest import Account
from tests.deliveries_helpers import load, make_delivery

HOOK = "https://hooks.example.com/meetings"
SCHEDULE = (5, 300, 1800)
SECOND = dt.timedelta(seconds=1)


@pytest.fixture
def lease(settings: Settings) -> dt.timedelta:
    return delivery_states.lease_duration(settings)


@pytest.fixture
def delivery_id(session_factory: sessionmaker[Session], account: Account) -> int:
    return make_delivery(session_factory, account.id, HOOK)


def set_row(session_factory: sessionmaker[Session], delivery_id: int, **values: Any) -> None:
    with session_factory.begin() as session:
        session.execute(sa.update(Delivery).where(Delivery.id == delivery_id).values(**values))


def due(session_factory: sessionmaker[Session], at: dt.datetime, lease: dt.timedelta) -> list[int]:
    with session_factory() as session:
        return outbox.due_ids(session, at, resend_after=lease)


def sweep(
    session_factory: sessionmaker[Session], at: dt.datetime, lease: dt.timedelta
) -> list[int]:
    """Run the sweep's two steps at `at`, as `workers.sweep.sweep_deliveries` does."""
    with session_factory.begin() as session:
        ids = outbox.due_ids(session, at, resend_after=lease)
        outbox.mark_enqueued(session, ids, at)
    return ids


def test_the_waits_double_from_the_lease_up_to_the_cap(lease: dt.timedelta) -> None:
    assert lease == dt.timedelta(seconds=50)  # CALLBACK_TIMEOUT_SECONDS 15
    waits = backoff.resend_waits(lease, outbox.MAX_RESEND_WAIT)
    assert waits == [dt.timedelta(seconds=s) for s in (50, 100, 200, 300)]
    # A lease longer than the cap (CALLBACK_TIMEOUT_SECONDS 300): once a lease, no sooner.
    long_lease = dt.timedelta(seconds=905)
    assert backoff.resend_waits(long_lease, outbox.MAX_RESEND_WAIT) == [long_lease]
    with pytest.raises(ValueError, match="positive"):
        backoff.resend_waits(dt.timedelta(0), outbox.MAX_RESEND_WAIT)


def test_each_resend_doubles_the_wait_and_the_cap_holds(
    session_factory: sessionmaker[Session], delivery_id: int, lease: dt.timedelta
) -> None:
    # Woken when it was made (its message waits in a long queue); nobody has attempted it.
    woken = load(session_factory, delivery_id).last_enqueued_at
    assert woken is not None
    at = woken
    seen = []
    for wait in [lease, 2 * lease, 4 * lease] + [outbox.MAX_RESEND_WAIT] * 3:
        assert due(session_factory, at + wait - SECOND, lease) == []
        assert sweep(session_factory, at + wait, lease) == [delivery_id]
        at += wait
        seen.append(load(session_factory, delivery_id).enqueue_count)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert load(session_factory, delivery_id).last_enqueued_at == at


def test_a_never_woken_due_delivery_is_woken_at_once(
    session_factory: sessionmaker[Session], delivery_id: int, lease: dt.timedelta
) -> None:
    now = utcnow()
    # Made, but its wake-up was never sent (the process died between commit and enqueue).
    set_row(session_factory, delivery_id, last_enqueued_at=None, next_attempt_at=now)
    assert sweep(session_factory, now, lease) == [delivery_id]
    # The first wake-up is not a re-send: the first re-send waits one lease, as it would
    # for a delivery whose creator sent its wake-up.
    assert load(session_factory, delivery_id).enqueue_count == 0
    assert due(session_factory, now + lease - SECOND, lease) == []
    assert sweep(session_factory, now + lease, lease) == [delivery_id]
    assert load(session_factory, delivery_id).enqueue_count == 1


def test_an_attempt_resets_the_count(
    session_factory: sessionmaker[Session], delivery_id: int, lease: dt.timedelta
) -> None:
    now = utcnow()
    set_row(session_factory, delivery_id, enqueue_count=5)
    with session_factory.begin() as session:
        claimed = delivery_states.claim(session, delivery_id, lease=lease, now=now)
    assert claimed is not None
    assert load(session_factory, delivery_id).enqueue_count == 0
    # Its worker dies mid-attempt: the lease runs out, and the sweep re-sends at once,
    # then a lease later (not after the 5 min wait of the count it had before the attempt).
    expiry = now + lease
    assert due(session_factory, expiry - SECOND, lease) == []
    assert sweep(session_factory, expiry, lease) == [delivery_id]
    assert load(session_factory, delivery_id).enqueue_count == 1
    assert due(session_factory, expiry + 2 * lease - SECOND, lease) == []
    assert due(session_factory, expiry + 2 * lease, lease) == [delivery_id]


def test_a_retry_is_woken_at_once_when_due_and_its_back_off_starts_over(
    session_factory: sessionmaker[Session], delivery_id: int, lease: dt.timedelta
) -> None:
    now = utcnow()
    set_row(session_factory, delivery_id, enqueue_count=4)
    with session_factory.begin() as session:
        claimed = delivery_states.claim(session, delivery_id, lease=lease, now=now)
    assert claimed is not None
    set_row(session_factory, delivery_id, enqueue_count=4)  # as if re-sent during the attempt
    failure = outbound_http.Outcome(status_code=500, latency_ms=3, error="http-500")
    with session_factory.begin() as session:
        recorded = delivery_states.record(session, claimed, failure, schedule=SCHEDULE, now=now)
    assert recorded is not None
    assert recorded.next_attempt_at is not None
    assert load(session_factory, delivery_id).enqueue_count == 0
    retry_at = recorded.next_attempt_at
    assert due(session_factory, retry_at - SECOND, lease) == []
    assert sweep(session_factory, retry_at, lease) == [delivery_id]
    assert load(session_factory, delivery_id).enqueue_count == 0
    assert due(session_factory, retry_at + lease - SECOND, lease) == []
    assert sweep(session_factory, retry_at + lease, lease) == [delivery_id]
    assert load(session_factory, delivery_id).enqueue_count == 1


def test_redeliver_resets_the_count(
    session_factory: sessionmaker[Session],
    delivery_id: int,
    lease: dt.timedelta,
    account: Account,
) -> None:
    now = utcnow()
    set_row(session_factory, delivery_id, enqueue_count=6)
    with session_factory.begin() as session:
        delivery_log.redeliver(session, account.id, delivery_id, now=now)
    assert load(session_factory, delivery_id).enqueue_count == 0
    # The redeliver's caller sends the wake-up; the sweep re-sends it a lease later.
    assert due(session_factory, now + lease - SECOND, lease) == []
    assert due(session_factory, now + lease, lease) == [delivery_id]
