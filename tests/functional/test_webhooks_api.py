from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
import requests_mock as rm
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook as StandardWebhook

from core.config import Settings
from core.db import utcnow
from core.models import Delivery, DeliveryAttempt, User, Webhook
from core.services import accounts, delivery_states, outbound_http
from tests.conftest import Account, Enqueued
from tests.deliveries_helpers import attempts, load
from workers.tasks.deliveries import run_delivery

HOOK = "https://93.184.216.34/hook"
JSON = {"Accept": "application/json"}
DELIVER = "workers.deliveries.deliver"


def start_meeting(client: FlaskClient, account: Account, url: str = HOOK) -> int:
    """Start an ad hoc meeting with a meeting.start callback and use its presenter link."""
    response = client.post(
        "/v1/meetings/start",
        json={
            "startWithPersonalUrl": False,
            "webhooks": {"meeting.start": {"callbackUrl": url, "customCallbackData": {"n": 1}}},
        },
        headers=account.headers,
    )
    assert response.status_code == 201
    body = response.get_json()
    assert body["webhooksStatus"]["meeting.start"]["registered"] is True
    link = body["presenterLink"].removeprefix("https://meet.example.test")
    assert client.post(link, headers=JSON).status_code == 200
    meeting_id: int = body["meetingId"]
    return meeting_id


def delivery_ids(session_factory: sessionmaker[Session]) -> list[int]:
    with session_factory() as session:
        return list(session.scalars(sa.select(Delivery.id).order_by(Delivery.id)))


@pytest.fixture
def attempt(
    session_factory: sessionmaker[Session], settings: Settings
) -> Callable[[int], delivery_states.Recorded | None]:
    http = outbound_http.make_http_session()

    def run(delivery_id: int) -> delivery_states.Recorded | None:
        return run_delivery(session_factory, delivery_id, settings=settings, http=http)

    return run


def snapshot(session_factory: sessionmaker[Session]) -> list[tuple[Any, ...]]:
    with session_factory() as session:
        rows = session.execute(
            sa.select(
                Delivery.id,
                Delivery.status,
                Delivery.next_attempt_at,
                Delivery.attempt_count,
                Delivery.locked_until,
                Delivery.last_enqueued_at,
            ).order_by(Delivery.id)
        ).all()
        count = session.scalar(sa.select(sa.func.count()).select_from(DeliveryAttempt))
    return [tuple(row) for row in rows] + [("attempts", count)]


class TestAuth:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("get", "/v1/webhooks/deliveries"),
            ("get", "/v1/webhooks/deliveries/1"),
            ("post", "/v1/webhooks/deliveries/1/redeliver"),
            ("get", "/v1/webhooks/signing-secret"),
            ("post", "/v1/webhooks/signing-secret/rotate"),
        ],
    )
    def test_needs_a_token_with_start_meeting(
        self,
        method: str,
        path: str,
        client: FlaskClient,
        account: Account,
        session_factory: sessionmaker[Session],
    ) -> None:
        response = getattr(client, method)(path)
        assert response.status_code == 401
        assert response.get_json()["code"] == "invalid-token"
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        with session_factory.begin() as session:
            user = session.get(User, account.id)
            assert user is not None
            issued = accounts.create_token(session, user=user, scopes=("user_info",))
        response = getattr(client, method)(
            path, headers={"Authorization": f"Bearer {issued.token}"}
        )
        assert response.status_code == 403
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


