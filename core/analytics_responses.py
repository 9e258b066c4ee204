"""Response bodies of the analytics API and CLI (SPEC 8), beside `core.responses`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from core.responses import Response, Time


class _Ranged(Response):
    """A body that names its range; `from` is a Python keyword, hence the alias."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    def render(self) -> dict[str, Any]:
        """Return the JSON-ready body, keys in declaration order, `from` by its wire name."""
        return self.model_dump(mode="json", by_alias=True)


class MeetingCounts(Response):
    """Meetings started and ended in the range, and running now."""

    started: int = Field(description="Meetings whose start falls in [from, to).")
    ended: int = Field(description="Meetings whose end falls in [from, to).")
    active: int = Field(description="Meetings started and not ended now, whatever the range.")


class DurationStats(Response):
    """Durations of the meetings that ended in the range and have a start."""

    avg: float | None = Field(description="Mean, to 0.1 s; null when no duration is known.")
    p50: int | None = Field(description="Nearest-rank median: the value at rank ceil(N/2).")
    p95: int | None = Field(description="Nearest-rank 95th percentile: rank ceil(0.95 N).")
    max: int | None


class DeliveryStats(Response):
    """Callbacks (not alerts) made in the range, by status, and their attempts' latency."""

    succeeded: int
    failed: int
    pending: int
    successRate: float | None = Field(
        description="succeeded / (succeeded + failed), to 4 places; null when none finished."
    )
    p95LatencyMs: int | None = Field(
        description="Nearest-rank 95th percentile of those callbacks' attempts' latency."
    )


class AnalyticsSummary(_Ranged):
    """GET /v1/analytics/summary."""

    from_: Time = Field(alias="from")
    to: Time
    meetings: MeetingCounts
    durationSeconds: DurationStats
    deliveries: DeliveryStats


class TimeseriesBucket(Response):
    """One UTC hour or day; the first and last count only what falls in [from, to)."""

    start: Time
    started: int
    ended: int
    avgDurationSeconds: float | None = Field(
        description="Mean duration of the meetings that ended in the bucket; null if none."
    )
    peakConcurrent: int = Field(description="The most meetings running at once in the bucket.")


class AnalyticsTimeseries(_Ranged):
    """GET /v1/analytics/timeseries."""

    interval: Literal["hour", "day"]
    from_: Time = Field(alias="from")
    to: Time
    buckets: list[TimeseriesBucket]
