"""Real worker processes against a real broker and a committed database.

Brokers follow the database backend: SQLite runs the embedded broker (kombu's SQLAlchemy
transport); PostgreSQL runs Redis (TEST_REDIS_URL, flushed before and after; a test marked
`restarts_broker` gets a redis-server of its own instead) and RabbitMQ (TEST_RABBITMQ_URL,
queues purged before and after). A missing service skips, unless
MEETINGHOOKS_REQUIRE_SERVICES=1 (CI) fails.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import requests
import sqlalchemy as sa
from flask import Flask
from redis.exceptions import RedisError
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import is_sqlite, make_engine, make_session_factory
from receiver import create_app
from tests.conftest import INGEST_SECRET, TEST_DATABASE_URL, drop_database, fresh_database_url

ROOT = Path(__file__).resolve().parents[2]
REQUIRE_SERVICES = os.environ.get("MEETINGHOOKS_REQUIRE_SERVICES") == "1"
_counter = itertools.count()

pytestmark = pytest.mark.integration


def missing(reason: str) -> None:
    """Skip locally; fail in CI, where every service must be there."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


def hold_database_down(
    database_url: str, seconds: float, held: threading.Event | None = None
) -> int:
    """Cut (PostgreSQL) or write-lock (SQLite) the database for `seconds`; return cuts made.

    PostgreSQL: an outage. Every other connection to the database (workers' and receiver's
    alike) is cut, again and again, as a failover or restart would.
    SQLite: a locked, slow database, not an outage. The write lock is held for less than the
    30 s busy timeout (core/db.py), so writers wait it out and nothing is cut (returns 0).
    `held` is set once the lock is held or the first round of cuts is made.
    """
    terminated = 0
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if is_sqlite(database_url):
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
            if held is not None:
                held.set()
            time.sleep(seconds)
            conn.exec_driver_sql("ROLLBACK")
        else:
            name = sa.make_url(database_url).database
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                terminated += len(
                    conn.execute(
                        sa.text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = :name AND pid <> pg_backend_pid()"
                        ),
                        {"name": name},
                    ).all()
                )
                if held is not None:
                    held.set()
                time.sleep(0.1)
    engine.dispose()
    return terminated


def answers_ok(url: str) -> bool:
    """Whether `url` answers 200 now; not listening, or booting too slowly to answer, is False."""
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class RedisServer:
    """A redis-server of the test's own, which it may stop and start mid-stream."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._answers, 10, "redis-server to start")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 that a test can cut: a database "down" for a while.

    While paused every open connection is closed and new ones are closed at once, as a
    server that went away would; resume() lets connections through again.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.paused = threading.Event()
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.paused.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            self._close(source, sink)

    def _close(self, *sockets: socket.socket) -> None:
        with self.lock:
            for sock in sockets:
                self.open.discard(sock)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def pause(self) -> None:
        self.paused.set()
        with self.lock:
            sockets = list(self.open)
        self._close(*sockets)

    def resume(self) -> None:
        self.paused.clear()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        self.pause()


@dataclass
class Broker:
    """The broker URL a test runs against, and how to lose its messages."""

    name: str
    url: str
    redis: RedisServer | None = None
    purge: Callable[[], None] = field(default=lambda: None)
    # Redis keys of this test carry it (BROKER_KEY_PREFIX): other runs sharing the database
    # never see our queues, and cleaning up deletes only ours.
    key_prefix: str = ""
    # Take the broker down (every queued message dies with it) and bring it back, when this
    # broker is ours to restart: a redis-server of our own, or our own RabbitMQ vhost.
    down: Callable[[], None] | None = None
    up: Callable[[], None] | None = None


def _purge_with_kombu(url: str) -> Callable[[], None]:
    def purge() -> None:
        from amqp.exceptions import NotFound  # noqa: PLC0415
        from kombu.connection import Connection  # noqa: PLC0415

        with Connection(url, connect_timeout=5) as conn:
            for queue in ("events", "deliveries"):
                channel = conn.channel()  # a purge of an undeclared queue closes its channel
                try:
                    channel.queue_purge(queue)
                except NotFound:
                    continue
                finally:
                    channel.close()

    return purge


def _brokers() -> list[str]:
    if TEST_DATABASE_URL and not is_sqlite(TEST_DATABASE_URL):
        return ["redis", "rabbitmq"]
    return ["embedded"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run on RabbitMQ only the tests marked `every_broker`; the rest run on Redis.

    Redis is the production broker. Where the broker's own behaviour decides the outcome (a
    killed worker's unacknowledged messages, a restart, a lost or redelivered message, a warm
    shutdown) RabbitMQ, whose acknowledgements work differently, must pass too. Elsewhere the
    outcome is decided by the database, and a second broker would only run the test again.
    """
    redundant = [
        item
        for item in items
        if getattr(item, "callspec", None) is not None
        and item.callspec.params.get("broker") == "rabbitmq"
        and item.get_closest_marker("every_broker") is None
    ]
    if redundant:
        config.hook.pytest_deselected(items=redundant)
        chosen = set(map(id, redundant))
        items[:] = [item for item in items if id(item) not in chosen]