class TestListDeliveries:
    def test_empty(self, client: FlaskClient, account: Account) -> None:
        response = client.get("/v1/webhooks/deliveries", headers=account.headers)
        assert response.status_code == 200
        assert response.get_json() == {"deliveries": [], "nextCursor": None}

    def test_shape_of_a_delivery_and_its_attempts(
        self,
        client: FlaskClient,
        account: Account,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
    ) -> None:
        meeting_id = start_meeting(client, account)
        (delivery_id,) = delivery_ids(session_factory)
        requests_mock.post(HOOK, [{"status_code": 500, "text": "down"}, {"status_code": 204}])
        attempt(delivery_id)
        with session_factory.begin() as session:
            session.execute(sa.update(Delivery).values(next_attempt_at=utcnow()))
        attempt(delivery_id)
        body = client.get("/v1/webhooks/deliveries", headers=account.headers).get_json()
        (shown,) = body["deliveries"]
        delivery = load(session_factory, delivery_id)
        assert shown["id"] == delivery_id
        assert shown["webhookId"] == delivery.message_id
        assert shown["webhookId"] == requests_mock.last_request.headers["webhook-id"]
        assert shown["eventId"].startswith("evt_")
        assert shown["eventType"] == "meeting.start"
        assert shown["meetingId"] == meeting_id
        assert shown["callbackUrl"] == HOOK
        assert shown["status"] == "succeeded"
        assert shown["nextAttemptAt"] is None
        first, second = shown["attempts"]
        assert first["statusCode"] == 500
        assert first["error"] == "http-500"
        assert first["responseBody"] == "down"
        assert first["at"].endswith("Z")
        assert isinstance(first["latencyMs"], int)
        assert second["statusCode"] == 204
        assert second["error"] is None
        assert (
            client.get(f"/v1/webhooks/deliveries/{delivery_id}", headers=account.headers).get_json()
            == shown
        )

    def test_pending_delivery_shows_when_it_is_due(
        self, client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
    ) -> None:
        start_meeting(client, account)
        (shown,) = client.get("/v1/webhooks/deliveries", headers=account.headers).get_json()[
            "deliveries"
        ]
        assert shown["status"] == "pending"
        assert shown["nextAttemptAt"].endswith("Z")
        assert shown["attempts"] == []

    def test_newest_first_paginated_with_limit_and_cursor(
        self, client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
    ) -> None:
        for _ in range(5):
            start_meeting(client, account)
        ids = delivery_ids(session_factory)
        seen: list[int] = []
        url = "/v1/webhooks/deliveries?limit=2"
        pages = 0
        while True:
            body = client.get(url, headers=account.headers).get_json()
            assert len(body["deliveries"]) <= 2
            seen += [d["id"] for d in body["deliveries"]]
            pages += 1
            if body["nextCursor"] is None:
                break
            url = f"/v1/webhooks/deliveries?limit=2&cursor={body['nextCursor']}"
        assert seen == sorted(ids, reverse=True)
        assert pages == 3

    def test_filters_by_meeting_and_status(
        self,
        client: FlaskClient,
        account: Account,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
    ) -> None:
        first_meeting = start_meeting(client, account)
        second_meeting = start_meeting(client, account)
        first, second = delivery_ids(session_factory)
        requests_mock.post(HOOK, status_code=200)
        attempt(first)

        def listed(query: str) -> list[int]:
            response = client.get(f"/v1/webhooks/deliveries?{query}", headers=account.headers)
            assert response.status_code == 200
            return [d["id"] for d in response.get_json()["deliveries"]]

        assert listed(f"meetingId={first_meeting}") == [first]
        assert listed(f"meetingId={second_meeting}") == [second]
        assert listed("status=succeeded") == [first]
        assert listed("status=pending") == [second]
        assert listed("status=failed") == []
        assert listed(f"meetingId={second_meeting}&status=succeeded") == []
        assert listed("unknownParam=1") == [second, first]

    def test_bad_query_lists_every_bad_field(self, client: FlaskClient, account: Account) -> None:
        response = client.get(
            "/v1/webhooks/deliveries?meetingId=abc&status=bogus&limit=0", headers=account.headers
        )
        assert response.status_code == 400
        body = response.get_json()
        assert body["code"] == "invalid-request"
        assert body["Message"]
        assert {e["field"] for e in body["errors"]} == {"meetingId", "status", "limit"}

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("limit=101", "limit"),
            ("limit=x", "limit"),
            ("meetingId=0", "meetingId"),
            ("meetingId=-3", "meetingId"),
            ("status=PENDING", "status"),
            ("status=in-progress", "status"),
        ],
    )
    def test_bad_single_parameter(
        self, query: str, field: str, client: FlaskClient, account: Account
    ) -> None:
        response = client.get(f"/v1/webhooks/deliveries?{query}", headers=account.headers)
        assert response.status_code == 400
        assert [e["field"] for e in response.get_json()["errors"]] == [field]

    def test_empty_parameters_mean_no_filter(
        self, client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
    ) -> None:
        start_meeting(client, account)
        response = client.get(
            "/v1/webhooks/deliveries?meetingId=&status=&limit=&cursor=", headers=account.headers
        )
        assert response.status_code == 200
        assert [d["id"] for d in response.get_json()["deliveries"]] == delivery_ids(session_factory)

    @pytest.mark.parametrize("limit", ["1", "100"])
    def test_limit_bounds_are_accepted(
        self, limit: str, client: FlaskClient, account: Account
    ) -> None:
        response = client.get(f"/v1/webhooks/deliveries?limit={limit}", headers=account.headers)
        assert response.status_code == 200

    @pytest.mark.parametrize(
        "cursor",
        [
            "garbage",
            "eyJiZWZvcmUiOjB9",  # {"before":0}
            "%00",
            "eyJiZWZvcmUiOjk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OX0",  # {"before":999...}
            "eyJiZWZvcmUiOjIxNDc0ODM2NDh9",  # {"before":2147483648}
            "eyJiZWZvcmUiOnRydWV9",  # {"before":true}
            "a" * 300,
        ],
    )
    def test_bad_cursor(self, cursor: str, client: FlaskClient, account: Account) -> None:
        response = client.get(f"/v1/webhooks/deliveries?cursor={cursor}", headers=account.headers)
        assert response.status_code == 400
        assert response.get_json()["code"] == "invalid-cursor"


