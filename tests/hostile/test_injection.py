"""SQL and header injection in every text field: stored and returned verbatim, or refused.

Text reaches us in meeting names, participants, webhook keys and callback URLs, custom
callback data, alert rules, the platform's webhook-id, query strings and paths. Whatever it
holds, it is data: the same text comes back, no other row changes, no 5xx, and no response
ever carries a header line the client wrote.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.models import Event, Webhook
from tests.hostile import error_shape
from tests.hostile.conftest import count_case
from tests.hostile.endpoints import ANY_WRITE_BODY, routes, snapshot
from tests.platform_events import signed_bytes_headers

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient
    from sqlalchemy.orm import Session

    from tests.analytics_fixture import History
    from tests.conftest import Account

SEQUENCE = itertools.count()
PROPERTIES = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SQL = [
    "'; DROP TABLE meetings; --",
    "' OR '1'='1",
    '" OR 1=1 --',
    "1; DELETE FROM users",
    "') UNION SELECT token_hash, scopes FROM access_tokens --",
    "%' AND pg_sleep(5) --",
    "\\'; SELECT 1; --",
    "$1",
    "?",
    ":name",
    "%s%s%s",
    "{}",
    "${jndi:ldap://127.0.0.1/a}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "Robert'); DROP TABLE Students;--",
    "\u202eevil\u2066",
    "💥" * 3,
]
CRLF = [
    "\r\nX-Injected: yes",
    "\nSet-Cookie: injected=1",
    "%0d%0aX-Injected:%20yes",
    "\r\n\r\n<html>",
]
injections = st.sampled_from(SQL) | st.builds(
    lambda a, b, c: a + b + c, st.text(max_size=8), st.sampled_from(SQL), st.text(max_size=8)
)
printable_injections = injections.filter(lambda s: not error_shape.has_control(s) and s.strip())


def assert_no_injected_header(response: Any) -> None:
    for name, value in response.headers.items():
        assert not {"\r", "\n"} & set(value), (name, value)
        # An echo that stays inside one value, percent-encoded (the console's sign-in redirect
        # carries the page asked for in `next`), injects nothing; a header or cookie of its own
        # would.
        assert "injected" not in name.lower(), (name, value)
        if name.lower() == "set-cookie":
            assert not value.lower().startswith("injected"), (name, value)
        if "injected" in value.lower():
            assert "%" in value, (name, value)


def assert_refused_in_shape(response: Any) -> None:
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)[:300]
    found = error_shape.problems(response.status_code, response.content_type, response.get_data())
    assert not found, found


@pytest.fixture
def two_users(history: History, alice: Account, bob: Account) -> tuple[Account, Account]:
    return alice, bob


class TestTextIsData:
    @PROPERTIES
    @given(
        name=injections,
        participant=st.sampled_from(
            ["o'brien--@example.com", "a%'--@x.example", 'x"or"1@y.example']
        ),
    )
    def test_meeting_name_and_participants_come_back_verbatim(
        self,
        client: FlaskClient,
        db_session: Session,
        two_users: tuple[Account, Account],
        name: str,
        participant: str,
        request: pytest.FixtureRequest,
    ) -> None:
        count_case(request)
        alice, bob = two_users
        bobs = snapshot(db_session, user_id=bob.id)
        body = {**ANY_WRITE_BODY, "meetingName": name, "participants": [participant]}
        created = client.post("/v1/meetings", json=body, headers=alice.headers)
        assert_no_injected_header(created)
        if error_shape.has_control(name) or not name.strip() or len(name) > 200:
            assert_refused_in_shape(created)
        else:
            assert created.status_code == 201, created.get_json()
            meeting_id = created.get_json()["meetingId"]
            read = client.get(f"/v1/meetings/{meeting_id}", headers=alice.headers).get_json()
            assert read["meetingName"] == name
            assert read["participants"] == [participant]
            renamed = client.patch(
                f"/v1/meetings/{meeting_id}",
                json={"meetingName": name[::-1]},
                headers=alice.headers,
            )
            assert renamed.get_json()["meetingName"] == name[::-1]
        assert snapshot(db_session, user_id=bob.id) == bobs

    @PROPERTIES
    @given(text=injections, key=injections)
    def test_webhook_keys_urls_and_custom_data_are_kept_verbatim(
        self,
        client: FlaskClient,
        db_session: Session,
        two_users: tuple[Account, Account],
        text: str,
        key: str,
        request: pytest.FixtureRequest,
    ) -> None:
        count_case(request)
        alice, bob = two_users
        bobs = snapshot(db_session, user_id=bob.id)
        url = "https://93.184.216.34/hook?q=" + "".join(
            c for c in text if c.isascii() and c.isprintable() and c not in " \\"
        )
        custom = {"note": text, text: [text, {"nested": text}]}
        body = {
            "startWithPersonalUrl": False,
            "webhooks": {
                "meeting.start": {"callbackUrl": url, "customCallbackData": custom},
                key: {"callbackUrl": url},
            },
        }
        started = client.post("/v1/meetings/start", json=body, headers=alice.headers)
        assert_no_injected_header(started)
        assert started.status_code == 201, started.get_json()
        status = started.get_json()["webhooksStatus"]
        assert list(status) == list(body["webhooks"])  # every key sent, verbatim
        if key != "meeting.start":
            assert status[key]["registered"] is (key == "meeting.end")
        db_session.rollback()
        hook = db_session.scalar(
            sa.select(Webhook)
            .where(Webhook.meeting_id == started.get_json()["meetingId"])
            .where(Webhook.event_type == "meeting.start")
        )
        if key != "meeting.start":
            assert hook is not None
            assert hook.callback_url == url
            assert hook.custom_callback_data == custom
        assert snapshot(db_session, user_id=bob.id) == bobs

    @PROPERTIES
    @given(text=injections)
    def test_alert_rule_urls_come_back_verbatim(
        self,
        client: FlaskClient,
        db_session: Session,
        two_users: tuple[Account, Account],
        text: str,
        request: pytest.FixtureRequest,
    ) -> None:
        count_case(request)
        alice, bob = two_users
        bobs = snapshot(db_session, user_id=bob.id)
        path = "".join(c for c in text if c.isascii() and c.isprintable() and c not in " \\#?")
        url = f"https://93.184.216.34/{path}"
        created = client.post(
            "/v1/alerts/rules",
            json={
                "type": "meeting.long_running",
                "params": {"minutes": 5},
                "callbackUrl": url,
            },
            headers=alice.headers,
        )
        assert_no_injected_header(created)
        assert created.status_code == 201, created.get_json()
        rule = client.get(f"/v1/alerts/rules/{created.get_json()['id']}", headers=alice.headers)
        assert rule.get_json()["callbackUrl"] == url
        assert snapshot(db_session, user_id=bob.id) == bobs

    @PROPERTIES
    @given(text=printable_injections)
    def test_platform_webhook_ids_are_stored_verbatim_and_once(
        self,
        client: FlaskClient,
        db_session: Session,
        two_users: tuple[Account, Account],
        history: History,
        text: str,
        request: pytest.FixtureRequest,
    ) -> None:
        count_case(request)
        raw = json.dumps(
            {
                "type": "meeting.start",
                "timestamp": "2026-11-02T10:00:00Z",
                "data": {"meetingId": history.meetings["never"]},
            }
        ).encode()
        # The database keeps what earlier examples stored: each example sends an id of its own.
        webhook_id = f"{text.strip()}#{next(SEQUENCE)}"
        headers = signed_bytes_headers(raw, msg_id=webhook_id)
        try:
            headers["webhook-id"].encode("latin-1")
        except UnicodeEncodeError:
            return  # HTTP header values are bytes; WSGI reads them as latin-1
        answers = [
            client.post(
                "/v1/events", data=raw, headers={**headers, "Content-Type": "application/json"}
            )
            for _ in range(2)
        ]
        for answer in answers:
            assert_no_injected_header(answer)
        if len(webhook_id) > 255:
            assert_refused_in_shape(answers[0])
            return
        db_session.rollback()
        stored = db_session.scalars(
            sa.select(Event.source_event_id).where(Event.source_event_id == webhook_id)
        ).all()
        assert [a.status_code for a in answers] == [202, 200]
        assert stored == [webhook_id]

    @PROPERTIES
    @given(
        value=injections | st.sampled_from(CRLF),
        name=st.sampled_from(
            [
                "endDate",
                "status",
                "cursor",
                "meetingId",
                "from",
                "to",
                "interval",
                "limit",
                "conferenceId",
            ]
        ),
    )
    def test_query_values_are_data(
        self,
        client: FlaskClient,
        app: Flask,
        two_users: tuple[Account, Account],
        value: str,
        name: str,
        request: pytest.FixtureRequest,
    ) -> None:
        count_case(request)
        alice, _ = two_users
        for endpoint in routes(app):
            if endpoint.method != "GET" or endpoint.arguments:
                continue
            count_case(request)
            response = client.get(endpoint.rule, query_string={name: value}, headers=alice.headers)
            assert response.status_code < 500, (
                str(endpoint),
                response.get_data(as_text=True)[:300],
            )
            assert_no_injected_header(response)
            if response.status_code >= 400:
                assert_refused_in_shape(response)


@pytest.mark.parametrize("crlf", CRLF)
def test_crlf_anywhere_never_reaches_a_header(
    client: FlaskClient, app: Flask, two_users: tuple[Account, Account], crlf: str
) -> None:
    alice, _ = two_users
    for endpoint in routes(app):
        path = endpoint.rule
        for name in endpoint.arguments:
            path = path.replace(f"<{name}>", f"x{crlf}").replace(f"<int:{name}>", "1")
            path = path.replace(f"<path:{name}>", f"x{crlf}")
        body = {
            key: crlf if isinstance(value, str) else value for key, value in ANY_WRITE_BODY.items()
        }
        body["webhooks"] = {crlf: {"callbackUrl": f"https://93.184.216.34/{crlf}"}}
        response = client.open(
            path,
            method=endpoint.method,
            query_string={"q": crlf, "endDate": crlf, "conferenceId": crlf},
            json=body if endpoint.writes else None,
            headers={**alice.headers, "Accept": "application/json"},
        )
        assert response.status_code < 500, (str(endpoint), response.get_data(as_text=True)[:300])
        assert_no_injected_header(response)
