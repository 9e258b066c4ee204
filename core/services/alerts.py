"""Alert rules, firing an alert once per condition, the time-based sweep and the alert list.

An alert is one row per (rule, subject): INSERT ... ON CONFLICT DO NOTHING on that unique key
makes a condition fire once however many sweeps, retries or concurrent workers see it. A new
alert row gets its delivery in the same transaction, through the same outbox as callbacks
(signed, retried, leased, logged), so a rolled-back change fires nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from core import metrics
from core.db import insert_unless_present, utcnow
from core.errors import NotFound
from core.models import Alert, AlertRule, AlertType, Delivery, Meeting, PresenterLink
from core.pagination import DEFAULT_PAGE_SIZE, MAX_ROW_ID, Page, newest_first
from core.security import new_public_id
from core.services import outbox
from core.validation import isoformat

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.orm import Session

# The no_start watermark moves on at most this often: a sweep every few seconds then writes
# the rule once a minute, and re-reads at most a minute of expired links (fired ones are
# skipped by the alerts' unique key).
WATERMARK_STEP = dt.timedelta(minutes=1)


# --- rules ------------------------------------------------------------------------------------


def create_rule(
    session: Session,
    user_id: int,
    *,
    type: AlertType,
    params: dict[str, Any],
    callback_url: str,
    now: dt.datetime | None = None,
) -> AlertRule:
    """Store a validated rule; it watches from now on."""
    now = now or utcnow()
    rule = AlertRule(
        user_id=user_id,
        type=str(type),
        params=params,
        callback_url=callback_url,
        created_at=now,
        # `meeting.no_start` looks at links that expire from now on, not at the history.
        swept_until=now,
    )
    session.add(rule)
    session.flush()
    return rule


def list_rules(session: Session, user_id: int) -> list[AlertRule]:
    """Return the user's live rules, oldest first."""
    return list(
        session.scalars(
            sa.select(AlertRule)
            .where(AlertRule.user_id == user_id, AlertRule.deleted_at.is_(None))
            .order_by(AlertRule.id)
        )
    )


def get_rule(session: Session, user_id: int, rule_id: int) -> AlertRule:
    """Return the user's live rule; another user's, a deleted or an unknown one is NotFound."""
    rule = session.get(AlertRule, rule_id) if 1 <= rule_id <= MAX_ROW_ID else None
    if rule is None or rule.user_id != user_id or rule.deleted_at is not None:
        raise NotFound(f"alert rule {rule_id} not found", code="alert-rule-not-found")
    return rule


def delete_rule(
    session: Session, user_id: int, rule_id: int, *, now: dt.datetime | None = None
) -> None:
    """Stop a rule firing; the alerts it fired stay listed, and their deliveries go on."""
    rule = get_rule(session, user_id, rule_id)
    rule.deleted_at = now or utcnow()


def live_rules(session: Session, user_id: int, rule_type: AlertType) -> list[AlertRule]:
    """Return the user's live rules of one type (ix_alert_rules_user_type)."""
    return list(
        session.scalars(
            sa.select(AlertRule)
            .where(
                AlertRule.user_id == user_id,
                AlertRule.type == str(rule_type),
                AlertRule.deleted_at.is_(None),
            )
            .order_by(AlertRule.id)
        )
    )


# --- firing -----------------------------------------------------------------------------------


def alert_body(alert: Alert) -> dict[str, Any]:
    """Return the signed POST an alert sends: a callback's conventions plus a human `text`."""
    return {
        "id": alert.public_id,
        "type": f"alert.{alert.type}",
        "timestamp": isoformat(alert.fired_at),
        "text": alert.text,
        "data": alert.data,
    }


def fire(
    session: Session,
    rule: AlertRule,
    *,
    subject_key: str,
    text: str,
    data: dict[str, Any],
    now: dt.datetime,
    meeting_id: int | None = None,
    about_delivery_id: int | None = None,
) -> Alert | None:
    """Record the alert and write its delivery; None if this rule already fired for the subject.

    INSERT ... ON CONFLICT DO NOTHING on (rule_id, subject_key): a second sweep, a retried
    attempt or a concurrent worker that sees the same condition inserts nothing, on both
    databases, without catching IntegrityError mid-transaction.
    """
    values = {
        "public_id": new_public_id("alrt"),
        "rule_id": rule.id,
        "user_id": rule.user_id,
        "type": rule.type,
        "subject_key": subject_key,
        "meeting_id": meeting_id,
        "about_delivery_id": about_delivery_id,
        "text": text,
        "data": {"ruleId": rule.id, **data},
        "fired_at": now,
    }
    new_id = insert_unless_present(session, Alert, values, unique=["rule_id", "subject_key"])
    if new_id is None:
        return None
    alert = session.get(Alert, new_id)
    assert alert is not None  # noqa: S101  (just inserted)
    outbox.create_for_alert(session, alert, rule, alert_body(alert), now=now)
    metrics.alert_fired(session, rule.type)
    return alert


def fire_for_meeting(
    session: Session,
    rule: AlertRule,
    meeting: Meeting,
    *,
    text: str,
    data: dict[str, Any],
    now: dt.datetime,
) -> Alert | None:
    """Fire a rule about a meeting: once per (rule, meeting)."""
    return fire(
        session,
        rule,
        subject_key=f"meeting:{meeting.id}",
        text=text,
        data={**meeting_data(meeting), **data},
        now=now,
        meeting_id=meeting.id,
    )


# --- describing what fired --------------------------------------------------------------------


