"""Response bodies of the API, as pydantic models beside the request models (core.schemas).

The API renders them with `render()`; the OpenAPI document is built from the same models.
Field names are the camelCase wire names, in the order clients see them. Times are UTC to
the whole second with a `Z` (`core.validation.isoformat`).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PlainSerializer, RootModel

from core.services.delivery_log import LoggedDelivery
from core.services.meetings import (
    Registered,
    Registration,
    Started,
    audio_numbers_url,
    viewer_link,
)
from core.validation import isoformat

if TYPE_CHECKING:
    from core.models import Meeting, User

Time = Annotated[
    dt.datetime | None,
    PlainSerializer(isoformat, return_type=str | None),
    Field(json_schema_extra={"format": "date-time"}),
]
# A time that is always there (a row's creation, an attempt's start).
Instant = Annotated[
    dt.datetime,
    PlainSerializer(isoformat, return_type=str),
    Field(json_schema_extra={"format": "date-time"}),
]
DELIVERY_STATUSES: list[JsonValue] = ["pending", "succeeded", "failed"]


class Response(BaseModel):
    """Base of every response body."""

    model_config = ConfigDict(frozen=True)

    def render(self) -> dict[str, Any]:
        """Return the JSON-ready body, keys in declaration order."""
        return self.model_dump(mode="json")


class AttemptOut(Response):
    """One HTTP attempt of a delivery."""

    at: Instant = Field(description="When the attempt started.")
    statusCode: int | None = Field(description="The receiver's HTTP status; null if none came.")
    latencyMs: int | None = Field(description="Milliseconds until the status line arrived.")
    error: str | None = Field(
        description=(
            "Error class: timeout, connection-error, tls-error, dns-error, ssrf-refused, "
            "invalid-url, request-error, redirect, http-<status>, in-progress, interrupted, "
            "webhook-disabled; null on success."
        )
    )
    responseBody: str | None = Field(description="The first 4 KiB of the response body.")


class DeliveryOut(Response):
    """One outbound message (a callback or an alert) and its attempts, oldest first."""

    id: int
    webhookId: str = Field(description="The `webhook-id` header: the same on every attempt.")
    eventId: str | None = Field(
        description="The `id` the body carries: the event's (`evt_...`), or the alert's."
    )
    eventType: str = Field(description="`meeting.start`, `meeting.end` or `alert.<rule type>`.")
    meetingId: int | None
    callbackUrl: str
    status: str = Field(json_schema_extra={"enum": DELIVERY_STATUSES})
    createdAt: Instant
    nextAttemptAt: Time = Field(description="When the next attempt is due; null once done.")
    completedAt: Time
    waitingFor: int | None = Field(
        description=(
            "The id of the delivery ahead of it while it waits: an earlier delivery of its "
            "meeting to the same callback URL is still pending (ordered delivery); null when "
            "it does not wait."
        )
    )
    attempts: list[AttemptOut]

    @classmethod
    def of(cls, logged: LoggedDelivery) -> DeliveryOut:
        """Build the body of a logged delivery."""
        d = logged.delivery
        return cls(
            id=d.id,
            webhookId=d.message_id,
            eventId=logged.subject_id,
            eventType=d.event_type,
            meetingId=d.meeting_id,
            callbackUrl=d.callback_url,
            status=d.status,
            createdAt=d.created_at,
            nextAttemptAt=d.next_attempt_at,
            completedAt=d.completed_at,
            waitingFor=logged.waiting_for,
            attempts=[
                AttemptOut(
                    at=a.attempted_at,
                    statusCode=a.status_code,
                    latencyMs=a.latency_ms,
                    error=a.error,
                    responseBody=a.response_body,
                )
                for a in logged.attempts
            ],
        )


class DeliveryPage(Response):
    """GET /v1/webhooks/deliveries: one page of callbacks, newest first."""

    deliveries: list[DeliveryOut]
    nextCursor: str | None = Field(description="Pass as `cursor` for the next page; null last.")


class SigningSecretOut(Response):
    """The secret that signs callbacks, and until when the previous one signs too."""

    signingSecret: str = Field(description="`whsec_...`: verify with standardwebhooks.")
    previousSecretValidUntil: Time = Field(
        description="Until when the previous secret also signs; null when it no longer does."
    )


class AudioConferenceOut(Response):
    """The dial-in side of a meeting."""

    conferenceId: str = Field(description="9 digits; no two live meetings share one.")
    conferenceCallNumbersUrl: str = Field(description="The page listing the dial-in numbers.")
    organizerCode: str = Field(description="4 digits that make a caller the organizer.")


class WebhookRegisteredOut(Response):
    """A `webhooks` entry now registered: it replaced the meeting's callback for its type."""

    registered: Literal[True]
    webhookId: str = Field(description="`wh_...`: the registration's id.")


