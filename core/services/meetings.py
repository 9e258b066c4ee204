"""Meetings: ad hoc and scheduled, their start calls, presenter links, callbacks and end."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core import ssrf
from core.db import utcnow
from core.errors import Conflict, Gone, NotFound, ValidationFailed
from core.models import EVENT_TYPES, Meeting, PresenterLink, User, Webhook
from core.security import hash_token, new_public_id, new_token, random_digits
from core.services import events

if TYPE_CHECKING:
    from ipaddress import IPv4Network, IPv6Network

    from sqlalchemy.orm import Session

    from core.schemas import ScheduledMeetingIn, StartOptions

MAX_CUSTOM_DATA_BYTES = 4096
CODE_ATTEMPTS = 20
# Meeting ids are 32-bit integer keys; a larger id in a URL names no meeting (and must not
# reach the database driver, which refuses to bind it).
MAX_MEETING_ID = 2**31 - 1


@dataclass(frozen=True)
class Registered:
    """A webhook entry that now receives its event type's callbacks."""

    webhook_id: str


@dataclass(frozen=True)
class Refused:
    """A webhook entry that was not registered, and why."""

    code: str
    message: str


Registration = Registered | Refused


@dataclass(frozen=True)
class Started:
    """The outcome of a start call: the meeting, its fresh presenter token, webhook statuses."""

    meeting: Meeting
    presenter_token: str
    # By event type as the request named them, in its order; None when it sent no `webhooks`.
    webhooks_status: dict[str, Registration] | None


def get_meeting(session: Session, user: User, meeting_id: int, *, lock: bool = False) -> Meeting:
    """Return the user's meeting; another user's or a deleted one is NotFound (never 403)."""
    if not 1 <= meeting_id <= MAX_MEETING_ID:
        raise NotFound(f"meeting {meeting_id} not found", code="meeting-not-found")
    query = sa.select(Meeting).where(
        Meeting.id == meeting_id, Meeting.user_id == user.id, Meeting.deleted_at.is_(None)
    )
    if lock:
        query = query.with_for_update()
    meeting = session.scalar(query)
    if meeting is None:
        raise NotFound(f"meeting {meeting_id} not found", code="meeting-not-found")
    return meeting


def _personal_url_or_fail(user: User, wanted: bool) -> None:
    if wanted and not user.personal_url:
        raise ValidationFailed(
            "startWithPersonalUrl is true but the user has no personal URL",
            code="no-personal-url",
            errors=[{"field": "startWithPersonalUrl", "message": "the user has no personal URL"}],
        )


def _insert_with_codes(session: Session, meeting: Meeting) -> Meeting:
    """Insert a meeting with a fresh meeting code and a conference id unique among live ones.

    Codes are random; a collision with a live meeting is rare and caught by the unique
    indexes, so we retry inside a savepoint instead of locking anything.
    """
    for _ in range(CODE_ATTEMPTS):
        meeting.meeting_code = random_digits(9)
        meeting.conference_id = random_digits(9)
        try:
            with session.begin_nested():
                session.add(meeting)
                session.flush()
        except IntegrityError:
            session.expunge(meeting)
            continue
        return meeting
    raise Conflict("could not allocate a conference id; try again", code="conference-id-exhausted")


def create_adhoc(
    session: Session,
    user: User,
    *,
    start_with_personal_url: bool,
    options: StartOptions,
    ttl_seconds: int,
    allowed_networks: tuple[IPv4Network | IPv6Network, ...],
) -> Started:
    """Create an ad hoc meeting, issue its presenter link and register its callbacks."""
    _personal_url_or_fail(user, start_with_personal_url)
    meeting = _insert_with_codes(
        session,
        Meeting(
            user_id=user.id,
            kind="adhoc",
            organizer_code=random_digits(4),
            participants=[],
            start_with_personal_url=start_with_personal_url,
            viewer_mode=options.viewerMode,
            viewer_app_detection=options.viewerAppDetection,
            status="scheduled",
            event_sequence=0,
        ),
    )
    return _issue(session, meeting, options, ttl_seconds, allowed_networks)


def start_scheduled(
    session: Session,
    user: User,
    meeting_id: int,
    *,
    options: StartOptions,
    ttl_seconds: int,
    allowed_networks: tuple[IPv4Network | IPv6Network, ...],
) -> Started:
    """Issue a fresh presenter link for an existing meeting; 409 once it has ended."""
    meeting = get_meeting(session, user, meeting_id, lock=True)
    if meeting.status == "ended":
        raise Conflict(f"meeting {meeting_id} has ended", code="meeting-ended")
    meeting.viewer_mode = options.viewerMode
    meeting.viewer_app_detection = options.viewerAppDetection
    return _issue(session, meeting, options, ttl_seconds, allowed_networks)


