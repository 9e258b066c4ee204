"""The delivery state machine: lease, record each attempt's result, retry, succeed or fail.

One attempt is three steps, so that no database transaction stays open across the network:
`claim` (a short transaction: lease the delivery, open its attempt row), `outbound_http.send`
(the HTTP POST, no database), `record` (a short transaction: log the result, schedule the
retry). The lease (`locked_until`) keeps two workers from sending the same delivery at once;
a worker that dies mid-attempt leaves the lease to expire, and the sweep hands the delivery
to another worker with the same `webhook-id`.

Every status change with a consequence is one function here: `fail` (the only way into
`failed`, and the only caller of `alert_triggers.delivery_failed`), `_succeed` and
`_schedule_retry`. Callbacks and alerts share all of it; only a callback has a webhook that a
410 can disable.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from core.db import utcnow
from core.models import Delivery, DeliveryAttempt, User, Webhook
from core.services import accounts, alert_triggers
from core.services.outbound_http import MAX_RETRY_AFTER, Outcome

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.config import Settings

JITTER = 0.2
RETRY_AFTER_STATUSES = (429, 503)
IN_PROGRESS = "in-progress"
INTERRUPTED = "interrupted"
WEBHOOK_DISABLED = "webhook-disabled"

_jitter_source = random.SystemRandom()


@dataclass(frozen=True)
class Claim:
    """A leased delivery: everything `send` needs, and the lease that fences `record`."""

    delivery_id: int
    attempt_id: int
    lease: dt.datetime
    message_id: str
    callback_url: str
    body: str
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class Recorded:
    """What recording an attempt decided."""

    status: str
    next_attempt_at: dt.datetime | None = None
    webhook_disabled: bool = False
    stale: bool = False


def lease_duration(settings: Settings) -> dt.timedelta:
    """Return how long a claim holds a delivery: longer than any attempt can last.

    An attempt is bounded by the connect timeout plus the read deadline (2 x timeout); the
    third timeout and 5 s cover signing, bookkeeping and a slow name lookup.
    """
    return dt.timedelta(seconds=3 * settings.callback_timeout_seconds + 5)


def claim(
    session: Session,
    delivery_id: int,
    *,
    lease: dt.timedelta,
    max_attempts: int | None = None,
    now: dt.datetime | None = None,
) -> Claim | None:
    """Lease a due delivery and open its attempt row; None if it is not ours to send now.

    The row lock (PostgreSQL) or the write lock that BEGIN IMMEDIATE takes (SQLite) makes
    the check-and-lease atomic, so two workers never both claim the same delivery. A
    delivery whose attempts are all used up (its workers kept dying mid-attempt, so no
    result ever scheduled the next one) fails here instead of looping forever. `now` pins
    the time for tests; workers leave it out, so the clock is read once the lock is held.
    """
    delivery = session.get(Delivery, delivery_id, with_for_update=True, populate_existing=True)
    # Only now, with the lock held: waiting for it can take longer than the lease, and a
    # lease counted from before the wait would run out mid-attempt and let a second
    # worker send the same delivery at the same time.
    now = utcnow() if now is None else now
    if (
        delivery is None
        or delivery.status != "pending"
        or delivery.next_attempt_at is None
        or delivery.next_attempt_at > now
        or (delivery.locked_until is not None and delivery.locked_until > now)
    ):
        return None
    # A previous claim whose lease ran out never recorded its result: its worker died.
    session.execute(
        sa.update(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id == delivery.id, DeliveryAttempt.error == IN_PROGRESS)
        .values(error=INTERRUPTED)
    )
    webhook = session.get(Webhook, delivery.webhook_id) if delivery.webhook_id else None
    if webhook is not None and webhook.disabled_at is not None:
        # The receiver answered 410 to another delivery of this webhook: never call it again.
        session.add(
            DeliveryAttempt(delivery_id=delivery.id, attempted_at=now, error=WEBHOOK_DISABLED)
        )
        fail(session, delivery, now)
        return None
    if max_attempts is not None and delivery.attempt_count >= max_attempts:
        fail(session, delivery, now)
        return None
    user = session.get(User, delivery.user_id)
    if user is None:
        return None
    delivery.attempt_count += 1
    delivery.locked_until = now + lease
    # Its wake-up arrived: the sweep's back-off starts over.
    delivery.enqueue_count = 0
    attempt = DeliveryAttempt(delivery_id=delivery.id, attempted_at=now, error=IN_PROGRESS)
    session.add(attempt)
    session.flush()
    return Claim(
        delivery_id=delivery.id,
        attempt_id=attempt.id,
        lease=delivery.locked_until,
        message_id=delivery.message_id,
        callback_url=delivery.callback_url,
        body=delivery.body,
        secrets=tuple(accounts.active_signing_secrets(user, now=now)),
    )


def retry_delay(
    schedule: Sequence[float],
    attempts_made: int,
    *,
    status_code: int | None = None,
    retry_after: dt.timedelta | None = None,
    rng: random.Random | None = None,
) -> dt.timedelta | None:
    """Return how long to wait after the `attempts_made`-th attempt failed; None when spent.

    The first attempt goes at once; retry k waits `schedule[k-1]` (+-20% jitter) after the
    attempt before it ended. A 429 or 503 with Retry-After may lengthen that wait, never
    shorten it, and never beyond 24 hours.
    """
    if attempts_made < 1 or attempts_made > len(schedule):
        return None
    base = schedule[attempts_made - 1]
    factor = (rng or _jitter_source).uniform(1 - JITTER, 1 + JITTER)
    delay = dt.timedelta(seconds=base * factor)
    if status_code in RETRY_AFTER_STATUSES and retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def record(
    session: Session,
    claimed: Claim,
    outcome: Outcome,
    *,
    schedule: Sequence[float],
    rng: random.Random | None = None,
    now: dt.datetime | None = None,
) -> Recorded | None:
    """Log the attempt and move the delivery on: succeeded, failed, or due again later.

    `now` pins the time for tests; workers leave it out, so the clock is read once the
    lock is held and a retry's wait is not shortened by the wait for the lock.
    """
    attempt = session.get(DeliveryAttempt, claimed.attempt_id)
    if attempt is not None:
        attempt.status_code = outcome.status_code
        attempt.latency_ms = outcome.latency_ms
        attempt.error = outcome.error
        attempt.response_body = outcome.response_body
    delivery = session.get(
        Delivery, claimed.delivery_id, with_for_update=True, populate_existing=True
    )
    if delivery is None:
        return None
    now = utcnow() if now is None else now
    if delivery.locked_until != claimed.lease:
        # Our lease ran out and another worker holds the delivery now: its result decides.
        return Recorded(status=delivery.status, stale=True)
    delivery.locked_until = None
    if outcome.succeeded:
        _succeed(session, delivery, now)
        return Recorded(status="succeeded")
    if outcome.status_code == 410:
        disabled = _disable_webhook(session, delivery, now)
        fail(session, delivery, now)
        return Recorded(status="failed", webhook_disabled=disabled)
    delay = retry_delay(
        schedule,
        delivery.attempt_count,
        status_code=outcome.status_code,
        retry_after=outcome.retry_after,
        rng=rng,
    )
    if delay is None:
        fail(session, delivery, now)
        return Recorded(status="failed")
    _schedule_retry(session, delivery, now + delay, now)
    return Recorded(status="pending", next_attempt_at=delivery.next_attempt_at)


def fail(session: Session, delivery: Delivery, now: dt.datetime) -> None:
    """Move a delivery into `failed` for good; the one transition into that state.

    Its schedule is spent, a 410 ended it (or its webhook), or no attempt is left.
    """
    _complete(delivery, "failed", now)
    alert_triggers.delivery_failed(session, delivery, now)


def _succeed(session: Session, delivery: Delivery, now: dt.datetime) -> None:
    _complete(delivery, "succeeded", now)
    alert_triggers.attempt_succeeded(session, delivery, now)


def _schedule_retry(
    session: Session, delivery: Delivery, when: dt.datetime, now: dt.datetime
) -> None:
    delivery.next_attempt_at = when
    # Newly due later: its first wake-up then goes at once, and the back-off starts over.
    delivery.enqueue_count = 0
    alert_triggers.attempt_failed(session, delivery, now)


def _complete(delivery: Delivery, status: str, now: dt.datetime) -> None:
    delivery.status = status
    delivery.completed_at = now
    delivery.next_attempt_at = None
    delivery.locked_until = None


def _disable_webhook(session: Session, delivery: Delivery, now: dt.datetime) -> bool:
    """Disable the callback's webhook after a 410; an alert's rule URL has none to disable."""
    webhook = (
        session.get(Webhook, delivery.webhook_id, with_for_update=True)
        if delivery.webhook_id
        else None
    )
    if webhook is None or webhook.disabled_at is not None:
        return False
    if webhook.callback_url != delivery.callback_url:
        # The callback was registered again with another URL since this delivery was made:
        # the 410 speaks for the old URL only, the new registration stays live.
        return False
    webhook.disabled_at = now
    webhook.disabled_reason = "the callback answered 410 Gone"
    alert_triggers.webhook_disabled(session, webhook, now)
    # Its other deliveries waiting for a retry stop now, each through `fail` so that each
    # fires its alert; a leased one stops at its own record (or its next claim).
    waiting = session.scalars(
        sa.select(Delivery)
        .where(
            Delivery.webhook_id == webhook.id,
            Delivery.id != delivery.id,
            Delivery.status == "pending",
            sa.or_(Delivery.locked_until.is_(None), Delivery.locked_until <= now),
        )
        .order_by(Delivery.id)
        .with_for_update()
    )
    for other in waiting.all():
        fail(session, other, now)
    return True