def meeting_data(meeting: Meeting) -> dict[str, Any]:
    """Name the meeting an alert is about, with the values its callbacks carry."""
    return {
        "meetingId": meeting.id,
        "conferenceId": meeting.conference_id,
        "meetingName": meeting.meeting_name,
        "status": meeting.status,
        "startedAt": isoformat(meeting.started_at),
        "endedAt": isoformat(meeting.ended_at),
        "durationSeconds": meeting.duration_seconds,
    }


def meeting_label(meeting: Meeting, *, start: bool = False) -> str:
    """Return how a sentence names a meeting: `meeting 1234 ("Weekly sync")`."""
    name = meeting.meeting_name
    quoted = f" ({json.dumps(name, ensure_ascii=False)})" if name else ""
    return f"{'Meeting' if start else 'meeting'} {meeting.id}{quoted}"


def span(seconds: float) -> str:
    """Return a duration the way a person says it: `45 s`, `12 min`, `2 h 5 min`, `3 d 4 h`."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


# --- time-based rules: the sweep --------------------------------------------------------------


def sweep(session: Session, *, now: dt.datetime | None = None) -> int:
    """Fire the time-based rules whose condition holds at `now`; return how many fired.

    `meeting.long_running`: started (by event time) and not ended `minutes` ago or more.
    `meeting.no_start`: the meeting's last presenter link expired unused and it never started.
    """
    now = now or utcnow()
    rules = session.scalars(
        sa.select(AlertRule)
        .where(
            AlertRule.type.in_([AlertType.MEETING_LONG_RUNNING, AlertType.MEETING_NO_START]),
            AlertRule.deleted_at.is_(None),
        )
        .order_by(AlertRule.id)
    ).all()
    fired = 0
    for rule in rules:
        if rule.type == AlertType.MEETING_LONG_RUNNING:
            fired += _sweep_long_running(session, rule, now)
        else:
            fired += _sweep_no_start(session, rule, now)
    return fired


def _not_fired(rule: AlertRule) -> sa.ColumnElement[bool]:
    return ~sa.exists().where(Alert.rule_id == rule.id, Alert.meeting_id == Meeting.id)


def _sweep_long_running(session: Session, rule: AlertRule, now: dt.datetime) -> int:
    minutes = int(rule.params["minutes"])
    cutoff = now - dt.timedelta(minutes=minutes)
    # ix_meetings_user_status_started: the user's running meetings, by start time.
    running = session.scalars(
        sa.select(Meeting)
        .where(
            Meeting.user_id == rule.user_id,
            Meeting.status == "started",
            Meeting.started_at <= cutoff,
            Meeting.deleted_at.is_(None),
            _not_fired(rule),
        )
        .order_by(Meeting.started_at, Meeting.id)
    ).all()
    fired = 0
    for meeting in running:
        assert meeting.started_at is not None  # noqa: S101  (the query asked for it)
        text = (
            f"{meeting_label(meeting, start=True)} has been running for "
            f"{span((now - meeting.started_at).total_seconds())} "
            f"(started {isoformat(meeting.started_at)}), longer than {minutes} minutes."
        )
        data = {"minutes": minutes}
        alert = fire_for_meeting(session, rule, meeting, text=text, data=data, now=now)
        fired += alert is not None
    return fired


def _sweep_no_start(session: Session, rule: AlertRule, now: dt.datetime) -> int:
    # Only links that expired since the last sweep (ix_presenter_links_expires_at): each
    # meeting's last link passes through that window once, and history is never re-read.
    since = rule.swept_until or rule.created_at
    later = aliased(PresenterLink)
    still_usable = sa.exists().where(later.meeting_id == Meeting.id, later.expires_at > now)
    expired = session.execute(
        sa.select(Meeting, sa.func.max(PresenterLink.expires_at))
        .join(PresenterLink, PresenterLink.meeting_id == Meeting.id)
        .where(
            PresenterLink.expires_at > since,
            PresenterLink.expires_at <= now,
            PresenterLink.used_at.is_(None),
            Meeting.user_id == rule.user_id,
            Meeting.status == "scheduled",
            Meeting.deleted_at.is_(None),
            ~still_usable,
            _not_fired(rule),
        )
        .group_by(Meeting.id)
        .order_by(Meeting.id)
    ).all()
    fired = 0
    for meeting, expired_at in expired:
        text = (
            f"{meeting_label(meeting, start=True)} never started: its presenter link "
            f"expired unused at {isoformat(expired_at)}."
        )
        data = {"presenterLinkExpiredAt": isoformat(expired_at)}
        alert = fire_for_meeting(session, rule, meeting, text=text, data=data, now=now)
        fired += alert is not None
    if now - since >= WATERMARK_STEP:
        rule.swept_until = now
    return fired


# --- the alert list ---------------------------------------------------------------------------


def list_alerts(
    session: Session,
    user_id: int,
    *,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> Page[tuple[Alert, Delivery | None]]:
    """Return one page of the user's alerts, newest first, each with its own delivery."""
    page = newest_first(
        session,
        sa.select(Alert).where(Alert.user_id == user_id),
        Alert.id,
        limit=limit,
        cursor=cursor,
    )
    return Page(
        items=list(zip(page.items, _deliveries_of(session, page.items), strict=True)),
        next_cursor=page.next_cursor,
    )


def _deliveries_of(session: Session, alerts: Sequence[Alert]) -> list[Delivery | None]:
    if not alerts:
        return []
    by_alert = {
        d.alert_id: d
        for d in session.scalars(
            sa.select(Delivery).where(Delivery.alert_id.in_([a.id for a in alerts]))
        )
    }
    return [by_alert.get(a.id) for a in alerts]