def _issue(
    session: Session,
    meeting: Meeting,
    options: StartOptions,
    ttl_seconds: int,
    allowed_networks: tuple[IPv4Network | IPv6Network, ...],
) -> Started:
    token = new_token()
    now = utcnow()
    session.add(
        PresenterLink(
            meeting_id=meeting.id,
            token_hash=hash_token(token),
            issued_at=now,
            expires_at=now + dt.timedelta(seconds=ttl_seconds),
        )
    )
    statuses = None
    if options.webhooks is not None:
        statuses = register_webhooks(session, meeting, options.webhooks, allowed_networks)
    session.flush()
    return Started(meeting=meeting, presenter_token=token, webhooks_status=statuses)


def register_webhooks(
    session: Session,
    meeting: Meeting,
    webhooks: dict[str, Any],
    allowed_networks: tuple[IPv4Network | IPv6Network, ...],
) -> dict[str, Registration]:
    """Register each valid entry (replacing the meeting's callback for that event type).

    A bad entry is reported in its status and never fails the start (join.me's contract).
    """
    statuses: dict[str, Registration] = {}
    for event_type, entry in webhooks.items():
        statuses[event_type] = _register_one(session, meeting, event_type, entry, allowed_networks)
    return statuses


def _register_one(
    session: Session,
    meeting: Meeting,
    event_type: str,
    entry: Any,
    allowed_networks: tuple[IPv4Network | IPv6Network, ...],
) -> Registration:
    if event_type not in EVENT_TYPES:
        return Refused(
            "unknown-event-type", f"unknown event type; use one of {', '.join(EVENT_TYPES)}"
        )
    if not isinstance(entry, dict):
        return Refused("invalid-webhook", "each webhook must be an object with a callbackUrl")
    url = entry.get("callbackUrl")
    if not isinstance(url, str) or not url.strip():
        return Refused("callback-url-missing", "callbackUrl is required and must be a string")
    try:
        ssrf.check_callback_url(url, allowed_networks)
    except ssrf.CallbackUrlRefused as refused:
        return Refused(refused.code, refused.message)
    refusal = _options_refused(entry)
    if refusal is not None:
        return refusal
    custom = entry.get("customCallbackData")
    ordered = entry.get("ordered", True)

    hook = session.scalar(
        sa.select(Webhook).where(Webhook.meeting_id == meeting.id, Webhook.event_type == event_type)
    )
    if hook is None:
        hook = Webhook(user_id=meeting.user_id, meeting_id=meeting.id, event_type=event_type)
        session.add(hook)
    hook.public_id = new_public_id("wh")
    hook.callback_url = url
    hook.custom_callback_data = custom
    hook.ordered = ordered
    hook.created_at = utcnow()
    hook.disabled_at = None
    hook.disabled_reason = None
    session.flush()
    return Registered(webhook_id=hook.public_id)


def _options_refused(entry: dict[str, Any]) -> Refused | None:
    """Check an entry's options besides its URL: custom data's size, `ordered`'s type."""
    # Measured as the UTF-8 bytes of its compact JSON ("ü" is two bytes, not a 6-byte escape).
    compact = json.dumps(entry.get("customCallbackData"), separators=(",", ":"), ensure_ascii=False)
    if len(compact.encode("utf-8", "surrogatepass")) > MAX_CUSTOM_DATA_BYTES:
        return Refused("custom-data-too-large", "customCallbackData must be at most 4 KiB")
    if not isinstance(entry.get("ordered", True), bool):
        return Refused("invalid-ordered", "ordered must be true or false")
    return None


def use_presenter_link(session: Session, token: str, *, now: dt.datetime | None = None) -> Meeting:
    """Consume a presenter token and start its meeting; 410 says why a link is unusable."""
    now = now or utcnow()
    link = session.scalar(
        sa.select(PresenterLink)
        .where(PresenterLink.token_hash == hash_token(token))
        .with_for_update()
    )
    if link is None:
        raise Gone("this presenter link is unknown", code="presenter-link-unknown")
    if link.used_at is not None:
        raise Gone("this presenter link has already been used", code="presenter-link-used")
    if link.expires_at <= now:
        raise Gone("this presenter link has expired", code="presenter-link-expired")
    meeting = session.get(Meeting, link.meeting_id)
    if meeting is None or meeting.deleted_at is not None or meeting.status == "ended":
        raise Gone("this meeting has ended", code="meeting-ended")
    link.used_at = now
    return meeting


