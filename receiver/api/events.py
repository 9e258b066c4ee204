"""POST /v1/events: lifecycle events reported by the conferencing platform (SPEC 5).

Verify the Standard Webhooks signature over the raw body, validate, record the event in the
inbox (once per `webhook-id`), commit, and only then wake a worker. No processing happens here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request
from prometheus_client import Counter
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import RequestEntityTooLarge

from core.errors import DomainError, FieldError, ValidationFailed
from core.responses import IngestAck
from core.schemas import PlatformEvent
from core.services import events
from core.signing import SignatureRejected, check_signature, signing_key
from core.validation import validate
from receiver import get_settings
from receiver.bodies import parse_json_object, read_object, read_raw
from receiver.db import get_session
from receiver.errors import error_response
from receiver.openapi import operation

log = logging.getLogger(__name__)
bp = Blueprint("events", __name__, url_prefix="/v1")

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
# events.source_event_id is VARCHAR(255); a longer id could never be stored.
MAX_WEBHOOK_ID = 255
# A database that cannot be reached (down, restarting, failing over, pool exhausted) is a
# 503 the platform retries, never a 500.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
RETRY_AFTER_SECONDS = 5

INGESTED = Counter(
    "meetinghooks_ingest_events",
    "Platform events recorded by the receiver, by result (accepted or duplicate) and type",
    ["result", "type"],
)
REJECTED = Counter(
    "meetinghooks_ingest_rejected",
    "Platform events refused by the receiver, by reason",
    ["reason"],
)
UNKNOWN_MEETING = Counter(
    "meetinghooks_ingest_unknown_meeting",
    "Platform events recorded for a meeting we do not know (stored, never delivered), by type",
    ["type"],
)


class InvalidSignature(DomainError):
    """The Standard Webhooks signature did not verify."""

    status = 401
    code = "invalid-signature"


def _verify(secret: str | None) -> None:
    """Authenticate the request; raise 401 unless its signature verifies over the raw body."""
    if not secret:
        # Fail closed: without a secret nobody can be authenticated, so nobody is let in.
        REJECTED.labels(reason="ingest-disabled").inc()
        raise InvalidSignature(
            "event ingest is disabled: INGEST_SIGNING_SECRET is not configured",
            code="ingest-disabled",
        )
    missing = [name for name in SIGNATURE_HEADERS if not request.headers.get(name)]
    if missing:
        REJECTED.labels(reason="missing-header").inc()
        raise InvalidSignature(f"webhook signature rejected: missing {', '.join(missing)}")
    try:
        raw = read_raw()
    except RequestEntityTooLarge:
        REJECTED.labels(reason="body-too-large").inc()
        raise
    try:
        check_signature(
            signing_key(secret),
            msg_id=request.headers["webhook-id"],
            timestamp=request.headers["webhook-timestamp"].strip(),
            # A client that repeats the header instead of listing them in one is heard too.
            signatures=" ".join(request.headers.getlist("webhook-signature")),
            body=raw,
            now=dt.datetime.now(dt.UTC),
        )
    except SignatureRejected as exc:
        REJECTED.labels(reason=exc.reason).inc()
        raise InvalidSignature(f"webhook signature rejected: {exc.message}") from None


def _read_body() -> dict[str, Any]:
    """Return the signed body as an object; raise 400/415 with a stable code."""
    if request.mimetype:
        # A declared type must be JSON (charset and other parameters are fine): else 415.
        return read_object()
    # No Content-Type at all: the bytes were signed as JSON, which is all the contract allows.
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ValidationFailed("request body is required", code="body-required")
    return parse_json_object(raw)


def _parse(webhook_id: str) -> PlatformEvent:
    """Validate the signed body and the webhook-id; raise with every bad field at once."""
    try:
        body = _read_body()
    except DomainError as exc:  # not JSON, not an object, no body, wrong content type
        REJECTED.labels(reason=exc.code).inc()
        raise
    errors: list[FieldError] = []
    event: PlatformEvent | None = None
    try:
        event = validate(PlatformEvent, body)
    except ValidationFailed as exc:
        errors.extend(exc.errors)
    if len(webhook_id) > MAX_WEBHOOK_ID:
        errors.append(
            {"field": "webhook-id", "message": f"must be at most {MAX_WEBHOOK_ID} characters"}
        )
    if errors or event is None:
        REJECTED.labels(reason="invalid-payload").inc()
        fields = ", ".join(error["field"] for error in errors)
        raise ValidationFailed(f"invalid event: {fields}", code="invalid-payload", errors=errors)
    return event


@bp.post("/events")
@operation(
    {
        202: (IngestAck, "Recorded; a worker will process it."),
        200: (IngestAck, "This webhook-id was recorded before: the same body, nothing new."),
    },
    signed=True,
    json=PlatformEvent,
)
def ingest() -> Response:
    """Verify, validate and durably record a platform event; processing happens in workers."""
    _verify(get_settings().ingest_signing_secret)
    webhook_id = request.headers["webhook-id"]
    event = _parse(webhook_id)
    session = get_session()
    try:
        # The platform's events name no user: the event belongs to the meeting's owner.
        recorded = events.ingest_platform_event(
            session,
            source_event_id=webhook_id,
            type=event.type,
            occurred_at=event.timestamp,
            payload=event.model_dump(mode="json", exclude_none=True),
            meeting_id=event.data.meetingId,
            conference_id=event.data.conferenceId,
        )
        # Publishes its process_event wake-up: after the commit, so the worker finds the row.
        # A lost message waits for the sweep.
        session.commit()
    except DATABASE_UNAVAILABLE:
        log.warning("receiver.ingest.database_unavailable", exc_info=True)
        with contextlib.suppress(SQLAlchemyError):  # the connection may be gone already
            session.rollback()
        REJECTED.labels(reason="database-unavailable").inc()
        return error_response(
            503,
            "database-unavailable",
            "the event could not be recorded; retry later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    INGESTED.labels(result="accepted" if recorded.created else "duplicate", type=event.type).inc()
    if recorded.created and recorded.meeting_id is None:
        UNKNOWN_MEETING.labels(type=event.type).inc()
    # A duplicate gets the body the first delivery got, with 200 instead of 202.
    response = jsonify(IngestAck(id=recorded.public_id, status="accepted").render())
    response.status_code = 202 if recorded.created else 200
    return response
