"""The delivery state machine: lease, record each attempt's result, retry, succeed or fail.

One attempt is three steps, so that no database transaction stays open across the network:
`claim` (a short transaction: lease the delivery, open its attempt row), `outbound_http.send`
(the HTTP POST, no database), `record` (a short transaction: log the result, schedule the
retry). The lease (`locked_until`) keeps two workers from sending the same delivery at once;
a worker that dies mid-attempt leaves the lease to expire, and the sweep hands the delivery
to another worker with the same `webhook-id`.

The hot path is Core statements, not ORM loads (`delivery_statements`): a claim is one
UPDATE ... RETURNING, a success one UPDATE fenced by the lease. The rare turns (a disabled
webhook, attempts used up, a retry to schedule, a failure, an alert rule to consult) load the
ORM objects and go the long way.

Every status change with a consequence is one function here: `fail` (the only way into
`failed`, and the only caller of `alert_triggers.delivery_failed`), `_record_success` and
`_schedule_retry`. Callbacks and alerts share all of it; only a callback has a webhook that a
410 can disable.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from core import task_names, wakeups
from core.db import utcnow
from core.models import Delivery, DeliveryAttempt, HostSlot, User, Webhook
from core.services import accounts, alert_triggers
from core.services import delivery_statements as sql
from core.services.delivery_statements import WEBHOOK_DISABLED
from core.services.outbound_http import MAX_RETRY_AFTER, Outcome

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.config import Settings

JITTER = 0.2
RETRY_AFTER_STATUSES = (429, 503)
# The per-host bound when a caller gives none (tests of other rules): no bound.
UNBOUNDED = 2**31 - 1

_jitter_source = random.SystemRandom()


@dataclass(frozen=True)
class Claim:
    """A leased delivery: everything `send` needs, and the lease that fences `record`.

    `more_due` says whether another delivery was due and free when it was claimed (it may
    wait for an earlier one or for its host's slot): the queue is not empty
    (`workers.delivery_drain` then keeps claiming, and widens; a lane that finds nothing
    claimable stops). So a slot that an attempt frees is refilled by the lane that recorded it.
    """

    delivery_id: int
    attempt_id: int
    lease: dt.datetime
    message_id: str
    callback_url: str
    body: str
    secrets: tuple[str, ...]
    more_due: bool = False
    destination_host: str = ""


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
    max_in_flight: int | None = None,
    now: dt.datetime | None = None,
) -> Claim | None:
    """Lease this delivery if it is due and open its attempt row; None if it is not ours now."""
    return claim_next(
        session,
        among=[delivery_id],
        lease=lease,
        max_attempts=max_attempts,
        max_in_flight=max_in_flight,
        now=now,
    )


def claim_next(
    session: Session,
    *,
    among: Sequence[int] | None = None,
    lease: dt.timedelta,
    max_attempts: int | None = None,
    max_in_flight: int | None = None,
    now: dt.datetime | None = None,
) -> Claim | None:
    """Lease the oldest due delivery (one of `among`, if given) and open its attempt row.

    None when none is due and free. A delivery another worker holds (its lease, or its row
    lock) is never handed out, so two workers never both claim one. A delivery whose webhook
    a 410 disabled, or whose attempts are all used up (its workers kept dying mid-attempt, so
    no result ever scheduled the next one), fails here without a request, and the next due
    one is claimed instead. `now` pins the time for tests; workers leave it out, so the clock
    is read once the transaction holds its locks (SQLite's is taken by BEGIN IMMEDIATE).

    Which delivery may go is `delivery_statements.claimable`: it also waits behind an earlier
    one of its meeting to its URL, and for a free slot of its host (`max_in_flight` leases).
    SQLite's write lock makes the claim's count exact; on PostgreSQL two claims could count
    the same free slot, so a claim also takes a slot row of its host (`_host_slot_held`).
    """
    connection = session.connection()
    together = connection.dialect.name == "postgresql"
    statement: sa.Executable
    if together:
        statement = sql.CLAIM_AND_OPEN_ANY if among is None else sql.CLAIM_AND_OPEN_NAMED
    else:
        statement = sql.CLAIM_ANY if among is None else sql.CLAIM_NAMED
    # Only now, with SQLite's write lock held: waiting for it can take longer than the
    # lease, and a lease counted from before the wait would run out mid-attempt and let a
    # second worker send the same delivery at the same time.
    now = utcnow() if now is None else now
    bound = UNBOUNDED if max_in_flight is None else max_in_flight
    full_hosts: list[str] = []
    while True:
        params: dict[str, Any] = {
            "now": now,
            "lease": now + lease,
            "max_in_flight": bound,
            "skip_hosts": full_hosts,
        }
        if among is not None:
            params["among"] = list(among)
        row = connection.execute(statement, params).one_or_none()
        if row is None:
            return None
        opened = row.attempt_id if together else None
        bounded = together and row.destination_host and max_in_flight is not None
        if bounded and not _host_slot_held(
            session,
            row.destination_host,
            claimed_id=row.id,
            lease=row.locked_until,
            bound=bound,
            now=now,
        ):
            # Another claim took the host's last slot first: give this one back, skip the host.
            # (Our row locks stay until commit: the slot we did not get is not ours to wait on.)
            connection.execute(sql.DROP_ATTEMPT, {"opened": opened})
            connection.execute(sql.UNCLAIM, {"claimed_id": row.id})
            full_hosts.append(row.destination_host)
            continue
        if row.interrupted:
            # A previous claim whose lease ran out never recorded its result: its worker died.
            connection.execute(sql.MARK_INTERRUPTED, {"claimed_id": row.id, "opened": opened})
        disabled = row.webhook_disabled_at is not None
        if disabled or (max_attempts is not None and row.attempt_count > max_attempts):
            if opened is not None:
                # Not sent after all: a disabled webhook's attempt says so, no attempt left
                # makes no attempt.
                connection.execute(
                    sql.NOT_SENT if disabled else sql.DROP_ATTEMPT, {"opened": opened}
                )
            _fail_at_claim(session, row.id, note_disabled=disabled and opened is None, now=now)
            continue
        if opened is None:
            opened = connection.execute(
                sql.OPEN_ATTEMPT, {"claimed_id": row.id, "now": now}
            ).scalar_one()
        # A transient User, never added to the session: the rotation rule stays in one place.
        signer = User(
            signing_secret=row.secret,
            previous_signing_secret=row.previous_secret,
            previous_secret_valid_until=row.previous_valid_until,
        )
        return Claim(
            delivery_id=row.id,
            attempt_id=opened,
            lease=row.locked_until,
            message_id=row.message_id,
            callback_url=row.callback_url,
            body=row.body,
            secrets=tuple(accounts.active_signing_secrets(signer, now=now)),
            more_due=bool(row.more_due),
            destination_host=row.destination_host,
        )


def _host_slot_held(
    session: Session,
    host: str,
    *,
    claimed_id: int,
    lease: dt.datetime,
    bound: int,
    now: dt.datetime,
) -> bool:
    """PostgreSQL: take one of the host's slots for this lease; False when all are busy.

    The claim's own count (`claimable`) saw a snapshot: two claims could both have seen the
    last free slot. A slot row is taken SKIP LOCKED and stays busy while this lease holds, so
    of two such claims one finds no slot and gives its delivery back. A host seen for the
    first time gets its slots here.
    """
    connection = session.connection()
    params = {
        "slot_host": host,
        "max_in_flight": bound,
        "now": now,
        "claimed_id": claimed_id,
        "lease": lease,
    }
    if connection.execute(sql.TAKE_SLOT, params).first() is not None:
        return True
    slots = connection.scalar(sa.select(sa.func.count()).where(HostSlot.host == host)) or 0
    if slots >= bound:
        return False
    connection.execute(sql.add_slots(host, bound))
    return connection.execute(sql.TAKE_SLOT, params).first() is not None


def _fail_at_claim(
    session: Session, delivery_id: int, *, note_disabled: bool, now: dt.datetime
) -> None:
    """End a delivery the claim just leased without sending it: its webhook, or no attempt left.

    `note_disabled` adds the attempt row that says its webhook is disabled (PostgreSQL's
    claim turned its own attempt row into that one already).
    """
    delivery = session.get(Delivery, delivery_id, populate_existing=True)
    if delivery is None:
        return
    delivery.attempt_count -= 1  # the claim counted an attempt that is not made
    if note_disabled:
        # The receiver answered 410 to another delivery of this webhook: never call it again.
        session.add(
            DeliveryAttempt(delivery_id=delivery.id, attempted_at=now, error=WEBHOOK_DISABLED)
        )
    fail(session, delivery, now)
    session.flush()


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
    connection = session.connection()
    logged = {
        "attempt": claimed.attempt_id,
        "code": outcome.status_code,
        "latency": outcome.latency_ms,
        "failure": outcome.error,
        "answer": outcome.response_body,
    }
    if outcome.succeeded:
        now = utcnow() if now is None else now
        return _record_success(session, claimed, logged, now)
    connection.execute(sql.RECORD_ATTEMPT, logged)
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
    if outcome.status_code in RETRY_AFTER_STATUSES:
        hold_host(session, delivery.destination_host, now + delay, now)
    return Recorded(status="pending", next_attempt_at=delivery.next_attempt_at)


def hold_host(session: Session, host: str, until: dt.datetime, now: dt.datetime) -> None:
    """A 429 or 503: the host's other waiting deliveries wait until its retry is due too.

    Only that host's: every other receiver is served as before. Deliveries already in flight
    end as they end, and their own 429s push the wait further if the host says so. The sweep
    wakes them once they are due again.
    """
    if host:
        session.flush()
        session.connection().execute(sql.HOLD_HOST, {"host": host, "until": until, "now": now})


def _record_success(
    session: Session, claimed: Claim, logged: dict[str, Any], now: dt.datetime
) -> Recorded | None:
    """Mark the delivery succeeded if our lease still holds it, and tell the alert triggers.

    One UPDATE, fenced by the lease (the row lock it takes makes the check and the change
    one step). It also reads whether the user has a live `webhook.recovered` rule, so that
    `alert_triggers.attempt_succeeded` queries nothing for a user without one.
    """
    connection = session.connection()
    fenced = {"ended": claimed.delivery_id, "lease": claimed.lease, "now": now}
    if connection.dialect.name == "postgresql":
        ended = connection.execute(sql.SUCCEED_AND_LOG, {**fenced, **logged}).one_or_none()
    else:
        connection.execute(sql.RECORD_ATTEMPT, logged)
        ended = connection.execute(sql.SUCCEED, fenced).one_or_none()
    if ended is None:
        status = connection.scalar(
            sa.select(Delivery.status).where(Delivery.id == claimed.delivery_id)
        )
        # Gone (its user was deleted), or our lease ran out and another worker holds it.
        return None if status is None else Recorded(status=status, stale=True)
    columns = ended._asdict()
    following = columns.pop("next_in_line")
    if following is not None:
        # It may have waited for this one (ordered delivery): wake it now, not at the sweep.
        wakeups.note(session, task_names.DELIVER, delivery_id=following)
    alert_triggers.attempt_succeeded(session, alert_triggers.Succeeded(**columns), now)
    return Recorded(status="succeeded")


def fail(session: Session, delivery: Delivery, now: dt.datetime) -> None:
    """Move a delivery into `failed` for good; the one transition into that state.

    Its schedule is spent, a 410 ended it (or its webhook), or no attempt is left.
    """
    _complete(delivery, "failed", now)
    alert_triggers.delivery_failed(session, delivery, now)
    wake_next_in_line(session, delivery)


def wake_next_in_line(session: Session, delivery: Delivery) -> None:
    """Note a wake-up for the first pending callback of the meeting to this one's URL.

    Called once `delivery` is no longer pending: whatever waited for it (ordered delivery)
    may go now, without waiting for the sweep.
    """
    if delivery.event_id is None or delivery.meeting_id is None:
        return
    following = session.scalar(
        sa.select(Delivery.id)
        .where(
            Delivery.meeting_id == delivery.meeting_id,
            Delivery.callback_url == delivery.callback_url,
            Delivery.status == "pending",
            Delivery.event_id.is_not(None),
            Delivery.id != delivery.id,
        )
        .order_by(Delivery.meeting_sequence, Delivery.id)
        .limit(1)
    )
    if following is not None:
        wakeups.note(session, task_names.DELIVER, delivery_id=following)


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
