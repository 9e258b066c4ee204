from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
import requests

from core.security import new_signing_secret
from core.signing import headers as signed_headers
from meetinghooks.simulate.receiver import CallbackReceiver

SECRET = new_signing_secret()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver(SECRET, path="/hooks/run1").start()
    yield server
    server.stop()


def callback(meeting_id: int = 7, type_: str = "meeting.start", sequence: int = 1) -> str:
    return json.dumps(
        {
            "id": "evt_1",
            "type": type_,
            "meetingId": meeting_id,
            "data": {
                "meetingId": meeting_id,
                "startedAt": "2026-12-05T03:00:00Z",
                "sequence": sequence,
            },
        }
    )


def post(
    receiver: CallbackReceiver, body: str, headers: dict[str, str], path: str = "/hooks/run1"
) -> int:
    url = f"http://127.0.0.1:{receiver.port}{path}"
    return requests.post(url, data=body.encode(), headers=headers, timeout=10).status_code


class TestCallbackReceiver:
    def test_a_signed_callback_is_recorded(self, receiver: CallbackReceiver) -> None:
        body = callback(meeting_id=7, sequence=3)
        assert (
            post(receiver, body, signed_headers([SECRET], "msg_a", dt.datetime.now(dt.UTC), body))
            == 204
        )
        (arrival,) = receiver.tally.snapshot()
        assert (arrival.meeting_id, arrival.type, arrival.sequence) == (7, "meeting.start", 3)
        assert arrival.webhook_id == "msg_a"
        assert arrival.data["startedAt"] == "2026-12-05T03:00:00Z"

    def test_another_secret_is_refused_and_not_counted_as_received(
        self, receiver: CallbackReceiver
    ) -> None:
        body = callback()
        now = dt.datetime.now(dt.UTC)
        assert (
            post(receiver, body, signed_headers([new_signing_secret()], "msg_b", now, body)) == 401
        )
        tampered = signed_headers([SECRET], "msg_c", now, body)
        assert post(receiver, body.replace("7", "8"), tampered) == 401
        assert receiver.tally.snapshot() == []
        assert receiver.tally.rejected == {"bad-signature": 2}

    def test_a_rotation_overlap_signature_list_verifies(self, receiver: CallbackReceiver) -> None:
        body = callback()
        both = signed_headers(
            [new_signing_secret(), SECRET], "msg_d", dt.datetime.now(dt.UTC), body
        )
        assert post(receiver, body, both) == 204

    def test_the_same_webhook_id_again_counts_as_redelivered(
        self, receiver: CallbackReceiver
    ) -> None:
        body = callback()
        for _ in range(2):
            assert (
                post(
                    receiver, body, signed_headers([SECRET], "msg_e", dt.datetime.now(dt.UTC), body)
                )
                == 204
            )
        assert len(receiver.tally.snapshot()) == 2
        assert receiver.tally.redelivered == 1

    def test_another_path_is_not_ours(self, receiver: CallbackReceiver) -> None:
        body = callback()
        headers = signed_headers([SECRET], "msg_f", dt.datetime.now(dt.UTC), body)
        assert post(receiver, body, headers, path="/hooks/other") == 404
        assert receiver.tally.rejected == {"unknown-path": 1}

    def test_a_signed_body_of_another_shape_is_refused(self, receiver: CallbackReceiver) -> None:
        body = json.dumps({"type": "meeting.start"})
        headers = signed_headers([SECRET], "msg_g", dt.datetime.now(dt.UTC), body)
        assert post(receiver, body, headers) == 400
        assert receiver.tally.rejected == {"unexpected-shape": 1}


def test_it_listens_on_ipv6_loopback_too() -> None:
    server = CallbackReceiver(SECRET, path="/h", host="::1").start()
    try:
        body = callback()
        headers = signed_headers([SECRET], "msg_h", dt.datetime.now(dt.UTC), body)
        url = f"http://[::1]:{server.port}/h"
        assert (
            requests.post(url, data=body.encode(), headers=headers, timeout=10).status_code == 204
        )
    finally:
        server.stop()
