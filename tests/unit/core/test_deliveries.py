from __future__ import annotations

import datetime as dt
import ipaddress
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
import requests_mock as rm
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook as StandardWebhook

from core import signing, ssrf
from core.config import Settings
from core.db import utcnow
from core.errors import ConfigError, Conflict, NotFound, ValidationFailed
from core.models import Delivery, DeliveryAttempt, Event, Meeting, User, Webhook
from core.responses import DeliveryOut
from core.services import accounts, delivery_log, delivery_states, outbound_http, outbox
from tests.conftest import Account
from tests.deliveries_helpers import (
    attempts,
    load,
    make_delivery,
    make_due,
    secret_of,
)
from workers.tasks.deliveries import run_delivery

HOOK = "https://hooks.example.com/meetings"
SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)


@pytest.fixture
def delivery_id(session_factory: sessionmaker[Session], account: Account) -> int:
    return make_delivery(session_factory, account.id, HOOK, custom={"foo": 123})


class TestSuccess:
    def test_2xx_succeeds_and_logs_the_attempt(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=200, text='{"ok":true}')
        recorded = attempt(delivery_id)
        assert recorded == delivery_states.Recorded(status="succeeded")
        delivery = load(session_factory, delivery_id)
        assert delivery.status == "succeeded"
        assert delivery.next_attempt_at is None
        assert delivery.locked_until is None
        assert delivery.completed_at is not None
        assert delivery.attempt_count == 1
        (logged,) = attempts(session_factory, delivery_id)
        assert logged.status_code == 200
        assert logged.error is None
        assert logged.response_body == '{"ok":true}'
        assert logged.latency_ms is not None
        assert logged.latency_ms >= 0

    def test_request_is_the_stored_body_with_signed_headers(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
        account: Account,
    ) -> None:
        requests_mock.post(HOOK, status_code=204)
        before = int(utcnow().timestamp())
        attempt(delivery_id)
        delivery = load(session_factory, delivery_id)
        sent = requests_mock.last_request
        assert sent.method == "POST"
        assert sent.body == delivery.body.encode()
        assert sent.headers["content-type"] == "application/json"
        assert sent.headers["webhook-id"] == delivery.message_id
        assert before <= int(sent.headers["webhook-timestamp"]) <= before + 5
        assert sent.headers["webhook-signature"].startswith("v1,")
        payload = StandardWebhook(secret_of(session_factory, account.id)).verify(
            sent.body, dict(sent.headers)
        )
        assert payload["type"] == "meeting.start"
        assert payload["customCallbackData"] == {"foo": 123}
        assert payload["data"]["sequence"] == 1
        assert payload["id"].startswith("evt_")

    @pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
    def test_every_2xx_is_success(
        self,
        status: int,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=status)
        recorded = attempt(delivery_id)
        assert recorded is not None
        assert recorded.status == "succeeded"

    def test_a_succeeded_delivery_is_not_sent_again(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=200)
        attempt(delivery_id)
        assert attempt(delivery_id) is None
        assert requests_mock.call_count == 1


