"""The production path: a clean virtualenv with `pip install -c requirements.lock .` only.

No editable install, no dev extras, processes started from a directory of their own and
without PYTHONPATH: whatever only the dev extras (pytest, ruff, mypy, ...) bring in is missing
here, as it is on a production machine. Needs TEST_DATABASE_URL on PostgreSQL and the broker
URLs; a missing service skips, unless MEETINGHOOKS_REQUIRE_SERVICES=1 (CI) fails.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.db import is_sqlite
from tests.conftest import TEST_DATABASE_URL, drop_database, empty_postgres_database
from tests.integration.conftest import (
    RabbitVhost,
    _purge_with_kombu,
    missing,
    rabbitmq_vhost,
    redis_keys,
)

ROOT = Path(__file__).resolve().parents[2]
_counter = itertools.count()
_install_seconds: list[float] = []

# What a clean checkout holds: local state (virtualenvs, build output, caches) stays behind, so
# the wheel is built from the sources alone, as on a deploy (a stale build/ would leak files).
_NOT_IN_A_CHECKOUT = shutil.ignore_patterns(
    ".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
)
# Variables of the developer's shell that would point the processes at the checkout or at
# another deployment's services.
_DROPPED = (
    "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DATABASE_URL", "BROKER_URL", "BROKER_KEY_PREFIX",
    "PROMETHEUS_MULTIPROC_DIR", "WORKER_METRICS_PORT", "BEAT_SCHEDULE_FILE",
)  # fmt: skip


def clean_environment(**extra: str) -> dict[str, str]:
    """Return os.environ without what points at the checkout, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED}
    env.update(extra)
    return env


@dataclass(frozen=True)
class CleanInstall:
    """A virtualenv holding only meetinghooks and its non-dev dependencies."""

    venv: Path
    seconds: float
    packages: frozenset[str]

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


@pytest.fixture(scope="session")
def clean_install(tmp_path_factory: pytest.TempPathFactory) -> CleanInstall:
    if not TEST_DATABASE_URL or is_sqlite(TEST_DATABASE_URL):
        missing("TEST_DATABASE_URL is not a PostgreSQL server (the production path needs one)")
    base = tmp_path_factory.mktemp("production")
    source = base / "src"
    shutil.copytree(ROOT, source, ignore=_NOT_IN_A_CHECKOUT)
    venv = base / "venv"
    env = clean_environment()
    started = time.monotonic()
    # The interpreter under the dev virtualenv, so that the clean one shares nothing with it.
    python = getattr(sys, "_base_executable", sys.executable)
    steps = (
        [python, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
         "-c", str(source / "requirements.lock"), str(source)],
    )  # fmt: skip
    for argv in steps:
        done = subprocess.run(
            argv, cwd=base, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    seconds = time.monotonic() - started
    _install_seconds.append(seconds)
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        cwd=base, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    packages = frozenset(
        line.split("==")[0].lower() for line in listed.stdout.splitlines() if "==" in line
    )
    return CleanInstall(venv=venv, seconds=seconds, packages=packages)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for seconds in _install_seconds:
        terminalreporter.write_line(f"production: the clean install took {seconds:.1f} s")


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """A new, empty PostgreSQL database: `meetinghooks db upgrade` makes its schema."""
    if not TEST_DATABASE_URL or is_sqlite(TEST_DATABASE_URL):
        missing("TEST_DATABASE_URL is not a PostgreSQL server (the production path needs one)")
    name = f"mh_prod_{os.getpid()}_{next(_counter)}"
    url = empty_postgres_database(TEST_DATABASE_URL or "", name)
    yield url
    drop_database(url)


@dataclass(frozen=True)
class ProductionBroker:
    """The broker URL of one test, and the settings that keep it apart from other runs."""

    name: str
    url: str
    env: Mapping[str, str] = field(default_factory=dict)


@pytest.fixture(scope="session")
def production_rabbitmq() -> Iterator[RabbitVhost]:
    """TEST_RABBITMQ_URL on a vhost of this pytest process's production tests, when we may."""
    # Not the integration tests' vhost: both suites may run in one pytest process.
    with rabbitmq_vhost(f"mh-prod-{os.getpid()}") as found:
        yield found


@pytest.fixture(params=["redis", "rabbitmq"])
def production_broker(request: pytest.FixtureRequest) -> Iterator[ProductionBroker]:
    if request.param == "redis":
        prefix = f"mh-prod-{os.getpid()}-{next(_counter)}:"
        with redis_keys(prefix) as (url, _):
            yield ProductionBroker("redis", url, {"BROKER_KEY_PREFIX": prefix})
        return
    rabbit: RabbitVhost = request.getfixturevalue("production_rabbitmq")
    purge = _purge_with_kombu(rabbit.url)
    try:
        purge()
    except OSError as exc:
        missing(f"RabbitMQ unreachable at {rabbit.url}: {exc}")
    try:
        yield ProductionBroker("rabbitmq", rabbit.url)
    finally:
        purge()


@dataclass
class Service:
    """One long-running `meetinghooks` process, in a session of its own, logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (exit {self.process.poll()}), {self.log}:\n{text[-chars:]}"

    def stop(self) -> None:
        """SIGTERM the main process (it stops its children), then SIGKILL whatever is left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # the group may be gone already
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


@dataclass
class Deployment:
    """The processes of one production-like deployment run from the clean virtualenv."""

    install: CleanInstall
    workdir: Path
    env: dict[str, str]
    services: list[Service] = field(default_factory=list)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `meetinghooks ARGS` to completion; fail with its output unless it exits 0."""
        done = subprocess.run(
            [str(self.install.bin / "meetinghooks"), *args],
            cwd=self.workdir, env=self.env, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"meetinghooks {' '.join(args)} exited {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        return done

    def start(self, name: str, *args: str) -> Service:
        """Start `meetinghooks NAME ARGS` in the background, its output to NAME.log."""
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(self.install.bin / "meetinghooks"), name, *args],
                cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        service = Service(name, process, log)
        self.services.append(service)
        return service

    def logs(self) -> str:
        return "\n".join(service.tail() for service in self.services)

    def assert_running(self) -> None:
        dead = [s for s in self.services if s.process.poll() is not None]
        assert not dead, f"{', '.join(s.name for s in dead)} exited early:\n{self.logs()}"

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `check` while every service runs; fail with their logs on exit or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_running()
            if check():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}:\n{self.logs()}")

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
