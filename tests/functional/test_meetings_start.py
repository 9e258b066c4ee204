from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from core.models import Meeting, PresenterLink, Webhook
from tests.conftest import Account

PUBLIC_HOOK = "https://93.184.216.34/hook"


def start(client: FlaskClient, account: Account, body: Any, **kwargs: Any) -> Any:
    return client.post("/v1/meetings/start", json=body, headers=account.headers, **kwargs)


def count(db_session: Session, model: type[Any]) -> int:
    return db_session.scalar(sa.select(sa.func.count()).select_from(model)) or 0


class TestAdHocStart:
    def test_returns_join_me_shape(self, client: FlaskClient, account: Account) -> None:
        response = start(client, account, {"startWithPersonalUrl": False})
        assert response.status_code == 201
        body = response.get_json()
        assert set(body) == {"meetingId", "presenterLink", "viewerLink", "audioConference"}
        assert isinstance(body["meetingId"], int)
        assert re.fullmatch(
            r"https://meet\.example\.test/presenter/[\w-]{43}", body["presenterLink"]
        )
        assert re.fullmatch(r"https://meet\.example\.test/\d{9}", body["viewerLink"])
        audio = body["audioConference"]
        assert re.fullmatch(r"\d{9}", audio["conferenceId"])
        assert re.fullmatch(r"\d{4}", audio["organizerCode"])
        assert audio["conferenceCallNumbersUrl"] == (
            f"https://meet.example.test/audio/numbers?conferenceId={audio['conferenceId']}"
        )

    def test_personal_url_viewer_link(self, client: FlaskClient, account: Account) -> None:
        body = start(client, account, {"startWithPersonalUrl": True}).get_json()
        assert body["viewerLink"] == "https://meet.example.test/alice"

    def test_personal_url_required_when_asked(
        self, client: FlaskClient, make_account: Any, db_session: Session
    ) -> None:
        nobody = make_account(email="bob@example.com")
        response = start(client, nobody, {"startWithPersonalUrl": True})
        assert response.status_code == 400
        assert response.get_json()["code"] == "no-personal-url"
        assert count(db_session, Meeting) == 0

    @pytest.mark.parametrize(
        ("extra", "query"),
        [
            ({"viewerMode": "headless"}, "?viewerMode=headless"),
            ({"viewerAppDetection": False}, "?viewerAppDetection=false"),
            ({"viewerAppDetection": "false", "viewerMode": "headless"},
             "?viewerMode=headless&viewerAppDetection=false"),
            ({"viewerMode": "default", "viewerAppDetection": True}, ""),
            ({"viewerMode": None}, ""),
        ],
    )  # fmt: skip
    def test_viewer_options_appear_only_when_not_default(
        self, client: FlaskClient, account: Account, extra: dict[str, Any], query: str
    ) -> None:
        body = start(client, account, {"startWithPersonalUrl": True, **extra}).get_json()
        assert body["viewerLink"] == "https://meet.example.test/alice" + query

    def test_string_booleans_are_accepted(self, client: FlaskClient, account: Account) -> None:
        response = start(client, account, {"startWithPersonalUrl": "true"})
        assert response.status_code == 201
        assert response.get_json()["viewerLink"].endswith("/alice")

    def test_form_encoded_body_is_accepted(self, client: FlaskClient, account: Account) -> None:
        response = client.post(
            "/v1/meetings/start",
            data={"startWithPersonalUrl": "false", "viewerMode": "headless"},
            headers=account.headers,
        )
        assert response.status_code == 201
        assert response.get_json()["viewerLink"].endswith("?viewerMode=headless")

    @pytest.mark.parametrize(
        ("body", "fields"),
        [
            ({}, {"startWithPersonalUrl"}),
            ({"startWithPersonalUrl": "yes"}, {"startWithPersonalUrl"}),
            ({"startWithPersonalUrl": 1}, {"startWithPersonalUrl"}),
            ({"startWithPersonalUrl": None}, {"startWithPersonalUrl"}),
            ({"startWithPersonalUrl": True, "viewerMode": "fullscreen"}, {"viewerMode"}),
            ({"startWithPersonalUrl": True, "viewerAppDetection": "no"}, {"viewerAppDetection"}),
            ({"startWithPersonalUrl": True, "webhooks": ["https://x.test"]}, {"webhooks"}),
            ({"startWithPersonalUrl": True, "webhooks": "https://x.test"}, {"webhooks"}),
            ({"startWithPersonalUrl": True, "webhooks": None}, {"webhooks"}),
            ({"startWithPersonalUrl": True, "webhooks": 7}, {"webhooks"}),
            ({"startWithPersonalUrl": "True"}, {"startWithPersonalUrl"}),
            ({"startWithPersonalUrl": ""}, {"startWithPersonalUrl"}),
            ({"startWithPersonalUrl": True, "viewerMode": ""}, {"viewerMode"}),
            ({"startWithPersonalUrl": True, "viewerMode": "HEADLESS"}, {"viewerMode"}),
            ({"startWithPersonalUrl": True, "viewerAppDetection": None}, {"viewerAppDetection"}),
            ({"startWithPersonalUrl": True, "viewerAppDetection": 0}, {"viewerAppDetection"}),
            ({"startWithPersonalUrl": "maybe", "viewerMode": 3, "viewerAppDetection": []},
             {"startWithPersonalUrl", "viewerMode", "viewerAppDetection"}),
        ],
    )  # fmt: skip
    def test_bad_input_is_400_listing_every_field_and_stores_nothing(
        self,
        client: FlaskClient,
        account: Account,
        db_session: Session,
        body: dict[str, Any],
        fields: set[str],
    ) -> None:
        response = start(client, account, body)
        assert response.status_code == 400
        error = response.get_json()
        assert error["code"] == "invalid-request"
        assert error["Message"]
        assert {e["field"] for e in error["errors"]} == fields
        assert count(db_session, Meeting) == 0

    def test_form_encoded_webhooks_is_400_and_stores_nothing(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        response = client.post(
            "/v1/meetings/start",
            data={"startWithPersonalUrl": "true", "webhooks": '{"meeting.start": {}}'},
            headers=account.headers,
        )
        assert response.status_code == 400
        assert [e["field"] for e in response.get_json()["errors"]] == ["webhooks"]
        assert count(db_session, Meeting) == 0
        assert count(db_session, Webhook) == 0

    def test_form_encoded_string_booleans_are_accepted(
        self, client: FlaskClient, account: Account
    ) -> None:
        response = client.post(
            "/v1/meetings/start",
            data={"startWithPersonalUrl": "true", "viewerAppDetection": "false"},
            headers=account.headers,
        )
        assert response.status_code == 201
        assert response.get_json()["viewerLink"] == (
            "https://meet.example.test/alice?viewerAppDetection=false"
        )

    def test_unknown_fields_are_ignored(self, client: FlaskClient, account: Account) -> None:
        response = start(client, account, {"startWithPersonalUrl": False, "colour": "blue"})
        assert response.status_code == 201

    def test_malformed_json_is_400(self, client: FlaskClient, account: Account) -> None:
        response = client.post(
            "/v1/meetings/start",
            data=b'{"startWithPersonalUrl": tru',
            content_type="application/json",
            headers=account.headers,
        )
        assert response.status_code == 400
        assert response.get_json()["code"] == "malformed-json"

    @pytest.mark.parametrize(
        "raw",
        [
            b'{"startWithPersonalUrl": false, "x": NaN}',
            b'{"startWithPersonalUrl": false, "webhooks": {"meeting.start": '
            b'{"callbackUrl": "https://93.184.216.34/", "customCallbackData": Infinity}}}',
            b'{"startWithPersonalUrl": false, "x": ' + b"[" * 30000 + b"]" * 30000 + b"}",
            b'{"startWithPersonalUrl": false, "webhooks": {"meeting.start": '
            b'{"callbackUrl": "https://93.184.216.34/", "customCallbackData": '
            + b"[" * 65
            + b"]" * 65
            + b"}}}",
        ],
        ids=["nan", "infinity", "deep-brackets", "deep-custom-data"],
    )
    def test_json_that_is_not_plain_json_is_400(
        self, client: FlaskClient, account: Account, db_session: Session, raw: bytes
    ) -> None:
        response = client.post(
            "/v1/meetings/start", data=raw, content_type="application/json", headers=account.headers
        )
        assert response.status_code == 400
        assert response.get_json()["code"] == "malformed-json"
        assert count(db_session, Meeting) == 0

    def test_json_array_body_is_400(self, client: FlaskClient, account: Account) -> None:
        response = start(client, account, [{"startWithPersonalUrl": True}])
        assert response.status_code == 400

    def test_wrong_content_type_is_415(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        response = client.post(
            "/v1/meetings/start",
            data=b"startWithPersonalUrl=true",
            content_type="text/plain",
            headers=account.headers,
        )
        assert response.status_code == 415
        assert response.get_json()["code"] == "unsupported-media-type"
        assert count(db_session, Meeting) == 0

    def test_too_large_body_is_413(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        body = {"startWithPersonalUrl": True, "padding": "x" * 70_000}
        response = start(client, account, body)
        assert response.status_code == 413
        assert response.get_json()["code"] == "body-too-large"
        assert count(db_session, Meeting) == 0

    def test_too_large_chunked_body_is_413_not_a_cut_body(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        body = json.dumps({"startWithPersonalUrl": True, "padding": "x" * 70_000})
        # No Content-Length; the server ends the stream, as gunicorn does for chunked bodies.
        response = client.post(
            "/v1/meetings/start",
            input_stream=io.BytesIO(body.encode()),
            headers={
                **account.headers,
                "Content-Type": "application/json",
                "Transfer-Encoding": "chunked",
            },
            environ_overrides={"wsgi.input_terminated": True},
        )
        assert response.status_code == 413
        assert response.get_json()["code"] == "body-too-large"
        assert count(db_session, Meeting) == 0

    def test_conference_ids_differ_and_presenter_token_is_stored_hashed(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        bodies = [
            start(client, account, {"startWithPersonalUrl": False}).get_json() for _ in range(5)
        ]
        assert len({b["audioConference"]["conferenceId"] for b in bodies}) == 5
        assert len({b["viewerLink"] for b in bodies}) == 5
        token = bodies[0]["presenterLink"].rsplit("/", 1)[1]
        hashes = db_session.scalars(sa.select(PresenterLink.token_hash)).all()
        assert token not in hashes
        assert len(hashes) == 5

    def test_new_meeting_reads_as_scheduled(self, client: FlaskClient, account: Account) -> None:
        meeting_id = start(client, account, {"startWithPersonalUrl": False}).get_json()["meetingId"]
        body = client.get(f"/v1/meetings/{meeting_id}", headers=account.headers).get_json()
        assert body["status"] == "scheduled"
        assert body["startedAt"] is None
        assert body["durationSeconds"] is None


class TestWebhooks:
    def test_status_absent_when_webhooks_not_sent(
        self, client: FlaskClient, account: Account
    ) -> None:
        body = start(client, account, {"startWithPersonalUrl": False}).get_json()
        assert "webhooksStatus" not in body

    def test_empty_webhooks_object_gives_an_empty_status(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        response = start(client, account, {"startWithPersonalUrl": False, "webhooks": {}})
        assert response.status_code == 201
        assert response.get_json()["webhooksStatus"] == {}
        assert count(db_session, Webhook) == 0

    def test_registers_each_event_type(
        self, client: FlaskClient, account: Account, db_session: Session
    ) -> None:
        body = start(
            client,
            account,
            {
                "startWithPersonalUrl": False,
                "webhooks": {
                    "meeting.start": {
                        "callbackUrl": PUBLIC_HOOK,
                        "customCallbackData": {"foo": 123},
                    },
                    "meeting.end": {
                        "callbackUrl": PUBLIC_HOOK + "/end",
                        "customCallbackData": [1, "a"],
                    },
                },
            },
        ).get_json()
        status = body["webhooksStatus"]
        assert status["meeting.start"]["registered"] is True
        assert status["meeting.start"]["webhookId"].startswith("wh_")
        assert status["meeting.end"]["registered"] is True
        hooks = {h.event_type: h for h in db_session.scalars(sa.select(Webhook))}
        assert hooks["meeting.start"].custom_callback_data == {"foo": 123}
        assert hooks["meeting.end"].custom_callback_data == [1, "a"]
        assert hooks["meeting.end"].callback_url == PUBLIC_HOOK + "/end"

    @pytest.mark.parametrize(
        ("entry", "code"),
        [
            ({"callbackUrl": "http://10.0.0.5/hook"}, "callback-url-forbidden"),
            ({"callbackUrl": "http://127.0.0.1:8080/hook"}, "callback-url-forbidden"),
            ({"callbackUrl": "http://169.254.169.254/latest/meta-data"}, "callback-url-forbidden"),
            ({"callbackUrl": "http://[::1]/hook"}, "callback-url-forbidden"),
            ({"callbackUrl": "ftp://93.184.216.34/hook"}, "callback-url-scheme"),
            ({"callbackUrl": "not a url"}, None),
            ({}, "callback-url-missing"),
            ({"callbackUrl": 42}, "callback-url-missing"),
            ("https://93.184.216.34/hook", "invalid-webhook"),
            ({"callbackUrl": PUBLIC_HOOK, "customCallbackData": "x" * 5000},
             "custom-data-too-large"),
        ],
    )  # fmt: skip
    def test_bad_entry_is_refused_but_the_meeting_starts(
        self,
        client: FlaskClient,
        account: Account,
        db_session: Session,
        entry: Any,
        code: str | None,
    ) -> None:
        response = start(
            client,
            account,
            {
                "startWithPersonalUrl": False,
                "webhooks": {"meeting.start": entry, "meeting.end": {"callbackUrl": PUBLIC_HOOK}},
            },
        )
        assert response.status_code == 201
        status = response.get_json()["webhooksStatus"]
        refused = status["meeting.start"]
        assert refused["registered"] is False
        assert refused["message"]
        if code:
            assert refused["code"] == code
        assert status["meeting.end"]["registered"] is True
        assert [h.event_type for h in db_session.scalars(sa.select(Webhook))] == ["meeting.end"]

    @pytest.mark.parametrize(("length", "registered"), [(2046, True), (2048, False)])
    def test_custom_data_limit_counts_utf8_bytes(
        self, client: FlaskClient, account: Account, length: int, registered: bool
    ) -> None:
        # '"' + 2046 two-byte characters + '"' is 4094 bytes; 2048 of them is 4098.
        hook = {"callbackUrl": PUBLIC_HOOK, "customCallbackData": "\u00fc" * length}
        status = start(
            client, account, {"startWithPersonalUrl": False, "webhooks": {"meeting.start": hook}}
        ).get_json()["webhooksStatus"]["meeting.start"]
        assert status["registered"] is registered

    def test_unknown_event_key(self, client: FlaskClient, account: Account) -> None:
        status = start(
            client,
            account,
            {
                "startWithPersonalUrl": False,
                "webhooks": {"meeting.paused": {"callbackUrl": PUBLIC_HOOK}},
            },
        ).get_json()["webhooksStatus"]
        assert status == {
            "meeting.paused": {
                "registered": False,
                "code": "unknown-event-type",
                "message": status["meeting.paused"]["message"],
            }
        }

    def test_hostname_resolving_to_private_address_is_refused(
        self, client: FlaskClient, account: Account, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import ipaddress  # noqa: PLC0415

        from core import ssrf  # noqa: PLC0415

        monkeypatch.setattr(
            ssrf, "resolve", lambda host, port: [ipaddress.ip_address("192.168.1.10")]
        )
        status = start(
            client,
            account,
            {"startWithPersonalUrl": False,
             "webhooks": {"meeting.end": {"callbackUrl": "https://hooks.internal.test/x"}}},
        ).get_json()["webhooksStatus"]  # fmt: skip
        assert status["meeting.end"]["registered"] is False
        assert status["meeting.end"]["code"] == "callback-url-forbidden"
