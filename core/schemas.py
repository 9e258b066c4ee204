"""Request payloads of the meetings API, validated with pydantic (unknown fields ignored).

Field names are join.me's camelCase, as clients send them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from core.validation import AwareDatetime, JoinMeBool

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _email(value: str) -> str:
    if not EMAIL_RE.match(value):
        raise ValueError("must be an email address")
    return value.strip().lower()


Email = Annotated[str, AfterValidator(_email)]


class Payload(BaseModel):
    """Base of every request body: unknown fields are ignored (SPEC 3)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class StartOptions(Payload):
    """What both start calls accept besides the meeting itself."""

    viewerMode: Literal["default", "headless"] | None = None
    viewerAppDetection: JoinMeBool = True
    # Validated entry by entry later: a bad entry never fails the start (SPEC 4).
    webhooks: dict[str, Any] | None = None


class AdHocStart(StartOptions):
    """POST /v1/meetings/start."""

    startWithPersonalUrl: JoinMeBool


class ScheduledMeetingIn(Payload):
    """POST /v1/meetings: join.me's scheduled meeting fields."""

    meetingName: Annotated[str, Field(min_length=1, max_length=200)]
    meetingStart: AwareDatetime
    meetingEnd: AwareDatetime
    participants: Annotated[list[Email], Field(max_length=500)] = []
    startWithPersonalUrl: JoinMeBool = False

    @model_validator(mode="after")
    def _end_after_start(self) -> ScheduledMeetingIn:
        if self.meetingEnd <= self.meetingStart:
            raise ValueError("meetingEnd must be after meetingStart")
        return self


class ScheduledMeetingPatch(Payload):
    """PATCH /v1/meetings/{id}: any subset of the scheduled fields."""

    meetingName: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    meetingStart: AwareDatetime | None = None
    meetingEnd: AwareDatetime | None = None
    participants: Annotated[list[Email], Field(max_length=500)] | None = None
    startWithPersonalUrl: JoinMeBool | None = None


def changed_fields(patch: ScheduledMeetingPatch) -> dict[str, Any]:
    """Return the fields a PATCH body actually set (null means 'not given' for all of them)."""
    return {name: value for name, value in patch.model_dump(exclude_unset=True).items()}


class PlatformEventData(Payload):
    """`data` of a platform event: the meeting, by id or by conference id."""

    meetingId: Annotated[int, Field(strict=True, ge=1)] | None = None
    conferenceId: Annotated[str, Field(pattern=r"^\d{9}$")] | None = None

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
