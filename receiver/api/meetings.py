"""The join.me meetings API: start calls, scheduled meetings and our end call (SPEC 4)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from core.responses import MeetingList, MeetingOut, StartOut
from core.schemas import (
    AdHocStart,
    MeetingListQuery,
    ScheduledMeetingIn,
    ScheduledMeetingPatch,
    StartOptions,
)
from core.services import meetings
from core.validation import validate
from receiver import get_settings
from receiver.auth import current_user
from receiver.bodies import read_object
from receiver.db import get_session
from receiver.openapi import operation

bp = Blueprint("meetings", __name__, url_prefix="/v1/meetings")


def _json(body: dict[str, Any], status: int) -> Response:
    response = jsonify(body)
    response.status_code = status
    return response


@bp.post("/start")
@operation(
    {201: (StartOut, "Started: the presenter and viewer links.")},
    scope="start_meeting",
    json=AdHocStart,
    form=True,
    errors=(409,),
)
def start_adhoc() -> Response:
    """Start an ad hoc meeting: 201 with the presenter and viewer links."""
    body = read_object(allow_form=True)
    data = validate(AdHocStart, body)
    settings = get_settings()
    session = get_session()
    user = current_user()
    started = meetings.create_adhoc(
        session,
        user,
        start_with_personal_url=data.startWithPersonalUrl,
        options=data,
        ttl_seconds=settings.presenter_link_ttl_seconds,
        allowed_networks=settings.callback_allowed_networks,
    )
    session.commit()
    return _json(StartOut.of(started, user, settings.base_url).render(), 201)


@bp.post("/<int:meeting_id>/start")
@operation(
    {200: (StartOut, "Started, or a fresh presenter link for a running meeting.")},
    scope="start_meeting",
    json=StartOptions,
    form=True,
    body_optional=True,
    errors=(404, 409),
)
def start_scheduled(meeting_id: int) -> Response:
    """Start (or re-issue the presenter link of) an existing meeting: 200."""
    body = read_object(allow_form=True, allow_empty=True)
    data = validate(StartOptions, body)
    settings = get_settings()
    session = get_session()
    user = current_user()
    started = meetings.start_scheduled(
        session,
        user,
        meeting_id,
        options=data,
        ttl_seconds=settings.presenter_link_ttl_seconds,
        allowed_networks=settings.callback_allowed_networks,
    )
    session.commit()
    return _json(StartOut.of(started, user, settings.base_url).render(), 200)


@bp.post("/<int:meeting_id>/end")
@operation({200: (MeetingOut, "The ended meeting.")}, scope="start_meeting", errors=(404,))
def end(meeting_id: int) -> Response:
    """End a running meeting and emit meeting.end; ending twice is harmless."""
    session = get_session()
    user = current_user()
    meeting, _ = meetings.end_meeting(session, user, meeting_id)
    session.commit()  # publishes the deliveries' wake-ups
    return _json(MeetingOut.of(meeting, user, get_settings().base_url).render(), 200)


@bp.post("")
@operation(
    {201: (MeetingOut, "The scheduled meeting.")},
    scope="scheduler",
    json=ScheduledMeetingIn,
    errors=(409,),
)
def create() -> Response:
    """Schedule a meeting: 201 with the meeting."""
    data = validate(ScheduledMeetingIn, read_object())
    session = get_session()
    user = current_user()
    meeting = meetings.create_scheduled(session, user, data)
    session.commit()
    return _json(MeetingOut.of(meeting, user, get_settings().base_url).render(), 201)


@bp.get("")
@operation(
    {200: (MeetingList, "Upcoming scheduled meetings by start time.")},
    scope="scheduler",
    query=MeetingListQuery,
)
def list_upcoming() -> Response:
    """List upcoming scheduled meetings, up to `endDate` when given."""
    query = validate(MeetingListQuery, {"endDate": request.args.get("endDate")})
    user = current_user()
    found = meetings.list_upcoming(get_session(), user, end_date=query.endDate)
    base_url = get_settings().base_url
    return jsonify(
        MeetingList([MeetingOut.of(meeting, user, base_url) for meeting in found]).render()
    )


@bp.get("/<int:meeting_id>")
@operation({200: (MeetingOut, "The meeting.")}, scope="scheduler", errors=(404,))
def read(meeting_id: int) -> Response:
    """Read one meeting, ad hoc or scheduled, with its lifecycle state."""
    user = current_user()
    meeting = meetings.get_meeting(get_session(), user, meeting_id)
    return jsonify(MeetingOut.of(meeting, user, get_settings().base_url).render())


@bp.patch("/<int:meeting_id>")
@operation(
    {200: (MeetingOut, "The changed meeting.")},
    scope="scheduler",
    json=ScheduledMeetingPatch,
    errors=(404, 409),
)
def update(meeting_id: int) -> Response:
    """Change some fields of a meeting."""
    patch = validate(ScheduledMeetingPatch, read_object())
    session = get_session()
    user = current_user()
    meeting = meetings.update_scheduled(
        session, user, meeting_id, patch.model_dump(exclude_unset=True)
    )
    session.commit()
    return jsonify(MeetingOut.of(meeting, user, get_settings().base_url).render())


@bp.delete("/<int:meeting_id>")
@operation({204: (None, "Deleted.")}, scope="scheduler", errors=(404,))
def delete(meeting_id: int) -> Response:
    """Delete a meeting: 204."""
    session = get_session()
    meetings.delete_meeting(session, current_user(), meeting_id)
    session.commit()
    return Response(status=204)
