from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from core.models import Meeting, Webhook
from tests.conftest import Account

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def schedule(client: FlaskClient, account: Account, hours_ahead: int = 1, **fields: Any) -> Any:
    body = {
        "meetingName": "Weekly sync",
        "meetingStart": iso(NOW + dt.timedelta(hours=hours_ahead)),
        "meetingEnd": iso(NOW + dt.timedelta(hours=hours_ahead + 1)),
        "participants": ["bob@example.com", "Carol@Example.com"],
        "startWithPersonalUrl": False,
        **fields,
    }
    return client.post("/v1/meetings", json=body, headers=account.headers)


class TestCreate:
    def test_returns_the_meeting(self, client: FlaskClient, account: Account) -> None:
        response = schedule(client, account)
        assert response.status_code == 201
        body = response.get_json()
        assert isinstance(body["meetingId"], int)
        assert body["meetingName"] == "Weekly sync"
        assert body["meetingStart"] == iso(NOW + dt.timedelta(hours=1))
        assert body["meetingEnd"] == iso(NOW + dt.timedelta(hours=2))
        assert body["participants"] == ["bob@example.com", "carol@example.com"]
        assert body["startWithPersonalUrl"] is False
        assert len(body["conferenceId"]) == 9
        assert body["viewerLink"].startswith("https://meet.example.test/")
        assert body["status"] == "scheduled"
        assert "organizerCode" not in str(body)

    def test_offsets_are_stored_in_utc(self, client: FlaskClient, account: Account) -> None:
        response = schedule(
            client,
            account,
            meetingStart="2030-01-01T10:00:00+02:00",
            meetingEnd="2030-01-01T11:00:00+02:00",
        )
        assert response.get_json()["meetingStart"] == "2030-01-01T08:00:00Z"

    def test_times_are_shown_to_the_second_and_a_lowercase_z_is_read(
        self, client: FlaskClient, account: Account
    ) -> None:
        response = schedule(
            client,
            account,
            meetingStart="2030-01-01T10:00:00.750z",
            meetingEnd="2030-01-01T11:00:00.250Z",
        )
        assert response.status_code == 201
        body = response.get_json()
        assert (body["meetingStart"], body["meetingEnd"]) == (
            "2030-01-01T10:00:00Z",
            "2030-01-01T11:00:00Z",
        )

    @pytest.mark.parametrize(
        ("fields", "bad"),
        [
            ({"meetingStart": "2030-01-01T10:00:00"}, {"meetingStart"}),
            ({"meetingStart": "tomorrow"}, {"meetingStart"}),
            ({"meetingEnd": iso(NOW)}, {"meetingEnd"}),
            ({"meetingName": ""}, {"meetingName"}),
            ({"meetingName": None}, {"meetingName"}),
            ({"participants": ["not-an-email"]}, {"participants.0"}),
            ({"participants": "bob@example.com"}, {"participants"}),
            ({"participants": ["bob\u0000@example.com"]}, {"participants.0"}),
            ({"participants": ["b" * 250 + "@example.com"]}, {"participants.0"}),
            ({"meetingName": "Weekly\u0000sync"}, {"meetingName"}),
            ({"meetingName": "x" * 201}, {"meetingName"}),
            ({"startWithPersonalUrl": "nope"}, {"startWithPersonalUrl"}),
        ],
    )
    def test_bad_input_is_400_and_stores_nothing(
        self,
        client: FlaskClient,
        account: Account,
        db_session: Session,
        fields: dict[str, Any],
        bad: set[str],
    ) -> None:
        response = schedule(client, account, **fields)
        assert response.status_code == 400
        assert {e["field"] for e in response.get_json()["errors"]} == bad
        assert db_session.scalar(sa.select(sa.func.count()).select_from(Meeting)) == 0

    def test_missing_fields_are_all_listed(self, client: FlaskClient, account: Account) -> None:
        response = client.post("/v1/meetings", json={}, headers=account.headers)
        assert response.status_code == 400
        fields = {e["field"] for e in response.get_json()["errors"]}
        assert fields == {"meetingName", "meetingStart", "meetingEnd"}