def _flush_redis(url: str) -> Callable[[], None]:
    def flush() -> None:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            client.flushdb()
        finally:
            client.close()

    return flush


def _delete_redis_keys(url: str, prefix: str) -> Callable[[], None]:
    def delete() -> None:
        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    return delete


@contextlib.contextmanager
def redis_keys(prefix: str) -> Iterator[tuple[str, Callable[[], None]]]:
    """TEST_REDIS_URL and a function deleting the keys under `prefix`, before and after."""
    url = os.environ.get("TEST_REDIS_URL", "")
    if not url:
        missing("TEST_REDIS_URL is not set")
    delete = _delete_redis_keys(url, prefix)
    try:
        delete()
    except (OSError, RedisError) as exc:
        missing(f"Redis unreachable at {url}: {exc}")
    try:
        yield url, delete
    finally:
        delete()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class RabbitVhost:
    """The RabbitMQ URL the tests use, and the vhost when it is ours alone."""

    url: str
    vhost: str | None
    user: str

    def create(self) -> None:
        assert self.vhost is not None
        _rabbitmqctl("add_vhost", self.vhost)
        _rabbitmqctl("set_permissions", "-p", self.vhost, self.user, ".*", ".*", ".*")

    def delete(self) -> None:
        assert self.vhost is not None
        _rabbitmqctl("delete_vhost", self.vhost)


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitVhost]:
    """TEST_RABBITMQ_URL, on a virtual host of this pytest process when we may make one.

    Queues are named `events` and `deliveries` everywhere, so two suites on one vhost would
    take each other's messages. With rabbitmqctl at hand (the server runs here) each pytest
    process gets its own vhost; otherwise the URL's vhost is used and purged per test.
    """
    with rabbitmq_vhost(f"mh-it-{os.getpid()}") as found:
        yield found


@contextlib.contextmanager
def rabbitmq_vhost(vhost: str) -> Iterator[RabbitVhost]:
    """TEST_RABBITMQ_URL on `vhost`, made for the block and deleted after, when we may."""
    url = os.environ.get("TEST_RABBITMQ_URL", "")
    if not url:
        missing("TEST_RABBITMQ_URL is not set")
    parts = urlsplit(url)
    shared = RabbitVhost(url, None, parts.username or "guest")
    if shutil.which("rabbitmqctl") is None or parts.hostname not in ("127.0.0.1", "localhost"):
        yield shared
        return
    own = RabbitVhost(urlunsplit(parts._replace(path=f"/{vhost}")), vhost, shared.user)
    try:
        own.create()
    except (OSError, subprocess.SubprocessError):
        yield shared  # not allowed to administer the server: share the URL's vhost
        return
    try:
        yield own
    finally:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            own.delete()


