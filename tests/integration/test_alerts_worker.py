"""Alerts through a real worker and beat: the sweep and event processing fire, the outbox sends."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook as StandardWebhook

from core.models import Alert, AlertType, Delivery, Meeting
from core.services import accounts, alerts, events
from tests.callback_receiver import CallbackReceiver
from tests.deliveries_helpers import make_meeting_with_hooks
from tests.integration.conftest import Worker, count, wait_until
from tests.platform_events import post_event

pytestmark = pytest.mark.integration


def succeeded(engine: Engine) -> int:
    return count(
        engine,
        sa.select(sa.func.count()).select_from(Delivery).where(Delivery.status == "succeeded"),
    )


def test_time_and_event_rules_fire_once_and_arrive_signed(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    worker: Worker,
    receiver: CallbackReceiver,
) -> None:
    url = receiver.url("/alerts")
    with it_sessions.begin() as session:
        user, _ = accounts.create_user(session, email="oncall@example.com", full_name="On Call")
        user_id, secret = user.id, user.signing_secret
        alerts.create_rule(
            session,
            user_id,
            type=AlertType.MEETING_LONG_RUNNING,
            params={"minutes": 60},
            callback_url=url,
        )
        alerts.create_rule(
            session, user_id, type=AlertType.MEETING_SHORT, params={"seconds": 60}, callback_url=url
        )
    long_running = make_meeting_with_hooks(it_sessions, user_id, {})
    with it_sessions.begin() as session:
        meeting = session.get(Meeting, long_running)
        assert meeting is not None
        two_hours_ago = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
        events.emit_internal(
            session, meeting, "meeting.start", source="api", occurred_at=two_hours_ago
        )
    short = make_meeting_with_hooks(it_sessions, user_id, {})
    worker.start()
    # The platform reports a start and an end a moment apart: the worker applies them.
    post_event(it_app, short, "meeting.start")
    post_event(it_app, short, "meeting.end")
    try:
        got = receiver.wait_for(2, timeout=60)
    except AssertionError:
        print(worker.logs())  # noqa: T201  (the failing test's evidence)
        raise
    payloads = {}
    for request in got:
        payload = StandardWebhook(secret).verify(request.body, request.headers)
        payloads[payload["type"]] = payload
    assert payloads["alert.meeting.long_running"]["data"]["meetingId"] == long_running
    assert "has been running for 2 h" in payloads["alert.meeting.long_running"]["text"]
    assert payloads["alert.meeting.short"]["data"]["meetingId"] == short
    wait_until(
        lambda: succeeded(it_engine) == 2,
        30,
        "both alert deliveries to succeed",
    )
    # Beat sweeps every second: a few more sweeps fire nothing again.
    time.sleep(4)
    assert count(it_engine, sa.select(sa.func.count()).select_from(Alert)) == 2
    assert len(receiver.received) == 2
