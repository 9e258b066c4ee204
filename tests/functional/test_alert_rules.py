from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from core.models import AccessToken, Alert, AlertRule, Delivery
from core.services import accounts
from tests.conftest import Account, Enqueued

ALERT_URL = "https://93.184.216.34/alerts"
JSON = {"Accept": "application/json"}
DELIVER = "workers.deliveries.deliver"

VALID_RULES: list[dict[str, Any]] = [
    {"type": "meeting.long_running", "params": {"minutes": 90}},
    {"type": "meeting.no_start", "params": {}},
    {"type": "delivery.failed", "params": {}},
    {"type": "webhook.disabled", "params": {}},
    {"type": "meeting.short", "params": {"seconds": 30}},
    {"type": "delivery.failing", "params": {"attempts": 3}},
    {"type": "webhook.recovered", "params": {}},
]


def rule_count(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(AlertRule)) or 0


def create(client: FlaskClient, account: Account, body: dict[str, Any]) -> Any:
    return client.post("/v1/alerts/rules", json=body, headers=account.headers)


class TestCreateRule:
    @pytest.mark.parametrize("rule", VALID_RULES, ids=[r["type"] for r in VALID_RULES])
    def test_each_type_is_created_with_its_params(
        self, client: FlaskClient, account: Account, rule: dict[str, Any]
    ) -> None:
        response = create(client, account, {**rule, "callbackUrl": ALERT_URL})
        assert response.status_code == 201
        body = response.get_json()
        assert list(body) == ["id", "type", "params", "callbackUrl", "createdAt"]
        assert body["type"] == rule["type"]
        assert body["params"] == rule["params"]
        assert body["callbackUrl"] == ALERT_URL
        assert body["createdAt"].endswith("Z")
        listed = client.get("/v1/alerts/rules", headers=account.headers).get_json()
        assert listed == {"rules": [body]}
        assert (
            client.get(f"/v1/alerts/rules/{body['id']}", headers=account.headers).get_json() == body
        )

    def test_params_may_be_left_out_for_types_without_any_and_unknown_fields_are_ignored(
        self, client: FlaskClient, account: Account
    ) -> None:
        response = create(
            client, account, {"type": "delivery.failed", "callbackUrl": ALERT_URL, "note": "x"}
        )
        assert response.status_code == 201
        assert response.get_json()["params"] == {}

    @pytest.mark.parametrize(
        ("body", "fields"),
        [
            ({"type": "meeting.exploded", "params": {}}, ["type"]),
            ({"params": {}}, ["type"]),
            ({"type": 7, "params": {}}, ["type"]),
            ({"type": "meeting.long_running", "params": {}}, ["params.minutes"]),
            ({"type": "meeting.long_running"}, ["params.minutes"]),
            ({"type": "meeting.long_running", "params": {"minutes": 0}}, ["params.minutes"]),
            ({"type": "meeting.long_running", "params": {"minutes": -5}}, ["params.minutes"]),
            ({"type": "meeting.long_running", "params": {"minutes": "30"}}, ["params.minutes"]),
            ({"type": "meeting.long_running", "params": {"minutes": 1.5}}, ["params.minutes"]),
            ({"type": "meeting.long_running", "params": {"minutes": True}}, ["params.minutes"]),
            ({"type": "meeting.long_running", "params": {"minutes": 10**6}}, ["params.minutes"]),
            (
                {"type": "meeting.long_running", "params": {"minutes": 5, "hours": 1}},
                ["params.hours"],
            ),
            (
                {"type": "meeting.short", "params": {"minutes": 5}},
                ["params.seconds", "params.minutes"],
            ),
            ({"type": "meeting.short", "params": {"seconds": 86401}}, ["params.seconds"]),
            ({"type": "delivery.failing", "params": {"attempts": 0}}, ["params.attempts"]),
            # The default schedule makes 8 attempts: the 8th failure is delivery.failed.
            ({"type": "delivery.failing", "params": {"attempts": 8}}, ["params.attempts"]),
            ({"type": "meeting.no_start", "params": {"minutes": 5}}, ["params.minutes"]),
            ({"type": "webhook.disabled", "params": []}, ["params"]),
            ({"type": "webhook.disabled", "params": None}, ["params"]),
        ],
    )
    def test_bad_input_is_a_400_naming_the_field_and_creates_nothing(
        self,
        client: FlaskClient,
        account: Account,
        session_factory: sessionmaker[Session],
        body: dict[str, Any],
        fields: list[str],
    ) -> None:
        response = create(client, account, {**body, "callbackUrl": ALERT_URL})
        assert response.status_code == 400
        error = response.get_json()
        assert error["code"] == "invalid-request"
        assert error["Message"].startswith("invalid alert rule: ")
        assert [e["field"] for e in error["errors"]] == fields
        assert rule_count(session_factory) == 0

    @pytest.mark.parametrize(
        ("url", "code"),
        [
            ("http://10.0.0.5/alerts", "callback-url-forbidden"),
            ("http://169.254.169.254/latest", "callback-url-forbidden"),
            ("ftp://93.184.216.34/alerts", "callback-url-scheme"),
            ("not a url", "callback-url-invalid"),
        ],
    )
    def test_the_callback_url_passes_the_ssrf_guard(
        self,
        client: FlaskClient,
        account: Account,
        session_factory: sessionmaker[Session],
        url: str,
        code: str,
    ) -> None:
        response = create(client, account, {"type": "delivery.failed", "callbackUrl": url})
        assert response.status_code == 400
        error = response.get_json()
        assert error["code"] == code
        assert [e["field"] for e in error["errors"]] == ["callbackUrl"]
        assert rule_count(session_factory) == 0

    @pytest.mark.parametrize("url", [None, "", 5, "https://x.example/" + "a" * 2100])
    def test_a_missing_or_malformed_callback_url_is_named(
        self,
        client: FlaskClient,
        account: Account,
        session_factory: sessionmaker[Session],
        url: Any,
    ) -> None:
        body: dict[str, Any] = {"type": "delivery.failed"}
        if url is not None:
            body["callbackUrl"] = url
        response = create(client, account, body)
        assert response.status_code == 400
        assert [e["field"] for e in response.get_json()["errors"]] == ["callbackUrl"]
        assert rule_count(session_factory) == 0

    def test_every_bad_field_is_listed_at_once(
        self, client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
    ) -> None:
        response = create(
            client,
            account,
            {"type": "meeting.short", "params": {"seconds": 0}, "callbackUrl": "http://10.1.2.3/"},
        )
        assert response.status_code == 400
        error = response.get_json()
        assert error["code"] == "invalid-request"
        assert [e["field"] for e in error["errors"]] == ["params.seconds", "callbackUrl"]
        assert rule_count(session_factory) == 0

    @pytest.mark.parametrize(
        ("data", "content_type", "status", "code"),
        [
            ("[1, 2]", "application/json", 400, "malformed-json"),
            ("{", "application/json", 400, "malformed-json"),
            ("", "application/json", 400, "body-required"),
            ("type=delivery.failed", "application/x-www-form-urlencoded", 415, None),
        ],
    )
    def test_a_body_that_is_not_a_json_object_is_refused(
        self,
        client: FlaskClient,
        account: Account,
        session_factory: sessionmaker[Session],
        data: str,
        content_type: str,
        status: int,
        code: str | None,
    ) -> None:
        response = client.post(
            "/v1/alerts/rules", data=data, content_type=content_type, headers=account.headers
        )
        assert response.status_code == status
        if code:
            assert response.get_json()["code"] == code
        assert rule_count(session_factory) == 0