class TestTenantIsolation:
    def test_another_users_deliveries_are_invisible(
        self,
        client: FlaskClient,
        account: Account,
        make_account: Callable[..., Account],
        enqueued: Enqueued,
        session_factory: sessionmaker[Session],
    ) -> None:
        meeting_id = start_meeting(client, account)
        (delivery_id,) = delivery_ids(session_factory)
        bob = make_account(email="bob@example.com")
        enqueued.calls.clear()
        before = snapshot(session_factory)
        listed = client.get("/v1/webhooks/deliveries", headers=bob.headers).get_json()
        assert listed == {"deliveries": [], "nextCursor": None}
        for response in (
            client.get(f"/v1/webhooks/deliveries?meetingId={meeting_id}", headers=bob.headers),
            client.get(f"/v1/webhooks/deliveries/{delivery_id}", headers=bob.headers),
            client.post(f"/v1/webhooks/deliveries/{delivery_id}/redeliver", headers=bob.headers),
        ):
            assert response.status_code == 404
            assert response.get_json()["code"] in {"meeting-not-found", "delivery-not-found"}
        assert snapshot(session_factory) == before
        assert enqueued.calls == []

    def test_unknown_meeting_and_delivery_are_404(
        self, client: FlaskClient, account: Account
    ) -> None:
        for path in (
            "/v1/webhooks/deliveries?meetingId=999999",
            "/v1/webhooks/deliveries/999999",
            "/v1/webhooks/deliveries/abc",
            # Beyond the 32-bit id columns: no row, and no database error either.
            "/v1/webhooks/deliveries?meetingId=2147483648",
            "/v1/webhooks/deliveries?meetingId=99999999999999999999",
            "/v1/webhooks/deliveries/2147483648",
            "/v1/webhooks/deliveries/99999999999999999999",
        ):
            response = client.get(path, headers=account.headers)
            assert response.status_code == 404, path
            assert response.get_json()["code"]

    @pytest.mark.parametrize("delivery_id", ["2147483648", "99999999999999999999"])
    def test_redeliver_of_an_id_beyond_any_row_is_404(
        self, delivery_id: str, client: FlaskClient, account: Account, enqueued: Enqueued
    ) -> None:
        response = client.post(
            f"/v1/webhooks/deliveries/{delivery_id}/redeliver", headers=account.headers
        )
        assert response.status_code == 404
        assert response.get_json()["code"] == "delivery-not-found"
        assert enqueued.calls == []


