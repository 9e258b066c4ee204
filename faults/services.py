"""Private PostgreSQL, Redis and RabbitMQ servers for `make faults`, each on a free port.

The machine's shared servers (127.0.0.1:5432, 6379, 5672) carry other people's tests at the same
time, and the suite stops and starts its servers: so it runs its own, each from a directory
under one temporary root, and removes them all at the end. "Restart" means the server process
really ends and a new one starts on the same port and the same data directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import free_port

START_SECONDS = 60


class ServiceError(RuntimeError):
    """A private server could not be started or stopped."""


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise ServiceError(f"{what} did not come up within {timeout:.0f} s")


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Postgres:
    """A PostgreSQL cluster of our own: initdb into a temporary directory, trust auth, loopback.

    initdb and the server refuse to run as root, so as root they run as the `postgres` user,
    which then owns the directory.
    """

    def __init__(self, root: Path) -> None:
        self.dir = root / "postgres"
        self.data = self.dir / "data"
        self.port = free_port()
        binaries = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/initdb"),
            key=lambda path: (
                int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0
            ),
        )
        initdb = binaries[-1] if binaries else shutil.which("initdb")
        if initdb is None:
            raise ServiceError("PostgreSQL's initdb is not installed")
        self.bin = Path(initdb).parent
        self.owner = "postgres" if os.geteuid() == 0 else None

    def _run(self, *argv: str, timeout: float = START_SECONDS + 10) -> None:
        prefix = ["runuser", "-u", self.owner, "--"] if self.owner else []
        done = subprocess.run(
            [*prefix, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise ServiceError(f"{' '.join(argv[:2])} failed: {done.stderr.strip()[-500:]}")

    def init(self) -> None:
        """Create the cluster and start it."""
        self.dir.mkdir(parents=True)
        if self.owner:
            account = pwd.getpwnam(self.owner)
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        self.start()

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir}"
            " -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
            "-w", "-t", str(START_SECONDS), "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; `immediate` kills every backend at once, as a crash would."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create a database; return its SQLAlchemy URL."""
        import sqlalchemy as sa  # noqa: PLC0415  (only the suite needs it, not the servers)

        admin = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        return self.url(name)

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(ServiceError, subprocess.TimeoutExpired):
                self.stop("immediate")


class Redis:
    """A redis-server of our own, without persistence: a restart loses every queued message."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "redis"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed")
        self.binary = binary

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with (self.dir / "redis.out").open("ab") as out:
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.dir)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        _wait(self.answers, START_SECONDS, "redis-server")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Shut the server down (SIGTERM; with no persistence it saves nothing) and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()


class RabbitMQ:
    """A RabbitMQ node of our own: its node name, ports, cookie, database, logs and plugins.

    HOME points into our directory, so the node and rabbitmqctl share a cookie of their own;
    no plugin is enabled (the machine's list would open the management ports the shared node
    holds) and the machine's config and env files are not read.
    """

    def __init__(self, root: Path) -> None:
        self.dir = root / "rabbitmq"
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"faults-{os.getpid()}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        base = Path("/usr/lib/rabbitmq/bin")
        # Not /usr/sbin's wrappers: as root they switch to the rabbitmq user, whose HOME holds
        # the shared node's cookie.
        server = base / "rabbitmq-server"
        ctl = base / "rabbitmqctl"
        if not server.exists():
            found, found_ctl = shutil.which("rabbitmq-server"), shutil.which("rabbitmqctl")
            if found is None or found_ctl is None:
                raise ServiceError("rabbitmq-server is not installed")
            server, ctl = Path(found), Path(found_ctl)
        self.server, self.ctl = server, ctl
        self.env = {
            **os.environ,
            "HOME": str(self.dir / "home"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "node.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def init(self) -> None:
        """Write the node's files and start it."""
        for sub in ("home", "mnesia", "log"):
            (self.dir / sub).mkdir(parents=True)
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users.guest = true\n"
        )
        (self.dir / "rabbitmq-env.conf").write_text("")
        self.start()

    def _ctl(self, *args: str, timeout: float = START_SECONDS + 10) -> str:
        done = subprocess.run(
            [str(self.ctl), "-q", "-n", self.node, *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise ServiceError(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()[-500:]}")
        return done.stdout

    def table(self, *args: str) -> list[str]:
        """Return the rows of a rabbitmqctl listing, tab-separated, without the headers."""
        out = self._ctl(*args, "--no-table-headers", timeout=30)
        return [line.strip() for line in out.splitlines() if line.strip()]

    def queued(self) -> dict[str, int]:
        """Return the messages in each queue (ready and unacknowledged)."""
        found = {}
        for line in self.table("list_queues", "name", "messages"):
            name, _, count = line.rpartition("\t")
            if count.isdigit():
                found[name] = int(count)
        return found

    def start(self) -> None:
        """Start the node and wait until its application runs and the AMQP port is open."""
        with (self.dir / "server.out").open("ab") as out:
            self.process = subprocess.Popen(
                [str(self.server)], env=self.env, cwd=self.dir, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self._ctl("wait", str(self.dir / "node.pid"), "--timeout", str(START_SECONDS))
        _wait(lambda: _port_open(self.port), START_SECONDS, "RabbitMQ's AMQP listener")

    def stop(self) -> None:
        """Stop the whole node (not only the application) and wait for its process to end."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self._ctl("stop", str(self.dir / "node.pid"))
                self.process.wait(timeout=30)
            except (ServiceError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, 9)
                self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
