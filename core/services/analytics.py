"""Analytics over the user's meetings and callbacks (SPEC 8), in SQL on SQLite and PostgreSQL.

Meetings' state is already folded from their events into `meetings.started_at`, `ended_at`
and `duration_seconds` (duplicates and out-of-order events are handled there), so every
figure here is a query over those columns.

Percentiles are nearest-rank: the p-th percentile of N values is the value at rank
ceil(p * N / 100) of their ascending order (the smallest value that at least p % of the values
do not exceed), PostgreSQL's percentile_disc(). Both dialects run the same portable SQL for
it (`percentile_sql`: a count per distinct value and a running count over those, no sort of
every row), which is faster on PostgreSQL than percentile_disc() and exact on both. Only the
time-bucket arithmetic differs by dialect (date_bin() against SQLite's text times).
Python only fills in the range defaults, checks the bucket count, rounds and renders.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from core.analytics_responses import (
    AnalyticsSummary,
    AnalyticsTimeseries,
    DeliveryStats,
    DurationStats,
    MeetingCounts,
    TimeseriesBucket,
)
from core.db import UTCDateTime, utcnow
from core.errors import ValidationFailed
from core.schemas import AnalyticsQuery
from core.validation import validate

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sqlalchemy.orm import Session

DEFAULT_RANGE = dt.timedelta(days=30)
MAX_BUCKETS = 10_000
STEP_SECONDS = {"hour": 3600, "day": 86400}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Range:
    """A checked analytics range: [start, end), the interval and the instant taken as now."""

    start: dt.datetime
    end: dt.datetime
    interval: str
    now: dt.datetime


def parse_range(
    values: Mapping[str, str | None], *, buckets: bool, now: dt.datetime | None = None
) -> Range:
    """Check `from`, `to` and (with `buckets`) `interval`; default to the 30 days up to now.

    An empty value is no value. Every bad field is reported at once, by name: a time without a
    zone, `from` not before `to` (on `to`), or more than 10,000 buckets (on `interval`). The
    summary has no buckets and ignores `interval`.
    """
    names = ("from", "to", "interval") if buckets else ("from", "to")
    given = {key: values.get(key) for key in names if values.get(key) not in (None, "")}
    query = validate(AnalyticsQuery, given)
    # Whole seconds, as every time we make ourselves (DECISIONS "Times").
    now = (now or utcnow()).replace(microsecond=0)
    end = query.to or now
    try:
        start = query.from_ or end - DEFAULT_RANGE
    except OverflowError:
        message = "leaves no room for the default 30 days before it: give from as well"
        raise ValidationFailed(
            f"invalid request: to: {message}", errors=[{"field": "to", "message": message}]
        ) from None
    if start >= end:
        field = "to" if query.to is not None else "from"
        message = "must be after from" if field == "to" else "must be before to (default: now)"
        raise ValidationFailed(
            f"invalid request: {field}: {message}", errors=[{"field": field, "message": message}]
        )
    count = bucket_count(start, end, query.interval)
    if buckets and count > MAX_BUCKETS:
        message = (
            f"the range holds {count} {query.interval} buckets, at most {MAX_BUCKETS} are"
            " allowed: shorten it or use a longer interval"
        )
        raise ValidationFailed(
            f"invalid request: interval: {message}",
            errors=[{"field": "interval", "message": message}],
        )
    return Range(start=start, end=end, interval=query.interval, now=now)


def bucket_origin(start: dt.datetime, interval: str) -> dt.datetime:
    """Return the UTC hour or day that holds `start`: where the first bucket begins."""
    origin = start.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return origin.replace(hour=0) if interval == "day" else origin


def bucket_count(start: dt.datetime, end: dt.datetime, interval: str) -> int:
    """Return how many UTC buckets of `interval` cover [start, end)."""
    span = (end - bucket_origin(start, interval)).total_seconds()
    return max(1, math.ceil(span / STEP_SECONDS[interval]))


# --- SQL ---------------------------------------------------------------------------------------

# Every query names the user and leaves deleted meetings out, as the meetings API does.
LIVE = "m.user_id = :user_id AND m.deleted_at IS NULL"

STARTED_SQL = f"""
SELECT count(*) FROM meetings AS m
WHERE {LIVE} AND m.started_at >= :start AND m.started_at < :end
"""

# Started and not ended (status `started`), whatever the range.
ACTIVE_SQL = f"""
SELECT count(*) FROM meetings AS m WHERE {LIVE} AND m.status = 'started'
"""


def percentile_sql(values: str, *, percents: tuple[int, ...]) -> str:
    """Return SQL for the nearest-rank percentiles of `values` (a query of one column `x`).

    The same on both dialects, and exact: the values are counted by distinct value (a hash
    aggregate, no sort of every row), a running count over the distinct values ordered gives
    each one's last rank, and the p-th percentile is the least value whose last rank r has
    r * 100 >= p * N, in integer arithmetic. That is the value at rank ceil(p * N / 100),
    what PostgreSQL's percentile_disc() returns (tests check both agree).
    """
    picks = ", ".join(
        f"min(CASE WHEN rank * 100 >= {p} * total THEN x END) AS p{p}" for p in percents
    )
    return f"""