def peek_presenter_link(session: Session, token: str, *, now: dt.datetime | None = None) -> str:
    """Return the state of a presenter link without consuming it: usable, used, expired..."""
    now = now or utcnow()
    link = session.scalar(
        sa.select(PresenterLink).where(PresenterLink.token_hash == hash_token(token))
    )
    if link is None:
        return "unknown"
    if link.used_at is not None:
        return "used"
    if link.expires_at <= now:
        return "expired"
    meeting = session.get(Meeting, link.meeting_id)
    if meeting is None or meeting.deleted_at is not None or meeting.status == "ended":
        return "ended"
    return "usable"


def end_meeting(session: Session, user: User, meeting_id: int) -> tuple[Meeting, list[int]]:
    """End a meeting; ending twice is harmless.

    A meeting whose start was never reported ends too (startedAt and durationSeconds stay
    null), as the same end reported by the platform would: it frees its conference id and
    lets a client cancel a meeting nobody joined.
    """
    meeting = get_meeting(session, user, meeting_id, lock=True)
    if meeting.status == "ended":
        return meeting, []
    _, applied = events.emit_internal(session, meeting, events.END, source="api")
    return meeting, applied.delivery_ids


def create_scheduled(session: Session, user: User, data: ScheduledMeetingIn) -> Meeting:
    """Schedule a meeting with join.me's fields."""
    _personal_url_or_fail(user, data.startWithPersonalUrl)
    return _insert_with_codes(
        session,
        Meeting(
            user_id=user.id,
            kind="scheduled",
            organizer_code=random_digits(4),
            meeting_name=data.meetingName,
            meeting_start=data.meetingStart,
            meeting_end=data.meetingEnd,
            participants=list(data.participants),
            start_with_personal_url=data.startWithPersonalUrl,
            viewer_app_detection=True,
            status="scheduled",
            event_sequence=0,
        ),
    )


def update_scheduled(
    session: Session, user: User, meeting_id: int, changes: dict[str, Any]
) -> Meeting:
    """Apply a partial update; an ended meeting cannot change."""
    meeting = get_meeting(session, user, meeting_id, lock=True)
    if meeting.status == "ended":
        raise Conflict(f"meeting {meeting_id} has ended", code="meeting-ended")
    start = changes.get("meetingStart") or meeting.meeting_start
    end = changes.get("meetingEnd") or meeting.meeting_end
    if start is not None and end is not None and end <= start:
        raise ValidationFailed(
            "meetingEnd must be after meetingStart",
            errors=[{"field": "meetingEnd", "message": "must be after meetingStart"}],
        )
    if changes.get("startWithPersonalUrl"):
        _personal_url_or_fail(user, True)
    columns = {
        "meetingName": "meeting_name",
        "meetingStart": "meeting_start",
        "meetingEnd": "meeting_end",
        "participants": "participants",
        "startWithPersonalUrl": "start_with_personal_url",
    }
    for field, value in changes.items():
        if value is not None:
            setattr(meeting, columns[field], list(value) if field == "participants" else value)
    return meeting


def delete_meeting(session: Session, user: User, meeting_id: int) -> None:
    """Delete a meeting: it disappears from the API; its events stay for the records."""
    meeting = get_meeting(session, user, meeting_id, lock=True)
    meeting.deleted_at = utcnow()


def list_upcoming(
    session: Session, user: User, *, end_date: dt.datetime | None, now: dt.datetime | None = None
) -> list[Meeting]:
    """Return scheduled meetings that have not ended, by start time, up to `end_date`."""
    now = now or utcnow()
    query = (
        sa.select(Meeting)
        .where(
            Meeting.user_id == user.id,
            Meeting.kind == "scheduled",
            Meeting.deleted_at.is_(None),
            Meeting.status != "ended",
            Meeting.meeting_end >= now,
        )
        .order_by(Meeting.meeting_start, Meeting.id)
    )
    if end_date is not None:
        query = query.where(Meeting.meeting_start <= end_date)
    return list(session.scalars(query))


def count_hosted(session: Session, user: User) -> int:
    """Count the user's meetings that have started (or ended)."""
    return (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(Meeting)
            .where(Meeting.user_id == user.id, Meeting.status != "scheduled")
        )
        or 0
    )


def viewer_link(meeting: Meeting, user: User, base_url: str) -> str:
    """Return the viewer link, with viewerMode/viewerAppDetection only when not default."""
    slug = user.personal_url if meeting.start_with_personal_url and user.personal_url else None
    link = f"{base_url}/{slug or meeting.meeting_code}"
    query = {}
    if meeting.viewer_mode == "headless":
        query["viewerMode"] = "headless"
    if not meeting.viewer_app_detection:
        query["viewerAppDetection"] = "false"
    return f"{link}?{urlencode(query)}" if query else link


def audio_numbers_url(conference_id: str, base_url: str) -> str:
    """Return the page listing the dial-in numbers of a conference."""
    return f"{base_url}/audio/numbers?{urlencode({'conferenceId': conference_id})}"
