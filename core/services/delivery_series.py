"""Callbacks per UTC hour or day: how many succeeded or failed, and how fast (the console's charts).

Beside `core.services.analytics`, whose buckets, range and SQL conventions it shares: the
same callbacks as the summary's `deliveries` (alert deliveries left out), bucketed by when
the callback was made, and the latency of every attempt with one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.services import analytics

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class DeliveryBucket:
    """One bucket's callbacks: counts by status, success rate and mean attempt latency."""

    start: dt.datetime
    succeeded: int
    failed: int
    pending: int
    # Of the finished ones; None when none finished.
    success_rate: float | None
    avg_latency_ms: float | None


def _per_bucket_sql(dialect: str, figures: list[str], joins: str = "") -> str:
    """Return SQL giving the bucket number and `figures` of each bucket with callbacks."""
    bucket_of = analytics.BUCKET_OF[dialect].format(t="d.created_at")
    named = ", ".join(f"{figure} AS f{i}" for i, figure in enumerate(figures))
    columns = ", ".join(f"f{i}" for i in range(len(figures)))
    return f"""
SELECT {analytics.BUCKET_NUMBER[dialect]}, {columns}
FROM (SELECT {bucket_of} AS k, {named}
      FROM deliveries AS d {joins} WHERE {analytics.CALLBACKS} GROUP BY 1) AS per_bucket
"""


COUNTS = [
    f"count(CASE WHEN d.status = '{status}' THEN 1 END)"
    for status in ("succeeded", "failed", "pending")
]
LATENCY = ["CAST(avg(a.latency_ms) AS DOUBLE PRECISION)"]
ATTEMPTS = "JOIN delivery_attempts AS a ON a.delivery_id = d.id"


def delivery_series(session: Session, user_id: int, span: analytics.Range) -> list[DeliveryBucket]:
    """Return the user's callbacks per bucket of the range, empty buckets included."""
    dialect = session.get_bind().dialect.name
    params = analytics.timeseries_params(user_id, span)
    counts = {
        row[0]: row[1:]
        for row in session.execute(analytics._text(_per_bucket_sql(dialect, COUNTS)), params)
    }
    latency = {
        row[0]: row[1]
        for row in session.execute(
            analytics._text(_per_bucket_sql(dialect, LATENCY, ATTEMPTS)), params
        )
    }
    step = dt.timedelta(seconds=params["step"])
    buckets = []
    for i in range(params["buckets"]):
        succeeded, failed, pending = counts.get(i, (0, 0, 0))
        finished = succeeded + failed
        mean = latency.get(i)
        buckets.append(
            DeliveryBucket(
                start=params["origin"] + i * step,
                succeeded=succeeded,
                failed=failed,
                pending=pending,
                success_rate=round(succeeded / finished, 4) if finished else None,
                avg_latency_ms=None if mean is None else round(float(mean), 1),
            )
        )
    return buckets
