"""Where state changes meet the alert rules that watch them (SPEC 7).

Each function is called in the transaction that makes the change, so an alert is recorded
exactly when its condition becomes true, and rolled back with it. Only callbacks count for the
delivery rules (a delivery whose subject is an event): never an alert's own delivery, or an
alert URL that fails would alert about itself for ever.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa

from core.models import AlertRule, AlertType, Delivery, DeliveryAttempt, Event, Meeting, Webhook
from core.services import alerts
from core.validation import isoformat

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# Attempts whose result nobody knows: they neither count as failures nor end a streak.
UNKNOWN_RESULTS = ("in-progress", "interrupted")
# How far back a streak is counted; longer streaks are reported as this many.
STREAK_LOOKBACK = 1000


def delivery_failed(session: Session, delivery: Delivery, now: dt.datetime) -> None:
    """A delivery's schedule is spent (or a 410 ended it): `delivery.failed`."""
    if not _is_callback(delivery):
        return
    rules = alerts.live_rules(session, delivery.user_id, AlertType.DELIVERY_FAILED)
    if not rules:
        return
    last = _last_known_attempt(session, delivery)
    data = _delivery_data(session, delivery, last)
    if last is not None and last.status_code == 410:
        why = "the receiver answered 410 Gone"
    elif last is not None and last.error == "webhook-disabled":
        why = "its webhook was disabled by an earlier 410 Gone"
    else:
        plural = "s" if delivery.attempt_count != 1 else ""
        why = f"after {delivery.attempt_count} attempt{plural}{_last_error(last)}"
    text = f"{_callback_label(session, delivery, start=True)} failed for good: {why}."
    for rule in rules:
        _fire_for_delivery(session, rule, delivery, text=text, data=data, now=now)


def attempt_failed(session: Session, delivery: Delivery, now: dt.datetime) -> None:
    """An attempt failed and a retry is scheduled: `delivery.failing` counts the streak."""
    if not _is_callback(delivery):
        return
    rules = alerts.live_rules(session, delivery.user_id, AlertType.DELIVERY_FAILING)
    if not rules:
        return
    streak, last = _failing_streak(
        session, sa.select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery.id)
    )
    data = {
        **_delivery_data(session, delivery, last),
        "failedAttempts": streak,
        "nextAttemptAt": isoformat(delivery.next_attempt_at),
    }
    retry = (
        f"; next retry at {isoformat(delivery.next_attempt_at)}" if delivery.next_attempt_at else ""
    )
    text = (
        f"{_callback_label(session, delivery, start=True)} has failed {streak} attempts in a "
        f"row{_last_error(last)}{retry}."
    )
    for rule in rules:
        if streak >= int(rule.params["attempts"]):
            attempts = {**data, "attempts": int(rule.params["attempts"])}
            _fire_for_delivery(session, rule, delivery, text=text, data=attempts, now=now)


@dataclass(frozen=True)
class Succeeded:
    """A delivery the success path just ended, as its UPDATE returned it (`success_columns`)."""

    id: int
    user_id: int
    event_id: int | None
    alert_id: int | None
    webhook_id: int | None
    # `watches_recoveries`, read by that same statement: could a rule fire at all? (Only
    # columns come back: SQLite 3.40 answers `col IS NULL` wrongly inside RETURNING.)
    watched: bool


def success_columns(deliveries: sa.Table) -> list[sa.ColumnElement[Any]]:
    """Return what an UPDATE of `deliveries` must RETURN to build a `Succeeded`."""
    c = deliveries.c
    return [
        c.id,
        c.user_id,
        c.event_id,
        c.alert_id,
        c.webhook_id,
        watches_recoveries(deliveries).label("watched"),
    ]


