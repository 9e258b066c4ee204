"""Benchmark: the analytics summary and an hourly timeseries over 30 days, on PostgreSQL.

Loads a million events for 100,000 meetings (duplicate reports, out-of-order ends, meetings
still running, meetings without a start), their callbacks and attempts, with COPY into a
database of its own (created, migrated, dropped afterwards), folding each meeting's state
with `core.services.events.fold` as the workers would. Then times `analytics.summary` and
`analytics.timeseries` (30 days, hourly: 720 buckets) for the user who owns the meetings,
each the median of several runs, next to a `SELECT count(*)` over the rows each query reads.
Prints figures, ratios and (with --explain) the plans; asserts nothing.

    .venv/bin/python bench/analytics.py [--meetings 100000] [--events-per-meeting 10]
        [--users 1] [--runs 7] [--explain] [--keep]
        [--server postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import migrate  # noqa: E402
from core.db import make_engine, make_session_factory  # noqa: E402
from core.services import analytics  # noqa: E402
from core.services.events import END, START, Happened, fold  # noqa: E402

DEFAULT_SERVER = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
NAIVE = "%Y-%m-%d %H:%M:%S.%f"


def naive(value: dt.datetime) -> str:
    """Render an aware time as the naive UTC text COPY stores."""
    return value.astimezone(dt.UTC).strftime(NAIVE)


def create_database(server: str, name: str) -> str:
    """Drop and create `name` on the server; return its SQLAlchemy URL."""
    url = sa.make_url(server)
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(server: str, name: str) -> None:
    """Drop the benchmark's database."""
    admin = sa.create_engine(sa.make_url(server), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def psycopg_dsn(url: str) -> str:
    """Return the libpq form of a SQLAlchemy URL."""
    parsed = sa.make_url(url)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def meeting_reports(
    rng: random.Random, now: dt.datetime, per_meeting: int
) -> list[tuple[str, dt.datetime]]:
    """Return one meeting's event reports, duplicates and out-of-order ones included."""
    start = now - dt.timedelta(seconds=rng.uniform(0, 30 * 86400))
    end = start + dt.timedelta(seconds=int(rng.lognormvariate(7.5, 0.8)))
    kind = rng.random()
    if kind < 0.03 or end > now:  # still running
        return [(START, start)] * per_meeting
    if kind < 0.05:  # ended without a start
        return [(END, end)] * per_meeting
    reports = [(START, start), (END, end)]
    if rng.random() < 0.2:  # an end reported before the start: out of order
        reports.append((END, start - dt.timedelta(seconds=rng.randint(1, 600))))
    while len(reports) < per_meeting:  # the platform reports again what it said
        reports.append(rng.choice(reports[:2]))
    return reports


def load(url: str, *, meetings: int, per_meeting: int, users: int, seed: int) -> dict[str, int]:
    """COPY users, meetings, events, deliveries and attempts; return the row counts."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    counts = dict.fromkeys(("meetings", "events", "deliveries", "attempts"), 0)
    event_id = delivery_id = attempt_id = 0
    with psycopg.connect(psycopg_dsn(url)) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY users (id, email, full_name, registration_date, signing_secret) FROM STDIN"
        ) as copy:
            for user in range(1, users + 1):
                copy.write_row(
                    (user, f"user{user}@bench.test", f"User {user}", naive(now), "whsec_x")
                )
        meeting_copy = cur.copy(
            "COPY meetings (id, user_id, kind, meeting_code, conference_id, organizer_code,"
            " participants, start_with_personal_url, viewer_app_detection, status, started_at,"
            " ended_at, duration_seconds, event_sequence, created_at, updated_at) FROM STDIN"
        )
        events: list[tuple[Any, ...]] = []
        deliveries: list[tuple[Any, ...]] = []
        attempts: list[tuple[Any, ...]] = []
        with meeting_copy as copy:
            for meeting_id in range(1, meetings + 1):
                user = (meeting_id % users) + 1
                reports = meeting_reports(rng, now, per_meeting)
                first = event_id + 1
                happened = [
                    Happened(id=first + n, type=t, at=at) for n, (t, at) in enumerate(reports)
                ]
                state = fold(happened)
                for h in happened:
                    event_id = h.id
                    payload = json.dumps({"type": h.type, "data": {"meetingId": meeting_id}})
                    events.append(
                        (h.id, f"evt_{h.id}", "platform", f"wh_{h.id}", h.type, naive(h.at),
                         naive(h.at + dt.timedelta(seconds=1)), user, meeting_id, payload,
                         naive(h.at + dt.timedelta(seconds=2)), state.roles[h.id], 0)
                    )  # fmt: skip
                for defining, type in ((state.start_id, START), (state.end_id, END)):
                    if defining is None:
                        continue
                    delivery_id += 1
                    made = happened[defining - first].at + dt.timedelta(seconds=2)
                    roll = rng.random()
                    status = "succeeded" if roll < 0.9 else "failed" if roll < 0.95 else "pending"
                    tries = {"succeeded": rng.choice((1, 1, 1, 2)), "failed": 8}.get(status, 1)
                    deliveries.append(
                        (delivery_id, f"msg_{delivery_id}", happened[defining - first].id, user,
                         meeting_id, type, 1, "https://hooks.bench.test/cb", "{}", status, tries,
                         naive(made), naive(made), 0)
                    )  # fmt: skip
                    for n in range(tries):
                        attempt_id += 1
                        attempts.append(
                            (attempt_id, delivery_id, naive(made + dt.timedelta(minutes=n)),
                             200, int(rng.lognormvariate(5, 0.7)))
                        )  # fmt: skip
                copy.write_row(
                    (meeting_id, user, "adhoc", f"{meeting_id:09d}", f"{meeting_id:09d}", "4821",
                     "[]", False, True, state.status,
                     naive(state.started_at) if state.started_at else None,
                     naive(state.ended_at) if state.ended_at else None,
                     state.duration_seconds, 2, naive(now), naive(now))
                )  # fmt: skip
        with cur.copy(
            "COPY events (id, public_id, source, source_event_id, type, occurred_at,"
            " received_at, user_id, meeting_id, payload, processed_at, outcome, enqueue_count)"
            " FROM STDIN"
        ) as copy:
            for row in events:
                copy.write_row(row)
        with cur.copy(
            "COPY deliveries (id, message_id, event_id, user_id, meeting_id, event_type,"
            " meeting_sequence, callback_url, body, status, attempt_count, created_at,"
            " updated_at, enqueue_count) FROM STDIN"
        ) as copy:
            for row in deliveries:
                copy.write_row(row)
        with cur.copy(
            "COPY delivery_attempts (id, delivery_id, attempted_at, status_code, latency_ms)"
            " FROM STDIN"
        ) as copy:
            for row in attempts:
                copy.write_row(row)
        for table in ("users", "meetings", "events", "deliveries", "delivery_attempts"):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608  (our names)
                f" (SELECT max(id) FROM {table}))"
            )
        conn.commit()
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE")
    counts.update(
        meetings=meetings, events=len(events), deliveries=len(deliveries), attempts=len(attempts)
    )
    return counts


BASELINES = {
    # The rows each query has to look at, counted as cheaply as PostgreSQL can.
    "summary": """
SELECT (SELECT count(*) FROM meetings WHERE user_id = :user_id
          AND (started_at >= :start AND started_at < :end
               OR ended_at >= :start AND ended_at < :end))
     + (SELECT count(*) FROM deliveries AS d JOIN delivery_attempts AS a ON a.delivery_id = d.id
        WHERE d.user_id = :user_id AND d.created_at >= :start AND d.created_at < :end)
""",
    "timeseries": """
SELECT count(*) FROM meetings WHERE user_id = :user_id AND started_at < :end
   AND coalesce(ended_at, :now) > :start
""",
}


def median_ms(run: Any, runs: int) -> float:
    """Return the median wall time of `runs` calls of `run`, after one warm-up, in ms."""
    run()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        run()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def explain(conn: sa.Connection, sql: str, params: dict[str, Any]) -> str:
    """Return the EXPLAIN (ANALYZE, BUFFERS) text of one query."""
    rows = conn.execute(analytics._text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"), params)
    return "\n".join(row[0] for row in rows)


def main() -> None:
    """Load, measure, report, drop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--meetings", type=int, default=100_000)
    parser.add_argument("--events-per-meeting", type=int, default=10)
    parser.add_argument("--users", type=int, default=1, help="meetings spread over N users")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE")
    parser.add_argument("--keep", action="store_true", help="leave the database in place")
    args = parser.parse_args()
    name = "mh_bench_analytics"
    url = create_database(args.server, name)
    try:
        migrate.upgrade(url)
        began = time.perf_counter()
        counts = load(
            url,
            meetings=args.meetings,
            per_meeting=args.events_per_meeting,
            users=args.users,
            seed=8,
        )
        print(f"loaded {counts} in {time.perf_counter() - began:.1f} s (COPY, then VACUUM ANALYZE)")
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        user_id = 1
        hourly = analytics.parse_range({"interval": "hour"}, buckets=True)
        span = analytics.parse_range({}, buckets=False)
        with sessions() as session:
            found = analytics.summary(session, user_id, span)
            print("summary:", json.dumps(found.render()))
        results = []
        with sessions() as session:
            summary_ms = median_ms(lambda: analytics.summary(session, user_id, span), args.runs)
            series_ms = median_ms(lambda: analytics.timeseries(session, user_id, hourly), args.runs)
            params = {**analytics.timeseries_params(user_id, hourly)}
            base: dict[str, float] = {}
            for key, sql in BASELINES.items():
                query = analytics._text(sql)
                base[key] = median_ms(
                    lambda q=query: session.execute(q, params).scalar(), args.runs
                )
            rows = {
                key: session.execute(analytics._text(sql), params).scalar()
                for key, sql in BASELINES.items()
            }
        results = [
            ("summary (30 days)", summary_ms, base["summary"], rows["summary"]),
            ("timeseries (30 days, hourly)", series_ms, base["timeseries"], rows["timeseries"]),
        ]
        print(f"\nmedian of {args.runs} runs, user {user_id} of {args.users}:")
        print(f"{'query':<30} {'ms':>8} {'count(*) ms':>12} {'ratio':>7} {'rows':>9}")
        for label, ms, baseline, n in results:
            print(f"{label:<30} {ms:>8.1f} {baseline:>12.1f} {ms / baseline:>7.1f} {n:>9}")
        if args.explain:
            summary_params = {"user_id": user_id, "start": span.start, "end": span.end}
            with engine.connect() as conn:
                for label, sql in (
                    ("started", analytics.STARTED_SQL),
                    ("active", analytics.ACTIVE_SQL),
                    ("ended", analytics.ENDED_SQL),
                    ("duration percentiles", analytics.DURATION_PERCENTILES_SQL),
                    ("deliveries", analytics.DELIVERIES_SQL),
                    ("latency percentile", analytics.LATENCY_SQL),
                ):
                    print(f"\n== EXPLAIN ANALYZE summary: {label}")
                    print(explain(conn, sql, summary_params))
                print("\n== EXPLAIN ANALYZE timeseries")
                print(explain(conn, analytics.timeseries_sql("postgresql"), params))
        engine.dispose()
    finally:
        if not args.keep:
            drop_database(args.server, name)


if __name__ == "__main__":
    main()