class WebhookRefusedOut(Response):
    """A `webhooks` entry not registered; the start itself still succeeded."""

    registered: Literal[False]
    code: str = Field(
        description=(
            "unknown-event-type, invalid-webhook, callback-url-missing, callback-url-invalid, "
            "callback-url-scheme, callback-url-forbidden or custom-data-too-large."
        )
    )
    message: str


WebhookStatusOut = WebhookRegisteredOut | WebhookRefusedOut


class StartOut(Response):
    """A start call's answer: join.me's shape plus our `meetingId`."""

    meetingId: int
    presenterLink: str = Field(description="One-time link that starts the meeting.")
    viewerLink: str = Field(
        description="The personal URL or meeting code, with non-default viewer options."
    )
    audioConference: AudioConferenceOut
    webhooksStatus: dict[str, WebhookStatusOut] | None = Field(
        default=None,
        description=(
            "One entry per `webhooks` key of the request, in its order; "
            "absent when the request sent no `webhooks`."
        ),
    )

    def render(self) -> dict[str, Any]:
        """Return the JSON-ready body; `webhooksStatus` only when the request sent webhooks."""
        return self.model_dump(
            mode="json", exclude={"webhooksStatus"} if self.webhooksStatus is None else None
        )

    @classmethod
    def of(cls, started: Started, user: User, base_url: str) -> StartOut:
        """Build the answer to a start call of `user`'s meeting."""
        meeting = started.meeting
        statuses = started.webhooks_status
        return cls(
            meetingId=meeting.id,
            presenterLink=f"{base_url}/presenter/{started.presenter_token}",
            viewerLink=viewer_link(meeting, user, base_url),
            audioConference=AudioConferenceOut(
                conferenceId=meeting.conference_id,
                conferenceCallNumbersUrl=audio_numbers_url(meeting.conference_id, base_url),
                organizerCode=meeting.organizer_code,
            ),
            webhooksStatus=None
            if statuses is None
            else {event_type: _webhook_status(s) for event_type, s in statuses.items()},
        )


def _webhook_status(registration: Registration) -> WebhookStatusOut:
    if isinstance(registration, Registered):
        return WebhookRegisteredOut(registered=True, webhookId=registration.webhook_id)
    return WebhookRefusedOut(registered=False, code=registration.code, message=registration.message)


class MeetingOut(Response):
    """A meeting: join.me's scheduled fields plus our lifecycle extension."""

    meetingId: int
    meetingName: str | None = Field(description="Null for an ad hoc meeting.")
    meetingStart: Time = Field(description="The planned start; null for an ad hoc meeting.")
    meetingEnd: Time = Field(description="The planned end; null for an ad hoc meeting.")
    participants: list[str] = Field(description="Invitees' email addresses.")
    startWithPersonalUrl: bool
    conferenceId: str
    viewerLink: str
    status: str = Field(json_schema_extra={"enum": ["scheduled", "started", "ended"]})
    startedAt: Time = Field(description="When the meeting started; null until it has.")
    endedAt: Time = Field(description="When the meeting ended; null until it has.")
    durationSeconds: int | None = Field(
        description="Seconds from start to end; null until both are known."
    )

    @classmethod
    def of(cls, meeting: Meeting, user: User, base_url: str) -> MeetingOut:
        """Build the body of `user`'s meeting."""
        return cls(
            meetingId=meeting.id,
            meetingName=meeting.meeting_name,
            meetingStart=meeting.meeting_start,
            meetingEnd=meeting.meeting_end,
            participants=list(meeting.participants or []),
            startWithPersonalUrl=meeting.start_with_personal_url,
            conferenceId=meeting.conference_id,
            viewerLink=viewer_link(meeting, user, base_url),
            status=meeting.status,
            startedAt=meeting.started_at,
            endedAt=meeting.ended_at,
            durationSeconds=meeting.duration_seconds,
        )


