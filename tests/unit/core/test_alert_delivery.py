"""An alert is an outbox row like a callback: claimed, signed, retried, failed, redelivered."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

import pytest
import requests
import requests_mock as rm
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook as StandardWebhook

from core import task_names, wakeups
from core.config import Settings
from core.db import utcnow
from core.models import Alert, AlertRule, AlertType, Delivery, Webhook
from core.security import new_public_id
from core.services import alert_triggers, delivery_states, outbound_http, outbox
from tests.conftest import Account, Enqueued
from tests.deliveries_helpers import attempts, load, make_delivery, make_due, secret_of
from workers.tasks.deliveries import run_delivery

ALERT_URL = "https://alerts.example.com/incoming"
HOOK = "https://hooks.example.com/meetings"
BODY = {"id": "alrt_x", "type": "alert.meeting.long_running", "text": "Standup runs long"}


@pytest.fixture
def triggers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record which alert trigger each transition called, for which delivery or webhook."""
    calls: list[tuple[str, int]] = []
    for name in ("delivery_failed", "attempt_failed", "attempt_succeeded", "webhook_disabled"):

        def spy(_session: Session, subject: Any, _now: dt.datetime, name: str = name) -> None:
            calls.append((name, subject.id))

        monkeypatch.setattr(alert_triggers, name, spy)
    return calls


def make_alert_delivery(session_factory: sessionmaker[Session], user_id: int) -> int:
    with session_factory.begin() as session:
        rule = AlertRule(
            user_id=user_id,
            type=AlertType.MEETING_LONG_RUNNING,
            params={"minutes": 1},
            callback_url=ALERT_URL,
        )
        session.add(rule)
        session.flush()
        alert = Alert(
            public_id=new_public_id("alrt"),
            rule_id=rule.id,
            user_id=user_id,
            type=rule.type,
            subject_key="meeting:1",
            text="Standup runs long",
            data={},
        )
        session.add(alert)
        session.flush()
        delivery = outbox.create_for_alert(session, alert, rule, BODY, now=utcnow())
        assert wakeups.pending(session) == [(task_names.DELIVER, {"delivery_id": delivery.id})]
        return delivery.id


def attempt(
    session_factory: sessionmaker[Session], settings: Settings, delivery_id: int
) -> delivery_states.Recorded | None:
    http: requests.Session = outbound_http.make_http_session()
    return run_delivery(
        session_factory, delivery_id, settings=settings, http=http, rng=random.Random(1)
    )


class TestAlertDelivery:
    def test_is_claimed_signed_and_succeeds_like_a_callback(
        self,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        account: Account,
        triggers: list[tuple[str, int]],
    ) -> None:
        delivery_id = make_alert_delivery(session_factory, account.id)
        row = load(session_factory, delivery_id)
        assert (row.event_id, row.webhook_id, row.callback_url) == (None, None, ALERT_URL)
        assert row.alert_id is not None
        assert row.alert_rule_id is not None
        assert row.event_type == "alert.meeting.long_running"
        requests_mock.post(ALERT_URL, status_code=200)
        assert attempt(session_factory, settings, delivery_id) == delivery_states.Recorded(
            status="succeeded"
        )
        sent = requests_mock.last_request
        assert sent.headers["webhook-id"] == row.message_id
        payload = StandardWebhook(secret_of(session_factory, account.id)).verify(
            sent.body, dict(sent.headers)
        )
        assert payload == BODY
        assert sent.body == json.dumps(BODY, separators=(",", ":")).encode()
        assert load(session_factory, delivery_id).status == "succeeded"
        assert triggers == [("attempt_succeeded", delivery_id)]

    def test_is_retried_on_the_schedule_then_failed(
        self,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        account: Account,
        triggers: list[tuple[str, int]],
    ) -> None:
        delivery_id = make_alert_delivery(session_factory, account.id)
        requests_mock.post(ALERT_URL, status_code=503)
        message_ids = set()
        for _ in settings.retry_schedule:
            recorded = attempt(session_factory, settings, delivery_id)
            assert recorded is not None
            assert recorded.status == "pending"
            assert recorded.next_attempt_at is not None
            message_ids.add(requests_mock.last_request.headers["webhook-id"])
            make_due(session_factory, delivery_id)
        assert attempt(session_factory, settings, delivery_id) == delivery_states.Recorded(
            status="failed"
        )
        message_ids.add(requests_mock.last_request.headers["webhook-id"])
        delivery = load(session_factory, delivery_id)
        assert delivery.status == "failed"
        assert delivery.attempt_count == len(settings.retry_schedule) + 1
        assert message_ids == {delivery.message_id}
        assert [a.error for a in attempts(session_factory, delivery_id)] == ["http-503"] * (
            len(settings.retry_schedule) + 1
        )
        retries = [("attempt_failed", delivery_id)] * len(settings.retry_schedule)
        assert triggers == [*retries, ("delivery_failed", delivery_id)]

    def test_a_410_fails_that_alert_only(
        self,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        account: Account,
        triggers: list[tuple[str, int]],
    ) -> None:
        first = make_alert_delivery(session_factory, account.id)
        second = make_alert_delivery(session_factory, account.id)
        requests_mock.post(ALERT_URL, status_code=410)
        assert attempt(session_factory, settings, first) == delivery_states.Recorded(
            status="failed", webhook_disabled=False
        )
        assert load(session_factory, second).status == "pending"
        assert triggers == [("delivery_failed", first)]

    def test_a_lease_fences_a_second_worker(
        self, session_factory: sessionmaker[Session], settings: Settings, account: Account
    ) -> None:
        delivery_id = make_alert_delivery(session_factory, account.id)
        lease = delivery_states.lease_duration(settings)
        now = utcnow()
        with session_factory.begin() as session:
            assert delivery_states.claim(session, delivery_id, lease=lease, now=now) is not None
        with session_factory.begin() as session:
            assert delivery_states.claim(session, delivery_id, lease=lease, now=now) is None
        with session_factory() as session:
            later = now + lease + dt.timedelta(seconds=1)
            assert outbox.due_ids(session, later, resend_after=lease) == [delivery_id]


