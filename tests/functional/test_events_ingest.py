from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import io
import json
import secrets
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session

from core.config import Settings
from core.errors import ConfigError
from core.models import Event, Meeting
from core.services import events as events_service
from receiver import create_app
from tests.conftest import INGEST_SECRET, Account, Enqueued
from tests.platform_events import new_msg_id, signed_headers

NOW = dt.datetime.now(dt.UTC)


def iso(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def minutes_from_now(minutes: float) -> dt.datetime:
    # From the clock, not from NOW: the suite may run long before this test does.
    return dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes)


def signed(
    body: bytes | str,
    *,
    secret: str = INGEST_SECRET,
    msg_id: str | None = None,
    at: dt.datetime | None = None,
) -> dict[str, str]:
    text = body.decode() if isinstance(body, bytes) else body
    return signed_headers(
        msg_id or new_msg_id(), text, at or dt.datetime.now(dt.UTC), secret=secret
    )


def signed_raw(body: bytes, timestamp: str) -> dict[str, str]:
    """Sign raw bytes under a timestamp header taken as given, by hand: what `signed` can't."""
    msg_id = "msg_" + secrets.token_hex(8)
    digest = hmac.new(
        base64.b64decode(INGEST_SECRET.removeprefix("whsec_")),
        f"{msg_id}.{timestamp}.".encode() + body,
        hashlib.sha256,
    ).digest()
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def event_body(meeting_id: int | None = None, type_: str = "meeting.start", **data: Any) -> str:
    payload: dict[str, Any] = {"type": type_, "timestamp": iso(NOW), "data": dict(data)}
    if meeting_id is not None:
        payload["data"]["meetingId"] = meeting_id
    return json.dumps(payload)


def post(client: FlaskClient, body: str | bytes, headers: dict[str, str]) -> Any:
    return client.post("/v1/events", data=body, headers=headers)


@pytest.fixture
def meeting(client: FlaskClient, account: Account) -> dict[str, Any]:
    result: dict[str, Any] = client.post(
        "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=account.headers
    ).get_json()
    return result


def events_in(db_session: Session) -> list[Event]:
    db_session.expire_all()
    return list(db_session.scalars(sa.select(Event).order_by(Event.id)))


