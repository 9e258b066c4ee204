"""The delivery log, redelivery, bulk replay and the callback signing secret (SPEC 6).

Every endpoint needs the `start_meeting` scope: the callbacks it shows and re-sends were
registered by start calls, and the signing secret verifies them.
"""

from __future__ import annotations

from typing import Any, Literal

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field

from core import pagination
from core.errors import ValidationFailed
from core.replay_schemas import (
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENCY_KEY_RE,
    IdempotencyKeyHeader,
    ReplayIn,
    ReplayOut,
)
from core.responses import DeliveryOut, DeliveryPage, SigningSecretOut
from core.services import accounts, delivery_log, delivery_replay
from core.validation import validate
from receiver import get_settings
from receiver.auth import current_user
from receiver.bodies import read_object
from receiver.db import get_session
from receiver.openapi import operation

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")


class DeliveryQuery(BaseModel):
    """Query string of GET /v1/webhooks/deliveries; unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    meeting_id: int | None = Field(default=None, alias="meetingId", ge=1)
    status: Literal["pending", "succeeded", "failed"] | None = None
    limit: int = Field(default=pagination.DEFAULT_PAGE_SIZE, ge=1, le=pagination.MAX_PAGE_SIZE)
    # Checked by the service, so that every bad cursor is the same 400 `invalid-cursor`.
    cursor: pagination.Cursor = None


def _json(body: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


@bp.get("/deliveries")
@operation(
    {200: (DeliveryPage, "One page of deliveries, newest first.")},
    scope="start_meeting",
    query=DeliveryQuery,
    errors=(404,),  # meetingId names no meeting of the user's
)
def list_deliveries() -> Response:
    """List the user's deliveries, newest first, one page at a time."""
    # An empty parameter (`?meetingId=&status=`, as a form leaves it) means "no filter".
    query = validate(DeliveryQuery, {k: v for k, v in request.args.items() if v != ""})
    page = delivery_log.list_deliveries(
        get_session(),
        current_user().id,
        meeting_id=query.meeting_id,
        status=query.status,
        limit=query.limit,
        cursor=query.cursor,
    )
    body = DeliveryPage(
        deliveries=[DeliveryOut.of(logged) for logged in page.items], nextCursor=page.next_cursor
    )
    return _json(body.render())


@bp.get("/deliveries/<int:delivery_id>")
@operation({200: (DeliveryOut, "The delivery.")}, scope="start_meeting", errors=(404,))
def get_delivery(delivery_id: int) -> Response:
    """Show one delivery and its attempts."""
    logged = delivery_log.show(get_session(), current_user().id, delivery_id)
    return _json(DeliveryOut.of(logged).render())


@bp.post("/deliveries/<int:delivery_id>/redeliver")
@operation(
    {202: (DeliveryOut, "Queued again, with the same webhook-id.")},
    scope="start_meeting",
    errors=(404, 409),
)
def redeliver(delivery_id: int) -> Response:
    """Send a delivery again at once, with the same webhook-id: 202."""
    session = get_session()
    delivery = delivery_log.redeliver(
        session,
        current_user().id,
        delivery_id,
        max_attempts=len(get_settings().retry_schedule) + 1,
    )
    session.commit()  # publishes its wake-up
    (logged,) = delivery_log.with_attempts(session, [delivery])
    return _json(DeliveryOut.of(logged).render(), 202)


def _idempotency_key() -> str | None:
    key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if key is None:
        return None
    if not IDEMPOTENCY_KEY_RE.match(key):
        message = "must be 1 to 255 printable ASCII characters"
        raise ValidationFailed(
            f"invalid request: {IDEMPOTENCY_KEY_HEADER}: {message}",
            errors=[{"field": IDEMPOTENCY_KEY_HEADER, "message": message}],
        )
    return key


@bp.post("/deliveries/replay")
@operation(
    {202: (ReplayOut, "Queued again, each with a new webhook-id; the count.")},
    scope="start_meeting",
    json=ReplayIn,
    headers=IdempotencyKeyHeader,
    errors=(404, 409, 422),
)
def replay() -> Response:
    """Re-send every matching callback with a new webhook-id, in order: 202 with the count."""
    key = _idempotency_key()
    body = validate(ReplayIn, read_object())
    session = get_session()
    replayed = delivery_replay.replay(session, current_user().id, body, idempotency_key=key)
    session.commit()  # the replay, its key and the new rows at once; then their wake-ups
    response = _json(ReplayOut(count=replayed.replay.delivery_count).render(), 202)
    if replayed.repeated:
        # Stripe's convention: the answer is the first one's, and nothing was sent again.
        response.headers["Idempotent-Replayed"] = "true"
    return response


@bp.get("/signing-secret")
@operation({200: (SigningSecretOut, "The signing secret.")}, scope="start_meeting")
def signing_secret() -> Response:
    """Show the secret that signs callbacks now."""
    user = current_user()
    live = accounts.active_signing_secrets(user)
    until = user.previous_secret_valid_until if len(live) > 1 else None
    body = SigningSecretOut(signingSecret=user.signing_secret, previousSecretValidUntil=until)
    return _json(body.render())


@bp.post("/signing-secret/rotate")
@operation({200: (SigningSecretOut, "The new signing secret.")}, scope="start_meeting")
def rotate_signing_secret() -> Response:
    """Issue a new signing secret; the previous one keeps signing for 24 hours."""
    session = get_session()
    user = accounts.rotate_signing_secret(session, current_user())
    session.commit()
    body = SigningSecretOut(
        signingSecret=user.signing_secret,
        previousSecretValidUntil=user.previous_secret_valid_until,
    )
    return _json(body.render())