@pytest.fixture(params=_brokers())
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    name: str = request.param
    if name == "embedded":
        url = f"sqla+sqlite:///{tmp_path}/broker.sqlite3"
        yield Broker(name, url, purge=_purge_embedded(tmp_path / "broker.sqlite3"))
        return
    if name == "redis" and request.node.get_closest_marker("restarts_broker"):
        # Stopping the shared TEST_REDIS_URL server would hurt others: run one of our own.
        if shutil.which("redis-server") is None:
            missing("redis-server is not installed (needed to restart a broker)")
        server = RedisServer(port=free_port(), workdir=tmp_path)
        server.start()
        try:
            yield Broker(
                name,
                server.url,
                redis=server,
                purge=_flush_redis(server.url),
                down=server.stop,
                up=server.start,
            )
        finally:
            server.stop()
        return
    if name == "redis":
        prefix = f"mh-it-{os.getpid()}-{next(_counter)}:"
        with redis_keys(prefix) as (url, delete):
            yield Broker(name, url, purge=delete, key_prefix=prefix)
        return
    rabbit: RabbitVhost = request.getfixturevalue("rabbitmq")
    url = rabbit.url
    purge = _purge_with_kombu(url)
    try:
        purge()
    except OSError as exc:
        missing(f"RabbitMQ unreachable at {url}: {exc}")
    own = rabbit.vhost is not None
    try:
        # Deleting our vhost closes its connections and drops its queues with every message,
        # as a broker restart without persistence would, and touches no one else.
        yield Broker(
            name,
            url,
            purge=purge,
            down=rabbit.delete if own else None,
            up=rabbit.create if own else None,
        )
    finally:
        if own:
            with contextlib.suppress(subprocess.SubprocessError):
                rabbit.create()  # a test that failed mid-outage leaves it down
        purge()


def _purge_embedded(path: Path) -> Callable[[], None]:
    def purge() -> None:
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 30})
        with engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM kombu_message")
        engine.dispose()

    return purge


@pytest.fixture
def it_database_url(tmp_path: Path) -> Iterator[str]:
    url = fresh_database_url(f"mh_it_{os.getpid()}_{next(_counter)}", str(tmp_path))
    yield url
    drop_database(url)


@pytest.fixture
def it_engine(it_database_url: str) -> Iterator[Engine]:
    engine = make_engine(it_database_url, sqlite_immediate=False)
    yield engine
    engine.dispose()


@pytest.fixture
def it_sessions(it_database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(it_database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def it_settings(it_database_url: str, broker: Broker) -> Settings:
    return Settings(
        database_url=it_database_url,
        broker_url=broker.url,
        public_base_url="https://meet.example.test",
        ingest_signing_secret=INGEST_SECRET,
        broker_key_prefix=broker.key_prefix,
        sweep_interval_seconds=1,
        inbox_sweep_after_seconds=2,
        callback_allowed_networks=("127.0.0.0/8",),  # type: ignore[arg-type]
        retry_schedule=(1, 1, 2, 2, 3),
        callback_timeout_seconds=3,
    )


@pytest.fixture
def it_app(it_settings: Settings, it_sessions: sessionmaker[Session]) -> Iterator[Flask]:
    # The real Celery publisher: nothing is recorded or faked between receiver and worker.
    app = create_app(it_settings, session_factory=it_sessions)
    app.testing = True
    yield app
    app.extensions["meetinghooks.enqueue"].close()


@dataclass
class Worker:
    """A `celery worker -B` process group that a test can kill -9 and start again."""

    settings: Settings
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def environment(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": s.database_url,
            "BROKER_URL": s.broker_url,
            "BROKER_KEY_PREFIX": s.broker_key_prefix,
            "INGEST_SIGNING_SECRET": s.ingest_signing_secret or "",
            "SWEEP_INTERVAL_SECONDS": str(s.sweep_interval_seconds),
            "INBOX_SWEEP_AFTER_SECONDS": str(s.inbox_sweep_after_seconds),
            "CALLBACK_ALLOWED_NETWORKS": ",".join(str(n) for n in s.callback_allowed_networks),
            "RETRY_SCHEDULE": ",".join(str(n) for n in s.retry_schedule),
            "CALLBACK_TIMEOUT_SECONDS": str(s.callback_timeout_seconds),
        }

    def start(self) -> None:
        self.starts += 1
        with (self.workdir / f"worker-{self.starts}.log").open("wb") as log:
            self.process = self._spawn(log)

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.main", "worker", "-B",
             "-Q", "events,deliveries", "--concurrency", "2", "-P", "prefork", "-l", "INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             # A node name of its own: RabbitMQ keeps a killed node's reply queue a moment.
             "-n", f"it-{os.getpid()}-{self.starts}-{next(_counter)}@%h",
             "-s", str(self.workdir / f"beat-{self.starts}")],
            cwd=self.workdir, env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL the whole group: main process, pool children and embedded beat."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # the group may be gone already
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=20)
        self.process = None

    def stop(self) -> None:
        """Shut down warmly (SIGTERM to the main process), then make sure nothing is left."""
        if self.process is None:
            return
        if self.process.poll() is None:
            # The main process stops its pool children itself; signalling them directly too
            # turns a warm shutdown into lost-worker errors and a long wait.
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        self.kill()

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-4000:] for p in sorted(self.workdir.glob("worker-*.log"))
        )


