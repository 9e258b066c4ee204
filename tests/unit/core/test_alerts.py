from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import requests
import requests_mock as rm
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook as StandardWebhook

from core import task_names, wakeups
from core.config import Settings
from core.db import utcnow
from core.models import (
    Alert,
    AlertRule,
    AlertType,
    Delivery,
    Meeting,
    PresenterLink,
    Webhook,
)
from core.security import hash_token, new_token
from core.services import (
    alert_triggers,
    alerts,
    delivery_log,
    delivery_states,
    events,
)
from core.validation import isoformat
from tests.conftest import Account
from tests.deliveries_helpers import (
    load,
    make_delivery,
    make_due,
    make_meeting_with_hooks,
    secret_of,
)
from workers.tasks.deliveries import run_delivery

HOOK = "https://93.184.216.34/meetings"
ALERT_URL = "https://93.184.216.40/alerts"
T0 = dt.datetime(2026, 11, 24, 10, 0, 0, tzinfo=dt.UTC)


def add_rule(
    session_factory: sessionmaker[Session],
    user_id: int,
    rule_type: AlertType,
    params: dict[str, Any] | None = None,
    *,
    now: dt.datetime | None = None,
    url: str = ALERT_URL,
) -> int:
    with session_factory.begin() as session:
        rule = alerts.create_rule(
            session, user_id, type=rule_type, params=params or {}, callback_url=url, now=now
        )
        return rule.id


def fired(session_factory: sessionmaker[Session], rule_id: int | None = None) -> list[Alert]:
    with session_factory() as session:
        query = sa.select(Alert).order_by(Alert.id)
        if rule_id is not None:
            query = query.where(Alert.rule_id == rule_id)
        return list(session.scalars(query))


def alert_delivery(session_factory: sessionmaker[Session], alert: Alert) -> Delivery:
    with session_factory() as session:
        delivery = session.scalar(sa.select(Delivery).where(Delivery.alert_id == alert.id))
        assert delivery is not None
        return delivery


def sweep(session_factory: sessionmaker[Session], now: dt.datetime) -> int:
    with session_factory.begin() as session:
        return alerts.sweep(session, now=now)


def new_meeting(
    session_factory: sessionmaker[Session], user_id: int, name: str | None = None
) -> int:
    meeting_id = make_meeting_with_hooks(session_factory, user_id, {})
    with session_factory.begin() as session:
        meeting = session.get(Meeting, meeting_id)
        assert meeting is not None
        meeting.meeting_name = name
    return meeting_id


def emit_at(
    session_factory: sessionmaker[Session], meeting_id: int, event_type: str, at: dt.datetime
) -> None:
    with session_factory.begin() as session:
        meeting = session.get(Meeting, meeting_id)
        assert meeting is not None
        events.emit_internal(session, meeting, event_type, source="api", occurred_at=at)


def add_link(
    session_factory: sessionmaker[Session],
    meeting_id: int,
    expires_at: dt.datetime,
    *,
    used: bool = False,
) -> None:
    with session_factory.begin() as session:
        session.add(
            PresenterLink(
                meeting_id=meeting_id,
                token_hash=hash_token(new_token()),
                issued_at=expires_at - dt.timedelta(minutes=10),
                expires_at=expires_at,
                used_at=expires_at - dt.timedelta(minutes=1) if used else None,
            )
        )