def attempt_succeeded(session: Session, delivery: Succeeded, now: dt.datetime) -> None:
    """An attempt succeeded: `webhook.recovered` when it ends a failing streak.

    The streak is the webhook's (one meeting's callback for one event type, the registration
    that a 410 disables): the attempts made to it before this success, across its
    deliveries, newest first, up to the last success. One failed attempt is a streak.
    Unless `delivery.watched`, no rule can fire, and nothing is queried.
    """
    if not delivery.watched or not _is_callback(delivery) or delivery.webhook_id is None:
        return
    rules = alerts.live_rules(session, delivery.user_id, AlertType.WEBHOOK_RECOVERED)
    if not rules:
        return
    success_id = session.scalar(
        sa.select(sa.func.max(DeliveryAttempt.id)).where(
            DeliveryAttempt.delivery_id == delivery.id, DeliveryAttempt.error.is_(None)
        )
    )
    if success_id is None:
        return
    streak, last = _failing_streak(
        session,
        sa.select(DeliveryAttempt)
        .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
        .where(Delivery.webhook_id == delivery.webhook_id, DeliveryAttempt.id < success_id),
    )
    if streak == 0 or last is None:
        return
    webhook = session.get(Webhook, delivery.webhook_id)
    if webhook is None:
        return
    plural = "s" if streak != 1 else ""
    text = (
        f"{_webhook_label(session, webhook, start=True)} is receiving callbacks again after "
        f"{streak} failed attempt{plural} (last failure {isoformat(last.attempted_at)}"
        f"{_last_error(last, lead=': ')})."
    )
    data = {
        **_webhook_data(session, webhook),
        "deliveryId": delivery.id,
        "failedAttempts": streak,
        "lastFailureAt": isoformat(last.attempted_at),
        "recoveredAt": isoformat(now),
    }
    for rule in rules:
        alerts.fire(
            session,
            rule,
            # The failed attempt that ended the streak: once per streak, whichever success
            # (of whichever of the webhook's deliveries) comes first after it.
            subject_key=f"webhook:{webhook.id}:after:{last.id}",
            text=text,
            data=data,
            now=now,
            meeting_id=webhook.meeting_id,
            about_delivery_id=delivery.id,
        )


def watches_recoveries(deliveries: sa.Table) -> sa.ColumnElement[bool]:
    """Say in SQL whether the user of a row of `deliveries` has a live `webhook.recovered` rule.

    The rules `alerts.live_rules` returns. The success path folds this into its UPDATE, so a
    success of a user without such a rule costs no query; a rule committed before that
    statement is seen by it, as by the query it replaces (same transaction, same snapshot).
    """
    rules = cast("sa.Table", AlertRule.__table__)
    # Spelled out as `deliveries.user_id`: inside RETURNING, SQLAlchemy's SQLite compiler
    # drops table names, and a bare `user_id` would be the rule's own.
    owner: sa.ColumnElement[int] = sa.literal_column(f"{deliveries.name}.user_id")
    return sa.exists().where(
        rules.c.user_id == owner,
        rules.c.type == str(AlertType.WEBHOOK_RECOVERED),
        rules.c.deleted_at.is_(None),
    )


def webhook_disabled(session: Session, webhook: Webhook, now: dt.datetime) -> None:
    """A receiver answered 410 and its webhook is disabled: `webhook.disabled`."""
    rules = alerts.live_rules(session, webhook.user_id, AlertType.WEBHOOK_DISABLED)
    if not rules:
        return
    text = (
        f"{_webhook_label(session, webhook, start=True)} is disabled: the receiver answered "
        "410 Gone. No callback goes there until it is registered again."
    )
    data = {
        **_webhook_data(session, webhook),
        "disabledAt": isoformat(webhook.disabled_at or now),
        "reason": webhook.disabled_reason,
    }
    for rule in rules:
        alerts.fire(
            session,
            rule,
            # Per registration: a callback registered again (new webhookId) and disabled
            # again is a new condition.
            subject_key=f"webhook:{webhook.id}:{webhook.public_id}",
            text=text,
            data=data,
            now=now,
            meeting_id=webhook.meeting_id,
        )


def meeting_ended(session: Session, meeting: Meeting, now: dt.datetime) -> None:
    """A meeting ended (or its end moved): `meeting.short`."""
    duration = meeting.duration_seconds
    if meeting.status != "ended" or duration is None or meeting.deleted_at is not None:
        return
    for rule in alerts.live_rules(session, meeting.user_id, AlertType.MEETING_SHORT):
        seconds = int(rule.params["seconds"])
        if duration >= seconds:
            continue
        text = (
            f"{alerts.meeting_label(meeting, start=True)} ended after only "
            f"{alerts.span(duration)} (started {isoformat(meeting.started_at)}), under the "
            f"{seconds} seconds of your rule."
        )
        alerts.fire_for_meeting(
            session, rule, meeting, text=text, data={"seconds": seconds}, now=now
        )