@pytest.fixture
def worker(it_settings: Settings, tmp_path: Path) -> Iterator[Worker]:
    handle = Worker(settings=it_settings, workdir=tmp_path)
    yield handle
    handle.stop()


def count(engine: Engine, query: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def child_pids(pid: int) -> list[int]:
    """Return the pids of `pid`'s direct children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().split(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == pid:
            found.append(int(entry.name))
    return found


def wait_or_show_logs(worker: Worker, check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until `check()` holds; print the worker's logs if it never does."""
    try:
        wait_until(check, timeout, what)
    except AssertionError:
        print(worker.logs())  # noqa: T201  (the failing test's evidence)
        raise


@dataclass
class PoolsWorker(Worker):
    """`meetinghooks worker [pool]` as production runs it: a supervisor, one Celery worker each.

    With `pool_args=()` both pools run (events: prefork, with beat embedded by -B; deliveries:
    threads); `("deliveries",)` runs that pool alone. Each Celery worker is in a session of its
    own, so kill() signals every group, not just the supervisor's.
    """

    pool_args: tuple[str, ...] = ()
    beat: bool = True

    def environment(self) -> dict[str, str]:
        env = {
            **super().environment(),
            "EVENT_CONCURRENCY": str(self.settings.event_concurrency),
            "DELIVERY_CONCURRENCY": str(self.settings.delivery_concurrency),
            "DELIVERY_MAX_IN_FLIGHT_PER_HOST": str(self.settings.delivery_max_in_flight_per_host),
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the command makes a fresh one
        return env

    @property
    def pools(self) -> int:
        return 1 if self.pool_args else 2

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        beat = ["-B", "-s", str(self.workdir / f"beat-{self.starts}")] if self.beat else []
        return subprocess.Popen(
            [sys.executable, "-m", "meetinghooks", "worker", *self.pool_args,
             "--without-gossip", "--without-mingle", "--without-heartbeat", *beat,
             # Node names of their own (prefixed by each pool's name): see Worker._spawn.
             "-n", f"it-{os.getpid()}-{self.starts}-{next(_counter)}@%h"],
            cwd=self.workdir, env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def ready(self) -> bool:
        """Whether every Celery worker of the current start says it is ready."""
        log = self.workdir / f"worker-{self.starts}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return len(set(re.findall(r" (\S+@\S+) ready\.", text))) >= self.pools

    def wait_ready(self, timeout: float = 60) -> None:
        try:
            wait_until(self.ready, timeout, "every pool to be ready")
        except AssertionError:
            print(self.logs())  # noqa: T201  (the failing test's evidence)
            raise

    def kill(self) -> None:
        """SIGKILL the supervisor and every Celery worker group it started."""
        if self.process is None:
            return
        for group in (*child_pids(self.process.pid), self.process.pid):
            with contextlib.suppress(ProcessLookupError):  # the group may be gone already
                os.killpg(group, signal.SIGKILL)
        self.process.wait(timeout=20)
        self.process = None


@pytest.fixture
def pools_worker(it_settings: Settings, tmp_path: Path) -> Iterator[PoolsWorker]:
    handle = PoolsWorker(settings=it_settings, workdir=tmp_path)
    yield handle
    handle.stop()
