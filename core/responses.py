"""Response bodies of the API, as pydantic models beside the request models (core.schemas).

The API renders them with `render()`; the OpenAPI document is built from the same models.
Field names are the camelCase wire names, in the order clients see them. Times are UTC to
the whole second with a `Z` (`core.validation.isoformat`).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from core.services.delivery_log import LoggedDelivery
from core.validation import isoformat

Time = Annotated[
    dt.datetime | None,
    PlainSerializer(isoformat, return_type=str | None),
    Field(json_schema_extra={"format": "date-time"}),
]


class Response(BaseModel):
    """Base of every response body."""

    model_config = ConfigDict(frozen=True)

    def render(self) -> dict[str, Any]:
        """Return the JSON-ready body, keys in declaration order."""
        return self.model_dump(mode="json")


class AttemptOut(Response):
    """One HTTP attempt of a delivery."""

    at: Time = Field(description="When the attempt started.")
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
    status: str = Field(description="`pending`, `succeeded` or `failed`.")
    createdAt: Time
    nextAttemptAt: Time = Field(description="When the next attempt is due; null once done.")
    completedAt: Time
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
