"""Captured requests sent again: platform events replayed, presenter links pressed twice."""

from __future__ import annotations

import datetime as dt
import json
import threading
import types
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

import receiver.api.events
from core import task_names
from core.models import Event
from tests.platform_events import signed_bytes_headers

if TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient
    from sqlalchemy.orm import Session

    from tests.analytics_fixture import History
    from tests.conftest import Account, Enqueued

TOLERANCE = dt.timedelta(minutes=5)
JSON = {"Accept": "application/json"}


def captured(meeting_id: int) -> tuple[bytes, dict[str, str]]:
    """A platform request as it went over the wire, signed now."""
    raw = json.dumps(
        {
            "type": "meeting.end",
            "timestamp": "2026-11-02T12:00:00Z",
            "data": {"meetingId": meeting_id},
        }
    ).encode()
    return raw, {**signed_bytes_headers(raw), "Content-Type": "application/json"}


def receiver_clock_ahead(monkeypatch: pytest.MonkeyPatch, by: dt.timedelta) -> None:
    """Make the ingest endpoint's clock read `by` later than ours."""

    class Later(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> Later:  # type: ignore[override]
            moved = dt.datetime.now(tz) + by
            return cls.fromtimestamp(moved.timestamp(), tz)

    monkeypatch.setattr(
        receiver.api.events, "dt", types.SimpleNamespace(datetime=Later, UTC=dt.UTC)
    )


def stored(db_session: Session, webhook_id: str) -> list[Event]:
    db_session.rollback()
    return list(db_session.scalars(sa.select(Event).where(Event.source_event_id == webhook_id)))


class TestReplayedIngest:
    def test_replay_within_the_tolerance_is_200_stored_and_processed_once(
        self, client: FlaskClient, db_session: Session, history: History, enqueued: Enqueued
    ) -> None:
        raw, headers = captured(history.meetings["never"])
        answers = [client.post("/v1/events", data=raw, headers=headers) for _ in range(5)]
        assert [a.status_code for a in answers] == [202, 200, 200, 200, 200]
        assert len({a.get_json()["id"] for a in answers}) == 1
        assert len(stored(db_session, headers["webhook-id"])) == 1
        assert enqueued.names().count(task_names.PROCESS_EVENT) == 1

    @pytest.mark.parametrize("later", [TOLERANCE + dt.timedelta(seconds=2), dt.timedelta(days=3)])
    def test_replay_after_the_tolerance_is_401_and_stores_nothing_more(
        self,
        client: FlaskClient,
        db_session: Session,
        history: History,
        monkeypatch: pytest.MonkeyPatch,
        later: dt.timedelta,
    ) -> None:
        raw, headers = captured(history.meetings["never"])
        assert client.post("/v1/events", data=raw, headers=headers).status_code == 202
        receiver_clock_ahead(monkeypatch, later)
        replay = client.post("/v1/events", data=raw, headers=headers)
        assert replay.status_code == 401
        assert replay.get_json()["code"] == "invalid-signature"
        assert len(stored(db_session, headers["webhook-id"])) == 1

    def test_a_stale_capture_never_stored_is_401(
        self,
        client: FlaskClient,
        db_session: Session,
        history: History,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        raw, headers = captured(history.meetings["never"])
        receiver_clock_ahead(monkeypatch, TOLERANCE + dt.timedelta(seconds=2))
        assert client.post("/v1/events", data=raw, headers=headers).status_code == 401
        assert stored(db_session, headers["webhook-id"]) == []

    @pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp"])
    def test_a_captured_signature_does_not_sign_a_fresh_id_or_timestamp(
        self, client: FlaskClient, db_session: Session, history: History, header: str
    ) -> None:
        raw, headers = captured(history.meetings["never"])
        fresh = signed_bytes_headers(raw)
        forged = {**headers, header: fresh[header]}
        if header == "webhook-timestamp":
            forged[header] = str(int(headers[header]) + 1)
        response = client.post("/v1/events", data=raw, headers=forged)
        assert response.status_code == 401
        assert stored(db_session, forged["webhook-id"]) == []


class TestReusedPresenterLinks:
    def test_concurrent_presses_start_the_meeting_once(
        self, app: Flask, client: FlaskClient, db_session: Session, alice: Account
    ) -> None:
        started = client.post(
            "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=alice.headers
        ).get_json()
        link = started["presenterLink"].removeprefix("https://meet.example.test")
        statuses: list[int] = []
        gate = threading.Barrier(6)

        def press() -> None:
            gate.wait()
            statuses.append(app.test_client().post(link, headers=JSON).status_code)

        threads = [threading.Thread(target=press) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(statuses) == [200] + [410] * 5
        db_session.rollback()
        starts = db_session.scalars(
            sa.select(Event).where(Event.meeting_id == started["meetingId"])
        ).all()
        assert [e.type for e in starts] == ["meeting.start"]

    def test_a_used_link_stays_gone_after_the_meeting_ends(
        self, client: FlaskClient, db_session: Session, alice: Account
    ) -> None:
        started = client.post(
            "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=alice.headers
        ).get_json()
        link = started["presenterLink"].removeprefix("https://meet.example.test")
        assert client.post(link, headers=JSON).status_code == 200
        ended = client.post(f"/v1/meetings/{started['meetingId']}/end", headers=alice.headers)
        assert ended.status_code == 200
        for variant in (link, link + "/", link.upper(), link + "%00", link + "?again=1"):
            again = client.post(variant, headers=JSON)
            assert again.status_code in {404, 410}, (variant, again.status_code)
            assert again.is_json
        db_session.rollback()
        types_ = db_session.scalars(
            sa.select(Event.type).where(Event.meeting_id == started["meetingId"]).order_by(Event.id)
        ).all()
        assert types_ == ["meeting.start", "meeting.end"]
