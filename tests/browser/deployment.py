"""`meetinghooks run` on a loopback port, and a scripted flow of users, meetings and callbacks."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.callback_receiver import Answer, CallbackReceiver
from tests.conftest import INGEST_SECRET
from tests.platform_events import signed_event

BOOT_SECONDS = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Deployment:
    """The service as `make run` starts it (embedded: SQLite and its broker under `home`)."""

    home: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / "run.log"

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "BROKER_URL", "SECRET_KEY", "PROMETHEUS_MULTIPROC_DIR")
        }
        return env | {
            "PORT": str(self.port),
            "INGEST_SIGNING_SECRET": INGEST_SECRET,
            # Fail a callback for good after three quick attempts, so the flow has a failure.
            "RETRY_SCHEDULE": "0.5,0.5",
            "WEB_CONCURRENCY": "1",
            "EVENT_CONCURRENCY": "1",
            "DELIVERY_CONCURRENCY": "4",
            "RATE_LIMIT_API": "off",
        }

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "meetinghooks", *args],
            cwd=self.home, env=self.env(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout

    def start(self) -> None:
        """Start `meetinghooks run` (it migrates first) and wait until it serves."""
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "meetinghooks", "run"],
                cwd=self.home, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_until(self._serves, BOOT_SECONDS, f"meetinghooks run to serve ({self.log})")
        # Both worker pools, or the flow's callbacks would wait for Celery to boot (slow on a
        # loaded machine) inside the flow's own time limit.
        wait_until(
            lambda: self.log.read_text(errors="replace").count(" ready.") >= 2,
            BOOT_SECONDS,
            f"both worker pools of meetinghooks run ({self.log})",
        )

    def _serves(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"meetinghooks run exited:\n{self.log.read_text()[-3000:]}")
        try:
            return requests.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass
class Person:
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Flow:
    """What the scripted flow made: people, meetings by name, and the two callback receivers."""

    alice: Person
    bob: Person
    hooks: CallbackReceiver
    failing: CallbackReceiver
    meetings: dict[str, int] = field(default_factory=dict)


def create_person(deployment: Deployment, email: str, name: str) -> Person:
    made = json.loads(deployment.cli("users", "create", "--email", email, "--name", name, "--json"))
    return Person(email=email, token=made["accessToken"])


def start_meeting(
    deployment: Deployment, person: Person, name: str, hook: str | None
) -> dict[str, Any]:
    """Schedule a meeting, start it with callbacks to `hook` and press the presenter link."""
    now = dt.datetime.now(dt.UTC)
    scheduled = requests.post(
        f"{deployment.url}/v1/meetings",
        json={
            "meetingName": name,
            "meetingStart": now.isoformat(),
            "meetingEnd": (now + dt.timedelta(hours=1)).isoformat(),
        },
        headers=person.headers,
        timeout=10,
    )
    assert scheduled.status_code == 201, scheduled.text
    body: dict[str, Any] = {}
    if hook:
        body["webhooks"] = {
            "meeting.start": {"callbackUrl": hook, "customCallbackData": {"ticket": 42}},
            "meeting.end": {"callbackUrl": hook},
        }
    made = requests.post(
        f"{deployment.url}/v1/meetings/{scheduled.json()['meetingId']}/start",
        json=body,
        headers=person.headers,
        timeout=10,
    )
    assert made.status_code == 200, made.text
    started: dict[str, Any] = made.json()
    pressed = requests.post(
        started["presenterLink"], headers={"Accept": "application/json"}, timeout=10
    )
    assert pressed.status_code == 200, pressed.text
    return started


def end_meeting(deployment: Deployment, person: Person, meeting_id: int) -> None:
    ended = requests.post(
        f"{deployment.url}/v1/meetings/{meeting_id}/end", headers=person.headers, timeout=10
    )
    assert ended.status_code == 200, ended.text


def report_platform_start(deployment: Deployment, meeting_id: int) -> None:
    """The conferencing platform reports a start, signed, through the ingest endpoint."""
    _, body, headers = signed_event(meeting_id, "meeting.start")
    sent = requests.post(f"{deployment.url}/v1/events", data=body, headers=headers, timeout=10)
    assert sent.status_code == 202, sent.text


def deliveries(deployment: Deployment, person: Person) -> list[dict[str, Any]]:
    listed = requests.get(
        f"{deployment.url}/v1/webhooks/deliveries", headers=person.headers, timeout=10
    )
    assert listed.status_code == 200, listed.text
    found: list[dict[str, Any]] = listed.json()["deliveries"]
    return found


def run_flow(deployment: Deployment) -> Flow:
    """Two people, four meetings, callbacks that succeed and one receiver that fails."""
    hooks = CallbackReceiver().start()
    failing = CallbackReceiver().start()
    failing.default = Answer(status=503, body=b'{"error": "maintenance window"}')
    flow = Flow(
        alice=create_person(deployment, "alice@example.com", "Alice Example"),
        bob=create_person(deployment, "bob@example.com", "Bob Example"),
        hooks=hooks,
        failing=failing,
    )
    sync = start_meeting(deployment, flow.alice, "Weekly sync", hooks.url("/hook"))
    flow.meetings["Weekly sync"] = sync["meetingId"]
    review = start_meeting(deployment, flow.alice, "Incident review", failing.url("/hook"))
    flow.meetings["Incident review"] = review["meetingId"]
    standup = start_meeting(deployment, flow.alice, "Standup", None)
    flow.meetings["Standup"] = standup["meetingId"]
    report_platform_start(deployment, standup["meetingId"])
    time.sleep(1.1)  # whole seconds apart, so the meetings have a duration
    end_meeting(deployment, flow.alice, sync["meetingId"])
    end_meeting(deployment, flow.alice, review["meetingId"])
    bobs = start_meeting(deployment, flow.bob, "Bob's private meeting", None)
    flow.meetings["Bob's private meeting"] = bobs["meetingId"]
    # Four callbacks: two arrive, two fail for good (three attempts each).
    wait_until(
        lambda: (
            sorted(d["status"] for d in deliveries(deployment, flow.alice))
            == ["failed", "failed", "succeeded", "succeeded"]
        ),
        60,
        "the flow's callbacks to succeed or fail for good",
    )
    return flow