class TestReadListChangeDelete:
    def test_list_upcoming_with_end_date(self, client: FlaskClient, account: Account) -> None:
        soon = schedule(client, account, hours_ahead=1).get_json()
        later = schedule(client, account, hours_ahead=48).get_json()
        listed = client.get("/v1/meetings", headers=account.headers).get_json()
        assert [m["meetingId"] for m in listed] == [soon["meetingId"], later["meetingId"]]
        end_date = iso(NOW + dt.timedelta(hours=24))
        limited = client.get(
            "/v1/meetings", query_string={"endDate": end_date}, headers=account.headers
        ).get_json()
        assert [m["meetingId"] for m in limited] == [soon["meetingId"]]

    def test_end_date_offset_sent_unencoded_is_understood(
        self, client: FlaskClient, account: Account
    ) -> None:
        soon = schedule(client, account, hours_ahead=1).get_json()
        schedule(client, account, hours_ahead=48)
        # "+02:00" typed into a URL arrives as " 02:00": a "+" in a query string is a space.
        end_date = (NOW + dt.timedelta(hours=26)).astimezone(dt.timezone(dt.timedelta(hours=2)))
        raw = end_date.replace(tzinfo=None).isoformat() + "+02:00"
        response = client.get(f"/v1/meetings?endDate={raw}", headers=account.headers)
        assert response.status_code == 200
        assert [m["meetingId"] for m in response.get_json()] == [soon["meetingId"]]

    def test_list_leaves_out_ad_hoc_ended_and_deleted_meetings(
        self, client: FlaskClient, account: Account
    ) -> None:
        client.post(
            "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=account.headers
        )
        kept = schedule(client, account).get_json()
        deleted = schedule(client, account).get_json()
        client.delete(f"/v1/meetings/{deleted['meetingId']}", headers=account.headers)
        ended = schedule(client, account).get_json()
        link = client.post(f"/v1/meetings/{ended['meetingId']}/start", headers=account.headers)
        client.post(
            link.get_json()["presenterLink"].removeprefix("https://meet.example.test"),
            headers={"Accept": "application/json"},
        )
        client.post(f"/v1/meetings/{ended['meetingId']}/end", headers=account.headers)
        listed = client.get("/v1/meetings", headers=account.headers)
        assert listed.status_code == 200
        assert [m["meetingId"] for m in listed.get_json()] == [kept["meetingId"]]

    @pytest.mark.parametrize("end_date", ["2030-01-01", "2030-01-01T10:00:00", "soon"])
    def test_bad_end_date_is_400(
        self, client: FlaskClient, account: Account, end_date: str
    ) -> None:
        response = client.get(
            "/v1/meetings", query_string={"endDate": end_date}, headers=account.headers
        )
        assert response.status_code == 400
        assert response.get_json()["errors"][0]["field"] == "endDate"

    def test_patch_changes_only_given_fields(self, client: FlaskClient, account: Account) -> None:
        meeting = schedule(client, account).get_json()
        response = client.patch(
            f"/v1/meetings/{meeting['meetingId']}",
            json={"meetingName": "Renamed"},
            headers=account.headers,
        )
        assert response.status_code == 200
        body = response.get_json()
        assert body["meetingName"] == "Renamed"
        assert body["meetingStart"] == meeting["meetingStart"]
        assert body["participants"] == meeting["participants"]

    def test_patch_end_before_start_is_400(self, client: FlaskClient, account: Account) -> None:
        meeting = schedule(client, account).get_json()
        response = client.patch(
            f"/v1/meetings/{meeting['meetingId']}",
            json={"meetingEnd": iso(NOW - dt.timedelta(days=1))},
            headers=account.headers,
        )
        assert response.status_code == 400
        unchanged = client.get(f"/v1/meetings/{meeting['meetingId']}", headers=account.headers)
        assert unchanged.get_json()["meetingEnd"] == meeting["meetingEnd"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"meetingStart": "2030-01-01T10:00:00"}, "meetingStart"),
            ({"meetingName": ""}, "meetingName"),
            ({"participants": ["nope"]}, "participants.0"),
            ({"startWithPersonalUrl": "yes"}, "startWithPersonalUrl"),
        ],
    )
    def test_patch_bad_field_is_400_and_changes_nothing(
        self, client: FlaskClient, account: Account, body: dict[str, Any], field: str
    ) -> None:
        meeting = schedule(client, account).get_json()
        url = f"/v1/meetings/{meeting['meetingId']}"
        response = client.patch(url, json={**body, "meetingName": body.get("meetingName", "X")},
                                headers=account.headers)  # fmt: skip
        assert response.status_code == 400
        assert field in {e["field"] for e in response.get_json()["errors"]}
        assert client.get(url, headers=account.headers).get_json() == meeting

    def test_patch_returns_times_in_utc(self, client: FlaskClient, account: Account) -> None:
        meeting = schedule(client, account).get_json()
        response = client.patch(
            f"/v1/meetings/{meeting['meetingId']}",
            json={"meetingStart": "2030-06-01T12:00:00-04:00",
                  "meetingEnd": "2030-06-01T13:30:00-04:00"},
            headers=account.headers,
        )  # fmt: skip
        assert response.status_code == 200
        assert response.get_json()["meetingStart"] == "2030-06-01T16:00:00Z"
        assert response.get_json()["meetingEnd"] == "2030-06-01T17:30:00Z"

    @pytest.mark.parametrize("meeting_id", ["0", "2147483648", "99999999999999999999"])
    @pytest.mark.parametrize(
        ("method", "suffix"),
        [("get", ""), ("patch", ""), ("delete", ""), ("post", "/start")],
    )
    def test_ids_that_name_no_row_are_404(
        self, client: FlaskClient, account: Account, meeting_id: str, method: str, suffix: str
    ) -> None:
        response = getattr(client, method)(
            f"/v1/meetings/{meeting_id}{suffix}", json={}, headers=account.headers
        )
        assert response.status_code == 404
        assert response.get_json()["code"] == "meeting-not-found"

    def test_delete_then_404(self, client: FlaskClient, account: Account) -> None:
        meeting = schedule(client, account).get_json()
        url = f"/v1/meetings/{meeting['meetingId']}"
        response = client.delete(url, headers=account.headers)
        assert response.status_code == 204
        assert response.data == b""
        assert client.get(url, headers=account.headers).status_code == 404
        assert client.delete(url, headers=account.headers).status_code == 404