class TestAuthAndOwnership:
    def test_no_token_is_401_and_a_token_without_start_meeting_is_403(
        self, client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
    ) -> None:
        body = {"type": "delivery.failed", "callbackUrl": ALERT_URL}
        assert client.post("/v1/alerts/rules", json=body).status_code == 401
        assert client.get("/v1/alerts").status_code == 401
        with session_factory.begin() as session:
            issued = accounts.create_token(session, user=account.user, scopes=("user_info",))
        limited = {"Authorization": f"Bearer {issued.token}"}
        assert client.post("/v1/alerts/rules", json=body, headers=limited).status_code == 403
        assert client.get("/v1/alerts/rules", headers=limited).status_code == 403
        assert rule_count(session_factory) == 0
        with session_factory() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(AccessToken)) == 2

    def test_another_users_rule_is_404_and_invisible(
        self,
        client: FlaskClient,
        account: Account,
        make_account: Callable[..., Account],
        session_factory: sessionmaker[Session],
    ) -> None:
        bob = make_account(email="bob@example.com")
        rule = create(client, account, {"type": "delivery.failed", "callbackUrl": ALERT_URL})
        rule_id = rule.get_json()["id"]
        assert client.get("/v1/alerts/rules", headers=bob.headers).get_json() == {"rules": []}
        for method in (client.get, client.delete):
            response = method(f"/v1/alerts/rules/{rule_id}", headers=bob.headers)
            assert response.status_code == 404
            assert response.get_json()["code"] == "alert-rule-not-found"
        with session_factory() as session:
            assert session.get(AlertRule, rule_id).deleted_at is None  # type: ignore[union-attr]

    def test_delete_is_204_then_404_and_the_rule_is_gone_from_the_list(
        self, client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
    ) -> None:
        kept = create(client, account, {"type": "delivery.failed", "callbackUrl": ALERT_URL})
        gone = create(client, account, {"type": "webhook.disabled", "callbackUrl": ALERT_URL})
        gone_id = gone.get_json()["id"]
        response = client.delete(f"/v1/alerts/rules/{gone_id}", headers=account.headers)
        assert response.status_code == 204
        assert response.data == b""
        assert (
            client.delete(f"/v1/alerts/rules/{gone_id}", headers=account.headers).status_code == 404
        )
        assert client.get(f"/v1/alerts/rules/{gone_id}", headers=account.headers).status_code == 404
        assert client.get("/v1/alerts/rules", headers=account.headers).get_json() == {
            "rules": [kept.get_json()]
        }
        # Soft delete: the row stays, so the alerts it fired stay listed.
        assert rule_count(session_factory) == 2

    @pytest.mark.parametrize("rule_id", ["0", "99999", str(2**31), str(2**63)])
    def test_unknown_and_out_of_range_ids_are_404(
        self, client: FlaskClient, account: Account, rule_id: str
    ) -> None:
        response = client.delete(f"/v1/alerts/rules/{rule_id}", headers=account.headers)
        assert response.status_code == 404


