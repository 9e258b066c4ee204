"""Every /v1 endpoint, read from the URL map, with another user's ids and with each scope missing.

A new endpoint is covered as soon as it is routed; one with a new kind of id in its URL fails
here until `ids` below knows it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from core.models import SCOPES, Delivery
from core.services import accounts
from tests.hostile.endpoints import Endpoint, call, snapshot, throwaway_app, token_endpoints

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask import Flask
    from flask.testing import FlaskClient
    from sqlalchemy.orm import Session, sessionmaker

    from tests.analytics_fixture import History
    from tests.conftest import Account

ENDPOINTS = token_endpoints(throwaway_app())
WITH_IDS = [e for e in ENDPOINTS if e.arguments]
WITHOUT_IDS = [e for e in ENDPOINTS if not e.arguments]
BOB_ONLY = "bob-only"
INSUFFICIENT = 'Bearer realm="meetinghooks", error="insufficient_scope"'
INVALID = 'Bearer realm="meetinghooks", error="invalid_token"'


def ids_of(
    session: Session, user_id: int, history: History, prefix: str, rule_id: int
) -> dict[str, int]:
    delivery = session.scalar(
        sa.select(Delivery.id).where(Delivery.user_id == user_id).order_by(Delivery.id)
    )
    assert delivery is not None
    meeting = next(m for name, m in history.meetings.items() if name.startswith(prefix))
    return {"meeting_id": meeting, "delivery_id": delivery, "rule_id": rule_id}


def create_rule(client: FlaskClient, account: Account, url: str) -> int:
    response = client.post(
        "/v1/alerts/rules",
        json={"type": "delivery.failed", "params": {}, "callbackUrl": url},
        headers=account.headers,
    )
    assert response.status_code == 201, response.get_json()
    rule_id: int = response.get_json()["id"]
    return rule_id


@pytest.fixture
def bob_ids(
    client: FlaskClient, db_session: Session, history: History, bob: Account
) -> dict[str, int]:
    rule = create_rule(client, bob, f"https://93.184.216.34/{BOB_ONLY}-rule")
    scheduled = client.post(
        "/v1/meetings",
        json={
            "meetingName": f"{BOB_ONLY} plans",
            "meetingStart": "2030-01-01T10:00:00Z",
            "meetingEnd": "2030-01-01T11:00:00Z",
            "participants": [f"carol@{BOB_ONLY}.example"],
            "startWithPersonalUrl": False,
        },
        headers=bob.headers,
    )
    assert scheduled.status_code == 201
    return ids_of(db_session, bob.id, history, "bob", rule)


def bob_markers(client: FlaskClient, bob: Account) -> list[str]:
    """Strings that only Bob's data holds: none may reach Alice."""
    secret = client.get("/v1/webhooks/signing-secret", headers=bob.headers).get_json()
    meetings = client.get("/v1/meetings", headers=bob.headers).get_json()
    codes = [m["conferenceId"] for m in meetings] + [m["viewerLink"] for m in meetings]
    return [BOB_ONLY, "bob@example.com", secret["signingSecret"], *codes]


@pytest.mark.parametrize("endpoint", WITH_IDS, ids=str)
def test_another_users_ids_are_404_and_change_nothing(
    client: FlaskClient,
    app: Flask,
    db_session: Session,
    alice: Account,
    bob: Account,
    bob_ids: dict[str, int],
    endpoint: Endpoint,
) -> None:
    markers = bob_markers(client, bob)
    before = snapshot(db_session)
    response = call(client, endpoint, endpoint.url(app, bob_ids), alice.headers)
    assert response.status_code == 404, response.get_data(as_text=True)
    assert response.get_json()["code"].endswith("not-found")
    text = response.get_data(as_text=True)
    assert not [m for m in markers if m in text]
    assert snapshot(db_session) == before


@pytest.mark.parametrize("endpoint", WITHOUT_IDS, ids=str)
def test_endpoints_without_ids_show_and_change_only_the_callers_data(
    client: FlaskClient,
    db_session: Session,
    alice: Account,
    bob: Account,
    bob_ids: dict[str, int],
    endpoint: Endpoint,
) -> None:
    markers = bob_markers(client, bob)
    bobs = snapshot(db_session, user_id=bob.id)
    response = call(client, endpoint, endpoint.rule, alice.headers)
    assert response.status_code < 500
    text = json.dumps(response.get_json()) if response.is_json else response.get_data(as_text=True)
    assert not [m for m in markers if m in text], text[:500]
    assert snapshot(db_session, user_id=bob.id) == bobs


@pytest.fixture
def tokens_missing_one_scope(
    session_factory: sessionmaker[Session], alice: Account
) -> dict[str, dict[str, str]]:
    headers = {}
    with session_factory.begin() as session:
        for missing in SCOPES:
            issued = accounts.create_token(
                session,
                user=alice.user,
                scopes=tuple(s for s in SCOPES if s != missing),
            )
            headers[missing] = {"Authorization": f"Bearer {issued.token}"}
    return headers


@pytest.fixture
def alice_ids(
    client: FlaskClient, db_session: Session, history: History, alice: Account
) -> dict[str, int]:
    rule = create_rule(client, alice, "https://93.184.216.34/alice-rule")
    return ids_of(db_session, alice.id, history, "m1", rule)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_each_endpoint_needs_a_token_and_exactly_one_scope(
    client: FlaskClient,
    app: Flask,
    db_session: Session,
    alice_ids: dict[str, int],
    tokens_missing_one_scope: dict[str, dict[str, str]],
    make_account: Callable[..., Account],
    endpoint: Endpoint,
) -> None:
    path = endpoint.url(app, alice_ids)
    before = snapshot(db_session)
    anonymous = call(client, endpoint, path, {})
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == INVALID
    assert snapshot(db_session) == before

    refused = []
    for scope, headers in tokens_missing_one_scope.items():
        before = snapshot(db_session)
        response = call(client, endpoint, path, headers)
        assert response.status_code not in {401, 500}, response.get_data(as_text=True)
        if response.status_code == 403:
            refused.append(scope)
            assert response.headers["WWW-Authenticate"] == INSUFFICIENT
            assert response.get_json()["code"] == "insufficient-scope"
            assert scope in response.get_json()["Message"]
            assert snapshot(db_session) == before
    assert len(refused) == 1, f"{endpoint} refused tokens without {refused}"
