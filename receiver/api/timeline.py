"""GET /v1/meetings/{id}/events: a meeting's events and their callbacks (SPEC 8)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from core.responses import DeliveryOut, TimelineEventOut, TimelineOut
from core.services import timeline as timelines
from receiver.auth import current_user
from receiver.db import get_session
from receiver.openapi import operation

bp = Blueprint("timeline", __name__, url_prefix="/v1/meetings")


@bp.get("/<int:meeting_id>/events")
# The entries show the delivery log's records (URLs, response bodies): the log's scope.
@operation({200: (TimelineOut, "The meeting's events.")}, scope="start_meeting", errors=(404,))
def events(meeting_id: int) -> Response:
    """List the meeting's events in event-time order, each fact once, with its callbacks."""
    meeting, entries = timelines.timeline(get_session(), current_user(), meeting_id)
    body = TimelineOut(
        meetingId=meeting.id,
        events=[
            TimelineEventOut(
                id=entry.event.public_id,
                type=entry.event.type,
                timestamp=entry.event.occurred_at,
                receivedAt=entry.event.received_at,
                source=entry.event.source,
                outcome=entry.event.outcome,
                deliveries=[DeliveryOut.of(d) for d in entry.deliveries],
            )
            for entry in entries
        ],
    )
    return jsonify(body.render())
