"""Request and response shapes of bulk replay (SPEC 6), validated with pydantic.

The API and the CLI validate with the same model, so both refuse the same input the same way.
"""

# Field names are the API's camelCase wire names (as core/schemas.py, ignored there in pyproject).
# ruff: noqa: N815

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.responses import Response
from core.validation import AwareDatetime

# At most this many deliveries in one replay: a larger one is a 400 naming the limit.
MAX_REPLAY = 10_000
# `pending` is still being sent: its redelivery is the single redeliver endpoint's job.
REPLAYABLE_STATUSES = ("failed", "succeeded")
# The IETF Idempotency-Key draft makes the key a Structured Field string: printable ASCII.
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x20-\x7e]{1,255}$")
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"


class ReplayIn(BaseModel):
    """Body of POST /v1/webhooks/deliveries/replay: which of the user's callbacks to re-send."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "from": "2026-11-24T00:00:00Z",
                    "to": "2026-11-25T00:00:00Z",
                    "status": "failed",
                    "eventType": "meeting.end",
                }
            ]
        },
    )

    from_: AwareDatetime = Field(
        alias="from", description="Event time from (inclusive), with a time zone."
    )
    to: AwareDatetime = Field(description="Event time up to (exclusive), with a time zone.")
    status: Literal["failed", "succeeded"] = Field(
        default="failed", description="Re-send the deliveries that ended in this status."
    )
    meetingId: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Only this meeting's callbacks."
    )
    eventType: Literal["meeting.start", "meeting.end"] | None = Field(
        default=None, description="Only callbacks of this event type."
    )

    @model_validator(mode="after")
    def _from_before_to(self) -> ReplayIn:
        if self.from_ >= self.to:
            raise ValueError("`from` must be before `to`")
        return self

    def canonical(self) -> dict[str, Any]:
        """Return the request as JSON, times in UTC: equal for requests that mean the same."""
        return self.model_dump(mode="json", by_alias=True)


class IdempotencyKeyHeader(BaseModel):
    """Headers of a replay, for the OpenAPI document (the view reads the header itself)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    idempotency_key: str | None = Field(
        default=None,
        alias=IDEMPOTENCY_KEY_HEADER,
        min_length=1,
        max_length=255,
        pattern=IDEMPOTENCY_KEY_RE.pattern,
        description=(
            "Optional. A repeat with the same key and body within 24 hours answers the first"
            " replay's result and sends nothing; the same key with another body is a 422."
        ),
    )


class ReplayOut(Response):
    """Answer of a replay: how many deliveries it queued again, each with a new webhook-id."""

    count: int = Field(description="Deliveries queued again (0 when none matched).")
