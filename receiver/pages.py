"""HTML pages behind the links we hand out: presenter, viewer and audio numbers."""

from __future__ import annotations

import re

import sqlalchemy as sa
from flask import Blueprint, Response, jsonify, render_template, request

from core.errors import DomainError, NotFound
from core.models import Meeting, User
from core.responses import MeetingOut
from core.services import events, meetings
from receiver import get_settings
from receiver.db import get_session
from receiver.errors import error_response
from receiver.openapi import operation

bp = Blueprint("pages", __name__)

MEETING_CODE_RE = re.compile(r"^\d{9}$")
# Illustrative dial-in numbers: the audio bridge itself is outside this service.
DIAL_IN_NUMBERS = (
    ("United States", "+1 555 0100 200"),
    ("United Kingdom", "+44 20 7946 0200"),
    ("Germany", "+49 30 5558 0200"),
)
PRESENTER_STATES = {
    "used": "This presenter link has already been used.",
    "expired": "This presenter link has expired.",
    "unknown": "This presenter link is unknown.",
    "ended": "This meeting has ended.",
}


def _wants_json() -> bool:
    """Say whether the client asked for JSON rather than a page.

    `Accept` decides when it prefers one of the two (by weight, then by naming it rather than a
    wildcard); when it does not (absent, `*/*`, a tie), a client that sent a JSON body is an API
    client and gets JSON.
    """
    accept = request.accept_mimetypes
    # werkzeug breaks ties by the order we offer: asking both ways round exposes a tie.
    preferred = accept.best_match(["application/json", "text/html"])
    if preferred is not None and preferred == accept.best_match(["text/html", "application/json"]):
        return preferred == "application/json"
    return request.is_json


def _no_store(response: Response) -> Response:
    # Presenter links are secrets: keep them out of caches and referrers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _html(template: str, status: int = 200, **context: object) -> Response:
    return _no_store(
        Response(render_template(template, **context), status=status, mimetype="text/html")
    )


@bp.get("/presenter/<token>")
@operation(
    {200: (None, "The page with a Start meeting button; the link stays usable.")},
    errors=(410, 503),
    html=(200, 410),
)
def presenter_page(token: str) -> Response:
    """Show the presenter page; consumes nothing (link previewers fetch links)."""
    state = meetings.peek_presenter_link(get_session(), token)
    status = 200 if state == "usable" else 410
    if status == 410 and _wants_json():
        code = "meeting-ended" if state == "ended" else f"presenter-link-{state}"
        return _no_store(error_response(410, code, PRESENTER_STATES[state]))
    return _html(
        "presenter.html",
        status,
        title="Start your meeting",
        state=state,
        message=PRESENTER_STATES.get(state, ""),
    )


@bp.post("/presenter/<token>")
@operation(
    {200: (MeetingOut, "The started meeting (a page unless JSON is asked for).")},
    errors=(410, 503),
    html=(200, 410),
)
def presenter_start(token: str) -> Response:
    """Consume the one-time link and start the meeting (emits meeting.start)."""
    session = get_session()
    try:
        meeting = meetings.use_presenter_link(session, token)
    except DomainError as gone:
        session.rollback()
        if _wants_json():
            raise
        state = gone.code.removeprefix("presenter-link-").removeprefix("meeting-")
        return _html(
            "presenter.html", gone.status, title="Link unusable", state=state, message=gone.message
        )
    events.emit_internal(session, meeting, events.START, source="presenter")
    session.commit()  # publishes the deliveries' wake-ups
    if _wants_json():
        return _no_store(
            jsonify(MeetingOut.of(meeting, _owner(meeting), get_settings().base_url).render())
        )
    return _html("presenter.html", title="Meeting started", state="started", message="")


def _owner(meeting: Meeting) -> User:
    user = get_session().get(User, meeting.user_id)
    if user is None:
        raise NotFound("meeting not found")
    return user


@bp.get("/audio/numbers")
def audio_numbers() -> Response:
    """List the dial-in numbers of the audio bridge."""
    conference_id = request.args.get("conferenceId", "")
    if conference_id and not MEETING_CODE_RE.match(conference_id):
        conference_id = ""
    return _html(
        "audio_numbers.html",
        title="Audio conference numbers",
        conference_id=conference_id,
        numbers=DIAL_IN_NUMBERS,
    )


@bp.get("/<slug>")
def viewer(slug: str) -> Response:
    """Show a meeting's viewer page by meeting code or personal URL (never the organizer code)."""
    session = get_session()
    base = sa.select(Meeting).where(Meeting.deleted_at.is_(None))
    if MEETING_CODE_RE.match(slug):
        meeting = session.scalar(base.where(Meeting.meeting_code == slug))
        host = session.get(User, meeting.user_id) if meeting else None
    else:
        host = session.scalar(sa.select(User).where(User.personal_url == slug.lower()))
        meeting = (
            session.scalar(
                base.where(Meeting.user_id == host.id, Meeting.start_with_personal_url.is_(True))
                .order_by(Meeting.id.desc())
                .limit(1)
            )
            if host
            else None
        )
    if host is None:
        raise NotFound("no meeting here", code="meeting-not-found")
    status_text = {
        None: "No meeting is running here right now.",
        "scheduled": "The meeting has not started yet.",
        "started": "The meeting is in progress.",
        "ended": "The meeting has ended.",
    }[meeting.status if meeting else None]
    live = meeting is not None and meeting.status != "ended"
    conference_id = meeting.conference_id if live and meeting else None
    return _html(
        "viewer.html",
        title=f"{host.full_name}'s meeting",
        status_text=status_text,
        conference_id=conference_id,
        numbers_url=meetings.audio_numbers_url(conference_id or "", get_settings().base_url),
    )
