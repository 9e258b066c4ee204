"""Benchmark: how long a platform event takes from its 202 to `processed_at`, worker running.

Starts a real receiver (gunicorn) and a real worker with beat in a temporary directory, on the
embedded SQLite database and broker unless DATABASE_URL and BROKER_URL are set, then posts
signed events at a steady rate and reads each event's `processed_at` from the database.
Prints figures; asserts nothing.

    .venv/bin/python bench/time_to_processed.py [--requests 300] [--rate 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import requests
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402
    command,
    new_run,
    paced,
    percentiles,
    post_event,
    seed_meetings,
    signed_event,
    stop,
    wait_http,
)
from core.db import make_engine, utcnow  # noqa: E402
from core.models import Event  # noqa: E402


def wait_all_processed(database_url: str, count: int, timeout: float) -> dict[str, float]:
    """Return processed_at (epoch seconds) per webhook-id once `count` are processed."""
    engine = make_engine(database_url, sqlite_immediate=False)
    deadline = time.monotonic() + timeout
    done: dict[str, float] = {}
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.select(Event.source_event_id, Event.processed_at).where(
                        Event.processed_at.is_not(None)
                    )
                ).all()
            done = {msg_id: at.timestamp() for msg_id, at in rows}
            if len(done) >= count:
                break
            time.sleep(0.2)
    finally:
        engine.dispose()
    return done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50, help="events per second")
    args = parser.parse_args()

    run = new_run()
    database_url = run.database_url
    meeting_ids = seed_meetings(database_url, args.requests)

    processes = []
    try:
        for argv in (["serve"], ["worker", "--concurrency", "2", "-B"]):
            processes.append(run.spawn([command("meetinghooks"), *argv], f"{argv[0]}.log"))
        base = run.base
        wait_http(f"{base}/healthz")
        http = requests.Session()
        signer = Webhook(run.secret)
        # One event first, so that the worker is up before the clock starts.
        body, headers = signed_event(signer, meeting_ids[0])
        http.post(f"{base}/v1/events", data=body, headers=headers, timeout=10).raise_for_status()
        wait_all_processed(database_url, 1, 60)

        acknowledged: dict[str, float] = {}
        ingest_ms = []
        for meeting_id in paced(meeting_ids[1:], args.rate):
            msg_id, took = post_event(http, base, signer, meeting_id)
            ingest_ms.append(took)
            acknowledged[msg_id] = utcnow().timestamp()
        done = wait_all_processed(database_url, len(acknowledged) + 1, 120)
        lags = [(done[m] - at) * 1000 for m, at in acknowledged.items() if m in done]

        i, lag = percentiles(ingest_ms), percentiles(lags)
        broker = run.env.get("BROKER_URL", "embedded")
        print(
            f"backend: {database_url.split(':')[0]}, broker: {broker}, "
            f"{len(acknowledged)} events at {args.rate:g}/s, worker --concurrency 2 running"
        )
        print(
            f"POST /v1/events    p50 {i['p50']:.1f} ms  p95 {i['p95']:.1f} ms  "
            + f"max {i['max']:.1f} ms"
        )
        print(
            f"202 -> processed   p50 {lag['p50']:.1f} ms  p95 {lag['p95']:.1f} ms  "
            f"max {lag['max']:.1f} ms  ({len(lags)}/{len(acknowledged)} processed)"
        )
    finally:
        for proc in processes:
            stop(proc)


if __name__ == "__main__":
    main()
