"""POST /v1/events: lifecycle events reported by the conferencing platform (SPEC 5).

Verify the Standard Webhooks signature over the raw body, validate, record the event in the
inbox (once per `webhook-id`), commit, and only then wake a worker. No processing happens here.
"""

from __future__ import annotations

import contextlib
import logging

from flask import Blueprint, Response, jsonify, request
from prometheus_client import Counter
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from werkzeug.exceptions import RequestEntityTooLarge

from core.errors import DomainError, FieldError, ValidationFailed
from core.schemas import PlatformEvent
from core.services import events
from core.validation import validate
from receiver import get_settings
from receiver.bodies import read_object
from receiver.db import get_session
from receiver.errors import error_response
from receiver.tasks import enqueue

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
        raw = request.get_data()
    except RequestEntityTooLarge:
        REJECTED.labels(reason="body-too-large").inc()
        raise
    try:
        # Constant-time comparison and the ±5 minute timestamp window are the library's.
        Webhook(secret).verify(raw, dict(request.headers), json_parse=False)
    except WebhookVerificationError as exc:
        reason = {
            "Message timestamp too old": "stale-timestamp",
            "Message timestamp too new": "future-timestamp",
        }.get(str(exc), "bad-signature")
        REJECTED.labels(reason=reason).inc()
        raise InvalidSignature(f"webhook signature rejected: {exc}") from None
    except ValueError:
        # Malformed signature lists, bad base64, a body that is not UTF-8: no valid signature.
        REJECTED.labels(reason="bad-signature").inc()
        raise InvalidSignature("webhook signature rejected: malformed signature") from None


def _parse(webhook_id: str) -> PlatformEvent:
    """Validate the signed body and the webhook-id; raise with every bad field at once."""
    try:
        body = read_object()
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
def ingest() -> Response:
    """Verify, validate and durably record a platform event; processing happens in workers."""
    _verify(get_settings().ingest_signing_secret)
    webhook_id = request.headers["webhook-id"]
    event = _parse(webhook_id)
    session = get_session()
    try:
        meeting = events.find_platform_meeting(
            session, meeting_id=event.data.meetingId, conference_id=event.data.conferenceId
        )
        # The platform's events name no user: the event belongs to the meeting's owner.
        record, created = events.record_event(
            session,
            source="platform",
            source_event_id=webhook_id,
            type=event.type,
            occurred_at=event.timestamp,
            payload=event.model_dump(mode="json", exclude_none=True),
            meeting_id=meeting.id if meeting else None,
            user_id=meeting.user_id if meeting else None,
        )
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
    INGESTED.labels(result="accepted" if created else "duplicate", type=event.type).inc()
    if created:
        # After the commit: the worker must find the row. A lost message waits for the sweep.
        enqueue("workers.events.process_event", event_id=record.id)
    # A duplicate gets the body the first delivery got, with 200 instead of 202.
    response = jsonify(id=record.public_id, status="accepted")
    response.status_code = 202 if created else 200
    return response