class TestLongRunning:
    def test_fires_once_when_the_minutes_have_passed_by_event_time(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        rule_id = add_rule(
            session_factory, account.id, AlertType.MEETING_LONG_RUNNING, {"minutes": 30}, now=T0
        )
        meeting_id = new_meeting(session_factory, account.id, "Weekly sync")
        emit_at(session_factory, meeting_id, "meeting.start", T0)
        assert sweep(session_factory, T0 + dt.timedelta(minutes=29, seconds=59)) == 0
        assert sweep(session_factory, T0 + dt.timedelta(minutes=30)) == 1
        assert sweep(session_factory, T0 + dt.timedelta(minutes=31)) == 0
        assert sweep(session_factory, T0 + dt.timedelta(hours=5)) == 0
        (alert,) = fired(session_factory, rule_id)
        assert alert.subject_key == f"meeting:{meeting_id}"
        assert alert.meeting_id == meeting_id
        assert alert.text == (
            f'Meeting {meeting_id} ("Weekly sync") has been running for 30 min '
            "(started 2026-11-24T10:00:00Z), longer than 30 minutes."
        )
        assert alert.data["meetingId"] == meeting_id
        assert alert.data["startedAt"] == "2026-11-24T10:00:00Z"
        assert alert.data["minutes"] == 30
        assert alert.data["ruleId"] == rule_id

    def test_a_start_two_hours_ago_is_long_running_at_once(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        now = T0 + dt.timedelta(hours=2)
        meeting_id = new_meeting(session_factory, account.id)
        # The platform reports the start late: judged by when it happened, not when it arrived.
        emit_at(session_factory, meeting_id, "meeting.start", T0)
        rule_id = add_rule(
            session_factory, account.id, AlertType.MEETING_LONG_RUNNING, {"minutes": 60}, now=now
        )
        assert sweep(session_factory, now) == 1
        (alert,) = fired(session_factory, rule_id)
        assert "running for 2 h" in alert.text

    def test_ended_scheduled_deleted_and_other_users_meetings_do_not_fire(
        self,
        session_factory: sessionmaker[Session],
        account: Account,
        make_account: Callable[..., Account],
    ) -> None:
        add_rule(session_factory, account.id, AlertType.MEETING_LONG_RUNNING, {"minutes": 1})
        ended = new_meeting(session_factory, account.id)
        emit_at(session_factory, ended, "meeting.start", T0)
        emit_at(session_factory, ended, "meeting.end", T0 + dt.timedelta(hours=3))
        new_meeting(session_factory, account.id)  # never started
        deleted = new_meeting(session_factory, account.id)
        emit_at(session_factory, deleted, "meeting.start", T0)
        with session_factory.begin() as session:
            session.execute(
                sa.update(Meeting).where(Meeting.id == deleted).values(deleted_at=utcnow())
            )
        bob = make_account(email="bob@example.com")
        theirs = new_meeting(session_factory, bob.id)
        emit_at(session_factory, theirs, "meeting.start", T0)
        assert sweep(session_factory, T0 + dt.timedelta(hours=4)) == 0
        assert fired(session_factory) == []

    def test_a_deleted_rule_stops_firing_and_its_alerts_stay(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        rule_id = add_rule(
            session_factory, account.id, AlertType.MEETING_LONG_RUNNING, {"minutes": 10}
        )
        first = new_meeting(session_factory, account.id)
        emit_at(session_factory, first, "meeting.start", T0)
        assert sweep(session_factory, T0 + dt.timedelta(minutes=10)) == 1
        with session_factory.begin() as session:
            alerts.delete_rule(session, account.id, rule_id)
        second = new_meeting(session_factory, account.id)
        emit_at(session_factory, second, "meeting.start", T0)
        assert sweep(session_factory, T0 + dt.timedelta(hours=1)) == 0
        assert [a.meeting_id for a in fired(session_factory)] == [first]

    def test_two_rules_fire_each_once(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        short = add_rule(
            session_factory, account.id, AlertType.MEETING_LONG_RUNNING, {"minutes": 5}
        )
        long = add_rule(
            session_factory, account.id, AlertType.MEETING_LONG_RUNNING, {"minutes": 60}
        )
        meeting_id = new_meeting(session_factory, account.id)
        emit_at(session_factory, meeting_id, "meeting.start", T0)
        for minutes in (5, 6, 59, 60, 61, 600):
            sweep(session_factory, T0 + dt.timedelta(minutes=minutes))
        assert [a.rule_id for a in fired(session_factory)] == [short, long]


class TestNoStart:
    def test_fires_once_when_the_last_link_expires_unused(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        rule_id = add_rule(session_factory, account.id, AlertType.MEETING_NO_START, now=T0)
        meeting_id = new_meeting(session_factory, account.id)
        add_link(session_factory, meeting_id, T0 + dt.timedelta(minutes=10))
        assert sweep(session_factory, T0 + dt.timedelta(minutes=9)) == 0
        assert sweep(session_factory, T0 + dt.timedelta(minutes=10)) == 1
        assert sweep(session_factory, T0 + dt.timedelta(minutes=11)) == 0
        assert sweep(session_factory, T0 + dt.timedelta(hours=3)) == 0
        (alert,) = fired(session_factory, rule_id)
        assert alert.subject_key == f"meeting:{meeting_id}"
        assert alert.data["presenterLinkExpiredAt"] == "2026-11-24T10:10:00Z"
        assert alert.text == (
            f"Meeting {meeting_id} never started: its presenter link expired unused at "
            "2026-11-24T10:10:00Z."
        )

    def test_a_fresher_link_postpones_it(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        add_rule(session_factory, account.id, AlertType.MEETING_NO_START, now=T0)
        meeting_id = new_meeting(session_factory, account.id)
        add_link(session_factory, meeting_id, T0 + dt.timedelta(minutes=10))
        add_link(session_factory, meeting_id, T0 + dt.timedelta(minutes=15))
        assert sweep(session_factory, T0 + dt.timedelta(minutes=12)) == 0
        assert sweep(session_factory, T0 + dt.timedelta(minutes=15)) == 1
        (alert,) = fired(session_factory)
        assert alert.data["presenterLinkExpiredAt"] == "2026-11-24T10:15:00Z"

    def test_started_ended_and_used_links_do_not_fire(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        add_rule(session_factory, account.id, AlertType.MEETING_NO_START, now=T0)
        used = new_meeting(session_factory, account.id)
        add_link(session_factory, used, T0 + dt.timedelta(minutes=10), used=True)
        emit_at(session_factory, used, "meeting.start", T0 + dt.timedelta(minutes=9))
        by_platform = new_meeting(session_factory, account.id)
        add_link(session_factory, by_platform, T0 + dt.timedelta(minutes=10))
        emit_at(session_factory, by_platform, "meeting.start", T0 + dt.timedelta(minutes=2))
        cancelled = new_meeting(session_factory, account.id)
        add_link(session_factory, cancelled, T0 + dt.timedelta(minutes=10))
        emit_at(session_factory, cancelled, "meeting.end", T0 + dt.timedelta(minutes=2))
        assert sweep(session_factory, T0 + dt.timedelta(hours=1)) == 0

    def test_links_that_expired_before_the_rule_existed_are_history(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        old = new_meeting(session_factory, account.id)
        add_link(session_factory, old, T0 - dt.timedelta(days=30))
        rule_id = add_rule(session_factory, account.id, AlertType.MEETING_NO_START, now=T0)
        assert sweep(session_factory, T0 + dt.timedelta(minutes=1)) == 0
        fresh = new_meeting(session_factory, account.id)
        add_link(session_factory, fresh, T0 + dt.timedelta(minutes=5))
        # Sweeps every few seconds, and one after a long pause: each link is seen once.
        for seconds in range(0, 900, 7):
            sweep(session_factory, T0 + dt.timedelta(seconds=seconds))
        assert sweep(session_factory, T0 + dt.timedelta(days=2)) == 0
        assert [a.meeting_id for a in fired(session_factory, rule_id)] == [fresh]

    def test_a_sweep_after_an_outage_still_sees_what_expired_meanwhile(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        add_rule(session_factory, account.id, AlertType.MEETING_NO_START, now=T0)
        sweep(session_factory, T0 + dt.timedelta(minutes=2))
        meeting_id = new_meeting(session_factory, account.id)
        add_link(session_factory, meeting_id, T0 + dt.timedelta(minutes=30))
        assert sweep(session_factory, T0 + dt.timedelta(hours=6)) == 1
        assert [a.meeting_id for a in fired(session_factory)] == [meeting_id]


class TestShort:
    def test_fires_once_for_a_meeting_that_ends_in_under_n_seconds(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        rule_id = add_rule(session_factory, account.id, AlertType.MEETING_SHORT, {"seconds": 60})
        add_rule(session_factory, account.id, AlertType.MEETING_SHORT, {"seconds": 30})
        meeting_id = new_meeting(session_factory, account.id)
        emit_at(session_factory, meeting_id, "meeting.start", T0)
        assert fired(session_factory) == []
        emit_at(session_factory, meeting_id, "meeting.end", T0 + dt.timedelta(seconds=42))
        emit_at(session_factory, meeting_id, "meeting.end", T0 + dt.timedelta(seconds=50))
        (alert,) = fired(session_factory)
        assert alert.rule_id == rule_id
        assert alert.data["durationSeconds"] == 42
        assert alert.data["seconds"] == 60
        assert alert.text == (
            f"Meeting {meeting_id} ended after only 42 s (started 2026-11-24T10:00:00Z), "
            "under the 60 seconds of your rule."
        )

    def test_a_long_meeting_does_not_fire_and_one_without_a_start_is_unknown(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        add_rule(session_factory, account.id, AlertType.MEETING_SHORT, {"seconds": 60})
        long = new_meeting(session_factory, account.id)
        emit_at(session_factory, long, "meeting.start", T0)
        emit_at(session_factory, long, "meeting.end", T0 + dt.timedelta(seconds=60))
        no_start = new_meeting(session_factory, account.id)
        emit_at(session_factory, no_start, "meeting.end", T0)
        assert fired(session_factory) == []

    def test_a_late_start_that_shortens_the_meeting_fires_then(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        add_rule(session_factory, account.id, AlertType.MEETING_SHORT, {"seconds": 60})
        meeting_id = new_meeting(session_factory, account.id)
        # End first (no start known: duration unknown), then a start 20 s before it.
        emit_at(session_factory, meeting_id, "meeting.end", T0 + dt.timedelta(seconds=20))
        assert fired(session_factory) == []
        emit_at(session_factory, meeting_id, "meeting.start", T0)
        (alert,) = fired(session_factory)
        assert alert.data["durationSeconds"] == 20

    def test_a_rolled_back_end_fires_nothing(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        add_rule(session_factory, account.id, AlertType.MEETING_SHORT, {"seconds": 60})
        meeting_id = new_meeting(session_factory, account.id)
        emit_at(session_factory, meeting_id, "meeting.start", T0)
        with session_factory() as session:
            meeting = session.get(Meeting, meeting_id)
            assert meeting is not None
            events.emit_internal(
                session,
                meeting,
                "meeting.end",
                source="api",
                occurred_at=T0 + dt.timedelta(seconds=5),
            )
            assert len(session.scalars(sa.select(Alert)).all()) == 1
            session.rollback()
        assert fired(session_factory) == []


class TestDeliveryRules:
    def test_failing_fires_once_at_n_consecutive_failures(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        rule_id = add_rule(session_factory, account.id, AlertType.DELIVERY_FAILING, {"attempts": 2})
        requests_mock.post(HOOK, status_code=503)
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        attempt(delivery_id)
        assert fired(session_factory) == []
        make_due(session_factory, delivery_id)
        attempt(delivery_id)
        (alert,) = fired(session_factory, rule_id)
        # Retried again and again: the same delivery does not fire twice.
        for _ in range(3):
            make_due(session_factory, delivery_id)
            attempt(delivery_id)
        assert len(fired(session_factory)) == 1
        assert alert.subject_key == f"delivery:{delivery_id}"
        assert alert.about_delivery_id == delivery_id
        delivery = load(session_factory, delivery_id)
        assert alert.data["deliveryId"] == delivery_id
        assert alert.data["webhookId"] == delivery.message_id
        assert alert.data["failedAttempts"] == 2
        assert alert.data["attempts"] == 2
        assert alert.data["lastError"] == "http-503"
        assert alert.data["eventType"] == "meeting.start"
        assert alert.data["eventId"].startswith("evt_")
        assert f"to {HOOK} has failed 2 attempts in a row (last: http-503)" in alert.text

    def test_failed_fires_once_when_the_schedule_is_spent(
        self,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        http: requests.Session,
        account: Account,
    ) -> None:
        short = settings.model_copy(update={"retry_schedule": (5.0,)})
        rule_id = add_rule(session_factory, account.id, AlertType.DELIVERY_FAILED)
        requests_mock.post(HOOK, status_code=500)
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        run_delivery(session_factory, delivery_id, settings=short, http=http)
        assert fired(session_factory) == []
        make_due(session_factory, delivery_id)
        recorded = run_delivery(session_factory, delivery_id, settings=short, http=http)
        assert recorded is not None
        assert recorded.status == "failed"
        (alert,) = fired(session_factory, rule_id)
        assert alert.text.endswith("failed for good: after 2 attempts (last: http-500).")
        assert alert.data["status"] == "failed"
        # A redelivery that fails again is the same delivery: no second alert.
        with session_factory.begin() as session:
            delivery_log.redeliver(session, account.id, delivery_id, max_attempts=2)
        run_delivery(session_factory, delivery_id, settings=short, http=http)
        make_due(session_factory, delivery_id)
        run_delivery(session_factory, delivery_id, settings=short, http=http)
        assert load(session_factory, delivery_id).status == "failed"
        assert len(fired(session_factory)) == 1

    def test_a_410_fires_disabled_and_failed(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        disabled = add_rule(session_factory, account.id, AlertType.WEBHOOK_DISABLED)
        failed = add_rule(session_factory, account.id, AlertType.DELIVERY_FAILED)
        requests_mock.post(HOOK, status_code=410)
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        attempt(delivery_id)
        (gone,) = fired(session_factory, disabled)
        (lost,) = fired(session_factory, failed)
        assert gone.data["webhookId"].startswith("wh_")
        assert gone.data["callbackUrl"] == HOOK
        assert gone.data["eventType"] == "meeting.start"
        assert "is disabled: the receiver answered 410 Gone" in gone.text
        assert lost.text.endswith("failed for good: the receiver answered 410 Gone.")

    def test_recovered_fires_once_per_streak(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        rule_id = add_rule(session_factory, account.id, AlertType.WEBHOOK_RECOVERED)
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        requests_mock.post(HOOK, [{"status_code": 500}, {"status_code": 502}, {"status_code": 200}])
        attempt(delivery_id)
        make_due(session_factory, delivery_id)
        attempt(delivery_id)
        assert fired(session_factory) == []
        make_due(session_factory, delivery_id)
        attempt(delivery_id)
        (alert,) = fired(session_factory, rule_id)
        assert alert.data["failedAttempts"] == 2
        assert alert.data["deliveryId"] == delivery_id
        assert "is receiving callbacks again after 2 failed attempts" in alert.text
        # A success after a success is no recovery.
        requests_mock.post(HOOK, [{"status_code": 200}, {"status_code": 500}, {"status_code": 204}])
        with session_factory.begin() as session:
            delivery_log.redeliver(session, account.id, delivery_id)
        attempt(delivery_id)
        assert len(fired(session_factory)) == 1
        # A new streak (here a failed redelivery, then its retry) recovers again.
        with session_factory.begin() as session:
            delivery_log.redeliver(session, account.id, delivery_id)
        attempt(delivery_id)
        make_due(session_factory, delivery_id)
        attempt(delivery_id)
        assert len(fired(session_factory)) == 2

    def test_a_first_success_is_no_recovery(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        add_rule(session_factory, account.id, AlertType.WEBHOOK_RECOVERED)
        requests_mock.post(HOOK, status_code=200)
        attempt(make_delivery(session_factory, account.id, HOOK))
        assert fired(session_factory) == []

    def test_an_alerts_own_delivery_never_counts(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        settings: Settings,
        http: requests.Session,
        account: Account,
    ) -> None:
        for rule_type in (AlertType.DELIVERY_FAILING, AlertType.DELIVERY_FAILED):
            params = {"attempts": 1} if rule_type == AlertType.DELIVERY_FAILING else {}
            add_rule(session_factory, account.id, rule_type, params)
        add_rule(session_factory, account.id, AlertType.WEBHOOK_RECOVERED)
        requests_mock.post(HOOK, status_code=500)
        requests_mock.post(ALERT_URL, status_code=500)
        short = settings.model_copy(update={"retry_schedule": (5.0, 5.0)})
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        for _ in range(3):
            run_delivery(session_factory, delivery_id, settings=short, http=http)
            make_due(session_factory, delivery_id)
        # failing (after 1 attempt) and failed: two alerts, each with its own delivery.
        assert len(fired(session_factory)) == 2
        for alert in fired(session_factory):
            own = alert_delivery(session_factory, alert).id
            for _ in range(3):
                run_delivery(session_factory, own, settings=short, http=http)
                make_due(session_factory, own)
            assert load(session_factory, own).status == "failed"
        requests_mock.post(ALERT_URL, status_code=200)
        assert len(fired(session_factory)) == 2

    def test_rules_watch_their_owners_deliveries_only(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
        make_account: Callable[..., Account],
    ) -> None:
        bob = make_account(email="bob@example.com")
        add_rule(session_factory, bob.id, AlertType.DELIVERY_FAILING, {"attempts": 1})
        requests_mock.post(HOOK, status_code=500)
        attempt(make_delivery(session_factory, account.id, HOOK))
        assert fired(session_factory) == []


class TestTriggersCalledDirectly:
    def test_each_trigger_is_idempotent(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        add_rule(session_factory, account.id, AlertType.DELIVERY_FAILED)
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        for _ in range(3):
            with session_factory.begin() as session:
                delivery = session.get(Delivery, delivery_id)
                assert delivery is not None
                alert_triggers.delivery_failed(session, delivery, T0)
        assert len(fired(session_factory)) == 1

    def test_a_webhook_registered_again_and_disabled_again_fires_again(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        add_rule(session_factory, account.id, AlertType.WEBHOOK_DISABLED)
        meeting_id = make_meeting_with_hooks(session_factory, account.id, {"meeting.end": HOOK})
        for public_id in ("wh_first", "wh_first", "wh_second"):
            with session_factory.begin() as session:
                hook = session.scalar(sa.select(Webhook).where(Webhook.meeting_id == meeting_id))
                assert hook is not None
                hook.public_id = public_id
                hook.disabled_at = T0
                alert_triggers.webhook_disabled(session, hook, T0)
        assert [a.data["webhookId"] for a in fired(session_factory)] == ["wh_first", "wh_second"]


class TestAlertDelivery:
    def test_an_alert_is_a_signed_post_with_a_human_text(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        rule_id = add_rule(session_factory, account.id, AlertType.MEETING_SHORT, {"seconds": 60})
        meeting_id = new_meeting(session_factory, account.id)
        emit_at(session_factory, meeting_id, "meeting.start", T0)
        emit_at(session_factory, meeting_id, "meeting.end", T0 + dt.timedelta(seconds=3))
        (alert,) = fired(session_factory)
        delivery = alert_delivery(session_factory, alert)
        assert delivery.event_type == "alert.meeting.short"
        assert delivery.alert_rule_id == rule_id
        assert delivery.callback_url == ALERT_URL
        assert delivery.meeting_id == meeting_id
        requests_mock.post(ALERT_URL, status_code=200)
        recorded = attempt(delivery.id)
        assert recorded is not None
        assert recorded.status == "succeeded"
        sent = requests_mock.last_request
        assert sent.headers["webhook-id"] == delivery.message_id
        payload = StandardWebhook(secret_of(session_factory, account.id)).verify(
            sent.body, dict(sent.headers)
        )
        assert payload == {
            "id": alert.public_id,
            "type": "alert.meeting.short",
            "timestamp": isoformat(alert.fired_at),
            "text": alert.text,
            "data": alert.data,
        }
        assert payload["id"].startswith("alrt_")
        assert payload["timestamp"].endswith("Z")
        assert payload["data"]["meetingId"] == meeting_id
        assert payload["data"]["conferenceId"] is not None

    def test_a_sweep_notes_the_wake_up_of_each_alert_delivery(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        add_rule(session_factory, account.id, AlertType.MEETING_LONG_RUNNING, {"minutes": 1})
        meeting_id = new_meeting(session_factory, account.id)
        emit_at(session_factory, meeting_id, "meeting.start", T0)
        with session_factory.begin() as session:
            wakeups.take(session)
            assert alerts.sweep(session, now=T0 + dt.timedelta(minutes=2)) == 1
            noted = wakeups.pending(session)
            delivery_id = session.scalar(
                sa.select(Delivery.id).where(Delivery.alert_id.is_not(None))
            )
        assert noted == [(task_names.DELIVER, {"delivery_id": delivery_id})]


def test_rules_are_stored_with_their_type_value(
    session_factory: sessionmaker[Session], account: Account
) -> None:
    rule_id = add_rule(session_factory, account.id, AlertType.DELIVERY_FAILING, {"attempts": 3})
    with session_factory() as session:
        rule = session.get(AlertRule, rule_id)
        assert rule is not None
        assert rule.type == "delivery.failing"
        assert rule.params == {"attempts": 3}
