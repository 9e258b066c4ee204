from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from tests.callback_receiver import CallbackReceiver
from tests.conftest import INGEST_SECRET
from tests.integration.conftest import answers_ok, free_port
from tests.platform_events import signed_event
from tests.production.conftest import (
    CleanInstall,
    Deployment,
    ProductionBroker,
    clean_environment,
)

pytestmark = [pytest.mark.production, pytest.mark.timeout(900)]
# A loaded two-core machine: a cold worker takes a while to boot, then everything is quick.
BOOT_SECONDS = 90
DELIVERY_SECONDS = 90
# Only the dev extras bring these in; a production install must not need them.
DEV_ONLY = {"pytest", "ruff", "mypy", "requests-mock", "pytest-socket", "pytest-timeout", "uv"}


@pytest.fixture
def deployment(
    clean_install: CleanInstall,
    empty_database_url: str,
    production_broker: ProductionBroker,
    tmp_path: Path,
) -> Iterator[Deployment]:
    port = free_port()
    path = os.environ.get("PATH", os.defpath)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = clean_environment(
        PATH=f"{clean_install.bin}{os.pathsep}{path}",
        TMPDIR=str(tmp_path),
        DATABASE_URL=empty_database_url,
        BROKER_URL=production_broker.url,
        **production_broker.env,
        INGEST_SIGNING_SECRET=INGEST_SECRET,
        HOST="127.0.0.1",
        PORT=str(port),
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        CALLBACK_ALLOWED_NETWORKS="127.0.0.0/8",
        RETRY_SCHEDULE="1,1,2,2,3",
        CALLBACK_TIMEOUT_SECONDS="3",
        SWEEP_INTERVAL_SECONDS="1",
        INBOX_SWEEP_AFTER_SECONDS="2",
        BEAT_SCHEDULE_FILE=str(tmp_path / "beat-schedule"),
        PROMETHEUS_MULTIPROC_DIR=str(metrics),
        WEB_CONCURRENCY="1",
        WEB_THREADS="4",
    )
    handle = Deployment(install=clean_install, workdir=tmp_path, env=env)
    yield handle
    handle.stop()


def ingest(base_url: str, meeting_id: int, type_: str) -> None:
    _, body, headers = signed_event(meeting_id, type_)
    response = requests.post(f"{base_url}/v1/events", data=body, headers=headers, timeout=30)
    assert response.status_code == 202, response.text


def test_clean_install_has_no_dev_dependencies(clean_install: CleanInstall) -> None:
    assert not DEV_ONLY & clean_install.packages, sorted(clean_install.packages)
    assert "meetinghooks" in clean_install.packages


def test_meeting_flow_through_a_clean_install(
    deployment: Deployment,
    receiver: CallbackReceiver,
) -> None:
    base = deployment.env["PUBLIC_BASE_URL"]
    deployment.run("db", "upgrade")
    created = json.loads(
        deployment.run(
            "users", "create", "--email", "prod@example.com", "--name", "Prod", "--json"
        ).stdout
    )
    for name in ("serve", "worker", "beat"):
        deployment.start(name)

    deployment.wait_until(lambda: answers_ok(f"{base}/healthz"), BOOT_SECONDS, f"serve on {base}")
    headers = {"Authorization": f"Bearer {created['accessToken']}"}
    started = requests.post(
        f"{base}/v1/meetings/start",
        json={
            "startWithPersonalUrl": False,
            "webhooks": {
                "meeting.start": {
                    "callbackUrl": receiver.url("/start"),
                    "customCallbackData": {"ticket": 42},
                },
                "meeting.end": {"callbackUrl": receiver.url("/end")},
            },
        },
        headers=headers,
        timeout=30,
    )
    assert started.status_code == 201, started.text
    meeting = started.json()
    assert all(s["registered"] for s in meeting["webhooksStatus"].values()), meeting
    presenter = requests.post(
        meeting["presenterLink"], headers={"Accept": "application/json"}, timeout=30
    )
    assert presenter.status_code == 200, presenter.text
    ingest(base, meeting["meetingId"], "meeting.end")

    deployment.wait_until(lambda: len(receiver.received) >= 2, DELIVERY_SECONDS, "both callbacks")
    verifier = Webhook(created["signingSecret"])
    by_path = {got.path: got for got in receiver.received}
    assert sorted(by_path) == ["/end", "/start"], [got.path for got in receiver.received]
    start_event = verifier.verify(by_path["/start"].body, by_path["/start"].headers)
    end_event = verifier.verify(by_path["/end"].body, by_path["/end"].headers)
    assert start_event["type"] == "meeting.start"
    assert end_event["type"] == "meeting.end"
    assert start_event["meetingId"] == end_event["meetingId"] == meeting["meetingId"]
    ready = requests.get(f"{base}/readyz", timeout=30)
    assert ready.status_code == 200, f"{ready.text}\n{deployment.logs()}"
    deployment.assert_running()
