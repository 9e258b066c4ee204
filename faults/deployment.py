"""The service as production runs it, for `make faults`: four roles, each a process of its own.

`meetinghooks serve` (gunicorn), `meetinghooks worker events`, `meetinghooks worker deliveries`
and `meetinghooks beat`, started from a temporary directory on a database and a broker of the
suite's private servers (`faults.services`), so that one role can be killed -9 and started
again while the others run on. Built on `bench.harness.Stack` (directory, environment,
processes, and its stop that leaves no process behind).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.harness import ROOT, Stack, free_port, tree, wait_http

MH = str(Path(sys.executable).parent / "meetinghooks")
ROLES = {
    "serve": [MH, "serve"],
    "events": [MH, "worker", "events"],
    "deliveries": [MH, "worker", "deliveries"],
    "beat": [MH, "beat"],
}
# Retries every few seconds for about 90 s in all (72 s at the -20% jitter): a receiver that is
# down for a minute is still reached, and no retry waits long once it is back.
RETRY_SCHEDULE = "1,2,3,4," + ",".join(["5"] * 16)
# The lease of an attempt is 3 x this + 5 s (delivery_states.lease_duration): 14 s, so a
# delivery whose worker was killed mid-attempt is sent again soon.
CALLBACK_TIMEOUT_SECONDS = 3
SWEEP_INTERVAL_SECONDS = 1
INBOX_SWEEP_AFTER_SECONDS = 3
# Settings we set; the same names in the caller's environment must not leak in.
_OURS = (
    "DATABASE_", "BROKER_", "TEST_", "BENCH_", "RETRY_", "CALLBACK_", "SWEEP_", "INBOX_", "RATE_",
)  # fmt: skip


@dataclass
class Deployment:
    """One deployment: its Stack, its user, and the way to (re)start and kill each role."""

    name: str
    stack: Stack
    access_token: str = ""
    signing_secret: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.port}"

    def spawn(self, role: str) -> None:
        """Start a role; its log file gets appended to, so a restart keeps the earlier lives."""
        with (self.stack.workdir / f"{role}.log").open("ab") as out:
            self.stack.processes[role] = subprocess.Popen(
                ROLES[role], cwd=self.stack.workdir, env=self.stack.env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def log_size(self, role: str) -> int:
        path = self.stack.workdir / f"{role}.log"
        return path.stat().st_size if path.exists() else 0

    def wait_ready(self, role: str, since: int, timeout: float = 90) -> None:
        """Wait until a role serves: /healthz for serve, Celery's "ready." line for a pool."""
        if role == "serve":
            wait_http(f"{self.base_url}/healthz", timeout)
            return
        marker = b"beat: Starting..." if role == "beat" else b" ready."
        path = self.stack.workdir / f"{role}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with path.open("rb") as log:
                log.seek(since)
                if marker in log.read():
                    return
            if self.stack.processes[role].poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{role} did not start, see {path}")

    def start(self, role: str) -> None:
        since = self.log_size(role)
        self.spawn(role)
        self.wait_ready(role, since)

    def kill9(self, role: str) -> list[int]:
        """Kill -9 a role's whole process tree at once (supervisor, Celery worker, pool)."""
        process = self.stack.processes[role]
        pids = tree(process.pid)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        return pids

    def exited(self) -> dict[str, int]:
        """Return the roles whose process has ended, with their exit status."""
        return {
            role: code
            for role, process in self.stack.processes.items()
            if (code := process.poll()) is not None
        }

    def last_error(self, role: str) -> str:
        """Return the last CRITICAL or ERROR line of a role's log, if any."""
        path = self.stack.workdir / f"{role}.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        for marker in ("CRITICAL/", "ERROR/"):
            found = [line for line in lines if marker in line]
            if found:
                return found[-1].strip()[:300]
        return "(no error in its log)"

    def start_all(self) -> None:
        for role in ROLES:
            self.spawn(role)
        for role in ROLES:
            self.wait_ready(role, 0)

    def create_user(self) -> None:
        done = subprocess.run(
            [MH, "users", "create", "--email", f"faults-{self.name}@example.com",
             "--name", "Fault Suite", "--json"],
            env=self.stack.env, cwd=self.stack.workdir, capture_output=True, text=True,
            timeout=60, check=True,
        )  # fmt: skip
        user = json.loads(done.stdout)
        self.access_token = user["accessToken"]
        self.signing_secret = user["signingSecret"]

    def create_meetings(self, count: int, callback_url: str) -> list[int]:
        """Start `count` ad hoc meetings through the API, each with both callbacks registered."""
        body = {
            "startWithPersonalUrl": False,
            "webhooks": {
                "meeting.start": {
                    "callbackUrl": callback_url,
                    "customCallbackData": {"by": "faults"},
                },
                "meeting.end": {"callbackUrl": callback_url},
            },
        }
        headers = {"Authorization": f"Bearer {self.access_token}"}

        def one(_: int) -> int:
            for _try in range(10):
                response = requests.post(
                    f"{self.base_url}/v1/meetings/start", json=body, headers=headers, timeout=30
                )
                if response.status_code != 429:
                    break
                # The API's per-token limit (RATE_LIMIT_API): wait as a polite client does.
                time.sleep(min(float(response.headers.get("Retry-After", "1")), 30))
            if response.status_code != 201:
                raise RuntimeError(f"meeting start: {response.status_code} {response.text}")
            answer = response.json()
            refused = [k for k, v in answer["webhooksStatus"].items() if not v["registered"]]
            if refused:
                raise RuntimeError(f"callbacks not registered: {answer['webhooksStatus']}")
            return int(answer["meetingId"])

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            return list(pool.map(one, range(count)))

    def stop(self) -> None:
        self.stack.stop()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def new_deployment(name: str, database_url: str, broker_url: str) -> Deployment:
    """Migrate the database with `meetinghooks db upgrade` and build the roles' environment."""
    workdir = Path(tempfile.mkdtemp(prefix=f"mh-faults-{name}-"))
    port = free_port()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(_OURS)},
        "DATABASE_URL": database_url,
        "BROKER_URL": broker_url,
        "INGEST_SIGNING_SECRET": secret,
        "CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8",
        "RETRY_SCHEDULE": RETRY_SCHEDULE,
        "CALLBACK_TIMEOUT_SECONDS": str(CALLBACK_TIMEOUT_SECONDS),
        "SWEEP_INTERVAL_SECONDS": str(SWEEP_INTERVAL_SECONDS),
        "INBOX_SWEEP_AFTER_SECONDS": str(INBOX_SWEEP_AFTER_SECONDS),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "BEAT_SCHEDULE_FILE": str(workdir / "beat-schedule"),
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        "PYTHONPATH": str(ROOT),
        "MH_BENCH_RUN": str(workdir),  # Stack.stop finds a leftover process of ours by it
    }
    (workdir / "metrics").mkdir()
    subprocess.run(
        [MH, "db", "upgrade"], env=env, cwd=workdir, capture_output=True, timeout=120, check=True
    )
    stack = Stack(workdir, database_url, env, port, bare_port=0, ingest_secret=secret)
    return Deployment(name, stack)