class TestEveryFailureGoesThroughFail:
    def test_a_410_fails_the_webhooks_waiting_deliveries_one_by_one(
        self,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        account: Account,
        triggers: list[tuple[str, int]],
    ) -> None:
        gone = make_delivery(session_factory, account.id, HOOK)
        with session_factory.begin() as session:
            # A second delivery of the same webhook, waiting for its retry.
            source = session.get(Delivery, gone)
            assert source is not None
            waiting = Delivery(
                message_id=new_public_id("msg"), event_id=source.event_id,
                webhook_id=source.webhook_id, user_id=account.id, meeting_id=source.meeting_id,
                event_type=source.event_type, meeting_sequence=source.meeting_sequence + 1,
                callback_url=HOOK, body=source.body, status="pending",
                next_attempt_at=utcnow() + dt.timedelta(minutes=5),
            )  # fmt: skip
            session.add(waiting)
            session.flush()
            waiting_id = waiting.id
            webhook_id = source.webhook_id
        requests_mock.post(HOOK, status_code=410)
        recorded = attempt(session_factory, settings, gone)
        assert recorded == delivery_states.Recorded(status="failed", webhook_disabled=True)
        assert load(session_factory, waiting_id).status == "failed"
        assert load(session_factory, waiting_id).completed_at is not None
        assert triggers == [
            ("webhook_disabled", webhook_id),
            ("delivery_failed", waiting_id),
            ("delivery_failed", gone),
        ]

    def test_claim_fails_a_delivery_of_a_disabled_webhook(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        account: Account,
        triggers: list[tuple[str, int]],
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        with session_factory.begin() as session:
            session.execute(sa.update(Webhook).values(disabled_at=utcnow()))
        assert attempt(session_factory, settings, delivery_id) is None
        assert load(session_factory, delivery_id).status == "failed"
        assert [a.error for a in attempts(session_factory, delivery_id)] == ["webhook-disabled"]
        assert triggers == [("delivery_failed", delivery_id)]

    def test_claim_fails_a_delivery_whose_attempts_are_used_up(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        account: Account,
        triggers: list[tuple[str, int]],
    ) -> None:
        delivery_id = make_alert_delivery(session_factory, account.id)
        with session_factory.begin() as session:
            session.execute(sa.update(Delivery).values(attempt_count=3))
            claimed = delivery_states.claim(
                session, delivery_id, lease=dt.timedelta(seconds=30), max_attempts=3
            )
        assert claimed is None
        assert load(session_factory, delivery_id).status == "failed"
        assert triggers == [("delivery_failed", delivery_id)]


class TestAlertDeliveryInTheLog:
    def test_shown_and_redelivered_but_not_listed_with_callbacks(
        self,
        client: FlaskClient,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        account: Account,
        enqueued: Enqueued,
        triggers: list[tuple[str, int]],
    ) -> None:
        callback = make_delivery(session_factory, account.id, HOOK)
        alert = make_alert_delivery(session_factory, account.id)
        requests_mock.post(ALERT_URL, status_code=200)
        attempt(session_factory, settings, alert)

        listed = client.get("/v1/webhooks/deliveries", headers=account.headers).get_json()
        assert [d["id"] for d in listed["deliveries"]] == [callback]

        shown = client.get(f"/v1/webhooks/deliveries/{alert}", headers=account.headers)
        assert shown.status_code == 200
        body = shown.get_json()
        with session_factory() as session:
            row = session.get(Delivery, alert)
            assert row is not None
            public_id = session.scalar(sa.select(Alert.public_id).where(Alert.id == row.alert_id))
        assert body["eventId"] == public_id
        assert body["eventType"] == "alert.meeting.long_running"
        assert body["callbackUrl"] == ALERT_URL
        assert body["status"] == "succeeded"
        assert [a["statusCode"] for a in body["attempts"]] == [200]

        again = client.post(f"/v1/webhooks/deliveries/{alert}/redeliver", headers=account.headers)
        assert again.status_code == 202
        assert again.get_json()["status"] == "pending"
        assert enqueued.calls == [(task_names.DELIVER, {"delivery_id": alert})]
        assert attempt(session_factory, settings, alert) == delivery_states.Recorded(
            status="succeeded"
        )
        assert requests_mock.call_count == 2
        assert {r.headers["webhook-id"] for r in requests_mock.request_history} == {row.message_id}