class TestStartScheduled:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {},
            {"data": b"", "content_type": "application/json"},
            {"json": {}},
            {"data": {}, "content_type": "application/x-www-form-urlencoded"},
            {"data": {"viewerMode": "headless"}},
        ],
        ids=["absent", "empty", "empty-object", "empty-form", "form"],
    )
    def test_body_may_be_absent_empty_an_empty_object_or_a_form(
        self, client: FlaskClient, account: Account, kwargs: dict[str, Any]
    ) -> None:
        meeting = schedule(client, account).get_json()
        response = client.post(
            f"/v1/meetings/{meeting['meetingId']}/start", headers=account.headers, **kwargs
        )
        assert response.status_code == 200
        body = response.get_json()
        assert body["meetingId"] == meeting["meetingId"]
        assert body["audioConference"]["conferenceId"] == meeting["conferenceId"]
        assert body["presenterLink"].startswith("https://meet.example.test/presenter/")
        assert "webhooksStatus" not in body

    def test_restart_issues_a_fresh_link_and_replaces_named_webhooks(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        meeting_id = schedule(client, account).get_json()["meetingId"]
        url = f"/v1/meetings/{meeting_id}/start"
        first = client.post(
            url,
            json={"webhooks": {"meeting.start": {"callbackUrl": "https://93.184.216.34/a"},
                               "meeting.end": {"callbackUrl": "https://93.184.216.34/end"}}},
            headers=account.headers,
        ).get_json()  # fmt: skip
        second = client.post(
            url,
            json={"webhooks": {"meeting.start": {"callbackUrl": "https://93.184.216.34/b"}}},
            headers=account.headers,
        ).get_json()
        assert first["presenterLink"] != second["presenterLink"]
        hooks = {h.event_type: h.callback_url for h in db_session.scalars(sa.select(Webhook))}
        assert hooks == {
            "meeting.start": "https://93.184.216.34/b",
            "meeting.end": "https://93.184.216.34/end",
        }
        assert (
            second["webhooksStatus"]["meeting.start"]["webhookId"]
            != (first["webhooksStatus"]["meeting.start"]["webhookId"])
        )

    def test_restart_while_running_issues_a_working_link_and_keeps_other_webhooks(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        started = client.post(
            "/v1/meetings/start",
            json={"startWithPersonalUrl": False,
                  "webhooks": {"meeting.start": {"callbackUrl": "https://93.184.216.34/a"},
                               "meeting.end": {"callbackUrl": "https://93.184.216.34/end"}}},
            headers=account.headers,
        ).get_json()  # fmt: skip
        meeting_id = started["meetingId"]
        used = client.post(
            started["presenterLink"].removeprefix("https://meet.example.test"),
            headers={"Accept": "application/json"},
        )
        assert used.get_json()["status"] == "started"
        restart = client.post(
            f"/v1/meetings/{meeting_id}/start",
            json={"webhooks": {"meeting.end": {"callbackUrl": "https://93.184.216.34/end2"}}},
            headers=account.headers,
        )
        assert restart.status_code == 200
        body = restart.get_json()
        assert body["presenterLink"] != started["presenterLink"]
        assert body["audioConference"] == started["audioConference"]
        assert set(body["webhooksStatus"]) == {"meeting.end"}
        hooks = {h.event_type: h.callback_url for h in db_session.scalars(sa.select(Webhook))}
        assert hooks == {
            "meeting.start": "https://93.184.216.34/a",
            "meeting.end": "https://93.184.216.34/end2",
        }
        again = client.post(
            body["presenterLink"].removeprefix("https://meet.example.test"),
            headers={"Accept": "application/json"},
        )
        assert again.status_code == 200
        assert again.get_json()["startedAt"] == used.get_json()["startedAt"]

    def test_viewer_options_on_scheduled_start(self, client: FlaskClient, account: Account) -> None:
        meeting = schedule(client, account, startWithPersonalUrl=True).get_json()
        body = client.post(
            f"/v1/meetings/{meeting['meetingId']}/start",
            json={"viewerMode": "headless", "viewerAppDetection": "false"},
            headers=account.headers,
        ).get_json()
        assert body["viewerLink"] == (
            "https://meet.example.test/alice?viewerMode=headless&viewerAppDetection=false"
        )

    def test_bad_options_are_400(self, client: FlaskClient, account: Account) -> None:
        meeting = schedule(client, account).get_json()
        response = client.post(
            f"/v1/meetings/{meeting['meetingId']}/start",
            json={"viewerMode": "kiosk", "webhooks": 3},
            headers=account.headers,
        )
        assert response.status_code == 400
        assert {e["field"] for e in response.get_json()["errors"]} == {"viewerMode", "webhooks"}

    def test_ended_meeting_is_409(self, client: FlaskClient, account: Account) -> None:
        meeting_id = schedule(client, account).get_json()["meetingId"]
        link = client.post(f"/v1/meetings/{meeting_id}/start", headers=account.headers)
        client.post(
            link.get_json()["presenterLink"].removeprefix("https://meet.example.test"),
            headers={"Accept": "application/json"},
        )
        client.post(f"/v1/meetings/{meeting_id}/end", headers=account.headers)
        response = client.post(f"/v1/meetings/{meeting_id}/start", headers=account.headers)
        assert response.status_code == 409
        assert response.get_json()["code"] == "meeting-ended"

    def test_unknown_meeting_is_404(self, client: FlaskClient, account: Account) -> None:
        response = client.post("/v1/meetings/4242/start", headers=account.headers)
        assert response.status_code == 404