class TestRedeliver:
    def test_redeliver_sends_again_with_the_same_webhook_id(
        self,
        client: FlaskClient,
        account: Account,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        enqueued: Enqueued,
        session_factory: sessionmaker[Session],
    ) -> None:
        start_meeting(client, account)
        (delivery_id,) = delivery_ids(session_factory)
        requests_mock.post(HOOK, status_code=200)
        attempt(delivery_id)
        enqueued.calls.clear()
        before = utcnow()
        response = client.post(
            f"/v1/webhooks/deliveries/{delivery_id}/redeliver", headers=account.headers
        )
        assert response.status_code == 202
        body = response.get_json()
        assert body["id"] == delivery_id
        assert body["status"] == "pending"
        due = dt.datetime.fromisoformat(body["nextAttemptAt"])
        assert before - dt.timedelta(seconds=1) <= due <= utcnow()
        assert enqueued.calls == [(DELIVER, {"delivery_id": delivery_id})]
        attempt(delivery_id)
        first, second = requests_mock.request_history
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        assert first.body == second.body
        assert load(session_factory, delivery_id).status == "succeeded"
        assert len(attempts(session_factory, delivery_id)) == 2

    def test_redelivering_a_failed_delivery_starts_a_new_round(
        self,
        client: FlaskClient,
        account: Account,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
    ) -> None:
        start_meeting(client, account)
        (delivery_id,) = delivery_ids(session_factory)
        with session_factory.begin() as session:
            session.execute(
                sa.update(Delivery).values(status="failed", attempt_count=8, next_attempt_at=None)
            )
        response = client.post(
            f"/v1/webhooks/deliveries/{delivery_id}/redeliver", headers=account.headers
        )
        assert response.status_code == 202
        requests_mock.post(HOOK, status_code=500)
        recorded = attempt(delivery_id)
        assert recorded is not None
        assert recorded.status == "pending"  # the schedule starts over
        assert load(session_factory, delivery_id).attempt_count == 1

    def test_redeliver_a_disabled_webhooks_delivery_is_a_conflict(
        self,
        client: FlaskClient,
        account: Account,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        enqueued: Enqueued,
        session_factory: sessionmaker[Session],
    ) -> None:
        start_meeting(client, account)
        (delivery_id,) = delivery_ids(session_factory)
        requests_mock.post(HOOK, status_code=410)
        attempt(delivery_id)
        enqueued.calls.clear()
        before = snapshot(session_factory)
        response = client.post(
            f"/v1/webhooks/deliveries/{delivery_id}/redeliver", headers=account.headers
        )
        assert response.status_code == 409
        assert response.get_json()["code"] == "webhook-disabled"
        assert snapshot(session_factory) == before
        assert enqueued.calls == []

    def test_registering_the_callback_again_reenables_it(
        self,
        client: FlaskClient,
        account: Account,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
    ) -> None:
        meeting_id = start_meeting(client, account)
        (delivery_id,) = delivery_ids(session_factory)
        requests_mock.post(HOOK, status_code=410)
        attempt(delivery_id)
        response = client.post(
            f"/v1/meetings/{meeting_id}/start",
            json={"webhooks": {"meeting.start": {"callbackUrl": HOOK}}},
            headers=account.headers,
        )
        assert response.status_code == 200
        with session_factory() as session:
            assert session.scalars(sa.select(Webhook)).one().disabled_at is None
        response = client.post(
            f"/v1/webhooks/deliveries/{delivery_id}/redeliver", headers=account.headers
        )
        assert response.status_code == 202

    def test_redeliver_during_an_attempt_is_a_conflict(
        self,
        client: FlaskClient,
        account: Account,
        enqueued: Enqueued,
        session_factory: sessionmaker[Session],
    ) -> None:
        start_meeting(client, account)
        (delivery_id,) = delivery_ids(session_factory)
        with session_factory.begin() as session:
            delivery_states.claim(session, delivery_id, now=utcnow(), lease=dt.timedelta(minutes=1))
        enqueued.calls.clear()
        before = snapshot(session_factory)
        response = client.post(
            f"/v1/webhooks/deliveries/{delivery_id}/redeliver", headers=account.headers
        )
        assert response.status_code == 409
        assert response.get_json()["code"] == "delivery-in-progress"
        assert snapshot(session_factory) == before
        assert enqueued.calls == []

    def test_redeliver_unknown_is_404_and_get_is_405(
        self, client: FlaskClient, account: Account, enqueued: Enqueued
    ) -> None:
        response = client.post("/v1/webhooks/deliveries/424242/redeliver", headers=account.headers)
        assert response.status_code == 404
        response = client.get("/v1/webhooks/deliveries/1/redeliver", headers=account.headers)
        assert response.status_code == 405
        assert response.get_json()["code"] == "method-not-allowed"
        assert enqueued.calls == []


