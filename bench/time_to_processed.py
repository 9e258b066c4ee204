"""Benchmark: how long a platform event takes from its 202 to `processed_at`, worker running.

Starts a real receiver (gunicorn) and a real worker with beat in a temporary directory, on the
embedded SQLite database and broker unless DATABASE_URL and BROKER_URL are set, then posts
signed events at a steady rate and reads each event's `processed_at` from the database.
Prints figures; asserts nothing.

    .venv/bin/python bench/time_to_processed.py [--requests 300] [--rate 50]
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import free_port, percentiles, seed_meetings, signed_event, wait_http  # noqa: E402
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

    workdir = Path(tempfile.mkdtemp(prefix="mh-bench-"))
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "INGEST_SIGNING_SECRET": secret,
        "WEB_CONCURRENCY": "2",
        "PYTHONPATH": str(ROOT),
    }
    database_url = env.get("DATABASE_URL") or f"sqlite:///{workdir}/var/meetinghooks.sqlite3"
    (workdir / "var").mkdir()
    meeting_ids = seed_meetings(database_url, args.requests)

    bin_dir = Path(sys.executable).parent
    processes = []
    try:
        for command in (["serve"], ["worker", "--concurrency", "2", "-B"]):
            log = (workdir / f"{command[0]}.log").open("wb")
            argv = [str(bin_dir / "meetinghooks"), *command]
            processes.append(
                subprocess.Popen(
                    argv,
                    cwd=workdir,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz")
        http = requests.Session()
        signer = Webhook(secret)
        # One event first, so that the worker is up before the clock starts.
        body, headers = signed_event(signer, meeting_ids[0])
        http.post(f"{base}/v1/events", data=body, headers=headers, timeout=10).raise_for_status()
        wait_all_processed(database_url, 1, 60)

        acknowledged: dict[str, float] = {}
        ingest_ms = []
        interval = 1 / args.rate
        next_at = time.monotonic()
        for meeting_id in meeting_ids[1:]:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            body, headers = signed_event(signer, meeting_id)
            started = time.perf_counter()
            response = http.post(f"{base}/v1/events", data=body, headers=headers, timeout=10)
            ingest_ms.append((time.perf_counter() - started) * 1000)
            if response.status_code != 202:
                raise SystemExit(f"bench: ingest answered {response.status_code}: {response.text}")
            acknowledged[headers["webhook-id"]] = utcnow().timestamp()
        done = wait_all_processed(database_url, len(acknowledged) + 1, 120)
        lags = [(done[m] - at) * 1000 for m, at in acknowledged.items() if m in done]

        i, lag = percentiles(ingest_ms), percentiles(lags)
        print(
            f"backend: {database_url.split(':')[0]}, broker: {env.get('BROKER_URL', 'embedded')}, "
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
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
