"""Processes, database and memory for `make bench`: the service as production runs it.

A `Stack` is one run's temporary directory, PostgreSQL database (created here, dropped at the
end), Redis key prefix, and the processes `meetinghooks serve`, `meetinghooks worker` (both
pools) and `meetinghooks beat`, each started from that directory. Pools can be paused
(SIGSTOP of their whole process tree) so that a phase measures one stage at a time.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core import migrate  # noqa: E402
from core.config import Settings  # noqa: E402
from core.db import make_engine, make_session_factory  # noqa: E402
from core.models import Meeting, User, Webhook  # noqa: E402
from core.security import new_public_id  # noqa: E402
from core.services import accounts  # noqa: E402
from meetinghooks.cli import _gunicorn_argv  # noqa: E402  (the same gunicorn settings as serve)

ADMIN_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    """Return a loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 60) -> None:
    """Wait until `url` answers 2xx."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):  # not up yet
            if requests.get(url, timeout=1).ok:
                return
        time.sleep(0.1)
    raise SystemExit(f"bench: {url} did not come up")


def tree(pid: int) -> list[int]:
    """Return `pid` and all its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def peak_rss_mb(pid: int) -> float:
    """Return the sum of VmHWM (peak resident size) over a process tree, in MiB."""
    total = 0
    for member in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


def cmdline(pid: int) -> str:
    """Return a process's command line, spaces between the arguments."""
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


@dataclass
class Stack:
    """One run's directory, database, broker prefix, secrets and processes."""

    workdir: Path
    database_url: str
    env: dict[str, str]
    port: int
    bare_port: int
    ingest_secret: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def dsn(self) -> str:
        """The database as a plain libpq URL, for the raw psycopg baseline."""
        return (
            sa.make_url(self.database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )

    def spawn(self, name: str, argv: list[str]) -> None:
        """Start a process in the run's directory, in a session of its own, logging to a file."""
        with (self.workdir / f"{name}.log").open("wb") as out:
            self.processes[name] = subprocess.Popen(
                argv, cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def start(self) -> None:
        """Start receiver, baseline receiver, both worker pools and beat; wait until up."""
        mh = str(Path(sys.executable).parent / "meetinghooks")
        self.spawn("serve", [mh, "serve"])
        settings = Settings.from_env(self.env)
        bare = _gunicorn_argv(settings.model_copy(update={"port": self.bare_port}))
        bare[bare.index("receiver.wsgi:app")] = "bench.bare_app:app"
        self.spawn("bare", bare)
        self.spawn("worker", [mh, "worker"])
        self.spawn("beat", [mh, "beat"])
        wait_http(f"http://127.0.0.1:{self.port}/healthz")
        wait_http(f"http://127.0.0.1:{self.bare_port}/healthz")
        deadline = time.monotonic() + 60
        while len(self.pools()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        if len(self.pools()) < 2:
            raise SystemExit(f"bench: worker pools did not start, see {self.workdir}/worker.log")

    def pools(self) -> dict[str, int]:
        """Return the pid of each Celery worker of `meetinghooks worker`, by queue."""
        found: dict[str, int] = {}
        for pid in tree(self.processes["worker"].pid)[1:]:
            line = cmdline(pid)
            for queue in ("events", "deliveries"):
                if f"-Q {queue} " in line and f"{queue}@" in line:
                    found.setdefault(queue, pid)
        return found

    def signal_tree(self, name: str, signum: int) -> None:
        """Send `signum` to a pool ('events', 'deliveries') or process ('beat') and its tree."""
        root = self.pools()[name] if name in ("events", "deliveries") else self.processes[name].pid
        for pid in tree(root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def pause(self, *names: str) -> None:
        """SIGSTOP each, outside any transaction of theirs.

        A process stopped inside one (the events pool taking a message whose events a drain
        applied already) would hold its snapshot through the next stage, and PostgreSQL could
        not prune the row versions that stage churns: each round's deliveries ran slower.
        """
        for name in names:
            for _ in range(200):
                self.signal_tree(name, signal.SIGSTOP)
                if not self.transactions_open():
                    break
                self.signal_tree(name, signal.SIGCONT)
                time.sleep(0.02)
            else:
                raise SystemExit(f"bench: {name} could not be paused outside a transaction")

    def vacuum_unless_autovacuum(self) -> bool:
        """VACUUM (ANALYZE) the run's database when the server's autovacuum is off; say so.

        Production servers run autovacuum (PostgreSQL's default); some machines here have it
        off, and a queue table that is never vacuumed grows dead row versions every round (two
        updates per delivery): each round's claims walked more of them than the last.
        """
        engine = sa.create_engine(self.database_url, poolclass=sa.NullPool)
        with engine.connect() as conn:
            if conn.exec_driver_sql("SHOW autovacuum").scalar() == "on":
                return False
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE)")
        return True

    def transactions_open(self) -> int:
        """Count the sessions of the run's database, but this one, inside a transaction."""
        with sa.create_engine(self.database_url, poolclass=sa.NullPool).connect() as conn:
            return int(
                conn.scalar(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                        " AND xact_start IS NOT NULL"
                    )
                )
                or 0
            )

    def resume(self, *names: str) -> None:
        for name in names:
            self.signal_tree(name, signal.SIGCONT)

    def stop(self) -> None:
        """Stop every process (resumed first, so that each can take its SIGTERM)."""
        for name in ("events", "deliveries", "beat"):
            with contextlib.suppress(KeyError, ProcessLookupError):
                self.resume(name)
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()  # `meetinghooks worker` stops its pools itself
        deadline = time.monotonic() + 20
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for pid in self._leftover_pools():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def _leftover_pools(self) -> list[int]:
        marker = str(self.workdir)
        return [
            int(entry.name)
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and marker in _environ(int(entry.name))
        ]


def _environ(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return ""


def new_stack() -> Stack:
    """Create the run's directory and PostgreSQL database, migrated; build the services' env."""
    workdir = Path(tempfile.mkdtemp(prefix="mh-bench-"))
    name = f"mh_bench_{os.getpid()}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    database_url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(database_url)
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:  # the raw psycopg baseline's table: an inbox row's shape
        conn.exec_driver_sql(
            "CREATE TABLE bench_baseline (id bigserial PRIMARY KEY, source_event_id text UNIQUE,"
            " body text NOT NULL, received_at timestamptz NOT NULL DEFAULT now())"
        )
    engine.dispose()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    port, bare_port = free_port(), free_port()
    env = {
        # Every callback of the bench goes to one sink, one host: the figures measure the pool
        # at its concurrency, not the per-host bound (8 by default); set it to measure that.
        "DELIVERY_MAX_IN_FLIGHT_PER_HOST": "32",
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "BROKER_"))},
        "DATABASE_URL": database_url,
        "BROKER_URL": REDIS_URL,
        "BROKER_KEY_PREFIX": f"mh-bench-{os.getpid()}:",
        "INGEST_SIGNING_SECRET": secret,
        "CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "BEAT_SCHEDULE_FILE": str(workdir / "beat-schedule"),
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        "PYTHONPATH": str(ROOT),
        "MH_BENCH_RUN": str(workdir),  # marks our processes, to find a leftover at the end
        # The figures are the service's own limits, not the rate limits' (bench/README.md).
        "RATE_LIMIT_API": "off",
        "RATE_LIMIT_INGEST": "off",
    }
    (workdir / "metrics").mkdir()
    return Stack(workdir, database_url, env, port, bare_port, secret)


