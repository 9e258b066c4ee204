"""Benchmark: cost of one callback attempt against a bare POST to the same receiver.

Baseline: a plain keep-alive `requests` POST of a callback-sized body to a local receiver.
Measured: `run_delivery` on real delivery rows, as a worker process runs it: claim (one short
transaction), sign, POST through the SSRF-guarded adapter under its deadline, record (a second
short transaction). The gap is our per-callback overhead. On the embedded SQLite database unless
DATABASE_URL is set. Prints figures and ratios from this one run; asserts nothing.

    .venv/bin/python bench/deliveries.py [--callbacks 300]

`--pool` measures the deliveries pool as deployed instead: see `bench/delivery_pool.py`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
# BENCH_CODE=DIR times another copy of the code (the sequential mode imports it in-process).
sys.path.insert(0, str(ROOT))
sys.path.insert(0, os.environ.get("BENCH_CODE", str(ROOT)))

from bench.ingest import percentiles, report  # noqa: E402
from core import migrate  # noqa: E402
from core.config import Settings  # noqa: E402
from core.db import make_engine, make_session_factory  # noqa: E402
from core.models import Delivery, Meeting, Webhook  # noqa: E402
from core.security import new_public_id  # noqa: E402
from core.services import accounts, events, outbound_http  # noqa: E402
from workers.tasks.deliveries import run_delivery  # noqa: E402


class Receiver(BaseHTTPRequestHandler):
    """Reads the callback and answers 204, keeping the connection open."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


def seed_deliveries(settings: Settings, url: str, count: int) -> tuple[list[int], str]:
    """Create `count` started meetings with a meeting.start callback; return delivery ids, body."""
    migrate.upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    delivery_ids: list[int] = []
    with factory.begin() as session:
        user, _ = accounts.create_user(session, email="bench@example.com", full_name="Bench")
        for i in range(count):
            meeting = Meeting(
                user_id=user.id,
                kind="adhoc",
                meeting_code=f"{100000000 + i}",
                conference_id=f"{200000000 + i}",
                organizer_code="1234",
            )
            session.add(meeting)
            session.flush()
            session.add(
                Webhook(
                    public_id=new_public_id("wh"),
                    user_id=user.id,
                    meeting_id=meeting.id,
                    event_type="meeting.start",
                    callback_url=url,
                )
            )
            session.flush()
            _, applied = events.emit_internal(session, meeting, "meeting.start", source="api")
            delivery_ids.extend(applied.delivery_ids)
    with factory() as session:
        first = session.get(Delivery, delivery_ids[0])
        assert first is not None  # noqa: S101  (just created)
    return delivery_ids, first.body


def main() -> None:
    if "--pool" in sys.argv[1:]:
        from bench.delivery_pool import pool_main  # noqa: PLC0415  (its own imports, its own job)

        pool_main([a for a in sys.argv[1:] if a != "--pool"])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--callbacks", type=int, default=300)
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"

    workdir = Path(tempfile.mkdtemp(prefix="mh-bench-"))
    settings = Settings.from_env().model_copy(
        update={"callback_allowed_networks": (ipaddress.ip_network("127.0.0.0/8"),)}
    )
    if settings.embedded:
        settings = settings.model_copy(
            update={"database_url": f"sqlite:///{workdir / 'meetinghooks.sqlite3'}"}
        )
    delivery_ids, body = seed_deliveries(settings, url, args.callbacks)
    factory = make_session_factory(make_engine(settings.database_url))

    plain = requests.Session()
    baseline = []
    cpu_started = time.process_time()
    for _ in range(args.callbacks):
        started = time.perf_counter()
        plain.post(url, data=body.encode(), headers={"content-type": "application/json"})
        baseline.append((time.perf_counter() - started) * 1000)
    plain_cpu = (time.process_time() - cpu_started) * 1000 / args.callbacks

    guarded = outbound_http.make_http_session(settings.callback_allowed_networks)
    measured = []
    run_started = time.perf_counter()
    cpu_started = time.process_time()
    for delivery_id in delivery_ids:
        started = time.perf_counter()
        recorded = run_delivery(factory, delivery_id, settings=settings, http=guarded)
        measured.append((time.perf_counter() - started) * 1000)
        if recorded is None or recorded.status != "succeeded":
            raise SystemExit(f"bench: delivery {delivery_id} ended {recorded}")
    run_cpu = (time.process_time() - cpu_started) * 1000 / args.callbacks
    run_seconds = time.perf_counter() - run_started
    server.shutdown()

    b, m = percentiles(baseline), percentiles(measured)
    print(f"backend: {settings.database_url.split(':')[0]}, {args.callbacks} callbacks, sequential")
    report("plain POST", b)
    report("run_delivery", m)
    print(f"ratio delivery/plain: p50 x{m['p50'] / b['p50']:.1f}  p95 x{m['p95'] / b['p95']:.1f}")
    print(f"one worker process: {args.callbacks / run_seconds:.0f} callbacks/s")
    # process_time() of this process: the receiver thread's share is in both figures.
    print(
        f"CPU per callback: plain POST {plain_cpu:.2f} ms, run_delivery {run_cpu:.2f} ms "
        f"(ours: {run_cpu - plain_cpu:.2f} ms)"
    )


if __name__ == "__main__":
    main()
