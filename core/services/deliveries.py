"""Outgoing callbacks: outbox rows, the signed HTTP attempt, retries and the delivery log.

One attempt is three steps, so that no database transaction stays open across the network:
`claim` (a short transaction: lease the delivery, open its attempt row), `send` (the HTTP POST,
no database), `record` (a short transaction: log the result, schedule the retry). The lease
(`locked_until`) keeps two workers from sending the same delivery at once; a worker that dies
mid-attempt leaves the lease to expire, and the sweep hands the delivery to another worker
with the same `webhook-id`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
import sqlalchemy as sa

from core import http_deadline, signing, ssrf
from core.db import utcnow
from core.errors import Conflict, NotFound, ValidationFailed
from core.models import Delivery, DeliveryAttempt, Event, Meeting, User, Webhook
from core.security import new_public_id
from core.services import accounts, backoff
from core.validation import isoformat

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.config import Settings

log = logging.getLogger(__name__)

RESPONSE_BODY_LIMIT = 4096
JITTER = 0.2
MAX_RETRY_AFTER = dt.timedelta(hours=24)
RETRY_AFTER_STATUSES = (429, 503)
IN_PROGRESS = "in-progress"
INTERRUPTED = "interrupted"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
MAX_CURSOR_LENGTH = 200
# Ids are 32-bit INTEGER columns: a larger id names no row, and PostgreSQL refuses to compare.
MAX_ROW_ID = 2**31 - 1
USER_AGENT = "meetinghooks-webhooks/1.0"

_jitter_source = random.SystemRandom()


# --- creating deliveries --------------------------------------------------------------------


def callback_body(event: Event, meeting: Meeting, webhook: Webhook) -> dict[str, Any]:
    """Return the callback payload of SPEC 6 for this event."""
    return {
        "id": event.public_id,
        "type": event.type,
        "timestamp": isoformat(event.occurred_at),
        "meetingId": meeting.id,
        "customCallbackData": webhook.custom_callback_data,
        "data": {
            "meetingId": meeting.id,
            "conferenceId": meeting.conference_id,
            "meetingName": meeting.meeting_name,
            "startedAt": isoformat(meeting.started_at),
            "endedAt": isoformat(meeting.ended_at),
            "durationSeconds": meeting.duration_seconds,
            "sequence": meeting.event_sequence,
        },
    }


def create_for_event(
    session: Session, event: Event, meeting: Meeting, *, now: dt.datetime
) -> list[int]:
    """Write one pending delivery per live webhook registered for the event's type.

    The body is the meeting as it stands now, at its current `event_sequence`: when a late
    event corrects what an event's callback said, the callback is made again, as a new row with
    a new `webhook-id` at the new sequence. The caller enqueues `workers.deliveries.deliver`
    for each id after commit, so the sweep counts them as woken (`last_enqueued_at`) and leaves
    them alone unless that message is lost.
    """
    hooks = session.scalars(
        sa.select(Webhook).where(
            Webhook.meeting_id == meeting.id,
            Webhook.event_type == event.type,
            Webhook.disabled_at.is_(None),
        )
    ).all()
    created = []
    for hook in hooks:
        delivery = Delivery(
            message_id=new_public_id("msg"),
            event_id=event.id,
            webhook_id=hook.id,
            user_id=meeting.user_id,
            meeting_id=meeting.id,
            event_type=event.type,
            meeting_sequence=meeting.event_sequence,
            callback_url=hook.callback_url,
            body=json.dumps(callback_body(event, meeting, hook), separators=(",", ":")),
            status="pending",
            next_attempt_at=now,
            last_enqueued_at=now,
        )
        session.add(delivery)
        session.flush()
        created.append(delivery.id)
    return created


# --- one attempt: claim, send, record --------------------------------------------------------


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
class Outcome:
    """What one HTTP attempt gave: status or error class, latency, the start of the body."""

    status_code: int | None
    latency_ms: int
    error: str | None
    response_body: str | None = None
    retry_after: dt.timedelta | None = None

    @property
    def succeeded(self) -> bool:
        """Tell whether the receiver answered 2xx within the timeout."""
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


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
            DeliveryAttempt(delivery_id=delivery.id, attempted_at=now, error="webhook-disabled")
        )
        _finish(delivery, "failed", now)
        return None
    if max_attempts is not None and delivery.attempt_count >= max_attempts:
        _finish(delivery, "failed", now)
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


def make_http_session(
    allowed_networks: Sequence[ssrf.IPNetwork] = (), *, pool_maxsize: int = 10
) -> requests.Session:
    """Return a pooled HTTP session whose every connection passes the SSRF guard.

    No proxies from the environment (a proxy would resolve names past the guard), no
    retries inside requests (retries are rows with `next_attempt_at`), no redirects.
    `pool_maxsize` is the idle connections kept per receiver, and as many receivers are
    kept: one thread each, when every thread of a pool that size calls a different one.
    """
    http = requests.Session()
    http.trust_env = False
    adapter = ssrf.GuardedAdapter(
        allowed_networks,
        pool_connections=max(10, pool_maxsize),
        pool_maxsize=pool_maxsize,
        max_retries=0,
    )
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    http.headers["User-Agent"] = USER_AGENT
    return http


def send(
    http: requests.Session, claimed: Claim, *, timeout: float, now: dt.datetime | None = None
) -> Outcome:
    """POST the signed callback once; never raises for anything the receiver or network does.

    `timeout` bounds the connect and each read, and the whole attempt (name lookup aside) is
    cut off after twice `timeout`, however slowly the receiver trickles its answer; the
    response body is read until RESPONSE_BODY_LIMIT bytes or that deadline.
    """
    timestamp = now or dt.datetime.now(dt.UTC)
    headers = signing.headers(claimed.secrets, claimed.message_id, timestamp, claimed.body)
    started = time.monotonic()
    with http_deadline.limit(2 * timeout) as deadline:
        try:
            response = http.post(
                claimed.callback_url,
                data=claimed.body.encode(),
                headers=headers,
                timeout=(timeout, timeout),
                allow_redirects=False,
                stream=True,
            )
        except (ssrf.CallbackUrlRefused, requests.RequestException) as exc:
            failure = "timeout" if deadline.expired else error_class(exc)
            return Outcome(status_code=None, latency_ms=_elapsed_ms(started), error=failure)
        except Exception:
            # Whatever went wrong must end as a recorded attempt, or the delivery would loop.
            log.exception("core.delivery.send_failed delivery=%s", claimed.delivery_id)
            return Outcome(
                status_code=None, latency_ms=_elapsed_ms(started), error="internal-error"
            )
        latency_ms = _elapsed_ms(started)
        try:
            body = _read_capped(response, deadline=deadline.expires_at)
        finally:
            response.close()
    status = response.status_code
    error = None if 200 <= status < 300 else _status_error(status)
    if error is None and latency_ms > timeout * 1000:
        # SPEC 6: success is a 2xx *within* the timeout. Connect and read timeouts each
        # bound one step; a status line that came later than the whole budget still fails.
        error = "timeout"
    return Outcome(
        status_code=status,
        latency_ms=latency_ms,
        error=error,
        response_body=body.decode("utf-8", errors="replace"),
        retry_after=parse_retry_after(response.headers.get("Retry-After"), now=timestamp),
    )


# Most specific first: requests' ConnectTimeout is both a Timeout and a ConnectionError.
_ERROR_CLASSES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (ssrf.ForbiddenAddress, "ssrf-refused"),
    (ssrf.Unresolvable, "dns-error"),
    ((ssrf.CallbackUrlRefused, requests.exceptions.InvalidURL), "invalid-url"),
    (requests.Timeout, "timeout"),
    (requests.exceptions.SSLError, "tls-error"),
    (requests.ConnectionError, "connection-error"),
)


def error_class(exc: BaseException) -> str:
    """Return the stable error class the delivery log shows for a failed request."""
    for types, name in _ERROR_CLASSES:
        if isinstance(exc, types):
            return name
    return "request-error"


def _status_error(status: int) -> str:
    return "redirect" if 300 <= status < 400 else f"http-{status}"


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _read_capped(response: requests.Response, *, deadline: float) -> bytes:
    # Read a little past the limit so that a fully read body lets the connection go back to
    # the pool; stop early on a huge or dribbling body, which closes the connection instead.
    body = b""
    try:
        for chunk in response.iter_content(chunk_size=1024):
            body += chunk
            if len(body) > RESPONSE_BODY_LIMIT or time.monotonic() > deadline:
                break
    except requests.RequestException:
        pass  # the status line already decided the outcome; keep what arrived
    return body[:RESPONSE_BODY_LIMIT]


def parse_retry_after(value: str | None, *, now: dt.datetime) -> dt.timedelta | None:
    """Parse Retry-After (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # Anything longer than nine digits is beyond every bound we honour; int() and
        # timedelta() would refuse (or overflow on) a receiver's absurd value.
        return MAX_RETRY_AFTER if len(value) > 9 else dt.timedelta(seconds=int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(when - now, dt.timedelta(0))


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


@dataclass(frozen=True)
class Recorded:
    """What recording an attempt decided."""

    status: str
    next_attempt_at: dt.datetime | None = None
    webhook_disabled: bool = False
    stale: bool = False


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
        _finish(delivery, "succeeded", now)
        return Recorded(status="succeeded")
    if outcome.status_code == 410:
        disabled = _disable_webhook(session, delivery, now)
        _finish(delivery, "failed", now)
        return Recorded(status="failed", webhook_disabled=disabled)
    delay = retry_delay(
        schedule,
        delivery.attempt_count,
        status_code=outcome.status_code,
        retry_after=outcome.retry_after,
        rng=rng,
    )
    if delay is None:
        _finish(delivery, "failed", now)
        return Recorded(status="failed")
    delivery.next_attempt_at = now + delay
    # Newly due later: its first wake-up then goes at once, and the back-off starts over.
    delivery.enqueue_count = 0
    return Recorded(status="pending", next_attempt_at=delivery.next_attempt_at)


def _finish(delivery: Delivery, status: str, now: dt.datetime) -> None:
    delivery.status = status
    delivery.completed_at = now
    delivery.next_attempt_at = None
    delivery.locked_until = None


def _disable_webhook(session: Session, delivery: Delivery, now: dt.datetime) -> bool:
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
    # Its other deliveries waiting for a retry stop now; a leased one stops at its record.
    session.execute(
        sa.update(Delivery)
        .where(
            Delivery.webhook_id == webhook.id,
            Delivery.id != delivery.id,
            Delivery.status == "pending",
            sa.or_(Delivery.locked_until.is_(None), Delivery.locked_until <= now),
        )
        .values(status="failed", completed_at=now, next_attempt_at=None)
    )
    return True


# --- the sweep ---------------------------------------------------------------------------------

# However often a delivery's wake-up was re-sent, the sweep re-sends it at least this often
# (once a lease, when the lease is longer), as the inbox sweep does: a lost wake-up is never
# noticed more than this late.
MAX_RESEND_WAIT = dt.timedelta(minutes=5)


def due_ids(
    session: Session,
    now: dt.datetime,
    limit: int = 500,
    *,
    resend_after: dt.timedelta | None = None,
) -> list[int]:
    """Return pending deliveries that are due, not leased, and need a wake-up message.

    A delivery needs one when no message was sent since it became due, or (with
    `resend_after`) when the last one went out that long ago and nothing came of it: the
    message was lost, or its worker died and the lease has run out. Each re-send doubles
    the wait before the next (`enqueue_count`, up to MAX_RESEND_WAIT), so a delivery that
    only waits in a long queue backlog is not copied into it again every lease.
    """
    woken = Delivery.last_enqueued_at
    needs_wakeup = sa.or_(woken.is_(None), woken < Delivery.next_attempt_at)
    if resend_after is not None:
        resend = backoff.resend_due(
            Delivery.enqueue_count, woken, now=now, first=resend_after, cap=MAX_RESEND_WAIT
        )
        needs_wakeup = sa.or_(needs_wakeup, resend)
    return list(
        session.scalars(
            sa.select(Delivery.id)
            .where(
                Delivery.status == "pending",
                Delivery.next_attempt_at <= now,
                sa.or_(Delivery.locked_until.is_(None), Delivery.locked_until <= now),
                needs_wakeup,
            )
            .order_by(Delivery.next_attempt_at, Delivery.id)
            .limit(limit)
        )
    )


def mark_enqueued(session: Session, ids: Sequence[int], now: dt.datetime) -> None:
    """Remember that a wake-up message was sent for these deliveries, and count re-sends.

    The first wake-up since a delivery became due is not a re-send: it leaves the count at 0,
    so the first re-send waits `resend_after`, whoever sent that first wake-up.
    """
    if ids:
        woken = Delivery.last_enqueued_at
        resent = sa.and_(woken.is_not(None), woken >= Delivery.next_attempt_at)
        session.execute(
            sa.update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(
                last_enqueued_at=now,
                enqueue_count=sa.case((resent, Delivery.enqueue_count + 1), else_=0),
            )
        )


# --- the delivery log API ------------------------------------------------------------------


def _encode_cursor(delivery_id: int) -> str:
    raw = json.dumps({"before": delivery_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError(cursor)
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        before = data["before"]
    except (ValueError, TypeError, KeyError, binascii.Error):
        before = None
    if not isinstance(before, int) or isinstance(before, bool) or not 1 <= before <= MAX_ROW_ID:
        raise ValidationFailed(
            "cursor is not one this API returned",
            code="invalid-cursor",
            errors=[{"field": "cursor", "message": "invalid cursor"}],
        )
    return before


def list_deliveries(
    session: Session,
    user_id: int,
    *,
    meeting_id: int | None = None,
    status: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Return one page of the user's deliveries, newest first, and the next page's cursor."""
    if meeting_id is not None:
        owner = (
            session.scalar(sa.select(Meeting.user_id).where(Meeting.id == meeting_id))
            if 1 <= meeting_id <= MAX_ROW_ID
            else None
        )
        if owner != user_id:
            raise NotFound(f"meeting {meeting_id} not found", code="meeting-not-found")
    query = sa.select(Delivery).where(Delivery.user_id == user_id)
    if meeting_id is not None:
        query = query.where(Delivery.meeting_id == meeting_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    if cursor:
        query = query.where(Delivery.id < _decode_cursor(cursor))
    rows = list(session.scalars(query.order_by(Delivery.id.desc()).limit(limit + 1)))
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1].id) if len(rows) > limit else None
    return serialize(session, page), next_cursor


def get_delivery(session: Session, user_id: int, delivery_id: int) -> Delivery:
    """Return the user's delivery; another user's is NotFound."""
    delivery = session.get(Delivery, delivery_id) if 1 <= delivery_id <= MAX_ROW_ID else None
    if delivery is None or delivery.user_id != user_id:
        raise NotFound(f"delivery {delivery_id} not found", code="delivery-not-found")
    return delivery


def redeliver(
    session: Session,
    user_id: int,
    delivery_id: int,
    *,
    now: dt.datetime | None = None,
    max_attempts: int | None = None,
) -> Delivery:
    """Make a delivery due at once with the same `webhook-id`; the caller enqueues it.

    A pending delivery just skips the rest of its wait. A succeeded or failed one starts a
    new round: one attempt now, and the full retry schedule if that fails. So does a
    pending one with no attempt left (its last worker died), which `claim` would otherwise
    fail without sending. Leave `now` out (tests pin it): the clock is read once the row
    is locked, so a lease that ran out while we waited for the lock is seen as ended.
    """
    delivery = get_delivery(session, user_id, delivery_id)
    session.refresh(delivery, with_for_update=True)
    now = utcnow() if now is None else now
    if delivery.locked_until is not None and delivery.locked_until > now:
        raise Conflict(
            "an attempt of this delivery is in progress; try again in a moment",
            code="delivery-in-progress",
        )
    webhook = session.get(Webhook, delivery.webhook_id) if delivery.webhook_id else None
    if webhook is not None and webhook.disabled_at is not None:
        raise Conflict(
            "the callback answered 410 Gone and its webhook is disabled; register it again",
            code="webhook-disabled",
        )
    if delivery.status != "pending" or (
        max_attempts is not None and delivery.attempt_count >= max_attempts
    ):
        delivery.attempt_count = 0
    delivery.status = "pending"
    delivery.next_attempt_at = now
    delivery.completed_at = None
    delivery.locked_until = None
    delivery.last_enqueued_at = now
    delivery.enqueue_count = 0
    return delivery


def serialize(session: Session, deliveries: Sequence[Delivery]) -> list[dict[str, Any]]:
    """Render deliveries as SPEC 6 lists them, attempts oldest first."""
    if not deliveries:
        return []
    ids = [d.id for d in deliveries]
    event_ids: dict[int, str] = {
        row.id: row.public_id
        for row in session.execute(
            sa.select(Event.id, Event.public_id).where(
                Event.id.in_({d.event_id for d in deliveries})
            )
        )
    }
    attempts: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for attempt in session.scalars(
        sa.select(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id.in_(ids))
        .order_by(DeliveryAttempt.attempted_at, DeliveryAttempt.id)
    ):
        attempts[attempt.delivery_id].append(
            {
                "at": isoformat(attempt.attempted_at),
                "statusCode": attempt.status_code,
                "latencyMs": attempt.latency_ms,
                "error": attempt.error,
                "responseBody": attempt.response_body,
            }
        )
    return [
        {
            "id": d.id,
            "webhookId": d.message_id,
            "eventId": event_ids.get(d.event_id),
            "eventType": d.event_type,
            "meetingId": d.meeting_id,
            "callbackUrl": d.callback_url,
            "status": d.status,
            "createdAt": isoformat(d.created_at),
            "nextAttemptAt": isoformat(d.next_attempt_at),
            "completedAt": isoformat(d.completed_at),
            "attempts": attempts[d.id],
        }
        for d in deliveries
    ]
