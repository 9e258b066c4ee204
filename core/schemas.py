"""Request payloads of the meetings API, validated with pydantic (unknown fields ignored).

Field names are join.me's camelCase, as clients send them.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.validation import AwareDatetime, JoinMeBool

EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit for a forward path


def _email(value: str) -> str:
    if len(value) > MAX_EMAIL_LENGTH or not EMAIL_RE.match(value):
        raise ValueError("must be an email address")
    return value.strip().lower()


def _no_control_characters(value: str) -> str:
    # A name is one line of text; NUL in particular is refused by PostgreSQL's text type.
    if CONTROL_RE.search(value):
        raise ValueError("must not contain control characters")
    return value


Email = Annotated[str, AfterValidator(_email)]
MeetingName = Annotated[
    str, Field(min_length=1, max_length=200), AfterValidator(_no_control_characters)
]


class Payload(BaseModel):
    """Base of every request body: unknown fields are ignored (SPEC 3)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class StartOptions(Payload):
    """What both start calls accept besides the meeting itself."""

    viewerMode: Literal["default", "headless"] | None = None
    viewerAppDetection: JoinMeBool = True
    # Validated entry by entry later: a bad entry never fails the start (SPEC 4). Absent is
    # None; an explicit null is "not an object" and a 400, like any other non-object.
    webhooks: dict[str, Any] | None = None

    @field_validator("webhooks", mode="before")
    @classmethod
    def _webhooks_is_an_object(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("must be an object keyed by event type")
        return value


class AdHocStart(StartOptions):
    """POST /v1/meetings/start."""

    startWithPersonalUrl: JoinMeBool


class ScheduledMeetingIn(Payload):
    """POST /v1/meetings: join.me's scheduled meeting fields."""

    meetingName: MeetingName
    meetingStart: AwareDatetime
    meetingEnd: AwareDatetime
    participants: Annotated[list[Email], Field(max_length=500)] = []
    startWithPersonalUrl: JoinMeBool = False

    @field_validator("meetingEnd")
    @classmethod
    def _end_after_start(cls, value: dt.datetime, info: ValidationInfo) -> dt.datetime:
        # Reported on meetingEnd (not the whole body) so that a client can point at the field.
        start = info.data.get("meetingStart")
        if start is not None and value <= start:
            raise ValueError("must be after meetingStart")
        return value


class ScheduledMeetingPatch(Payload):
    """PATCH /v1/meetings/{id}: any subset of the scheduled fields."""

    meetingName: MeetingName | None = None
    meetingStart: AwareDatetime | None = None
    meetingEnd: AwareDatetime | None = None
    participants: Annotated[list[Email], Field(max_length=500)] | None = None
    startWithPersonalUrl: JoinMeBool | None = None


def changed_fields(patch: ScheduledMeetingPatch) -> dict[str, Any]:
    """Return the fields a PATCH body actually set (null means 'not given' for all of them)."""
    return {name: value for name, value in patch.model_dump(exclude_unset=True).items()}


CONFERENCE_ID_RE = re.compile(r"[0-9]{9}")


class PlatformEventData(Payload):
    """`data` of a platform event: the meeting, by id or by conference id."""

    meetingId: Annotated[int, Field(strict=True, ge=1)] | None = None
    conferenceId: str | None = None

    @field_validator("conferenceId", mode="before")
    @classmethod
    def _conference_id(cls, value: Any) -> Any:
        # Conference ids are 9-digit strings; a platform that sends one as a JSON number has
        # lost its leading zeros, which 9 digits restore without ambiguity.
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9:
            return f"{value:09d}"
        if isinstance(value, str) and CONFERENCE_ID_RE.fullmatch(value):
            return value
        raise ValueError('must be a 9-digit conference id, such as "012345678"')

    @model_validator(mode="after")
    def _names_a_meeting(self) -> PlatformEventData:
        if self.meetingId is None and self.conferenceId is None:
            raise ValueError("data must carry meetingId or conferenceId")
        return self


class PlatformEvent(Payload):
    """POST /v1/events: a lifecycle event reported by the conferencing platform."""

    type: Literal["meeting.start", "meeting.end"]
    timestamp: AwareDatetime
    data: PlatformEventData


# --- analytics (SPEC 8) ----------------------------------------------------------------------


class AnalyticsQuery(Payload):
    """`from`, `to` and `interval` of the analytics endpoints (query string or CLI options)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    from_: AwareDatetime | None = Field(default=None, alias="from")
    to: AwareDatetime | None = None
    interval: Literal["hour", "day"] = "day"