WITH counted(x, n) AS (SELECT x, count(*) FROM ({values}) AS v WHERE x IS NOT NULL GROUP BY x),
ranked(x, rank, total) AS (SELECT x, sum(n) OVER (ORDER BY x), sum(n) OVER () FROM counted)
SELECT {picks} FROM ranked
"""


ENDED = f"""
FROM meetings AS m WHERE {LIVE} AND m.ended_at >= :start AND m.ended_at < :end
"""
ENDED_SQL = f"""
SELECT count(*) AS ended,
       CAST(sum(m.duration_seconds) AS DOUBLE PRECISION)
           / NULLIF(count(m.duration_seconds), 0) AS avg,
       max(m.duration_seconds) AS max
{ENDED}"""
DURATION_PERCENTILES_SQL = percentile_sql(
    f"SELECT m.duration_seconds AS x {ENDED}", percents=(50, 95)
)

# Callbacks only (a delivery with an event); alert deliveries are not the user's traffic.
CALLBACKS = (
    "d.user_id = :user_id AND d.event_id IS NOT NULL"
    " AND d.created_at >= :start AND d.created_at < :end"
)

DELIVERIES_SQL = f"""
SELECT count(CASE WHEN d.status = 'succeeded' THEN 1 END) AS succeeded,
       count(CASE WHEN d.status = 'failed' THEN 1 END) AS failed,
       count(CASE WHEN d.status = 'pending' THEN 1 END) AS pending
FROM deliveries AS d
WHERE {CALLBACKS}
"""

# Every attempt of those callbacks that has a latency (one in progress has none yet).
LATENCY_SQL = percentile_sql(
    "SELECT a.latency_ms AS x FROM deliveries AS d"
    f" JOIN delivery_attempts AS a ON a.delivery_id = d.id WHERE {CALLBACKS}",
    percents=(95,),
)

# Which bucket a time falls in, counted from :origin in :step seconds, and where bucket `i`
# begins. SQLite stores times as fixed-width 'YYYY-MM-DD HH:MM:SS.ffffff' text, so a bucket's
# start is written in exactly that form and compares (and ties) correctly with stored times;
# whole seconds are enough for its bucket number, since bucket bounds are whole seconds.
# PostgreSQL's date_bin() is integer arithmetic on timestamps (extract(epoch) is numeric).
BUCKET_OF = {
    "postgresql": "date_bin(:stride, {t}, :origin)",
    "sqlite": "((CAST(strftime('%s', {t}) AS INTEGER) - :origin_epoch) / :step)",
}
BUCKET_NUMBER = {
    "postgresql": "CAST(extract(epoch FROM k - :origin) AS INTEGER) / :step",
    "sqlite": "k",
}
BUCKET_START = {
    "postgresql": "greatest(:origin + b.i * :stride, :start)",
    "sqlite": (
        "max(strftime('%Y-%m-%d %H:%M:%S', :origin_epoch + b.i * :step, 'unixepoch')"
        " || '.000000', :start)"
    ),
}


def timeseries_sql(dialect: str) -> str:
    """Return the timeseries query: one row per bucket, empty ones included, in order.

    One sweep over time gives every figure. Its points: the meetings already running when the
    range begins (one row, +count, at `from`), each start in the range (+1), each end in the
    range (-1), the meetings still running now (one row, -count, at now, if now is in the
    range), and a 0 at the start of every bucket so that each bucket sees the level it opens
    with. The running sum ordered by time, the same instant's points summed together, is the
    number of meetings running at each instant. Meetings run over [start, end): one that
    ends as another starts does not overlap it, and one of no length (or with no start)
    never runs, so its points count 0. A bucket's peak is its greatest level; its starts,
    ends and mean duration are counted off the same points.
    """
    bucket_of = BUCKET_OF[dialect].format(t="t")
    return f"""