class TestAccepted:
    def test_records_then_enqueues_and_answers_202(
        self,
        client: FlaskClient,
        meeting: dict[str, Any],
        enqueued: Enqueued,
        db_session: Session,
    ) -> None:
        body = event_body(meeting["meetingId"])
        headers = signed(body)
        response = post(client, body, headers)
        assert response.status_code == 202
        answer = response.get_json()
        assert answer["id"].startswith("evt_")
        stored = events_in(db_session)
        assert len(stored) == 1
        assert stored[0].public_id == answer["id"]
        assert stored[0].source == "platform"
        assert stored[0].source_event_id == headers["webhook-id"]
        assert stored[0].meeting_id == meeting["meetingId"]
        assert stored[0].processed_at is None  # processing belongs to the workers
        assert enqueued.calls == [("workers.events.process_event", {"event_id": stored[0].id})]

    def test_same_webhook_id_again_is_200_recorded_once(
        self,
        client: FlaskClient,
        meeting: dict[str, Any],
        enqueued: Enqueued,
        db_session: Session,
    ) -> None:
        body = event_body(meeting["meetingId"])
        headers = signed(body)
        first = post(client, body, headers)
        second = post(client, body, headers)
        assert first.status_code == 202
        assert second.status_code == 200
        assert (
            second.get_json()
            == first.get_json()
            == {"id": first.get_json()["id"], "status": "accepted"}
        )
        assert len(events_in(db_session)) == 1
        assert enqueued.names() == ["workers.events.process_event"]

    def test_conference_id_names_the_live_meeting(
        self, client: FlaskClient, meeting: dict[str, Any], db_session: Session
    ) -> None:
        conference_id = meeting["audioConference"]["conferenceId"]
        body = event_body(type_="meeting.end", conferenceId=conference_id)
        assert post(client, body, signed(body)).status_code == 202
        assert events_in(db_session)[0].meeting_id == meeting["meetingId"]

    def test_unknown_meeting_is_recorded_not_refused(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        body = event_body(987654)
        response = post(client, body, signed(body))
        assert response.status_code == 202
        stored = events_in(db_session)
        assert [(e.meeting_id, e.user_id) for e in stored] == [(None, None)]

    def test_unknown_fields_are_ignored(self, client: FlaskClient, meeting: dict[str, Any]) -> None:
        body = json.dumps(
            {
                "type": "meeting.start",
                "timestamp": iso(NOW),
                "data": {"meetingId": meeting["meetingId"], "participants": 3},
                "platformVersion": "9.1",
            }
        )
        assert post(client, body, signed(body)).status_code == 202


class TestRefused:
    @pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
    def test_missing_header_is_401(
        self, client: FlaskClient, meeting: dict[str, Any], db_session: Session, header: str
    ) -> None:
        body = event_body(meeting["meetingId"])
        headers = signed(body)
        del headers[header]
        response = post(client, body, headers)
        assert response.status_code == 401
        answer = response.get_json()
        assert answer["code"] == "invalid-signature"
        assert header in answer["Message"]  # says which header is missing
        assert events_in(db_session) == []

    @pytest.mark.parametrize(
        ("minutes", "says"), [(-6, "too old"), (6, "too new"), (-4.5, None), (4.5, None)]
    )
    def test_timestamp_must_be_within_five_minutes(
        self,
        client: FlaskClient,
        meeting: dict[str, Any],
        db_session: Session,
        minutes: float,
        says: str | None,
    ) -> None:
        body = event_body(meeting["meetingId"])
        response = post(client, body, signed(body, at=minutes_from_now(minutes)))
        if says is None:
            assert response.status_code == 202
            return
        assert response.status_code == 401
        assert says in response.get_json()["Message"]
        assert events_in(db_session) == []

    def test_signature_by_a_previous_body_does_not_pass_for_the_altered_one(
        self, client: FlaskClient, meeting: dict[str, Any], db_session: Session
    ) -> None:
        body = event_body(meeting["meetingId"])
        headers = signed(body)
        altered = body.replace(str(meeting["meetingId"]), str(meeting["meetingId"] + 1))
        for candidate in (altered, body + " ", body.encode() + b"\n"):
            response = post(client, candidate, headers)
            assert response.status_code == 401
            assert "signature" in response.get_json()["Message"]
        assert events_in(db_session) == []

    @pytest.mark.parametrize(
        ("label", "tamper"),
        [
            ("wrong secret", lambda body: (body, signed(body, secret="whsec_" + "A" * 40))),
            ("body altered", lambda body: (body.replace("start", "end"), signed(body))),
            (
                "stale",
                lambda body: (
                    body,
                    signed(body, at=minutes_from_now(-6)),
                ),
            ),
            (
                "future",
                lambda body: (
                    body,
                    signed(body, at=minutes_from_now(6)),
                ),
            ),
            ("garbage signature", lambda body: (body, {**signed(body), "webhook-signature": "v1"})),
            ("bad base64", lambda body: (body, {**signed(body), "webhook-signature": "v1,@@@"})),
            ("bad timestamp", lambda body: (body, {**signed(body), "webhook-timestamp": "soon"})),
        ],
    )
    def test_bad_signature_is_401_and_records_nothing(
        self,
        client: FlaskClient,
        meeting: dict[str, Any],
        enqueued: Enqueued,
        db_session: Session,
        label: str,
        tamper: Any,
    ) -> None:
        body, headers = tamper(event_body(meeting["meetingId"]))
        response = post(client, body, headers)
        assert response.status_code == 401, label
        assert response.get_json()["code"] == "invalid-signature"
        assert events_in(db_session) == []
        assert enqueued.calls == []

    @pytest.mark.parametrize("signed_over_other_bytes", [True, False], ids=["wrong", "none"])
    def test_non_utf8_body_without_a_valid_signature_is_401(
        self,
        client: FlaskClient,
        enqueued: Enqueued,
        db_session: Session,
        signed_over_other_bytes: bool,
    ) -> None:
        # The signature is checked over the raw bytes before anything decodes them.
        headers = signed("placeholder") if signed_over_other_bytes else {}
        response = post(client, b"\xff\xfe\x00garbage", headers)
        assert response.status_code == 401
        assert response.get_json()["code"] == "invalid-signature"
        assert events_in(db_session) == []
        assert enqueued.calls == []

    def test_no_secret_configured_refuses_everything(
        self, settings: Settings, session_factory: Any, enqueued: Enqueued
    ) -> None:
        app: Flask = create_app(
            settings.model_copy(update={"ingest_signing_secret": None}),
            session_factory=session_factory,
            enqueue=enqueued,
        )
        body = event_body(1)
        for headers in (signed(body), {"content-type": "application/json"}, {}):
            response = app.test_client().post("/v1/events", data=body, headers=headers)
            assert response.status_code == 401
            assert response.get_json()["code"] == "ingest-disabled"
        with session_factory() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Event)) == 0
        assert enqueued.calls == []

    @pytest.mark.parametrize(
        "secret", ["whsec_", "whsec_!!!!!", "whsec_a", "not base64 at all", "c2VjcmV0"]
    )
    def test_unusable_secret_stops_the_service_at_start_up(
        self, settings: Settings, secret: str
    ) -> None:
        with pytest.raises(ConfigError, match="INGEST_SIGNING_SECRET"):
            Settings.from_env(
                {
                    "DATABASE_URL": settings.database_url,
                    "BROKER_URL": "memory://",
                    "INGEST_SIGNING_SECRET": secret,
                }
            )

    @pytest.mark.parametrize(
        ("payload", "fields"),
        [
            ({"type": "meeting.paused", "timestamp": iso(NOW), "data": {"meetingId": 1}}, {"type"}),
            ({"type": "meeting.end", "timestamp": "2026-11-24T10:00:00", "data": {"meetingId": 1}},
             {"timestamp"}),
            ({"type": "meeting.end", "timestamp": "yesterday", "data": {"meetingId": 1}},
             {"timestamp"}),
            ({"type": "meeting.end", "timestamp": iso(NOW), "data": {"meetingId": "1"}},
             {"data.meetingId"}),
            ({"type": "meeting.end", "timestamp": iso(NOW), "data": {"conferenceId": "12"}},
             {"data.conferenceId"}),
            ({"type": "meeting.end", "timestamp": iso(NOW), "data": {}}, {"data"}),
            ({"type": "meeting.end", "timestamp": iso(NOW)}, {"data"}),
            ({}, {"type", "timestamp", "data"}),
        ],
    )  # fmt: skip
    def test_malformed_event_is_400_listing_fields(
        self,
        client: FlaskClient,
        db_session: Session,
        payload: dict[str, Any],
        fields: set[str],
    ) -> None:
        body = json.dumps(payload)
        response = post(client, body, signed(body))
        assert response.status_code == 400
        assert {e["field"] for e in response.get_json()["errors"]} == fields
        assert events_in(db_session) == []

    @pytest.mark.parametrize("body", ["not json", "[1, 2]", '"meeting.end"'])
    def test_signed_body_that_is_not_an_object_is_400(
        self, client: FlaskClient, db_session: Session, body: str
    ) -> None:
        response = post(client, body, signed(body))
        assert response.status_code == 400
        assert response.get_json()["code"] == "malformed-json"
        assert events_in(db_session) == []

    def test_oversized_body_is_413(self, client: FlaskClient, db_session: Session) -> None:
        counted = ("meetinghooks_ingest_rejected_total", {"reason": "body-too-large"})
        before = REGISTRY.get_sample_value(*counted) or 0.0
        body = json.dumps({"type": "meeting.end", "pad": "x" * 70_000})
        response = post(client, body, signed(body))
        assert response.status_code == 413
        assert response.get_json()["code"] == "body-too-large"
        assert events_in(db_session) == []
        assert (REGISTRY.get_sample_value(*counted) or 0.0) - before == 1

    def test_oversized_chunked_body_is_413_not_a_cut_body(
        self, client: FlaskClient, meeting: dict[str, Any], db_session: Session
    ) -> None:
        def chunked(body: str) -> Any:
            # No Content-Length; the server ends the stream, as gunicorn does for chunked bodies.
            return client.post(
                "/v1/events",
                input_stream=io.BytesIO(body.encode()),
                headers={**signed(body), "Transfer-Encoding": "chunked"},
                environ_overrides={"wsgi.input_terminated": True},
            )

        big = json.dumps({"type": "meeting.end", "pad": "x" * 70_000})
        response = chunked(big)
        assert response.status_code == 413
        assert response.get_json()["code"] == "body-too-large"
        assert events_in(db_session) == []
        assert chunked(event_body(meeting["meetingId"])).status_code == 202

    def test_unsigned_oversized_body_is_refused_without_being_read(
        self, client: FlaskClient, db_session: Session
    ) -> None:
        body = json.dumps({"pad": "x" * 70_000})
        response = post(client, body, {"content-type": "application/json"})
        assert response.status_code == 401
        assert events_in(db_session) == []


