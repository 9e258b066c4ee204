from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.analytics_fixture import History
from tests.conftest import Account


def events(client: FlaskClient, account: Account, meeting_id: int) -> dict[str, Any]:
    response = client.get(f"/v1/meetings/{meeting_id}/events", headers=account.headers)
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def test_two_reports_of_one_start_and_a_repeated_webhook_id_are_shown_once(
    client: FlaskClient, alice: Account, history: History
) -> None:
    m1 = history.meetings["m1"]
    body = events(client, alice, m1)
    assert body["meetingId"] == m1
    shown = [(e["type"], e["timestamp"], e["source"], e["outcome"]) for e in body["events"]]
    assert shown == [
        ("meeting.start", "2026-11-02T10:00:00Z", "platform", "applied"),
        ("meeting.end", "2026-11-02T11:00:00Z", "platform", "applied"),
    ]
    # The end arrived first: its callback was made, then made again once the start came.
    start, end = body["events"]
    d1, d2, d3 = history.deliveries[:3]
    assert [d["id"] for d in start["deliveries"]] == [d2]
    assert [d["id"] for d in end["deliveries"]] == [d1, d3]
    assert {d["eventId"] for d in end["deliveries"]} == {end["id"]}


def test_out_of_order_reports_are_in_event_time_order_with_their_outcomes(
    client: FlaskClient, alice: Account, history: History
) -> None:
    body = events(client, alice, history.meetings["m2"])
    assert [(e["type"], e["timestamp"][11:16], e["outcome"]) for e in body["events"]] == [
        ("meeting.end", "10:20", "out-of-order"),
        ("meeting.start", "10:30", "applied"),
        ("meeting.end", "10:45", "applied"),
        ("meeting.end", "10:50", "duplicate"),
    ]
    # Arrival: 10:50 (d4), 10:20 (d5), the start (d6 for 10:50 again), 10:45 (d7).
    d4, d5, d6, d7 = history.deliveries[3:]
    assert [[d["id"] for d in e["deliveries"]] for e in body["events"]] == [
        [d5],
        [],
        [d7],
        [d4, d6],
    ]


def test_deliveries_are_rendered_as_the_delivery_log_renders_them(
    client: FlaskClient, alice: Account, history: History
) -> None:
    body = events(client, alice, history.meetings["m1"])
    log = client.get(
        f"/v1/webhooks/deliveries?meetingId={history.meetings['m1']}", headers=alice.headers
    ).get_json()["deliveries"]
    from_timeline = {d["id"]: d for e in body["events"] for d in e["deliveries"]}
    assert from_timeline == {d["id"]: d for d in log}
    assert from_timeline[history.deliveries[1]]["attempts"][0]["latencyMs"] == 200


def test_a_meeting_without_events_has_an_empty_timeline(
    client: FlaskClient, alice: Account, history: History
) -> None:
    assert events(client, alice, history.meetings["never"])["events"] == []


@pytest.mark.parametrize("meeting", ["bob1", "deleted"])
def test_another_users_or_a_deleted_meeting_is_404(
    client: FlaskClient, alice: Account, history: History, meeting: str
) -> None:
    response = client.get(f"/v1/meetings/{history.meetings[meeting]}/events", headers=alice.headers)
    assert response.status_code == 404
    assert response.get_json()["code"] == "meeting-not-found"


@pytest.mark.parametrize("meeting_id", ["0", "2147483648", "99999"])
def test_unknown_meeting_is_404(client: FlaskClient, alice: Account, meeting_id: str) -> None:
    response = client.get(f"/v1/meetings/{meeting_id}/events", headers=alice.headers)
    assert response.status_code == 404
    assert response.get_json()["code"] == "meeting-not-found"