class TestSigningSecret:
    def test_get_shows_the_users_secret(
        self, client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
    ) -> None:
        response = client.get("/v1/webhooks/signing-secret", headers=account.headers)
        assert response.status_code == 200
        with session_factory() as session:
            user = session.get(User, account.id)
            assert user is not None
        assert response.get_json() == {
            "signingSecret": user.signing_secret,
            "previousSecretValidUntil": None,
        }
        assert user.signing_secret.startswith("whsec_")

    def test_rotate_keeps_the_previous_secret_signing_for_24_hours(
        self,
        client: FlaskClient,
        account: Account,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
    ) -> None:
        old = client.get("/v1/webhooks/signing-secret", headers=account.headers).get_json()
        before = utcnow()
        response = client.post("/v1/webhooks/signing-secret/rotate", headers=account.headers)
        assert response.status_code == 200
        rotated = response.get_json()
        assert set(rotated) == {"signingSecret", "previousSecretValidUntil"}
        assert rotated["signingSecret"].startswith("whsec_")
        assert rotated["signingSecret"] != old["signingSecret"]
        until = dt.datetime.fromisoformat(
            rotated["previousSecretValidUntil"].replace("Z", "+00:00")
        )
        # Shown to the whole second, like every time.
        assert before.replace(microsecond=0) + dt.timedelta(hours=24) <= until
        assert until <= utcnow() + dt.timedelta(hours=24)
        shown = client.get("/v1/webhooks/signing-secret", headers=account.headers).get_json()
        assert shown == rotated

        start_meeting(client, account)
        (delivery_id,) = delivery_ids(session_factory)
        requests_mock.post(HOOK, status_code=204)
        attempt(delivery_id)
        sent = requests_mock.last_request
        for secret in (old["signingSecret"], rotated["signingSecret"]):
            payload = StandardWebhook(secret).verify(sent.body, dict(sent.headers))
            assert payload["customCallbackData"] == {"n": 1}

    def test_rotate_ignores_a_body(self, client: FlaskClient, account: Account) -> None:
        response = client.post(
            "/v1/webhooks/signing-secret/rotate", json={"anything": 1}, headers=account.headers
        )
        assert response.status_code == 200


CALLBACK_KEYS = {"id", "type", "timestamp", "meetingId", "customCallbackData", "data"}
DATA_KEYS = {
    "meetingId",
    "conferenceId",
    "meetingName",
    "startedAt",
    "endedAt",
    "durationSeconds",
    "sequence",
}
START_HOOK = "https://93.184.216.34/start"
END_HOOK = "https://93.184.216.34/end"


def run_and_end(
    client: FlaskClient,
    account: Account,
    attempt: Callable[[int], delivery_states.Recorded | None],
    session_factory: sessionmaker[Session],
    webhooks: dict[str, Any],
) -> dict[str, Any]:
    """Start a meeting with these webhooks, use its link, end it, attempt every delivery."""
    response = client.post(
        "/v1/meetings/start",
        json={"startWithPersonalUrl": False, "webhooks": webhooks},
        headers=account.headers,
    )
    assert response.status_code == 201
    started: dict[str, Any] = response.get_json()
    link = started["presenterLink"].removeprefix("https://meet.example.test")
    assert client.post(link, headers=JSON).status_code == 200
    ended = client.post(f"/v1/meetings/{started['meetingId']}/end", headers=account.headers)
    assert ended.status_code == 200
    for delivery_id in delivery_ids(session_factory):
        attempt(delivery_id)
    return started


