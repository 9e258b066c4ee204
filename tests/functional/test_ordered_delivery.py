"""Issue 13 through the API: the webhook entry's `ordered`, and the delivery log's `waitingFor`."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from core.models import Delivery, Webhook
from tests.conftest import Account

HOOK = "https://93.184.216.34/hook"
JSON = {"Accept": "application/json"}


def start_and_end(client: FlaskClient, account: Account, end_entry: dict[str, Any]) -> int:
    """Start a meeting with both callbacks to HOOK, use its presenter link, end it."""
    body = client.post(
        "/v1/meetings/start",
        json={
            "startWithPersonalUrl": False,
            "webhooks": {"meeting.start": {"callbackUrl": HOOK}, "meeting.end": end_entry},
        },
        headers=account.headers,
    ).get_json()
    assert body["webhooksStatus"]["meeting.end"]["registered"] is True
    link = body["presenterLink"].removeprefix("https://meet.example.test")
    assert client.post(link, headers=JSON).status_code == 200
    meeting_id: int = body["meetingId"]
    assert client.post(f"/v1/meetings/{meeting_id}/end", headers=account.headers).status_code == 200
    return meeting_id


def deliveries_by_type(session_factory: sessionmaker[Session]) -> dict[str, int]:
    with session_factory() as session:
        rows = session.execute(sa.select(Delivery.event_type, Delivery.id)).all()
    return {event_type: delivery_id for event_type, delivery_id in rows}


def test_the_end_shows_the_start_it_waits_for(
    client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
) -> None:
    start_and_end(client, account, {"callbackUrl": HOOK})
    ids = deliveries_by_type(session_factory)
    shown = client.get(
        f"/v1/webhooks/deliveries/{ids['meeting.end']}", headers=account.headers
    ).get_json()
    assert shown["status"] == "pending"
    assert shown["waitingFor"] == ids["meeting.start"]
    listed = client.get("/v1/webhooks/deliveries", headers=account.headers).get_json()
    waits = {d["eventType"]: d["waitingFor"] for d in listed["deliveries"]}
    assert waits == {"meeting.start": None, "meeting.end": ids["meeting.start"]}


def test_ordered_false_is_stored_and_nothing_waits(
    client: FlaskClient, account: Account, session_factory: sessionmaker[Session]
) -> None:
    start_and_end(client, account, {"callbackUrl": HOOK, "ordered": False})
    with session_factory() as session:
        rows = session.execute(sa.select(Webhook.event_type, Webhook.ordered)).all()
    ordered = {event_type: flag for event_type, flag in rows}
    assert ordered == {"meeting.start": True, "meeting.end": False}
    ids = deliveries_by_type(session_factory)
    shown = client.get(
        f"/v1/webhooks/deliveries/{ids['meeting.end']}", headers=account.headers
    ).get_json()
    assert shown["waitingFor"] is None


@pytest.mark.parametrize("value", ["false", 0, None, []])
def test_ordered_must_be_a_boolean(client: FlaskClient, account: Account, value: Any) -> None:
    response = client.post(
        "/v1/meetings/start",
        json={
            "startWithPersonalUrl": False,
            "webhooks": {
                "meeting.start": {"callbackUrl": HOOK, "ordered": value},
                "meeting.end": {"callbackUrl": HOOK},
            },
        },
        headers=account.headers,
    )
    assert response.status_code == 201  # a bad entry never fails the start (SPEC 4)
    status = response.get_json()["webhooksStatus"]
    assert status["meeting.start"]["registered"] is False
    assert status["meeting.start"]["code"] == "invalid-ordered"
    assert status["meeting.end"]["registered"] is True
