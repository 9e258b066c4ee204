"""Platform lifecycle events signed with the ingest secret, as the platform sends them."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from typing import TYPE_CHECKING

from standardwebhooks.webhooks import Webhook

from tests.conftest import INGEST_SECRET

if TYPE_CHECKING:
    from flask import Flask


def new_msg_id() -> str:
    return "msg_" + secrets.token_hex(8)


def event_body(meeting_id: int, type_: str = "meeting.start", *, at: dt.datetime) -> str:
    return json.dumps(
        {"type": type_, "timestamp": at.isoformat(), "data": {"meetingId": meeting_id}}
    )


def signed_headers(
    msg_id: str, body: str, at: dt.datetime, *, secret: str = INGEST_SECRET
) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
    }


def signed_bytes_headers(
    raw: bytes, *, msg_id: str | None = None, at: dt.datetime | None = None
) -> dict[str, str]:
    """Return Standard Webhooks headers for any body bytes, valid UTF-8 or not (no content type).

    standardwebhooks signs text only; the spec signs bytes, so hostile bodies are signed here.
    """
    msg_id = msg_id or new_msg_id()
    stamp = str(int((at or dt.datetime.now(dt.UTC)).timestamp()))
    key = base64.b64decode(INGEST_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + raw, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def signed_event(meeting_id: int, type_: str = "meeting.start") -> tuple[str, str, dict[str, str]]:
    """Return a new event's message id, body and signed headers, stamped now."""
    msg_id = new_msg_id()
    now = dt.datetime.now(dt.UTC)
    body = event_body(meeting_id, type_, at=now)
    return msg_id, body, signed_headers(msg_id, body, now)


def post_event(app: Flask, meeting_id: int, type_: str = "meeting.start") -> str:
    """Report a lifecycle event through the signed ingest endpoint; return its message id."""
    msg_id, body, headers = signed_event(meeting_id, type_)
    response = app.test_client().post("/v1/events", data=body, headers=headers)
    assert response.status_code == 202, response.get_data(as_text=True)
    return msg_id
