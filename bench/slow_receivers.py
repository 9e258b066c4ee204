"""Benchmark: event processing latency with fast callback receivers, then with hanging ones.

Starts a real receiver (gunicorn) and `meetinghooks worker -B` (the events and the deliveries
pool) in a temporary directory, on the embedded SQLite database and broker unless
DATABASE_URL and BROKER_URL are set (PostgreSQL: a fresh database beside the named one,
dropped at the end). Each phase registers callbacks on `--hooked` meetings and starts them,
then posts `--events` signed events for meetings without callbacks at `--rate` per second and
reads processed_at - received_at of each from the database. In the hanging phase every
callback waits past CALLBACK_TIMEOUT_SECONDS, and retries a second later, so that many
attempts are in flight the whole time. `--worker single` runs the former single pool
(`-Q events,deliveries --concurrency 2`) for comparison; events still unprocessed when the
wait ends count as that long (shown as ">="). Prints figures and ratios; asserts nothing.

    .venv/bin/python bench/slow_receivers.py [--events 200] [--rate 50] [--worker pools|single]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook as Signer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import (  # noqa: E402
    Run,
    command,
    new_run,
    paced,
    post_event,
    seed_meetings,
    signed_event,
    stop,
    wait_http,
)
from core.db import is_sqlite, make_engine, make_session_factory  # noqa: E402
from core.models import Event, Meeting, Webhook  # noqa: E402
from core.security import new_public_id  # noqa: E402

HANG_SECONDS = 600  # longer than any phase: the worker's read timeout ends each attempt


class Receiver(BaseHTTPRequestHandler):
    """/fast answers 204 at once; /hang holds the request (the client gives up first)."""

    protocol_version = "HTTP/1.1"
    in_flight = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/hang":
            with Receiver.lock:
                Receiver.in_flight += 1
            try:
                time.sleep(HANG_SECONDS)
            finally:
                with Receiver.lock:
                    Receiver.in_flight -= 1
            return
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


def fresh_postgres(url: str) -> str:
    """Create an empty database beside the one `url` names; return its URL."""
    name = f"mh_bench_slow_{os.getpid()}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_postgres(url: str) -> None:
    parsed = sa.make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    admin.dispose()


def add_hooks(database_url: str, meeting_ids: list[int], url: str) -> None:
    factory = make_session_factory(make_engine(database_url))
    with factory.begin() as session:
        for meeting_id in meeting_ids:
            meeting = session.get(Meeting, meeting_id)
            assert meeting is not None  # noqa: S101  (seeded just before)
            session.add(
                Webhook(
                    public_id=new_public_id("wh"),
                    user_id=meeting.user_id,
                    meeting_id=meeting_id,
                    event_type="meeting.start",
                    callback_url=url,
                )
            )


def latencies(database_url: str, ids: set[str], timeout: float) -> tuple[list[float], int]:
    """Wait for the events to be processed; return their latencies (ms) and how many were.

    An event still unprocessed when the wait ends counts as waiting until then.
    """
    engine = make_engine(database_url, sqlite_immediate=False)
    deadline = time.monotonic() + timeout
    query = sa.select(Event.source_event_id, Event.received_at, Event.processed_at).where(
        Event.source_event_id.in_(ids)
    )
    try:
        while True:
            with engine.connect() as conn:
                rows = conn.execute(query).all()
            processed = sum(1 for row in rows if row.processed_at is not None)
            if processed == len(ids) or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
    finally:
        engine.dispose()
    now = dt.datetime.now(dt.UTC)
    return [
        ((row.processed_at or now) - row.received_at).total_seconds() * 1000 for row in rows
    ], processed


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * q + 0.5) - 1))]


def run_phase(
    name: str,
    *,
    base: str,
    signer: Signer,
    hooked: list[int],
    plain: list[int],
    args: argparse.Namespace,
    database_url: str,
) -> dict[str, float]:
    """Start the hooked meetings, then post events for the plain ones; print the latencies."""
    http = requests.Session()
    for meeting_id in hooked:
        body, headers = signed_event(signer, meeting_id)
        http.post(f"{base}/v1/events", data=body, headers=headers, timeout=10).raise_for_status()
    if name == "hanging":
        wait_until = time.monotonic() + 30
        while Receiver.in_flight < len(hooked) and time.monotonic() < wait_until:
            time.sleep(0.1)
    else:
        time.sleep(2)  # the fast callbacks are made and answered
    in_flight = Receiver.in_flight
    posted: set[str] = set()
    for meeting_id in paced(plain, args.rate):
        posted.add(post_event(http, base, signer, meeting_id)[0])
    samples, processed = latencies(database_url, posted, args.wait)
    censored = ">=" if processed < len(posted) else ""
    figures = {"p50": quantile(samples, 0.5), "p99": quantile(samples, 0.99)}
    print(
        f"{name:<8} receivers: {in_flight:>2} callbacks hanging when events began; "
        f"{processed}/{len(posted)} processed; "
        f"received -> processed p50 {censored}{figures['p50']:.0f} ms  "
        f"p99 {censored}{figures['p99']:.0f} ms  max {censored}{max(samples):.0f} ms",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200, help="events per phase")
    parser.add_argument("--rate", type=float, default=50, help="events per second")
    parser.add_argument("--hooked", type=int, default=20, help="callbacks per phase")
    parser.add_argument("--timeout", type=float, default=10, help="CALLBACK_TIMEOUT_SECONDS")
    parser.add_argument("--wait", type=float, default=60, help="seconds to wait per phase")
    parser.add_argument("--worker", choices=["pools", "single"], default="pools")
    args = parser.parse_args()

    run = new_run(
        CALLBACK_ALLOWED_NETWORKS="127.0.0.0/8",
        CALLBACK_TIMEOUT_SECONDS=str(args.timeout),
        RETRY_SCHEDULE="1",  # a hanging callback comes straight back
        SWEEP_INTERVAL_SECONDS="1",
        BROKER_KEY_PREFIX=f"mh-bench-{os.getpid()}:",  # Redis: queues of this run only
    )
    env = run.env
    own_database = bool(env.get("DATABASE_URL")) and not is_sqlite(env["DATABASE_URL"])
    if own_database:
        env["DATABASE_URL"] = fresh_postgres(env["DATABASE_URL"])
    database_url = run.database_url
    n, h = args.events, args.hooked
    ids = seed_meetings(database_url, 2 * (n + h))
    fast_hooked, hang_hooked, fast_plain, hang_plain = (
        ids[:h], ids[h : 2 * h], ids[2 * h : 2 * h + n], ids[2 * h + n :]
    )  # fmt: skip

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_base = f"http://127.0.0.1:{server.server_address[1]}"
    add_hooks(database_url, fast_hooked, f"{hook_base}/fast")
    add_hooks(database_url, hang_hooked, f"{hook_base}/hang")

    processes: list[subprocess.Popen[bytes]] = []
    try:
        start(processes, run, args.worker)
        base = run.base
        wait_http(f"{base}/healthz")
        signer = Signer(run.secret)
        # One event first, so that the workers are up before the clock starts.
        body, headers = signed_event(signer, fast_plain[0])
        requests.post(f"{base}/v1/events", data=body, headers=headers, timeout=10)
        latencies(database_url, {headers["webhook-id"]}, 120)

        print(
            f"backend: {database_url.split(':')[0]}, broker: {env.get('BROKER_URL', 'embedded')}, "
            f"worker: {args.worker}, {n} events at {args.rate:g}/s per phase, "
            f"{h} callbacks, CALLBACK_TIMEOUT_SECONDS={args.timeout:g}"
        )
        fast = run_phase(
            "fast", base=base, signer=signer, hooked=fast_hooked, plain=fast_plain[1:],
            args=args, database_url=database_url,
        )  # fmt: skip
        hang = run_phase(
            "hanging", base=base, signer=signer, hooked=hang_hooked, plain=hang_plain,
            args=args, database_url=database_url,
        )  # fmt: skip
        print(
            f"ratio hanging/fast: p50 x{hang['p50'] / fast['p50']:.1f}  "
            f"p99 x{hang['p99'] / fast['p99']:.1f}"
        )
    finally:
        for proc in processes:
            if args.worker == "pools" and proc is not processes[0]:
                stop_pools(proc)
            else:
                stop(proc)
        server.shutdown()
        if own_database:
            drop_postgres(database_url)


def start(processes: list[subprocess.Popen[bytes]], run: Run, worker: str) -> None:
    """Start the receiver and the worker (both pools, or the former single one) into `processes`."""
    beat = ["-B", "-s", str(run.workdir / "beat-schedule")]
    worker_argv = (
        [command("meetinghooks"), "worker", *beat]
        if worker == "pools"
        else [sys.executable, "-m", "celery", "-A", "workers.main", "worker", *beat,
              "-Q", "events,deliveries", "--concurrency", "2", "-l", "INFO"]
    )  # fmt: skip
    processes.append(run.spawn([command("meetinghooks"), "serve"], "serve.log"))
    processes.append(run.spawn(worker_argv, "worker.log"))


def stop_pools(proc: subprocess.Popen[bytes]) -> None:
    """Stop `meetinghooks worker` (its Celery workers run in sessions of their own) at once."""
    proc.send_signal(signal.SIGTERM)  # one SIGTERM to each Celery worker: a warm shutdown
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # a second one kills what still waits on receivers
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