# --- helpers ----------------------------------------------------------------------------------


def _is_callback(delivery: Delivery | Succeeded) -> bool:
    return delivery.alert_id is None and delivery.event_id is not None


def _fire_for_delivery(
    session: Session,
    rule: AlertRule,
    delivery: Delivery,
    *,
    text: str,
    data: dict[str, Any],
    now: dt.datetime,
) -> None:
    # Once per (rule, delivery): a retried attempt or a second failure fires nothing new.
    alerts.fire(
        session,
        rule,
        subject_key=f"delivery:{delivery.id}",
        text=text,
        data=data,
        now=now,
        meeting_id=delivery.meeting_id,
        about_delivery_id=delivery.id,
    )


def _failing_streak(
    session: Session, attempts: sa.Select[DeliveryAttempt]
) -> tuple[int, DeliveryAttempt | None]:
    """Count the failed attempts before the last success, newest first; return the newest."""
    known = attempts.where(
        sa.or_(DeliveryAttempt.error.is_(None), DeliveryAttempt.error.not_in(UNKNOWN_RESULTS))
    )
    streak = 0
    newest: DeliveryAttempt | None = None
    for attempt in session.scalars(
        known.order_by(DeliveryAttempt.id.desc()).limit(STREAK_LOOKBACK)
    ):
        if attempt.error is None:
            break
        newest = newest or attempt
        streak += 1
    return streak, newest


def _last_known_attempt(session: Session, delivery: Delivery) -> DeliveryAttempt | None:
    return session.scalar(
        sa.select(DeliveryAttempt)
        .where(
            DeliveryAttempt.delivery_id == delivery.id,
            sa.or_(DeliveryAttempt.error.is_(None), DeliveryAttempt.error != "in-progress"),
        )
        .order_by(DeliveryAttempt.id.desc())
        .limit(1)
    )


def _last_error(attempt: DeliveryAttempt | None, *, lead: str = " (last: ") -> str:
    if attempt is None or attempt.error is None:
        return ""
    close = ")" if lead.startswith(" (") else ""
    return f"{lead}{attempt.error}{close}"


def _delivery_data(
    session: Session, delivery: Delivery, last: DeliveryAttempt | None
) -> dict[str, Any]:
    # The delivery log's names (GET /v1/webhooks/deliveries/{deliveryId}): `webhookId` is the
    # `webhook-id` header the receiver saw.
    event_id = session.scalar(sa.select(Event.public_id).where(Event.id == delivery.event_id))
    return {
        "meetingId": delivery.meeting_id,
        "deliveryId": delivery.id,
        "webhookId": delivery.message_id,
        "eventId": event_id,
        "eventType": delivery.event_type,
        "callbackUrl": delivery.callback_url,
        "status": delivery.status,
        "attemptCount": delivery.attempt_count,
        "lastError": last.error if last is not None else None,
        "lastStatusCode": last.status_code if last is not None else None,
        "lastAttemptAt": isoformat(last.attempted_at) if last is not None else None,
    }


def _webhook_data(session: Session, webhook: Webhook) -> dict[str, Any]:
    # The registration's names (webhooksStatus of the start call): `webhookId` is `wh_...`.
    return {
        "meetingId": webhook.meeting_id,
        "webhookId": webhook.public_id,
        "eventType": webhook.event_type,
        "callbackUrl": webhook.callback_url,
    }


def _callback_label(session: Session, delivery: Delivery, *, start: bool = False) -> str:
    meeting = session.get(Meeting, delivery.meeting_id) if delivery.meeting_id else None
    of = f" of {alerts.meeting_label(meeting)}" if meeting is not None else ""
    return (
        f"{'The' if start else 'the'} {delivery.event_type} callback{of} to {delivery.callback_url}"
    )


def _webhook_label(session: Session, webhook: Webhook, *, start: bool = False) -> str:
    meeting = session.get(Meeting, webhook.meeting_id)
    of = f" of {alerts.meeting_label(meeting)}" if meeting is not None else ""
    return f"{'The' if start else 'the'} {webhook.event_type} webhook{of} ({webhook.callback_url})"