WITH RECURSIVE b(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM b WHERE i + 1 < :buckets),
points(t, delta, starts, ends, duration) AS (
    SELECT :start, count(*), 0, 0, CAST(NULL AS INTEGER) FROM meetings AS m
    WHERE {LIVE} AND m.ended_at > :start AND m.started_at < :start
      AND m.ended_at > m.started_at
    UNION ALL
    SELECT :start, count(*), 0, 0, CAST(NULL AS INTEGER) FROM meetings AS m
    WHERE {LIVE} AND m.status = 'started' AND m.started_at < :start AND :now > :start
    UNION ALL
    SELECT m.started_at, CASE WHEN coalesce(m.ended_at, :now) > m.started_at THEN 1 ELSE 0 END,
           1, 0, CAST(NULL AS INTEGER)
    FROM meetings AS m WHERE {LIVE} AND m.started_at >= :start AND m.started_at < :end
    UNION ALL
    SELECT m.ended_at, CASE WHEN m.ended_at > m.started_at THEN -1 ELSE 0 END,
           0, 1, m.duration_seconds
    FROM meetings AS m WHERE {LIVE} AND m.ended_at >= :start AND m.ended_at < :end
    UNION ALL
    SELECT :now, -count(*), 0, 0, CAST(NULL AS INTEGER) FROM meetings AS m
    WHERE {LIVE} AND m.status = 'started' AND m.started_at < :now
      AND :now > :start AND :now < :end
    HAVING count(*) > 0
    UNION ALL
    SELECT {BUCKET_START[dialect]}, 0, 0, 0, CAST(NULL AS INTEGER) FROM b
),
levels(t, level, starts, ends, duration) AS (
    SELECT t, sum(delta) OVER (ORDER BY t), starts, ends, duration FROM points
),
buckets(k, peak, started, ended, avg) AS (
    SELECT {bucket_of}, max(level), sum(starts), sum(ends),
           CAST(sum(duration) AS DOUBLE PRECISION) / NULLIF(count(duration), 0)
    FROM levels GROUP BY 1
)
SELECT {BUCKET_NUMBER[dialect]}, started, ended, avg, peak FROM buckets ORDER BY 1
"""


def _dialect(session: Session) -> str:
    name = session.get_bind().dialect.name
    if name not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"analytics speaks SQLite and PostgreSQL, not {name}")
    return name


def _text(sql: str) -> sa.TextClause:
    """Bind times as the columns store them, so comparisons and ties are exact on SQLite too."""
    times = [
        sa.bindparam(name, type_=UTCDateTime())
        for name in ("start", "end", "now", "origin")
        if re.search(rf":{name}\b", sql)
    ]
    return sa.text(sql).bindparams(*times)


def _params(user_id: int, span: Range, **extra: Any) -> dict[str, Any]:
    return {"user_id": user_id, "start": span.start, "end": span.end, **extra}


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def summary(session: Session, user_id: int, span: Range) -> AnalyticsSummary:
    """Count the user's meetings and callbacks in the range; unknown figures are None."""
    _dialect(session)
    params = _params(user_id, span)
    started = session.execute(_text(STARTED_SQL), params).scalar_one()
    active = session.execute(_text(ACTIVE_SQL), {"user_id": user_id}).scalar_one()
    ended = session.execute(_text(ENDED_SQL), params).one()
    durations = session.execute(_text(DURATION_PERCENTILES_SQL), params).one()
    counts = session.execute(_text(DELIVERIES_SQL), params).one()
    latency = session.execute(_text(LATENCY_SQL), params).scalar()
    finished = counts.succeeded + counts.failed
    return AnalyticsSummary(
        **{"from": span.start},
        to=span.end,
        meetings=MeetingCounts(started=started, ended=ended.ended, active=active),
        durationSeconds=DurationStats(
            avg=_round(ended.avg, 1), p50=durations.p50, p95=durations.p95, max=ended.max
        ),
        deliveries=DeliveryStats(
            succeeded=counts.succeeded,
            failed=counts.failed,
            pending=counts.pending,
            successRate=round(counts.succeeded / finished, 4) if finished else None,
            p95LatencyMs=latency,
        ),
    )


def timeseries_params(user_id: int, span: Range) -> dict[str, Any]:
    """Return the parameters of `timeseries_sql` for this range."""
    origin = bucket_origin(span.start, span.interval)
    return _params(
        user_id,
        span,
        now=span.now,
        origin=origin,
        origin_epoch=int((origin - EPOCH).total_seconds()),
        step=STEP_SECONDS[span.interval],
        stride=dt.timedelta(seconds=STEP_SECONDS[span.interval]),
        buckets=bucket_count(span.start, span.end, span.interval),
    )


def timeseries(session: Session, user_id: int, span: Range) -> AnalyticsTimeseries:
    """Return the user's meetings per UTC hour or day of the range, empty buckets included.

    The first and the last bucket count only what falls inside [from, to), so the buckets add
    up to the summary's `started` and `ended`.
    """
    params = timeseries_params(user_id, span)
    rows = session.execute(_text(timeseries_sql(_dialect(session))), params).all()
    origin = params["origin"]
    step = dt.timedelta(seconds=params["step"])
    return AnalyticsTimeseries(
        interval="hour" if span.interval == "hour" else "day",
        **{"from": span.start},
        to=span.end,
        buckets=[
            TimeseriesBucket(
                start=origin + i * step,
                started=started,
                ended=ended,
                avgDurationSeconds=_round(avg, 1),
                peakConcurrent=peak,
            )
            for i, started, ended, avg, peak in rows
        ],
    )