def start_and_end(client: FlaskClient, account: Account) -> int:
    """Start an ad hoc meeting, use its presenter link, end it at once; return its id."""
    started = client.post(
        "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=account.headers
    )
    assert started.status_code == 201
    body = started.get_json()
    link = body["presenterLink"].removeprefix("https://meet.example.test")
    assert client.post(link, headers=JSON).status_code == 200
    ended = client.post(f"/v1/meetings/{body['meetingId']}/end", headers=account.headers)
    assert ended.status_code == 200
    meeting_id: int = body["meetingId"]
    return meeting_id


class TestFiredAlerts:
    def test_a_short_meeting_fires_an_alert_listed_with_its_delivery(
        self, client: FlaskClient, account: Account, enqueued: Enqueued
    ) -> None:
        rule = create(
            client,
            account,
            {"type": "meeting.short", "params": {"seconds": 60}, "callbackUrl": ALERT_URL},
        ).get_json()
        meeting_id = start_and_end(client, account)
        page = client.get("/v1/alerts", headers=account.headers).get_json()
        assert page["nextCursor"] is None
        (alert,) = page["alerts"]
        assert list(alert) == ["id", "ruleId", "type", "timestamp", "text", "data", "delivery"]
        assert alert["id"].startswith("alrt_")
        assert alert["ruleId"] == rule["id"]
        assert alert["type"] == "alert.meeting.short"
        assert alert["timestamp"].endswith("Z")
        # Started and ended at once: 0 s, or 1 s when a second's boundary fell in between.
        meeting = client.get(f"/v1/meetings/{meeting_id}", headers=account.headers).get_json()
        duration = meeting["durationSeconds"]
        assert duration in (0, 1)
        assert alert["text"].startswith(f"Meeting {meeting_id} ended after only {duration} s")
        assert alert["data"]["meetingId"] == meeting_id
        assert alert["data"]["durationSeconds"] == duration
        delivery = alert["delivery"]
        assert delivery["status"] == "pending"
        assert delivery["attemptCount"] == 0
        assert delivery["webhookId"].startswith("msg_")
        # Its wake-up went out after the commit, and the delivery log shows it too.
        assert (DELIVER, {"delivery_id": delivery["id"]}) in enqueued.calls
        logged = client.get(
            f"/v1/webhooks/deliveries/{delivery['id']}", headers=account.headers
        ).get_json()
        assert logged["eventType"] == "alert.meeting.short"
        assert logged["callbackUrl"] == ALERT_URL
        assert logged["webhookId"] == delivery["webhookId"]

    def test_ending_twice_fires_once_and_a_deleted_rule_fires_no_more(
        self, client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
    ) -> None:
        rule = create(
            client,
            account,
            {"type": "meeting.short", "params": {"seconds": 60}, "callbackUrl": ALERT_URL},
        ).get_json()
        meeting_id = start_and_end(client, account)
        assert (
            client.post(f"/v1/meetings/{meeting_id}/end", headers=account.headers).status_code
            == 200
        )
        assert len(client.get("/v1/alerts", headers=account.headers).get_json()["alerts"]) == 1
        client.delete(f"/v1/alerts/rules/{rule['id']}", headers=account.headers)
        start_and_end(client, account)
        (alert,) = client.get("/v1/alerts", headers=account.headers).get_json()["alerts"]
        assert alert["data"]["meetingId"] == meeting_id
        with session_factory() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Alert)) == 1
            assert (
                session.scalar(
                    sa.select(sa.func.count())
                    .select_from(Delivery)
                    .where(Delivery.alert_id.is_not(None))
                )
                == 1
            )

    def test_alerts_are_newest_first_in_pages_and_private(
        self, client: FlaskClient, account: Account, make_account: Callable[..., Account]
    ) -> None:
        create(
            client,
            account,
            {"type": "meeting.short", "params": {"seconds": 60}, "callbackUrl": ALERT_URL},
        )
        meetings = [start_and_end(client, account) for _ in range(3)]
        first = client.get("/v1/alerts?limit=2", headers=account.headers).get_json()
        assert [a["data"]["meetingId"] for a in first["alerts"]] == meetings[:0:-1]
        second = client.get(
            f"/v1/alerts?limit=2&cursor={first['nextCursor']}", headers=account.headers
        ).get_json()
        assert [a["data"]["meetingId"] for a in second["alerts"]] == meetings[:1]
        assert second["nextCursor"] is None
        bob = make_account(email="bob@example.com")
        assert client.get("/v1/alerts", headers=bob.headers).get_json() == {
            "alerts": [],
            "nextCursor": None,
        }

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("limit=0", "limit"),
            ("limit=101", "limit"),
            ("limit=x", "limit"),
            ("cursor=abc", "cursor"),
        ],
    )
    def test_bad_paging_is_a_400_naming_the_field(
        self, client: FlaskClient, account: Account, query: str, field: str
    ) -> None:
        response = client.get(f"/v1/alerts?{query}", headers=account.headers)
        assert response.status_code == 400
        assert [e["field"] for e in response.get_json()["errors"]] == [field]