class TestEdges:
    def test_validation_errors_use_the_invalid_payload_code(
        self, client: FlaskClient, db_session: Session
    ) -> None:
        body = json.dumps({"type": "meeting.paused", "timestamp": "2026-11-24T10:00:00"})
        response = post(client, body, signed(body))
        assert response.status_code == 400
        answer = response.get_json()
        assert answer["code"] == "invalid-payload"
        assert {e["field"] for e in answer["errors"]} == {"type", "timestamp", "data"}
        assert events_in(db_session) == []

    @pytest.mark.parametrize("meeting_id", [2**31, 2**63, 10**30])
    def test_meeting_id_beyond_any_row_is_an_unknown_meeting_not_a_500(
        self, client: FlaskClient, db_session: Session, meeting_id: int
    ) -> None:
        body = event_body(meeting_id)
        response = post(client, body, signed(body))
        assert response.status_code == 202
        assert [e.meeting_id for e in events_in(db_session)] == [None]

    @pytest.mark.parametrize(
        "timestamp", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"]
    )
    def test_timestamp_out_of_range_is_400_not_500(
        self, client: FlaskClient, db_session: Session, timestamp: str
    ) -> None:
        body = json.dumps({"type": "meeting.end", "timestamp": timestamp, "data": {"meetingId": 1}})
        response = post(client, body, signed(body))
        assert response.status_code == 400
        assert {e["field"] for e in response.get_json()["errors"]} == {"timestamp"}
        assert events_in(db_session) == []

    def test_overlong_webhook_id_is_400_not_500(
        self, client: FlaskClient, db_session: Session
    ) -> None:
        body = event_body(1)
        response = post(client, body, signed(body, msg_id="msg_" + "x" * 300))
        assert response.status_code == 400
        assert response.get_json()["errors"][0]["field"] == "webhook-id"
        assert events_in(db_session) == []

    def test_database_error_is_503_with_retry_after(
        self,
        client: FlaskClient,
        db_session: Session,
        enqueued: Enqueued,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        def unavailable(*_args: object, **_kwargs: object) -> None:
            raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection"))

        monkeypatch.setattr(events_service, "ingest_platform_event", unavailable)
        body = event_body(1)
        response = post(client, body, signed(body))
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        answer = response.get_json()
        assert answer["code"] == "database-unavailable"
        assert "server closed" not in answer["Message"]
        assert enqueued.calls == []
        assert events_in(db_session) == []

    def test_conference_id_prefers_the_live_meeting_then_the_latest(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        def start() -> int:
            answer = client.post(
                "/v1/meetings/start", json={"startWithPersonalUrl": False}, headers=account.headers
            ).get_json()
            return int(answer["meetingId"])

        def ingest_end() -> int | None:
            body = event_body(type_="meeting.end", conferenceId="123456789")
            assert post(client, body, signed(body)).status_code == 202
            return events_in(db_session)[-1].meeting_id

        def set_meeting(meeting_id: int, status: str) -> None:
            db_session.execute(
                sa.update(Meeting)
                .where(Meeting.id == meeting_id)
                .values(conference_id="123456789", status=status)
            )
            db_session.commit()

        live, older_ended, newer_ended = start(), start(), start()
        set_meeting(older_ended, "ended")
        set_meeting(newer_ended, "ended")
        assert ingest_end() == newer_ended  # none is live: the latest that held it
        set_meeting(live, "started")
        assert ingest_end() == live  # the live meeting wins over a later, ended one

    def test_deleted_meeting_is_an_unknown_meeting(
        self, client: FlaskClient, account: Account, meeting: dict[str, Any], db_session: Session
    ) -> None:
        deleted = client.delete(f"/v1/meetings/{meeting['meetingId']}", headers=account.headers)
        assert deleted.status_code == 204
        for data in (
            {"meetingId": meeting["meetingId"]},
            {"conferenceId": meeting["audioConference"]["conferenceId"]},
        ):
            body = json.dumps({"type": "meeting.end", "timestamp": iso(NOW), "data": data})
            assert post(client, body, signed(body)).status_code == 202
        assert [(e.meeting_id, e.user_id) for e in events_in(db_session)] == [(None, None)] * 2

    def test_event_belongs_to_the_meetings_owner(
        self, client: FlaskClient, account: Account, meeting: dict[str, Any], db_session: Session
    ) -> None:
        body = event_body(meeting["meetingId"])
        assert post(client, body, signed(body)).status_code == 202
        assert [e.user_id for e in events_in(db_session)] == [account.id]

    def test_pool_exhausted_is_503_too(
        self,
        client: FlaskClient,
        db_session: Session,
        enqueued: Enqueued,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        def exhausted(*_args: object, **_kwargs: object) -> None:
            raise sa.exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached")

        monkeypatch.setattr(events_service, "ingest_platform_event", exhausted)
        body = event_body(1)
        response = post(client, body, signed(body))
        assert response.status_code == 503
        assert response.get_json()["code"] == "database-unavailable"
        assert "QueuePool" not in response.get_data(as_text=True)
        assert enqueued.calls == []

    def test_duplicate_sent_while_the_database_was_down_is_accepted_once_it_is_back(
        self,
        client: FlaskClient,
        meeting: dict[str, Any],
        db_session: Session,
        enqueued: Enqueued,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        body = event_body(meeting["meetingId"])
        headers = signed(body)
        with monkeypatch.context() as patch:

            def unavailable(*_args: object, **_kwargs: object) -> None:
                raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

            patch.setattr(events_service, "ingest_platform_event", unavailable)
            assert post(client, body, headers).status_code == 503
        assert post(client, body, headers).status_code == 202  # the platform's retry
        assert post(client, body, headers).status_code == 200
        assert len(events_in(db_session)) == 1
        assert enqueued.names() == ["workers.events.process_event"]

    def test_unknown_conference_id_is_recorded(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        body = event_body(type_="meeting.end", conferenceId="000000001")
        assert post(client, body, signed(body)).status_code == 202
        assert [e.meeting_id for e in events_in(db_session)] == [None]

    def test_counters_count_accepted_duplicate_and_rejected(
        self, client: FlaskClient, meeting: dict[str, Any]
    ) -> None:
        def sample(name: str, **labels: str) -> float:
            return REGISTRY.get_sample_value(name, labels) or 0.0

        def samples() -> list[float]:
            ingested = "meetinghooks_ingest_events_total"
            return [
                sample(ingested, result="accepted", type="meeting.start"),
                sample(ingested, result="duplicate", type="meeting.start"),
                *(
                    sample("meetinghooks_ingest_rejected_total", reason=reason)
                    for reason in (
                        "bad-signature", "stale-timestamp", "future-timestamp", "missing-header",
                        "invalid-payload", "malformed-json",
                    )
                ),
            ]  # fmt: skip

        before = samples()
        body = event_body(meeting["meetingId"])
        headers = signed(body)
        post(client, body, headers)
        post(client, body, headers)
        post(client, body, {**headers, "webhook-signature": "v1,AAAA"})
        post(client, body, signed(body, at=minutes_from_now(-6)))
        post(client, body, signed(body, at=minutes_from_now(6)))
        post(client, body, {k: v for k, v in headers.items() if k != "webhook-id"})
        bad = json.dumps({"type": "meeting.paused"})
        post(client, bad, signed(bad))
        post(client, "{", signed("{"))
        after = samples()
        assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1, 1, 1, 1, 1, 1]


def other_secret_signature(body: str, msg_id: str) -> str:
    return signed(body, secret="whsec_" + "A" * 40, msg_id=msg_id)["webhook-signature"]


class TestSignatureLists:
    """Standard Webhooks allows several signatures; one that verifies is enough."""

    @pytest.mark.parametrize(
        "arrange",
        [
            lambda good, wrong: f"{wrong} {good}",
            lambda good, wrong: f"{good} {wrong}",
            lambda good, wrong: f"v1,a,b {good}",  # a malformed entry before the good one
            lambda good, wrong: f"v1,@@@ {good}",  # bad base64 before the good one
            lambda good, wrong: f"v1a,AAAA {good}",  # another version is skipped
            lambda good, wrong: f"{wrong}  {good}",  # two spaces
            lambda good, wrong: f"{wrong}\t{good}",
            lambda good, wrong: f"v1 {good} ",
        ],
        ids=["wrong-good", "good-wrong", "malformed", "bad-base64", "v1a", "two-spaces", "tab",
             "no-comma"],
    )  # fmt: skip
    def test_a_valid_signature_anywhere_in_the_list_is_accepted(
        self, client: FlaskClient, meeting: dict[str, Any], db_session: Session, arrange: Any
    ) -> None:
        body = event_body(meeting["meetingId"])
        headers = signed(body)
        good = headers["webhook-signature"]
        wrong = other_secret_signature(body, headers["webhook-id"])
        response = post(client, body, {**headers, "webhook-signature": arrange(good, wrong)})
        assert response.status_code == 202
        assert len(events_in(db_session)) == 1

    def test_signatures_in_repeated_headers_are_heard(
        self, client: FlaskClient, meeting: dict[str, Any]
    ) -> None:
        body = event_body(meeting["meetingId"])
        headers = signed(body)
        wrong = other_secret_signature(body, headers["webhook-id"])
        listed = [(k, v) for k, v in headers.items() if k != "webhook-signature"]
        listed += [
            ("webhook-signature", wrong),
            ("webhook-signature", headers["webhook-signature"]),
        ]
        assert client.post("/v1/events", data=body, headers=listed).status_code == 202

    @pytest.mark.parametrize(
        "mangle",
        [
            lambda good: good.removeprefix("v1,"),  # no version
            lambda good: "v2," + good.removeprefix("v1,"),
            lambda good: "v1," + good.removeprefix("v1,")[:-4],  # truncated
            lambda good: "",
        ],
        ids=["no-version", "v2", "truncated", "empty"],
    )
    def test_no_valid_v1_signature_is_401(
        self, client: FlaskClient, meeting: dict[str, Any], db_session: Session, mangle: Any
    ) -> None:
        body = event_body(meeting["meetingId"])
        headers = signed(body)
        response = post(
            client, body, {**headers, "webhook-signature": mangle(headers["webhook-signature"])}
        )
        assert response.status_code == 401
        assert response.get_json()["code"] == "invalid-signature"
        assert events_in(db_session) == []

    @pytest.mark.parametrize(
        ("timestamp", "says"),
        [("1.5e9", "unix seconds"), ("-60", "unix seconds"), ("99999999999999999999", "too new"),
         ("0", "too old")],
    )  # fmt: skip
    def test_timestamp_header_must_be_recent_whole_seconds(
        self, client: FlaskClient, db_session: Session, timestamp: str, says: str
    ) -> None:
        body = event_body(1)
        # Signed over the header exactly as sent, so only the timestamp rule can refuse it.
        response = post(client, body, signed_raw(body.encode(), timestamp))
        assert response.status_code == 401
        assert says in response.get_json()["Message"]
        assert events_in(db_session) == []

    @pytest.mark.parametrize(
        "body",
        [
            b'{"type": "meeting.end", "x": "\xff"}',
            # A whole valid event, only in the wrong encoding.
            json.dumps(
                {
                    "type": "meeting.end",
                    "timestamp": iso(NOW),
                    "data": {"meetingId": 1, "name": "J\u00fcrgen"},
                },
                ensure_ascii=False,
            ).encode("latin-1"),
            event_body(1).encode("utf-16"),
            event_body(1).encode("utf-32"),
            b"\xef\xbb\xbf" + event_body(1).encode(),
        ],
        ids=["invalid-byte", "latin-1", "utf-16", "utf-32", "utf-8-bom"],
    )
    def test_signed_body_that_is_not_utf8_is_400_not_401(
        self, client: FlaskClient, enqueued: Enqueued, db_session: Session, body: bytes
    ) -> None:
        # The signature covers the raw bytes, so it verifies; then the bytes are not UTF-8.
        now = str(int(dt.datetime.now(dt.UTC).timestamp()))
        response = post(client, body, signed_raw(body, now))
        assert response.status_code == 400
        assert response.get_json()["code"] == "malformed-json"
        assert events_in(db_session) == []
        assert enqueued.calls == []

    def test_unpadded_secret_is_usable(
        self, settings: Settings, session_factory: Any, enqueued: Enqueued, db_session: Session
    ) -> None:
        # A 32-byte key is 44 base64 characters with one "="; many tools drop the padding.
        secret = "whsec_" + base64.b64encode(b"k" * 32).decode().rstrip("=")
        configured = Settings.from_env(
            {"DATABASE_URL": settings.database_url, "BROKER_URL": "memory://",
             "INGEST_SIGNING_SECRET": secret}
        )  # fmt: skip
        app: Flask = create_app(configured, session_factory=session_factory, enqueue=enqueued)
        body = event_body(1)
        response = app.test_client().post(
            "/v1/events", data=body, headers=signed(body, secret=secret)
        )
        assert response.status_code == 202
        assert len(events_in(db_session)) == 1


class TestContentType:
    @pytest.mark.parametrize(
        "content_type",
        ["application/json; charset=utf-8", "application/json;charset=UTF-8", "Application/JSON",
         "application/webhook+json", None],
    )  # fmt: skip
    def test_json_or_no_content_type_is_read(
        self,
        client: FlaskClient,
        meeting: dict[str, Any],
        db_session: Session,
        content_type: str | None,
    ) -> None:
        body = event_body(meeting["meetingId"])
        headers = signed(body)
        del headers["content-type"]
        if content_type is not None:
            headers["content-type"] = content_type
        response = post(client, body, headers)
        assert response.status_code == 202
        assert response.is_json
        assert len(events_in(db_session)) == 1

    @pytest.mark.parametrize(
        "body",
        ["", "not json", "[1]", '{"type": NaN}', '{"data": ' * 5000 + "1" + "}" * 5000],
        ids=["empty", "not-json", "array", "nan", "deep"],
    )
    def test_no_content_type_still_needs_a_json_object(
        self, client: FlaskClient, db_session: Session, body: str
    ) -> None:
        headers = signed(body)
        del headers["content-type"]
        response = post(client, body, headers)
        assert response.status_code == 400
        assert response.get_json()["code"] in {"malformed-json", "body-required"}
        assert events_in(db_session) == []

    @pytest.mark.parametrize(
        "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
    )
    def test_another_declared_type_is_415_once_signed(
        self, client: FlaskClient, meeting: dict[str, Any], db_session: Session, content_type: str
    ) -> None:
        body = event_body(meeting["meetingId"])
        response = post(client, body, {**signed(body), "content-type": content_type})
        assert response.status_code == 415
        assert response.get_json()["code"] == "unsupported-media-type"
        unsigned = post(client, body, {"content-type": content_type})
        assert unsigned.status_code == 401  # the signature is checked first
        assert events_in(db_session) == []


class TestConferenceId:
    def test_a_number_stands_for_the_nine_digit_string(
        self, client: FlaskClient, account: Account, meeting: dict[str, Any], db_session: Session
    ) -> None:
        db_session.execute(
            sa.update(Meeting)
            .where(Meeting.id == meeting["meetingId"])
            .values(conference_id="012345678")
        )
        db_session.commit()
        body = json.dumps(
            {"type": "meeting.start", "timestamp": iso(NOW), "data": {"conferenceId": 12345678}}
        )
        assert post(client, body, signed(body)).status_code == 202
        stored = events_in(db_session)
        assert [e.meeting_id for e in stored] == [meeting["meetingId"]]
        assert stored[0].payload["data"] == {"conferenceId": "012345678"}

    @pytest.mark.parametrize(
        "value", [True, -1, 10**9, 1.5, "12345678", "1234567890", "12345678a", "١٢٣٤٥٦٧٨٩", [1], {}]
    )
    def test_anything_else_is_400(
        self, client: FlaskClient, db_session: Session, value: Any
    ) -> None:
        body = json.dumps(
            {"type": "meeting.start", "timestamp": iso(NOW), "data": {"conferenceId": value}}
        )
        response = post(client, body, signed(body))
        assert response.status_code == 400
        assert [e["field"] for e in response.get_json()["errors"]] == ["data.conferenceId"]
        assert events_in(db_session) == []

    def test_every_bad_field_is_listed_at_once(
        self, client: FlaskClient, db_session: Session
    ) -> None:
        body = json.dumps(
            {"type": "meeting.pause", "timestamp": "2026-11-24T10:00:00",
             "data": {"meetingId": "1", "conferenceId": "x"}}
        )  # fmt: skip
        response = post(client, body, signed(body, msg_id="m" * 300))
        assert response.status_code == 400
        assert {e["field"] for e in response.get_json()["errors"]} == {
            "type", "timestamp", "data.meetingId", "data.conferenceId", "webhook-id",
        }  # fmt: skip
        assert events_in(db_session) == []


def test_unknown_meetings_are_counted_once(client: FlaskClient, db_session: Session) -> None:
    def counted() -> float:
        sample = REGISTRY.get_sample_value(
            "meetinghooks_ingest_unknown_meeting_total", {"type": "meeting.end"}
        )
        return sample or 0.0

    before = counted()
    body = event_body(987654, type_="meeting.end")
    headers = signed(body)
    assert post(client, body, headers).status_code == 202
    assert post(client, body, headers).status_code == 200  # the repeat is not counted again
    other = event_body(type_="meeting.end", conferenceId="000000002")
    assert post(client, other, signed(other)).status_code == 202
    assert counted() - before == 2
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "meetinghooks_ingest_unknown_meeting_total" in metrics


def test_events_are_applied_by_their_own_time_not_arrival(
    client: FlaskClient,
    account: Account,
    meeting: dict[str, Any],
    session_factory: Any,
    db_session: Session,
) -> None:
    started = dt.datetime(2026, 11, 24, 10, 0, 3, tzinfo=dt.UTC)
    reports = [  # as they arrive: the end first, then a duplicate end, then the start
        ("meeting.end", started + dt.timedelta(seconds=125)),
        ("meeting.end", started + dt.timedelta(seconds=600)),
        ("meeting.start", started),
    ]
    for type_, when in reports:
        body = json.dumps(
            {"type": type_, "timestamp": iso(when), "data": {"meetingId": meeting["meetingId"]}}
        )
        assert post(client, body, signed(body)).status_code == 202
    for stored in events_in(db_session):
        with session_factory.begin() as session:
            events_service.apply_event(session, stored.id)
    answer = client.get(f"/v1/meetings/{meeting['meetingId']}", headers=account.headers).get_json()
    shown = (answer["status"], answer["startedAt"], answer["endedAt"], answer["durationSeconds"])
    assert shown == ("ended", "2026-11-24T10:00:03Z", "2026-11-24T10:02:08Z", 125)
    db_session.rollback()  # end the read snapshot: the workers' writes come after it
    assert [e.outcome for e in events_in(db_session)] == ["applied", "duplicate", "applied"]