class MeetingList(RootModel[list[MeetingOut]]):
    """GET /v1/meetings: upcoming scheduled meetings, by start time (a bare JSON array)."""

    model_config = ConfigDict(frozen=True)

    def render(self) -> list[Any]:
        """Return the JSON-ready array."""
        rendered: list[Any] = self.model_dump(mode="json")
        return rendered


class ConferenceSettingsOut(Response):
    """The defaults a start call uses when it names no viewer options."""

    defaultViewerMode: Literal["default"] = Field(description="Always `default` (join.me's value).")
    viewerAppDetection: bool
    conferenceCallNumbersUrl: str = Field(description="The page listing the dial-in numbers.")


class UserOut(Response):
    """GET /v1/user: the account behind the token."""

    email: str
    fullName: str
    personalUrl: str | None = Field(description="The personal viewer link; null without one.")
    registrationDate: Instant
    numberOfMeetingsHosted: int = Field(description="Meetings that have started (or ended).")
    conferenceSettings: ConferenceSettingsOut

    @classmethod
    def of(cls, user: User, meetings_hosted: int, base_url: str) -> UserOut:
        """Build the body describing `user`."""
        return cls(
            email=user.email,
            fullName=user.full_name,
            personalUrl=f"{base_url}/{user.personal_url}" if user.personal_url else None,
            registrationDate=user.registration_date,
            numberOfMeetingsHosted=meetings_hosted,
            conferenceSettings=ConferenceSettingsOut(
                defaultViewerMode="default",
                viewerAppDetection=True,
                conferenceCallNumbersUrl=f"{base_url}/audio/numbers",
            ),
        )


# --- the other bodies of the API ---------------------------------------------------------------


class FieldErrorOut(Response):
    """One invalid field of a request."""

    field: str = Field(description="The field's wire name, dotted when nested (`data.meetingId`).")
    message: str


class ErrorOut(Response):
    """Every error the API answers (SPEC 3): `receiver.errors.error_response` builds it."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "Message": (
                        "invalid request: viewerMode: Input should be 'default' or 'headless'"
                    ),
                    "code": "invalid-request",
                    "errors": [
                        {
                            "field": "viewerMode",
                            "message": "Input should be 'default' or 'headless'",
                        }
                    ],
                },
                {"Message": "missing bearer token", "code": "invalid-token", "errors": []},
            ]
        },
    )

    Message: str = Field(description="What join.me clients read.")
    code: str = Field(
        description="Stable, kebab-case: what a program matches on.",
        json_schema_extra={"pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
    )
    errors: list[FieldErrorOut] = Field(description="Every invalid field at once; often empty.")


class IngestAck(Response):
    """POST /v1/events: the event is recorded (202), or was already (200, the same body)."""

    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [{"id": "evt_2x9Qm3", "status": "accepted"}]}
    )

    id: str = Field(description="The recorded event's id (`evt_...`).")
    status: Literal["accepted"]


class TimelineEventOut(Response):
    """One event of a meeting, each fact once, with the callbacks it caused."""

    id: str = Field(description="`evt_...`.")
    type: str = Field(json_schema_extra={"enum": ["meeting.start", "meeting.end"]})
    timestamp: Instant = Field(description="When it happened (event time).")
    receivedAt: Instant
    source: str = Field(description="Who reported it: `platform`, `presenter` or `api`.")
    outcome: str | None = Field(description="What it did to the meeting; null until processed.")
    deliveries: list[DeliveryOut]


class TimelineOut(Response):
    """GET /v1/meetings/{id}/events: the meeting's events in event-time order."""

    meetingId: int
    events: list[TimelineEventOut]


class HealthOut(Response):
    """GET /healthz."""

    status: Literal["ok"]


class ReadyOut(Response):
    """GET /readyz when every dependency answers."""

    status: Literal["ready"]
    checks: dict[str, Literal["ok", "unreachable"]] = Field(description="`database` and `broker`.")