class TestFailures:
    @pytest.mark.parametrize(
        ("kwargs", "error", "status_code"),
        [
            ({"exc": requests.exceptions.ConnectTimeout}, "timeout", None),
            ({"exc": requests.exceptions.ReadTimeout}, "timeout", None),
            ({"exc": requests.exceptions.ConnectionError("refused")}, "connection-error", None),
            ({"exc": requests.exceptions.SSLError("bad cert")}, "tls-error", None),
            ({"exc": requests.exceptions.ChunkedEncodingError}, "request-error", None),
            ({"status_code": 500, "text": "boom"}, "http-500", 500),
            ({"status_code": 502}, "http-502", 502),
            ({"status_code": 400}, "http-400", 400),
            ({"status_code": 404}, "http-404", 404),
            ({"status_code": 429}, "http-429", 429),
        ],
    )
    def test_failure_is_logged_and_retried_after_the_first_delay(
        self,
        kwargs: dict[str, Any],
        error: str,
        status_code: int | None,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, **kwargs)
        before = utcnow()
        recorded = attempt(delivery_id)
        after = utcnow()
        assert recorded is not None
        assert recorded.status == "pending"
        delivery = load(session_factory, delivery_id)
        assert delivery.status == "pending"
        assert delivery.locked_until is None
        assert delivery.next_attempt_at is not None
        assert before + dt.timedelta(seconds=4) <= delivery.next_attempt_at
        assert delivery.next_attempt_at <= after + dt.timedelta(seconds=6)
        (logged,) = attempts(session_factory, delivery_id)
        assert logged.error == error
        assert logged.status_code == status_code
        if status_code == 500:
            assert logged.response_body == "boom"

    def test_redirect_is_a_failure_and_is_not_followed(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=302, headers={"Location": "https://elsewhere.test/"})
        other = requests_mock.post("https://elsewhere.test/", status_code=200)
        recorded = attempt(delivery_id)
        assert recorded is not None
        assert recorded.status == "pending"
        assert not other.called
        assert requests_mock.call_count == 1
        (logged,) = attempts(session_factory, delivery_id)
        assert (logged.status_code, logged.error) == (302, "redirect")

    @pytest.mark.parametrize("status", [301, 303, 307, 308])
    def test_redirect_towards_a_private_address_is_never_requested(
        self,
        status: int,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(
            HOOK, status_code=status, headers={"Location": "http://169.254.169.254/latest"}
        )
        metadata = requests_mock.register_uri(rm.ANY, "http://169.254.169.254/latest")
        attempt(delivery_id)
        assert not metadata.called
        (logged,) = attempts(session_factory, delivery_id)
        assert logged.error == "redirect"

    def test_response_body_is_capped_at_4_kib(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=500, text="é" * 10_000)
        attempt(delivery_id)
        (logged,) = attempts(session_factory, delivery_id)
        assert logged.response_body is not None
        assert len(logged.response_body.encode()) <= 4096 + 2  # a cut character is replaced
        assert logged.response_body.startswith("é" * 2047)


class TestGone:
    def test_410_disables_the_webhook_and_fails_the_delivery(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=410)
        recorded = attempt(delivery_id)
        assert recorded == delivery_states.Recorded(status="failed", webhook_disabled=True)
        delivery = load(session_factory, delivery_id)
        assert delivery.status == "failed"
        assert delivery.next_attempt_at is None
        with session_factory() as session:
            webhook = session.get(Webhook, delivery.webhook_id)
            assert webhook is not None
            assert webhook.disabled_at is not None
            assert webhook.disabled_reason

    def test_a_disabled_webhook_gets_no_new_deliveries(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=410)
        attempt(delivery_id)
        meeting_id = load(session_factory, delivery_id).meeting_id
        with session_factory.begin() as session:
            event_id = _second_event(session, delivery_id)
            event = session.get(Event, event_id)
            meeting = session.get(Meeting, meeting_id)
            assert event is not None
            assert meeting is not None
            assert outbox.create_for_event(session, event, meeting, now=utcnow()) == []

    def test_pending_delivery_of_a_disabled_webhook_fails_without_a_request(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        with session_factory.begin() as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            webhook = session.get(Webhook, delivery.webhook_id)
            assert webhook is not None
            webhook.disabled_at = utcnow()
        requests_mock.post(HOOK, status_code=200)
        assert attempt(delivery_id) is None
        assert not requests_mock.called
        assert load(session_factory, delivery_id).status == "failed"
        assert [a.error for a in attempts(session_factory, delivery_id)] == ["webhook-disabled"]

    def test_410_stops_the_webhooks_waiting_deliveries(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
        account: Account,
    ) -> None:
        first = load(session_factory, delivery_id)
        with session_factory.begin() as session:
            # Another delivery of the same webhook, waiting two hours for its retry.
            waiting = Delivery(
                message_id="msg_waiting",
                event_id=_second_event(session, delivery_id),
                webhook_id=first.webhook_id,
                user_id=account.id,
                meeting_id=first.meeting_id,
                event_type="meeting.start",
                meeting_sequence=1,
                callback_url=HOOK,
                body="{}",
                next_attempt_at=utcnow() + dt.timedelta(hours=2),
            )
            session.add(waiting)
            session.flush()
            waiting_id = waiting.id
        requests_mock.post(HOOK, status_code=410)
        attempt(delivery_id)
        stopped = load(session_factory, waiting_id)
        assert stopped.status == "failed"
        assert stopped.next_attempt_at is None
        assert requests_mock.call_count == 1


def _second_event(session: Session, delivery_id: int) -> int:
    delivery = session.get(Delivery, delivery_id)
    assert delivery is not None
    event = session.get(Event, delivery.event_id)
    assert event is not None
    copy = Event(
        public_id="evt_second",
        source=event.source,
        source_event_id="second",
        type=event.type,
        occurred_at=event.occurred_at,
        payload=event.payload,
        meeting_id=event.meeting_id,
        user_id=event.user_id,
    )
    session.add(copy)
    session.flush()
    return copy.id


class TestRetryAfter:
    @pytest.mark.parametrize("status", [429, 503])
    def test_retry_after_seconds_lengthens_the_wait(
        self,
        status: int,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=status, headers={"Retry-After": "120"})
        before = utcnow()
        attempt(delivery_id)
        after = utcnow()
        next_at = load(session_factory, delivery_id).next_attempt_at
        assert next_at is not None
        assert before + dt.timedelta(seconds=120) <= next_at <= after + dt.timedelta(seconds=120)

    def test_retry_after_http_date(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        when = (utcnow() + dt.timedelta(hours=1)).replace(microsecond=0)
        http_date = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
        requests_mock.post(HOOK, status_code=503, headers={"Retry-After": http_date})
        attempt(delivery_id)
        next_at = load(session_factory, delivery_id).next_attempt_at
        assert next_at is not None
        assert abs((next_at - when).total_seconds()) <= 2

    @pytest.mark.parametrize("value", ["0", "1", "garbage", "-5", ""])
    def test_retry_after_never_shortens_the_schedule(
        self,
        value: str,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=429, headers={"Retry-After": value})
        before = utcnow()
        attempt(delivery_id)
        next_at = load(session_factory, delivery_id).next_attempt_at
        assert next_at is not None
        assert next_at >= before + dt.timedelta(seconds=4)

    def test_retry_after_is_capped_at_24_hours(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=429, headers={"Retry-After": str(30 * 86400)})
        after = utcnow()
        attempt(delivery_id)
        next_at = load(session_factory, delivery_id).next_attempt_at
        assert next_at is not None
        assert next_at <= utcnow() + dt.timedelta(hours=24)
        assert next_at >= after + dt.timedelta(hours=24) - dt.timedelta(seconds=5)

    def test_retry_after_on_a_500_is_ignored(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=500, headers={"Retry-After": "3600"})
        attempt(delivery_id)
        next_at = load(session_factory, delivery_id).next_attempt_at
        assert next_at is not None
        assert next_at <= utcnow() + dt.timedelta(seconds=7)

    def test_parse_retry_after(self) -> None:
        now = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
        parse = outbound_http.parse_retry_after
        assert parse("30", now=now) == dt.timedelta(seconds=30)
        assert parse(" 30 ", now=now) == dt.timedelta(seconds=30)
        assert parse("Tue, 24 Nov 2026 10:05:00 GMT", now=now) == dt.timedelta(minutes=5)
        assert parse("Tue, 24 Nov 2026 09:00:00 GMT", now=now) == dt.timedelta(0)
        assert parse(None, now=now) is None
        assert parse("soon", now=now) is None
        assert parse("1.5", now=now) is None


class TestSchedule:
    @pytest.mark.parametrize(("attempts_made", "base"), list(enumerate(SCHEDULE, start=1)))
    def test_jitter_stays_within_20_percent(self, attempts_made: int, base: int) -> None:
        rng = random.Random(attempts_made)
        delays = [
            delivery_states.retry_delay(SCHEDULE, attempts_made, rng=rng) for _ in range(2000)
        ]
        seconds = [d.total_seconds() for d in delays if d is not None]
        assert len(seconds) == 2000
        assert min(seconds) >= base * 0.8
        assert max(seconds) <= base * 1.2
        # Jitter really spreads the retries (a thundering herd is what it is there for).
        assert max(seconds) - min(seconds) >= base * 0.3

    def test_extremes_of_the_jitter(self) -> None:
        class Fixed(random.Random):
            def __init__(self, value: float) -> None:
                super().__init__()
                self.value = value

            def uniform(self, a: float, b: float) -> float:
                return a + (b - a) * self.value

        low = delivery_states.retry_delay(SCHEDULE, 2, rng=Fixed(0.0))
        high = delivery_states.retry_delay(SCHEDULE, 2, rng=Fixed(1.0))
        assert low == dt.timedelta(seconds=240)
        assert high == dt.timedelta(seconds=360)

    def test_schedule_spent_returns_none(self) -> None:
        assert delivery_states.retry_delay(SCHEDULE, len(SCHEDULE) + 1) is None
        assert delivery_states.retry_delay(SCHEDULE, 0) is None

    def test_each_retry_waits_its_own_delay_then_the_delivery_fails(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=503)
        for base in SCHEDULE:
            before = utcnow()
            recorded = attempt(delivery_id, random.Random(base))
            after = utcnow()
            assert recorded is not None
            assert recorded.status == "pending"
            next_at = load(session_factory, delivery_id).next_attempt_at
            assert next_at is not None
            assert before + dt.timedelta(seconds=base * 0.8) <= next_at
            assert next_at <= after + dt.timedelta(seconds=base * 1.2)
            make_due(session_factory, delivery_id)
        recorded = attempt(delivery_id)
        assert recorded == delivery_states.Recorded(status="failed")
        delivery = load(session_factory, delivery_id)
        assert delivery.status == "failed"
        assert delivery.next_attempt_at is None
        assert delivery.attempt_count == len(SCHEDULE) + 1
        logged = attempts(session_factory, delivery_id)
        assert len(logged) == len(SCHEDULE) + 1
        assert {a.error for a in logged} == {"http-503"}
        # Every retry carried the same webhook-id.
        assert {r.headers["webhook-id"] for r in requests_mock.request_history} == {
            delivery.message_id
        }
        assert attempt(delivery_id) is None

    def test_a_delivery_that_is_not_due_is_not_sent(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=500)
        attempt(delivery_id)
        assert attempt(delivery_id) is None  # waiting 5 s for its retry
        assert requests_mock.call_count == 1


class TestSignatures:
    @pytest.mark.parametrize(
        "custom",
        [
            None,
            {"foo": 123},
            ["a", 1, None, True],
            'text with "quotes" and \\ backslashes',
            {"unicode": "Zoë ✓ 会议 🎉", "nested": {"deep": [1.5, -2, {"x": None}]}},
            12345,
        ],
    )
    def test_standardwebhooks_verifies_every_body_we_send(
        self,
        custom: Any,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, HOOK, custom=custom)
        requests_mock.post(HOOK, status_code=204)
        attempt(delivery_id)
        sent = requests_mock.last_request
        payload = StandardWebhook(secret_of(session_factory, account.id)).verify(
            sent.body, dict(sent.headers)
        )
        assert payload["customCallbackData"] == custom

    def test_rotation_signs_with_both_secrets_for_24_hours(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
        account: Account,
    ) -> None:
        old = secret_of(session_factory, account.id)
        with session_factory.begin() as session:
            user = session.get(User, account.id)
            assert user is not None
            accounts.rotate_signing_secret(session, user)
        new = secret_of(session_factory, account.id)
        assert new != old
        requests_mock.post(HOOK, status_code=204)
        attempt(delivery_id)
        sent = requests_mock.last_request
        signatures = sent.headers["webhook-signature"].split(" ")
        assert len(signatures) == 2
        assert all(s.startswith("v1,") for s in signatures)
        for secret in (old, new):
            StandardWebhook(secret).verify(sent.body, dict(sent.headers))

    def test_after_the_overlap_only_the_new_secret_signs(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        with session_factory.begin() as session:
            user = session.get(User, account.id)
            assert user is not None
            old = user.signing_secret
            accounts.rotate_signing_secret(session, user)
            later = utcnow() + dt.timedelta(hours=24, seconds=1)
            live = accounts.active_signing_secrets(user, now=later)
        assert live == [user.signing_secret]
        now = utcnow()
        header = signing.headers(live, "msg_1", now, "{}")
        with pytest.raises(Exception, match="No matching signature"):
            StandardWebhook(old).verify("{}", header)
        StandardWebhook(live[0]).verify("{}", header)

    def test_sign_matches_the_standard_webhooks_reference(self) -> None:
        # The example from the Standard Webhooks specification.
        secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        stamp = dt.datetime.fromtimestamp(1614265330, dt.UTC)
        body = '{"test": 2432232314}'
        assert (
            signing.sign([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", stamp, body)
            == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        )

    def test_sign_needs_a_secret(self) -> None:
        with pytest.raises(ValueError, match="secret"):
            signing.sign([], "msg", utcnow(), "{}")


class TestLease:
    def test_two_claims_never_hold_the_same_delivery(
        self, session_factory: sessionmaker[Session], delivery_id: int
    ) -> None:
        now = utcnow()
        lease = dt.timedelta(seconds=50)
        with session_factory.begin() as session:
            first = delivery_states.claim(session, delivery_id, now=now, lease=lease)
        with session_factory.begin() as session:
            second = delivery_states.claim(session, delivery_id, now=now, lease=lease)
        assert first is not None
        assert second is None

    def test_concurrent_claims_give_the_delivery_to_exactly_one_worker(
        self, session_factory: sessionmaker[Session], delivery_id: int
    ) -> None:
        now = utcnow()
        barrier = threading.Barrier(6)
        results: list[delivery_states.Claim | None] = []

        def contend() -> None:
            barrier.wait()
            with session_factory.begin() as session:
                claimed = delivery_states.claim(
                    session, delivery_id, now=now, lease=dt.timedelta(seconds=50)
                )
            results.append(claimed)

        threads = [threading.Thread(target=contend) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(results) == 6
        assert len([r for r in results if r is not None]) == 1
        assert load(session_factory, delivery_id).attempt_count == 1
        assert len(attempts(session_factory, delivery_id)) == 1

    def test_expired_lease_is_reclaimed_with_the_same_message_id(
        self, session_factory: sessionmaker[Session], delivery_id: int
    ) -> None:
        now = utcnow()
        lease = dt.timedelta(seconds=50)
        with session_factory.begin() as session:
            first = delivery_states.claim(session, delivery_id, now=now, lease=lease)
        later = now + lease + dt.timedelta(seconds=1)
        with session_factory.begin() as session:
            second = delivery_states.claim(session, delivery_id, now=later, lease=lease)
        assert first is not None
        assert second is not None
        assert second.message_id == first.message_id
        assert second.body == first.body
        assert [a.error for a in attempts(session_factory, delivery_id)] == [
            "interrupted",
            "in-progress",
        ]

    def test_a_worker_that_outlived_its_lease_does_not_overwrite_the_newer_claim(
        self, session_factory: sessionmaker[Session], delivery_id: int
    ) -> None:
        now = utcnow()
        lease = dt.timedelta(seconds=50)
        with session_factory.begin() as session:
            stale = delivery_states.claim(session, delivery_id, now=now, lease=lease)
        with session_factory.begin() as session:
            fresh = delivery_states.claim(
                session, delivery_id, now=now + dt.timedelta(minutes=5), lease=lease
            )
        assert stale is not None
        assert fresh is not None
        failure = outbound_http.Outcome(status_code=500, latency_ms=3, error="http-500")
        with session_factory.begin() as session:
            recorded = delivery_states.record(
                session, stale, failure, now=utcnow(), schedule=SCHEDULE
            )
        assert recorded is not None
        assert recorded.stale
        assert load(session_factory, delivery_id).locked_until == fresh.lease
        success = outbound_http.Outcome(status_code=200, latency_ms=3, error=None)
        with session_factory.begin() as session:
            delivery_states.record(session, fresh, success, now=utcnow(), schedule=SCHEDULE)
        assert load(session_factory, delivery_id).status == "succeeded"
        assert [a.error for a in attempts(session_factory, delivery_id)] == ["http-500", None]

    def test_a_delivery_whose_workers_keep_dying_fails_when_its_attempts_are_used_up(
        self, session_factory: sessionmaker[Session], delivery_id: int
    ) -> None:
        lease = dt.timedelta(seconds=50)
        now = utcnow()
        for number in range(3):
            with session_factory.begin() as session:
                claimed = delivery_states.claim(
                    session, delivery_id, now=now + number * 2 * lease, lease=lease, max_attempts=3
                )
            assert claimed is not None  # ... and its worker dies before recording
        with session_factory.begin() as session:
            later = now + 6 * lease
            assert (
                delivery_states.claim(session, delivery_id, now=later, lease=lease, max_attempts=3)
                is None
            )
        delivery = load(session_factory, delivery_id)
        assert delivery.status == "failed"
        assert [a.error for a in attempts(session_factory, delivery_id)] == ["interrupted"] * 3

    def test_an_unexpected_error_while_sending_is_recorded(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        requests_mock.post(HOOK, exc=RuntimeError("bug"))
        recorded = attempt(delivery_id)
        assert recorded is not None
        assert recorded.status == "pending"
        (logged,) = attempts(session_factory, delivery_id)
        assert logged.error == "internal-error"
        assert "core.delivery.send_failed" in caplog.text

    def test_lease_covers_the_longest_attempt(self, settings: Settings) -> None:
        assert delivery_states.lease_duration(settings) > dt.timedelta(
            seconds=2 * settings.callback_timeout_seconds
        )


class TestSsrfAtDelivery:
    def test_literal_private_address_is_refused_and_logged(
        self,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
    ) -> None:
        # Written past the registration check, as a row from before a config change would be.
        delivery_id = make_delivery(session_factory, account.id, "http://10.0.0.1/hook")
        recorded = attempt(delivery_id)
        assert recorded is not None
        assert recorded.status == "pending"
        (logged,) = attempts(session_factory, delivery_id)
        assert (logged.status_code, logged.error) == (None, "ssrf-refused")

    def test_hostname_whose_answer_changed_since_registration_is_refused(
        self,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        answers = [ipaddress.ip_address("93.184.216.34")]
        monkeypatch.setattr(ssrf, "resolve", lambda host, port: list(answers))
        ssrf.check_callback_url(HOOK)
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        answers[:] = [ipaddress.ip_address("127.0.0.1")]
        attempt(delivery_id)
        (logged,) = attempts(session_factory, delivery_id)
        assert logged.error == "ssrf-refused"

    def test_unresolvable_hostname_is_a_dns_error(
        self,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        account: Account,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        def fail(host: str, port: int) -> list[ssrf.IPAddress]:
            raise OSError("NXDOMAIN")

        monkeypatch.setattr(ssrf, "resolve", fail)
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        attempt(delivery_id)
        (logged,) = attempts(session_factory, delivery_id)
        assert logged.error == "dns-error"


class TestSweep:
    def test_due_ids_finds_due_unleased_unwoken_deliveries(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        ids = [make_delivery(session_factory, account.id, HOOK) for _ in range(4)]
        now = utcnow()
        with session_factory.begin() as session:
            # Fresh deliveries were woken when created: the sweep leaves them to their message.
            assert outbox.due_ids(session, now) == []
            session.execute(sa.update(Delivery).values(last_enqueued_at=None))
            rows = {d.id: d for d in session.scalars(sa.select(Delivery))}
            rows[ids[1]].next_attempt_at = now + dt.timedelta(minutes=5)
            rows[ids[2]].locked_until = now + dt.timedelta(minutes=10)
            rows[ids[3]].status = "succeeded"
        with session_factory.begin() as session:
            assert outbox.due_ids(session, now) == [ids[0]]
            outbox.mark_enqueued(session, [ids[0]], now)
        with session_factory.begin() as session:
            assert outbox.due_ids(session, now + dt.timedelta(seconds=1)) == []
            resend = dt.timedelta(seconds=50)
            assert outbox.due_ids(session, now + resend, resend_after=resend) == [ids[0]]
            later = now + dt.timedelta(minutes=6)
            assert outbox.due_ids(session, later) == [ids[1]]

    def test_retry_becomes_due_for_the_sweep(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=500)
        attempt(delivery_id)
        next_at = load(session_factory, delivery_id).next_attempt_at
        assert next_at is not None
        with session_factory() as session:
            assert outbox.due_ids(session, utcnow()) == []
            assert outbox.due_ids(session, next_at) == [delivery_id]

    def test_a_dead_workers_lease_is_swept_after_it_expires(
        self, session_factory: sessionmaker[Session], delivery_id: int, settings: Settings
    ) -> None:
        lease = delivery_states.lease_duration(settings)
        now = utcnow()
        with session_factory.begin() as session:
            assert delivery_states.claim(session, delivery_id, now=now, lease=lease) is not None
        with session_factory() as session:
            assert outbox.due_ids(session, now, resend_after=lease) == []
            after = now + lease + dt.timedelta(seconds=1)
            assert outbox.due_ids(session, after, resend_after=lease) == [delivery_id]


class TestLog:
    def test_list_is_newest_first_with_an_opaque_cursor(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        ids = [make_delivery(session_factory, account.id, HOOK) for _ in range(5)]
        seen: list[int] = []
        cursor = None
        with session_factory() as session:
            while True:
                page = delivery_log.list_deliveries(session, account.id, limit=2, cursor=cursor)
                cursor = page.next_cursor
                seen += [logged.delivery.id for logged in page.items]
                if cursor is None:
                    break
                assert str(ids[0]) not in cursor or not cursor.isdigit()
        assert seen == sorted(ids, reverse=True)

    @pytest.mark.parametrize("cursor", ["garbage", "e30", "eyJiZWZvcmUiOiJ4In0", "!!"])
    def test_bad_cursor_is_refused(
        self, cursor: str, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        with session_factory() as session, pytest.raises(ValidationFailed) as refused:
            delivery_log.list_deliveries(session, account.id, cursor=cursor)
        assert refused.value.code == "invalid-cursor"

    def test_another_users_delivery_is_not_found(
        self,
        session_factory: sessionmaker[Session],
        delivery_id: int,
        make_account: Callable[..., Account],
    ) -> None:
        bob = make_account(email="bob@example.com")
        with session_factory() as session, pytest.raises(NotFound):
            delivery_log.get_delivery(session, bob.id, delivery_id)
        with session_factory() as session, pytest.raises(NotFound):
            delivery_log.redeliver(session, bob.id, delivery_id, now=utcnow())

    def test_redeliver_while_an_attempt_runs_is_a_conflict(
        self, session_factory: sessionmaker[Session], delivery_id: int, account: Account
    ) -> None:
        now = utcnow()
        with session_factory.begin() as session:
            delivery_states.claim(session, delivery_id, now=now, lease=dt.timedelta(seconds=50))
        with session_factory() as session, pytest.raises(Conflict) as refused:
            delivery_log.redeliver(session, account.id, delivery_id, now=now)
        assert refused.value.code == "delivery-in-progress"

    def test_serialized_attempt_shape(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=500, text="nope")
        attempt(delivery_id)
        with session_factory() as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            (logged,) = delivery_log.with_attempts(session, [delivery])
            shown = DeliveryOut.of(logged).render()
            attempt_row = session.scalars(sa.select(DeliveryAttempt)).one()
        assert shown["webhookId"] == delivery.message_id
        assert shown["eventId"].startswith("evt_")
        assert shown["attempts"] == [
            {
                "at": shown["attempts"][0]["at"],
                "statusCode": 500,
                "latencyMs": attempt_row.latency_ms,
                "error": "http-500",
                "responseBody": "nope",
            }
        ]
        assert json.dumps(shown)  # JSON-ready


class TestTimeoutBudget:
    def test_timeouts_come_from_callback_timeout_seconds(
        self,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        http: requests.Session,
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=204)
        env = {"DATABASE_URL": "sqlite://", "BROKER_URL": "memory://"}
        assert Settings.from_env(env).callback_timeout_seconds == 15
        configured = Settings.from_env({**env, "CALLBACK_TIMEOUT_SECONDS": "3.5"})
        tight = settings.model_copy(
            update={"callback_timeout_seconds": configured.callback_timeout_seconds}
        )
        run_delivery(session_factory, delivery_id, settings=tight, http=http)
        # (connect, read): each step of the attempt is bounded by the setting
        assert requests_mock.last_request.timeout == (3.5, 3.5)

    def test_a_2xx_that_comes_after_the_timeout_is_a_failure(
        self,
        requests_mock: rm.Mocker,
        session_factory: sessionmaker[Session],
        settings: Settings,
        http: requests.Session,
        delivery_id: int,
    ) -> None:
        def slow(request: Any, context: Any) -> str:
            time.sleep(0.3)
            return "finally"

        requests_mock.post(HOOK, status_code=200, text=slow)
        tight = settings.model_copy(update={"callback_timeout_seconds": 0.1})
        recorded = run_delivery(session_factory, delivery_id, settings=tight, http=http)
        assert recorded is not None
        assert recorded.status == "pending"
        (logged,) = attempts(session_factory, delivery_id)
        assert (logged.status_code, logged.error) == (200, "timeout")
        assert logged.latency_ms is not None
        assert logged.latency_ms >= 100

    def test_outcome_succeeds_only_for_a_2xx_without_an_error(self) -> None:
        assert outbound_http.Outcome(status_code=204, latency_ms=1, error=None).succeeded
        assert not outbound_http.Outcome(status_code=200, latency_ms=9, error="timeout").succeeded
        assert not outbound_http.Outcome(status_code=302, latency_ms=1, error="redirect").succeeded
        assert not outbound_http.Outcome(status_code=None, latency_ms=1, error="timeout").succeeded


class TestHostileRetryAfter:
    @pytest.mark.parametrize(
        "value", ["9" * 5000, "99999999999999999999", "\u00b2", "\u0663", "1e9", "  "]
    )
    def test_parse_never_raises(self, value: str) -> None:
        now = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
        parsed = outbound_http.parse_retry_after(value, now=now)
        assert parsed is None or dt.timedelta(0) <= parsed <= outbound_http.MAX_RETRY_AFTER

    @pytest.mark.parametrize("value", ["9" * 5000, "99999999999999999999", "\u00b2"])
    def test_an_absurd_retry_after_is_recorded_and_capped(
        self,
        value: str,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        requests_mock.post(HOOK, status_code=503, headers={"Retry-After": value})
        recorded = attempt(delivery_id)
        assert recorded is not None
        assert recorded.status == "pending"
        next_at = load(session_factory, delivery_id).next_attempt_at
        assert next_at is not None
        assert next_at <= utcnow() + outbound_http.MAX_RETRY_AFTER
        (logged,) = attempts(session_factory, delivery_id)
        assert logged.error == "http-503"


class TestFractionalSchedule:
    def test_fractional_waits_are_honoured(self) -> None:
        class Middle(random.Random):
            def uniform(self, a: float, b: float) -> float:
                return (a + b) / 2

        assert delivery_states.retry_delay((0.5, 1.5), 1, rng=Middle()) == dt.timedelta(seconds=0.5)
        assert delivery_states.retry_delay((0.5, 1.5), 2, rng=Middle()) == dt.timedelta(seconds=1.5)
        assert delivery_states.retry_delay((0.5, 1.5), 3, rng=Middle()) is None

    def test_schedule_from_the_environment(self) -> None:
        env = {"DATABASE_URL": "sqlite://", "BROKER_URL": "memory://"}
        settings = Settings.from_env({**env, "RETRY_SCHEDULE": "0.5, 2,10"})
        assert settings.retry_schedule == (0.5, 2, 10)
        default = Settings.from_env(env).retry_schedule
        assert default == (5, 300, 1800, 7200, 18000, 36000, 36000)

    @pytest.mark.parametrize("value", ["inf", "nan", "-1", "5,soon", " , ", "99999999999999"])
    def test_unusable_schedule_stops_the_service(self, value: str) -> None:
        env = {"DATABASE_URL": "sqlite://", "BROKER_URL": "memory://", "RETRY_SCHEDULE": value}
        with pytest.raises(ConfigError, match="RETRY_SCHEDULE"):
            Settings.from_env(env)


class TestGoneAfterReRegistration:
    def test_410_from_an_old_url_does_not_disable_the_new_registration(
        self,
        requests_mock: rm.Mocker,
        attempt: Callable[..., delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
        delivery_id: int,
    ) -> None:
        new_url = "https://hooks.example.com/v2"
        with session_factory.begin() as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            webhook = session.get(Webhook, delivery.webhook_id)
            assert webhook is not None
            webhook.callback_url = new_url  # registered again since the delivery was made
        requests_mock.post(HOOK, status_code=410)
        recorded = attempt(delivery_id)
        assert recorded == delivery_states.Recorded(status="failed", webhook_disabled=False)
        assert load(session_factory, delivery_id).status == "failed"
        with session_factory() as session:
            assert session.scalars(sa.select(Webhook)).one().disabled_at is None
