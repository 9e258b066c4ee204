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
    WithJsonSchema,
    field_validator,
    model_validator,
)

from core.validation import AwareDatetime, JoinMeBool

EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")
# EMAIL_RE for JSON Schema (ECMA-262), whose `\s` is not Python's: the same characters spelled out.
_NOT_IN_EMAIL = r"[^@\x00-\x20\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
EMAIL_PATTERN = rf"^{_NOT_IN_EMAIL}+@{_NOT_IN_EMAIL}+\.{_NOT_IN_EMAIL}+$"
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


Email = Annotated[
    str,
    AfterValidator(_email),
    Field(
        # The validator's own pattern, not `format: email`: it accepts more than RFC 5322 does.
        json_schema_extra={
            "maxLength": MAX_EMAIL_LENGTH,
            "pattern": EMAIL_PATTERN,
        }
    ),
]
MeetingName = Annotated[
    str,
    Field(min_length=1, max_length=200, json_schema_extra={"pattern": r"^[^\x00-\x1f\x7f]*$"}),
    AfterValidator(_no_control_characters),
]
# What a `webhooks` entry looks like. Entries are checked one by one after validation, so a bad
# entry is reported in `webhooksStatus` and never fails the start (SPEC 4): any object is valid.
WEBHOOKS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "Callbacks to register, keyed by lifecycle event (`meeting.start`, `meeting.end`): "
        '`{"callbackUrl": "https://...", "customCallbackData": <any JSON, at most 4 KiB>, '
        '"ordered": true}`. `ordered` (our extension, default true): a delivery waits while an '
        "earlier one of the meeting to the same URL is pending; `false` sends it at once. "
        "An entry that cannot be registered is reported in `webhooksStatus`; `null` is a 400."
    ),
    "examples": [
        {
            "meeting.start": {
                "callbackUrl": "https://hooks.example.com/meetings",
                "customCallbackData": {"ticket": 42},
            },
            "meeting.end": {"callbackUrl": "https://hooks.example.com/meetings", "ordered": True},
        }
    ],
}


class Payload(BaseModel):
    """Base of every request body: unknown fields are ignored (SPEC 3)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class StartOptions(Payload):
    """What both start calls accept besides the meeting itself."""

    viewerMode: Literal["default", "headless"] | None = None
    viewerAppDetection: JoinMeBool = True
    # Validated entry by entry later: a bad entry never fails the start (SPEC 4). Absent is
    # None; an explicit null is "not an object" and a 400, like any other non-object.
    webhooks: Annotated[dict[str, Any] | None, WithJsonSchema(WEBHOOKS_SCHEMA)] = None

    @field_validator("webhooks", mode="before")
    @classmethod
    def _webhooks_is_an_object(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("must be an object keyed by event type")
        return value


class AdHocStart(StartOptions):
    """POST /v1/meetings/start."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "startWithPersonalUrl": False,
                    "viewerMode": "headless",
                    "webhooks": WEBHOOKS_SCHEMA["examples"][0],
                }
            ]
        }
    )

    startWithPersonalUrl: JoinMeBool


class ScheduledMeetingIn(Payload):
    """POST /v1/meetings: join.me's scheduled meeting fields."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "meetingName": "Weekly sync",
                    "meetingStart": "2026-12-07T09:00:00Z",
                    "meetingEnd": "2026-12-07T09:30:00+00:00",
                    "participants": ["bob@example.com"],
                    "startWithPersonalUrl": False,
                }
            ]
        }
    )

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

    model_config = ConfigDict(json_schema_extra={"examples": [{"meetingName": "Renamed sync"}]})

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

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["meetingId"], "properties": {"meetingId": {"type": "integer"}}},
                {
                    "required": ["conferenceId"],
                    "properties": {"conferenceId": {"type": ["string", "integer"]}},
                },
            ]
        }
    )

    meetingId: Annotated[int, Field(strict=True, ge=1)] | None = None
    conferenceId: Annotated[
        str | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string", "pattern": "^[0-9]{9}$"},
                    {"type": "integer", "minimum": 0, "maximum": 10**9 - 1},
                    {"type": "null"},
                ],
                "description": "9 digits; a JSON number gets its leading zeros back.",
            }
        ),
    ] = None

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

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "meeting.start",
                    "timestamp": "2026-12-07T09:00:12Z",
                    "data": {"meetingId": 1234},
                },
                {
                    "type": "meeting.end",
                    "timestamp": "2026-12-07T09:41:03Z",
                    "data": {"conferenceId": "012345678"},
                },
            ]
        }
    )

    type: Literal["meeting.start", "meeting.end"]
    timestamp: AwareDatetime
    data: PlatformEventData


# --- analytics (SPEC 8) ----------------------------------------------------------------------


class AnalyticsQuery(Payload):
    """`from`, `to` and `interval` of the analytics endpoints (query string or CLI options)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    from_: AwareDatetime | None = Field(
        default=None, alias="from", description="Start of the range; default `to` - 30 days."
    )
    to: AwareDatetime | None = Field(
        default=None, description="End of the range (excluded), after `from`; default now."
    )
    interval: Literal["hour", "day"] = Field(
        default="day", description="Bucket size of the timeseries; the summary ignores it."
    )


# --- meetings list ---------------------------------------------------------------------------

# An unencoded `+01:00` offset arrives as ` 01:00` (a `+` in a query is a space).
UNENCODED_OFFSET_RE = re.compile(r"^(.+[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")


class MeetingListQuery(Payload):
    """Query string of GET /v1/meetings; unknown parameters are ignored."""

    endDate: AwareDatetime | None = Field(
        default=None, description="Only meetings starting before this time."
    )

    @field_validator("endDate", mode="before")
    @classmethod
    def _restore_offset(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return UNENCODED_OFFSET_RE.sub(r"\1+\2", value) if value else None
        return value
