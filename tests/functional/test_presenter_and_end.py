from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from core.models import Delivery, Event, PresenterLink
from tests.conftest import Account, Enqueued

PUBLIC_HOOK = "https://93.184.216.34/hook"
JSON = {"Accept": "application/json"}
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def start_meeting(client: FlaskClient, account: Account, **body: Any) -> dict[str, Any]:
    response = client.post(
        "/v1/meetings/start",
        json={"startWithPersonalUrl": False, **body},
        headers=account.headers,
    )
    assert response.status_code == 201
    result: dict[str, Any] = response.get_json()
    return result


def path_of(link: str) -> str:
    return link.removeprefix("https://meet.example.test")


class TestPresenterLink:
    def test_get_shows_a_page_and_consumes_nothing(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        link = path_of(start_meeting(client, account)["presenterLink"])
        for _ in range(3):
            page = client.get(link)
            assert page.status_code == 200
            assert page.mimetype == "text/html"
            assert b"Start meeting" in page.data
            assert page.headers["Cache-Control"] == "no-store"
        assert db_session.scalar(sa.select(PresenterLink.used_at)) is None
        assert db_session.scalar(sa.select(sa.func.count()).select_from(Event)) == 0

    def test_post_starts_the_meeting_once(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        started = start_meeting(client, account)
        link = path_of(started["presenterLink"])
        response = client.post(link, headers=JSON)
        assert response.status_code == 200
        body = response.get_json()
        assert body["meetingId"] == started["meetingId"]
        assert body["status"] == "started"
        assert body["startedAt"].endswith("Z")
        meeting = client.get(f"/v1/meetings/{started['meetingId']}", headers=account.headers)
        assert meeting.get_json()["status"] == "started"
        events = db_session.scalars(sa.select(Event)).all()
        assert [(e.type, e.source, e.outcome) for e in events] == [
            ("meeting.start", "presenter", "applied")
        ]

        again = client.post(link, headers=JSON)
        assert again.status_code == 410
        assert again.get_json()["code"] == "presenter-link-used"
        page = client.get(link)
        assert page.status_code == 410
        assert b"already been used" in page.data
        assert db_session.scalar(sa.select(sa.func.count()).select_from(Event)) == 1

    def test_post_without_json_accept_answers_html(
        self, client: FlaskClient, account: Account
    ) -> None:
        link = path_of(start_meeting(client, account)["presenterLink"])
        response = client.post(link)
        assert response.status_code == 200
        assert response.mimetype == "text/html"
        assert b"started" in response.data
        reused = client.post(link)
        assert reused.status_code == 410
        assert reused.mimetype == "text/html"

    def test_expired_link_is_410(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        link = path_of(start_meeting(client, account)["presenterLink"])
        db_session.execute(
            sa.update(PresenterLink).values(
                expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            )
        )
        db_session.commit()
        response = client.post(link, headers=JSON)
        assert response.status_code == 410
        assert response.get_json()["code"] == "presenter-link-expired"
        assert client.get(link).status_code == 410
        assert db_session.scalar(sa.select(sa.func.count()).select_from(Event)) == 0

    def test_link_lifetime_follows_the_setting(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        start_meeting(client, account)
        link = db_session.scalars(sa.select(PresenterLink)).one()
        assert link.expires_at - link.issued_at == dt.timedelta(seconds=600)

    def test_unknown_token_is_410(self, client: FlaskClient) -> None:
        response = client.post("/presenter/not-a-real-token", headers=JSON)
        assert response.status_code == 410
        assert response.get_json()["code"] == "presenter-link-unknown"

    @pytest.mark.parametrize("state", ["used", "expired", "unknown"])
    def test_unusable_link_says_which_as_json_or_html(
        self, client: FlaskClient, account: Account, db_session: Session, state: str
    ) -> None:
        link = path_of(start_meeting(client, account)["presenterLink"])
        if state == "used":
            assert client.post(link, headers=JSON).status_code == 200
        elif state == "expired":
            db_session.execute(
                sa.update(PresenterLink).values(
                    expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
                )
            )
            db_session.commit()
        else:
            link = "/presenter/" + "x" * 43
        for method in ("get", "post"):
            as_json = getattr(client, method)(link, headers=JSON)
            assert as_json.status_code == 410, method
            assert as_json.mimetype == "application/json"
            assert as_json.get_json()["code"] == f"presenter-link-{state}"
            assert state in as_json.get_json()["Message"]
            as_page = getattr(client, method)(link, headers={"Accept": BROWSER_ACCEPT})
            assert as_page.status_code == 410, method
            assert as_page.mimetype == "text/html"
            assert state.encode() in as_page.data
        started = 1 if state == "used" else 0
        assert db_session.scalar(sa.select(sa.func.count()).select_from(Event)) == started

    def test_get_asking_for_json_still_consumes_nothing(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        link = path_of(start_meeting(client, account)["presenterLink"])
        page = client.get(link, headers=JSON)
        assert page.status_code == 200
        assert db_session.scalar(sa.select(PresenterLink.used_at)) is None
        assert client.post(link, headers=JSON).status_code == 200

    @pytest.mark.parametrize(
        ("kwargs", "mimetype"),
        [
            ({"json": {}}, "application/json"),
            ({"json": {}, "headers": {"Accept": "*/*"}}, "application/json"),
            ({"headers": {"Accept": "*/*"}}, "text/html"),
            ({"headers": {"Accept": BROWSER_ACCEPT}}, "text/html"),
            ({"json": {}, "headers": {"Accept": "text/html"}}, "text/html"),
            ({"headers": {"Accept": "application/json;q=0.9, text/html;q=0.5"}},
             "application/json"),
            ({"headers": {"Accept": "application/json, text/plain, */*"}}, "application/json"),
            ({"headers": {"Accept": "application/json, text/html"}}, "text/html"),
            ({"json": {}, "headers": {"Accept": "application/json, text/html"}},
             "application/json"),
        ],
    )  # fmt: skip
    def test_post_answers_json_when_asked(
        self, client: FlaskClient, account: Account, kwargs: dict[str, Any], mimetype: str
    ) -> None:
        started = start_meeting(client, account)
        response = client.post(path_of(started["presenterLink"]), **kwargs)
        assert response.status_code == 200
        assert response.mimetype == mimetype
        if mimetype == "application/json":
            assert response.get_json()["meetingId"] == started["meetingId"]
            assert response.headers["Cache-Control"] == "no-store"

    def test_start_queues_the_registered_callback(
        self, client: FlaskClient, account: Account, enqueued: Enqueued, db_session: Session
    ) -> None:
        started = start_meeting(
            client,
            account,
            webhooks={
                "meeting.start": {"callbackUrl": PUBLIC_HOOK, "customCallbackData": {"a": 1}}
            },
        )
        client.post(path_of(started["presenterLink"]), headers=JSON)
        delivery = db_session.scalars(sa.select(Delivery)).one()
        assert delivery.callback_url == PUBLIC_HOOK
        assert delivery.status == "pending"
        assert enqueued.calls == [("workers.deliveries.deliver", {"delivery_id": delivery.id})]


class TestEnd:
    def test_end_a_running_meeting(
        self, client: FlaskClient, account: Account, enqueued: Enqueued, db_session: Session
    ) -> None:
        started = start_meeting(
            client, account, webhooks={"meeting.end": {"callbackUrl": PUBLIC_HOOK}}
        )
        client.post(path_of(started["presenterLink"]), headers=JSON)
        response = client.post(f"/v1/meetings/{started['meetingId']}/end", headers=account.headers)
        assert response.status_code == 200
        body = response.get_json()
        assert body["status"] == "ended"
        assert body["endedAt"].endswith("Z")
        assert isinstance(body["durationSeconds"], int)
        assert body["durationSeconds"] >= 0
        assert enqueued.names() == ["workers.deliveries.deliver"]

        again = client.post(f"/v1/meetings/{started['meetingId']}/end", headers=account.headers)
        assert again.status_code == 200
        assert again.get_json() == body
        assert enqueued.names() == ["workers.deliveries.deliver"]
        ends = db_session.scalars(sa.select(Event).where(Event.type == "meeting.end")).all()
        assert len(ends) == 1

    def test_ending_a_meeting_that_never_started_ends_it_without_a_start(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        started = start_meeting(client, account)
        meeting_id = started["meetingId"]
        response = client.post(f"/v1/meetings/{meeting_id}/end", headers=account.headers)
        assert response.status_code == 200
        body = response.get_json()
        assert body["status"] == "ended"
        assert body["startedAt"] is None
        assert body["endedAt"].endswith("Z")
        assert body["durationSeconds"] is None
        ends = db_session.scalars(sa.select(Event).where(Event.type == "meeting.end")).all()
        assert [event.meeting_id for event in ends] == [meeting_id]
        # The unused presenter link now says the meeting ended; it cannot start it again.
        late = client.post(path_of(started["presenterLink"]), headers=JSON)
        assert late.status_code == 410
        assert late.get_json()["code"] == "meeting-ended"
        again = client.get(f"/v1/meetings/{meeting_id}", headers=account.headers).get_json()
        assert again["status"] == "ended"
        assert again["startedAt"] is None

    def test_presenter_link_of_an_ended_meeting_is_410(
        self, client: FlaskClient, account: Account
    ) -> None:
        started = start_meeting(client, account)
        client.post(path_of(started["presenterLink"]), headers=JSON)
        restart = client.post(
            f"/v1/meetings/{started['meetingId']}/start", headers=account.headers
        ).get_json()
        client.post(f"/v1/meetings/{started['meetingId']}/end", headers=account.headers)
        response = client.post(path_of(restart["presenterLink"]), headers=JSON)
        assert response.status_code == 410
        assert response.get_json()["code"] == "meeting-ended"

    @pytest.mark.parametrize(
        "path",
        [
            "/v1/meetings/999/end",
            "/v1/meetings/abc/end",
            "/v1/meetings/0/end",
            "/v1/meetings/2147483648/end",
            "/v1/meetings/99999999999999999999/end",
        ],
    )
    def test_unknown_meeting_is_404(self, client: FlaskClient, account: Account, path: str) -> None:
        response = client.post(path, headers=account.headers)
        assert response.status_code == 404
        assert response.get_json()["code"] in {"meeting-not-found", "not-found"}
