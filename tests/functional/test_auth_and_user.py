from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import make_engine, make_session_factory
from core.services import accounts
from receiver import create_app
from tests.conftest import Account

INVALID = 'Bearer realm="meetinghooks", error="invalid_token"'
INSUFFICIENT = 'Bearer realm="meetinghooks", error="insufficient_scope"'


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
    ],
    ids=["missing", "empty", "unknown", "basic"],
)
def test_missing_or_unknown_token_is_401(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.post(
        "/v1/meetings/start", json={"startWithPersonalUrl": True}, headers=headers
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == INVALID
    assert response.get_json()["code"] == "invalid-token"


def test_revoked_token_is_401(
    client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
) -> None:
    with session_factory.begin() as session:
        accounts.revoke_token(session, account.token)
    response = client.get("/v1/user", headers=account.headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == INVALID


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("post", "/v1/meetings/start", "start_meeting"),
        ("post", "/v1/meetings/1/start", "start_meeting"),
        ("post", "/v1/meetings/1/end", "start_meeting"),
        ("get", "/v1/meetings", "scheduler"),
        ("post", "/v1/meetings", "scheduler"),
        ("get", "/v1/meetings/1", "scheduler"),
        ("patch", "/v1/meetings/1", "scheduler"),
        ("delete", "/v1/meetings/1", "scheduler"),
        ("get", "/v1/user", "user_info"),
    ],
)
def test_token_without_scope_is_403(
    client: FlaskClient,
    account: Account,
    session_factory: sessionmaker[Session],
    method: str,
    path: str,
    scope: str,
) -> None:
    others = tuple(s for s in ("user_info", "scheduler", "start_meeting") if s != scope)
    with session_factory.begin() as session:
        user = accounts.find_user(session, "alice@example.com")
        issued = accounts.create_token(session, user=user, scopes=others)
    response = getattr(client, method)(
        path, json={}, headers={"Authorization": f"Bearer {issued.token}"}
    )
    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == INSUFFICIENT
    assert response.get_json()["code"] == "insufficient-scope"


def test_another_users_meeting_is_404_everywhere(
    client: FlaskClient, account: Account, make_account: Any
) -> None:
    mallory = make_account(email="mallory@example.com")
    started = client.post(
        "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=account.headers
    ).get_json()
    meeting = f"/v1/meetings/{started['meetingId']}"
    for method, path in [
        ("get", meeting),
        ("patch", meeting),
        ("delete", meeting),
        ("post", f"{meeting}/start"),
        ("post", f"{meeting}/end"),
    ]:
        response = getattr(client, method)(path, json={}, headers=mallory.headers)
        assert response.status_code == 404, (method, path)
    assert client.get(meeting, headers=account.headers).status_code == 200


class TestUser:
    def test_describes_the_user(self, client: FlaskClient, account: Account) -> None:
        response = client.get("/v1/user", headers=account.headers)
        assert response.status_code == 200
        body = response.get_json()
        assert body["email"] == "alice@example.com"
        assert body["fullName"] == "Alice Example"
        assert body["personalUrl"] == "https://meet.example.test/alice"
        assert body["registrationDate"].endswith("Z")
        assert body["numberOfMeetingsHosted"] == 0
        assert isinstance(body["conferenceSettings"], dict)

    def test_counts_meetings_that_started(self, client: FlaskClient, account: Account) -> None:
        for _ in range(2):
            started = client.post(
                "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=account.headers
            ).get_json()
        client.post(
            started["presenterLink"].removeprefix("https://meet.example.test"),
            headers={"Accept": "application/json"},
        )
        body = client.get("/v1/user", headers=account.headers).get_json()
        assert body["numberOfMeetingsHosted"] == 1


class TestErrorBodies:
    @pytest.mark.parametrize(
        ("method", "path", "status", "code"),
        [
            ("get", "/v1/no-such-endpoint", 404, "not-found"),
            ("get", "/v1/meetings/abc", 404, "not-found"),
            ("get", "/v1/meetings/start", 405, "method-not-allowed"),
            ("put", "/v1/meetings/1", 405, "method-not-allowed"),
            ("post", "/v1/user", 405, "method-not-allowed"),
        ],
    )
    def test_flask_routing_errors_are_json(
        self, client: FlaskClient, account: Account, method: str, path: str, status: int, code: str
    ) -> None:
        response = getattr(client, method)(path, headers=account.headers)
        assert response.status_code == status
        assert response.mimetype == "application/json"
        body = response.get_json()
        assert set(body) == {"Message", "code", "errors"}
        assert body["code"] == code
        assert body["Message"]
        assert body["errors"] == []
        if status == 405:
            assert response.headers["Allow"]

    def test_body_over_64_kib_is_413_json(self, client: FlaskClient, account: Account) -> None:
        response = client.post(
            "/v1/meetings",
            data=b'{"meetingName": "' + b"x" * (64 * 1024) + b'"}',
            content_type="application/json",
            headers=account.headers,
        )
        assert response.status_code == 413
        assert response.get_json()["code"] == "body-too-large"

    def test_a_500_never_shows_the_exception(self, app: Flask, account: Account) -> None:
        def explode() -> None:
            raise RuntimeError("password=hunter2 at /srv/secret.py line 3")

        app.add_url_rule("/v1/test-explode", view_func=explode)
        response = app.test_client().get("/v1/test-explode")
        assert response.status_code == 500
        assert response.get_json() == {
            "Message": "internal server error",
            "code": "internal-error",
            "errors": [],
        }
        assert b"hunter2" not in response.data
        assert b"Traceback" not in response.data

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("get", "/v1/user"),
            ("get", "/v1/meetings/1"),
            ("post", "/v1/meetings/start"),
        ],
    )
    def test_unreachable_database_is_503_with_retry_after(
        self, settings: Settings, tmp_path: Path, method: str, path: str
    ) -> None:
        unreachable = make_session_factory(
            make_engine(f"sqlite:///{tmp_path}/missing-dir/none.sqlite3")
        )
        app = create_app(settings, session_factory=unreachable, enqueue=lambda *_: None)
        response = getattr(app.test_client(), method)(
            path,
            json={"startWithPersonalUrl": False},
            headers={"Authorization": "Bearer some-token"},
        )
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        body = response.get_json()
        assert body["code"] == "database-unavailable"
        assert "missing-dir" not in body["Message"]
