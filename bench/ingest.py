"""Benchmark: ingest latency of POST /v1/events against GET /healthz, and time to processed.

Runs a real receiver (gunicorn) and a real worker in a temporary directory, on the embedded
SQLite database and broker unless DATABASE_URL and BROKER_URL are set. Prints figures and
ratios against the baseline measured in the same run; asserts nothing.

    .venv/bin/python bench/ingest.py [--requests 300]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import requests
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import migrate  # noqa: E402
from core.db import make_engine, make_session_factory  # noqa: E402
from core.models import Event, Meeting  # noqa: E402
from core.services import accounts  # noqa: E402

T = TypeVar("T")


@dataclass(frozen=True)
class Run:
    """One benchmark run: its temporary directory, ingest secret, receiver port and environment."""

    workdir: Path
    secret: str
    port: int
    env: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        """DATABASE_URL as the environment has it now, else the embedded SQLite database."""
        return self.env.get("DATABASE_URL") or f"sqlite:///{self.workdir}/var/meetinghooks.sqlite3"

    def spawn(self, argv: list[str], log: str | None = None) -> subprocess.Popen[bytes]:
        """Start a process group in the run's directory, its output into `log` (or nowhere)."""
        out = (self.workdir / log).open("wb") if log else None
        try:
            return subprocess.Popen(
                argv, cwd=self.workdir, env=self.env, stdout=out or subprocess.DEVNULL,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        finally:
            if out is not None:
                out.close()  # the child has its own copy


def new_run(**extra_env: str) -> Run:
    """Make a temporary directory, a fresh ingest secret and the receiver's and workers' env."""
    workdir = Path(tempfile.mkdtemp(prefix="mh-bench-"))
    (workdir / "var").mkdir()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "INGEST_SIGNING_SECRET": secret,
        "WEB_CONCURRENCY": "2",
        "PYTHONPATH": str(ROOT),
        **extra_env,
    }
    return Run(workdir=workdir, secret=secret, port=port, env=env)


def command(name: str) -> str:
    """Return the path of an entry point of this virtualenv (`meetinghooks`)."""
    return str(Path(sys.executable).parent / name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:  # not up yet, or booting too slowly to answer
            pass
        time.sleep(0.1)
    raise SystemExit(f"bench: {url} did not come up")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": statistics.median(ordered),
        "p95": ordered[int(len(ordered) * 0.95) - 1],
        "max": ordered[-1],
    }


def report(label: str, figures: dict[str, float]) -> None:
    parts = "  ".join(f"{name} {value:.2f} ms" for name, value in figures.items())
    print(f"{label:<16}{parts}")


def signed_event(signer: Webhook, meeting_id: int) -> tuple[str, dict[str, str]]:
    msg_id = "msg_" + secrets.token_hex(8)
    now = dt.datetime.now(dt.UTC)
    body = json.dumps(
        {
            "type": "meeting.start",
            "timestamp": now.isoformat().replace("+00:00", "Z"),
            "data": {"meetingId": meeting_id},
        }
    )
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(msg_id, now, body),
    }
    return body, headers


def post_event(
    http: requests.Session, base: str, signer: Webhook, meeting_id: int
) -> tuple[str, float]:
    """Post one signed event; return its webhook-id and how long the 202 took (ms)."""
    body, headers = signed_event(signer, meeting_id)
    started = time.perf_counter()
    response = http.post(f"{base}/v1/events", data=body, headers=headers, timeout=10)
    took = (time.perf_counter() - started) * 1000
    if response.status_code != 202:
        raise SystemExit(f"bench: ingest answered {response.status_code}: {response.text}")
    return headers["webhook-id"], took


def paced(items: Iterable[T], rate: float) -> Iterator[T]:
    """Yield the items at a steady `rate` per second."""
    interval, next_at = 1 / rate, time.monotonic()
    for item in items:
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += interval
        yield item


def seed_meetings(database_url: str, count: int) -> list[int]:
    migrate.upgrade(database_url)
    factory = make_session_factory(make_engine(database_url))
    with factory.begin() as session:
        user, _ = accounts.create_user(session, email="bench@example.com", full_name="Bench")
        meetings = [
            Meeting(
                user_id=user.id,
                kind="adhoc",
                meeting_code=f"{100000000 + i}",
                conference_id=f"{200000000 + i}",
                organizer_code="1234",
            )
            for i in range(count)
        ]
        session.add_all(meetings)
        session.flush()
        return [m.id for m in meetings]


def wait_processed(database_url: str, count: int, timeout: float = 300) -> int:
    engine = make_engine(database_url)
    deadline = time.monotonic() + timeout
    processed = 0
    while time.monotonic() < deadline and processed < count:
        time.sleep(0.2)
        with engine.connect() as conn:
            processed = conn.execute(
                sa.select(sa.func.count()).where(Event.processed_at.is_not(None))
            ).scalar_one()
    engine.dispose()
    return processed


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process group; kill it when its warm shutdown lingers (the figures are in)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    run = new_run()
    database_url = run.database_url
    meeting_ids = seed_meetings(database_url, args.requests)

    serve = run.spawn([command("meetinghooks"), "serve"])
    worker = None
    try:
        base = run.base
        wait_http(f"{base}/healthz")
        http = requests.Session()
        signer = Webhook(run.secret)

        baseline = []
        for _ in range(args.requests):
            started = time.perf_counter()
            http.get(f"{base}/healthz", timeout=10).raise_for_status()
            baseline.append((time.perf_counter() - started) * 1000)

        ingest = []
        for meeting_id in meeting_ids:
            ingest.append(post_event(http, base, signer, meeting_id)[1])

        worker_started = time.monotonic()
        worker = run.spawn([command("meetinghooks"), "worker", "--concurrency", "2"], "worker.log")
        processed = wait_processed(database_url, args.requests)
        if processed < args.requests:
            print((run.workdir / "worker.log").read_text()[-3000:])
        drain_seconds = time.monotonic() - worker_started

        b, i = percentiles(baseline), percentiles(ingest)
        print(f"backend: {database_url.split(':')[0]}, {args.requests} requests each, sequential")
        report("GET  /healthz", b)
        report("POST /v1/events", i)
        print(
            f"ratio ingest/healthz: p50 x{i['p50'] / b['p50']:.1f}  p95 x{i['p95'] / b['p95']:.1f}"
        )
        print(
            f"worker drained {processed}/{args.requests} queued events in {drain_seconds:.1f} s "
            f"(incl. worker start-up): {processed / drain_seconds:.0f} events/s"
        )
    finally:
        for proc in (serve, worker):
            if proc is not None:
                stop(proc)


if __name__ == "__main__":
    main()
