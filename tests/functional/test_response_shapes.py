"""The wire shapes rendered from core.responses: key order, absent keys and nulls."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from tests.conftest import Account

HOOK = "https://93.184.216.34/hook"
MEETING_KEYS = [
    "meetingId",
    "meetingName",
    "meetingStart",
    "meetingEnd",
    "participants",
    "startWithPersonalUrl",
    "conferenceId",
    "viewerLink",
    "status",
    "startedAt",
    "endedAt",
    "durationSeconds",
]
START_KEYS = ["meetingId", "presenterLink", "viewerLink", "audioConference"]


def body(response: Any) -> Any:
    """Parse the raw body: json.loads keeps the wire's key order (get_json may not)."""
    return json.loads(response.data)


def test_start_keys_in_order_and_webhooks_status_only_when_asked(
    client: FlaskClient, account: Account
) -> None:
    plain = client.post(
        "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=account.headers
    )
    assert list(body(plain)) == START_KEYS
    assert list(body(plain)["audioConference"]) == [
        "conferenceId",
        "conferenceCallNumbersUrl",
        "organizerCode",
    ]
    hooked = client.post(
        "/v1/meetings/start",
        json={
            "startWithPersonalUrl": False,
            "webhooks": {"meeting.end": {"callbackUrl": HOOK}, "meeting.bogus": {}},
        },
        headers=account.headers,
    )
    assert list(body(hooked)) == [*START_KEYS, "webhooksStatus"]
    status = body(hooked)["webhooksStatus"]
    assert list(status) == ["meeting.end", "meeting.bogus"]  # the request's order
    assert list(status["meeting.end"]) == ["registered", "webhookId"]
    assert status["meeting.bogus"] == {
        "registered": False,
        "code": "unknown-event-type",
        "message": "unknown event type; use one of meeting.start, meeting.end",
    }


def test_meeting_and_list_keys_in_order_with_nulls(client: FlaskClient, account: Account) -> None:
    started = client.post(
        "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=account.headers
    ).get_json()
    shown = body(client.get(f"/v1/meetings/{started['meetingId']}", headers=account.headers))
    assert list(shown) == MEETING_KEYS
    assert [shown[k] for k in ("meetingName", "meetingStart", "startedAt", "durationSeconds")] == [
        None
    ] * 4
    client.post(
        "/v1/meetings",
        json={
            "meetingName": "Plan",
            "meetingStart": "2030-01-01T10:00:00+01:00",
            "meetingEnd": "2030-01-01T11:00:00+01:00",
            "startWithPersonalUrl": False,
        },
        headers=account.headers,
    )
    listed = body(client.get("/v1/meetings", headers=account.headers))
    assert [list(m) for m in listed] == [MEETING_KEYS]
    assert listed[0]["meetingStart"] == "2030-01-01T09:00:00Z"


def test_user_keys_in_order(client: FlaskClient, make_account: Any) -> None:
    bob: Account = make_account(email="bob@example.com", name="Bob", personal_url=None)
    user = body(client.get("/v1/user", headers=bob.headers))
    assert list(user) == [
        "email",
        "fullName",
        "personalUrl",
        "registrationDate",
        "numberOfMeetingsHosted",
        "conferenceSettings",
    ]
    assert list(user["conferenceSettings"]) == [
        "defaultViewerMode",
        "viewerAppDetection",
        "conferenceCallNumbersUrl",
    ]
    assert user["personalUrl"] is None