class TestCallbackBody:
    def test_body_matches_the_spec_example_key_for_key(
        self,
        client: FlaskClient,
        account: Account,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
    ) -> None:
        requests_mock.post(START_HOOK, status_code=204)
        requests_mock.post(END_HOOK, status_code=204)
        started = run_and_end(
            client,
            account,
            attempt,
            session_factory,
            {
                "meeting.start": {"callbackUrl": START_HOOK, "customCallbackData": {"foo": 123}},
                "meeting.end": {"callbackUrl": END_HOOK, "customCallbackData": {"foo": 123}},
            },
        )
        meeting_id = started["meetingId"]
        conference = started["audioConference"]
        meeting = client.get(f"/v1/meetings/{meeting_id}", headers=account.headers).get_json()
        secret = client.get("/v1/webhooks/signing-secret", headers=account.headers).get_json()
        start_request, end_request = requests_mock.request_history
        assert (start_request.url, end_request.url) == (START_HOOK, END_HOOK)
        bodies = []
        for sent in (start_request, end_request):
            verified = StandardWebhook(secret["signingSecret"]).verify(
                sent.body, dict(sent.headers)
            )
            body = json.loads(sent.body)
            assert verified == body
            assert set(body) == CALLBACK_KEYS
            assert set(body["data"]) == DATA_KEYS
            assert body["id"].startswith("evt_")
            assert body["timestamp"].endswith("Z")
            assert body["meetingId"] == meeting_id
            assert type(body["meetingId"]) is int
            assert body["customCallbackData"] == {"foo": 123}
            data = body["data"]
            assert data["meetingId"] == meeting_id
            assert data["conferenceId"] == conference["conferenceId"]
            assert isinstance(data["conferenceId"], str)
            assert data["meetingName"] is None
            assert type(data["sequence"]) is int
            # The organizer code is for the audio bridge only, never for a callback.
            assert "organizerCode" not in sent.text
            assert conference["organizerCode"] not in {
                str(v) for v in [*body.values(), *data.values()]
            }
            # unix seconds, within a few seconds of now
            assert sent.headers["webhook-timestamp"].isdigit()
            assert abs(int(sent.headers["webhook-timestamp"]) - utcnow().timestamp()) < 30
            bodies.append(body)
        start, end = bodies
        assert (start["type"], end["type"]) == ("meeting.start", "meeting.end")
        assert start["data"]["startedAt"] == meeting["startedAt"] == start["timestamp"]
        assert start["data"]["endedAt"] is None
        assert start["data"]["durationSeconds"] is None
        assert start["data"]["sequence"] == 1
        assert end["timestamp"] == meeting["endedAt"] == end["data"]["endedAt"]
        assert end["data"]["startedAt"] == meeting["startedAt"]
        assert end["data"]["durationSeconds"] == meeting["durationSeconds"]
        assert type(end["data"]["durationSeconds"]) is int
        assert end["data"]["sequence"] == 2
        assert start["id"] != end["id"]
        listed = client.get("/v1/webhooks/deliveries", headers=account.headers).get_json()
        assert [d["eventId"] for d in listed["deliveries"]] == [end["id"], start["id"]]
        assert [d["webhookId"] for d in listed["deliveries"]] == [
            end_request.headers["webhook-id"],
            start_request.headers["webhook-id"],
        ]

    @pytest.mark.parametrize(
        "custom",
        [{"foo": 123}, [1, "two", None], "text", 42, 1.5, True, False, 0, "", [], {}, None],
    )
    def test_custom_callback_data_is_echoed_as_registered(
        self,
        custom: Any,
        client: FlaskClient,
        account: Account,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
    ) -> None:
        requests_mock.post(START_HOOK, status_code=204)
        run_and_end(
            client,
            account,
            attempt,
            session_factory,
            {"meeting.start": {"callbackUrl": START_HOOK, "customCallbackData": custom}},
        )
        body = requests_mock.last_request.json()
        assert "customCallbackData" in body
        assert body["customCallbackData"] == custom
        assert type(body["customCallbackData"]) is type(custom)

    def test_without_custom_callback_data_the_key_is_null(
        self,
        client: FlaskClient,
        account: Account,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
    ) -> None:
        requests_mock.post(START_HOOK, status_code=204)
        run_and_end(
            client,
            account,
            attempt,
            session_factory,
            {"meeting.start": {"callbackUrl": START_HOOK}},
        )
        body = requests_mock.last_request.json()
        assert set(body) == CALLBACK_KEYS
        assert body["customCallbackData"] is None

    def test_webhook_id_is_stable_across_retries_and_redeliveries_and_both_secrets_verify(
        self,
        client: FlaskClient,
        account: Account,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        session_factory: sessionmaker[Session],
    ) -> None:
        old = client.get("/v1/webhooks/signing-secret", headers=account.headers).get_json()
        requests_mock.post(HOOK, [{"status_code": 500}, {"status_code": 200}, {"status_code": 200}])
        start_meeting(client, account)
        (delivery_id,) = delivery_ids(session_factory)
        attempt(delivery_id)  # 500: a retry is scheduled
        new = client.post("/v1/webhooks/signing-secret/rotate", headers=account.headers)
        with session_factory.begin() as session:
            session.execute(sa.update(Delivery).values(next_attempt_at=utcnow()))
        attempt(delivery_id)  # 200
        response = client.post(
            f"/v1/webhooks/deliveries/{delivery_id}/redeliver", headers=account.headers
        )
        assert response.status_code == 202
        attempt(delivery_id)  # sent again at once
        first, retry, redelivered = requests_mock.request_history
        ids = {r.headers["webhook-id"] for r in (first, retry, redelivered)}
        assert ids == {response.get_json()["webhookId"]}
        assert first.body == retry.body == redelivered.body
        assert len(first.headers["webhook-signature"].split(" ")) == 1
        for sent in (retry, redelivered):
            assert len(sent.headers["webhook-signature"].split(" ")) == 2
            for secret in (old["signingSecret"], new.get_json()["signingSecret"]):
                StandardWebhook(secret).verify(sent.body, dict(sent.headers))
        shown = client.get(f"/v1/webhooks/deliveries/{delivery_id}", headers=account.headers)
        assert [a["statusCode"] for a in shown.get_json()["attempts"]] == [500, 200, 200]
        assert shown.get_json()["status"] == "succeeded"


class TestRedeliverAfterDeadWorkers:
    def test_a_pending_delivery_with_no_attempt_left_gets_a_new_round(
        self,
        client: FlaskClient,
        account: Account,
        requests_mock: rm.Mocker,
        attempt: Callable[[int], delivery_states.Recorded | None],
        settings: Settings,
        session_factory: sessionmaker[Session],
    ) -> None:
        start_meeting(client, account)
        (delivery_id,) = delivery_ids(session_factory)
        with session_factory.begin() as session:
            # Its last allowed attempt was claimed and its worker died (lease long gone).
            session.execute(
                sa.update(Delivery).values(
                    attempt_count=len(settings.retry_schedule) + 1,
                    locked_until=utcnow() - dt.timedelta(minutes=1),
                    next_attempt_at=utcnow() - dt.timedelta(minutes=2),
                )
            )
        response = client.post(
            f"/v1/webhooks/deliveries/{delivery_id}/redeliver", headers=account.headers
        )
        assert response.status_code == 202
        requests_mock.post(HOOK, status_code=200)
        recorded = attempt(delivery_id)
        assert recorded is not None
        assert recorded.status == "succeeded"
        assert requests_mock.call_count == 1
        assert load(session_factory, delivery_id).attempt_count == 1
