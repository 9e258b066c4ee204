"""The delivery log, redelivery and the callback signing secret (SPEC 6).

Every endpoint needs the `start_meeting` scope: the callbacks it shows and re-sends were
registered by start calls, and the signing secret verifies them.
"""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from core.db import utcnow
from core.services import accounts, deliveries
from core.validation import isoformat, validate
from receiver import get_settings
from receiver.auth import current_user, require_scope
from receiver.db import get_session
from receiver.tasks import enqueue

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")

DELIVER_TASK = "workers.deliveries.deliver"


class DeliveryQuery(BaseModel):
    """Query string of GET /v1/webhooks/deliveries; unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    meeting_id: int | None = Field(default=None, alias="meetingId", ge=1)
    status: Literal["pending", "succeeded", "failed"] | None = None
    limit: int = Field(default=deliveries.DEFAULT_PAGE_SIZE, ge=1, le=deliveries.MAX_PAGE_SIZE)
    # Checked by the service, so that every bad cursor is the same 400 `invalid-cursor`.
    cursor: str | None = None


def _json(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


@bp.get("/deliveries")
@require_scope("start_meeting")
def list_deliveries() -> Response:
    """List the user's deliveries, newest first, one page at a time."""
    # An empty parameter (`?meetingId=&status=`, as a form leaves it) means "no filter".
    query = validate(DeliveryQuery, {k: v for k, v in request.args.items() if v != ""})
    page, next_cursor = deliveries.list_deliveries(
        get_session(),
        current_user().id,
        meeting_id=query.meeting_id,
        status=query.status,
        limit=query.limit,
        cursor=query.cursor,
    )
    return _json({"deliveries": page, "nextCursor": next_cursor})


@bp.get("/deliveries/<int:delivery_id>")
@require_scope("start_meeting")
def get_delivery(delivery_id: int) -> Response:
    """Show one delivery and its attempts."""
    session = get_session()
    delivery = deliveries.get_delivery(session, current_user().id, delivery_id)
    return _json(deliveries.serialize(session, [delivery])[0])


@bp.post("/deliveries/<int:delivery_id>/redeliver")
@require_scope("start_meeting")
def redeliver(delivery_id: int) -> Response:
    """Send a delivery again at once, with the same webhook-id: 202."""
    session = get_session()
    delivery = deliveries.redeliver(
        session,
        current_user().id,
        delivery_id,
        now=utcnow(),
        max_attempts=len(get_settings().retry_schedule) + 1,
    )
    session.commit()
    enqueue(DELIVER_TASK, delivery_id=delivery.id)
    return _json(deliveries.serialize(session, [delivery])[0], 202)


def _secret_body(secret: str, previous_valid_until: Any) -> dict[str, Any]:
    return {"signingSecret": secret, "previousSecretValidUntil": isoformat(previous_valid_until)}


@bp.get("/signing-secret")
@require_scope("start_meeting")
def signing_secret() -> Response:
    """Show the secret that signs callbacks now."""
    user = current_user()
    live = accounts.active_signing_secrets(user)
    until = user.previous_secret_valid_until if len(live) > 1 else None
    return _json(_secret_body(user.signing_secret, until))


@bp.post("/signing-secret/rotate")
@require_scope("start_meeting")
def rotate_signing_secret() -> Response:
    """Issue a new signing secret; the previous one keeps signing for 24 hours."""
    session = get_session()
    user = accounts.rotate_signing_secret(session, current_user())
    session.commit()
    return _json(_secret_body(user.signing_secret, user.previous_secret_valid_until))