def drop(stack: Stack) -> None:
    """Drop the run's database and delete its Redis keys."""
    import redis  # noqa: PLC0415  (celery[redis] brings it)

    parsed = sa.make_url(stack.database_url)
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')
    admin.dispose()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=stack.env["BROKER_KEY_PREFIX"] + "*", count=1000))
    if keys:
        client.delete(*keys)


def seed(database_url: str, urls: dict[str, int]) -> tuple[str, dict[str, list[int]]]:
    """Create a user and, per callback URL, that many meetings with a meeting.start webhook.

    Returns the user's signing secret and the meeting ids per URL.
    """
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    ids: dict[str, list[int]] = {}
    with factory.begin() as session:
        user, _ = accounts.create_user(session, email="bench@example.com", full_name="Bench")
        session.flush()
        code = 100_000_000
        for url, count in urls.items():
            rows = [
                {"user_id": user.id, "kind": "adhoc", "meeting_code": str(code + i),
                 "conference_id": str(code + i), "organizer_code": "1234"}
                for i in range(count)
            ]  # fmt: skip
            code += count
            meeting_ids = list(session.scalars(sa.insert(Meeting).returning(Meeting.id), rows))
            session.execute(
                sa.insert(Webhook),
                [
                    {"public_id": new_public_id("wh"), "user_id": user.id, "meeting_id": m,
                     "event_type": "meeting.start", "callback_url": url}
                    for m in meeting_ids
                ],
            )  # fmt: skip
            ids[url] = meeting_ids
        secret = session.get_one(User, user.id).signing_secret
    engine.dispose()
    return secret, ids
