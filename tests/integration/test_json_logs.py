"""LOG_FORMAT=json: every line of every process is JSON, and a request's id follows its work.

`meetinghooks run` (receiver, both worker pools, beat) is driven over real HTTP; an ingest
request sent with `X-Request-Id` must show up in the receiver's access line, in the lines of
the task that processes its event and in those of the callback delivery that event causes.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from core import task_names
from core.security import new_signing_secret
from tests.callback_receiver import CallbackReceiver
from tests.integration.run_command import Run, started_run
from tests.platform_events import event_body, new_msg_id, signed_headers

pytestmark = pytest.mark.integration

FLOW_SECONDS = 60


@pytest.fixture
def json_run(tmp_path: Path) -> Iterator[Run]:
    secret = new_signing_secret()
    with started_run(tmp_path, {"LOG_FORMAT": "json", "INGEST_SIGNING_SECRET": secret}) as run:
        yield run


def _carries(line: dict[str, Any], request_id: str) -> bool:
    return line.get("request_id") == request_id or request_id in line.get("request_ids", [])


def test_every_line_is_json_and_a_request_id_reaches_the_tasks_it_causes(
    json_run: Run, receiver: CallbackReceiver
) -> None:
    run = json_run
    user = run.cli("users", "create", "--email", "ann@example.com", "--name", "Ann")
    auth = {"Authorization": f"Bearer {user['accessToken']}"}
    meeting = requests.post(
        f"{run.base_url}/v1/meetings/start",
        headers=auth,
        json={
            "startWithPersonalUrl": False,
            "webhooks": {"meeting.start": {"callbackUrl": receiver.url("/hook")}},
        },
        timeout=10,
    ).json()

    request_id = "abc-" + secrets.token_hex(8)
    now = dt.datetime.now(dt.UTC)
    body = event_body(meeting["meetingId"], "meeting.start", at=now)
    headers = signed_headers(new_msg_id(), body, now, secret=run.env["INGEST_SIGNING_SECRET"])
    ingested = requests.post(
        f"{run.base_url}/v1/events",
        data=body,
        headers={**headers, "X-Request-Id": request_id},
        timeout=10,
    )
    assert ingested.status_code == 202, ingested.text
    assert ingested.headers["X-Request-Id"] == request_id
    receiver.wait_for(1, timeout=FLOW_SECONDS)
    other = requests.get(f"{run.base_url}/healthz", timeout=10)
    assert other.headers["X-Request-Id"] not in ("", request_id)
    run.stop()

    lines = [json.loads(text) for text in run.output().splitlines()]  # each one is JSON
    carrying = [line for line in lines if _carries(line, request_id)]
    access = [line for line in carrying if line.get("logger") == "gunicorn.access"]
    assert [(line["method"], line["path"], line["status"]) for line in access] == [
        ("POST", "/v1/events", 202)
    ]
    tasks = {line.get("task") for line in carrying}
    processed = {task_names.PROCESS_EVENT, task_names.PROCESS_EVENTS} & tasks
    assert processed, f"no event processing line carries the id: {carrying}"
    delivered = [line for line in carrying if line.get("task") == task_names.DELIVER]
    assert any("workers.delivery.attempted" in line["event"] for line in delivered), carrying
    # The id is that request's alone: no other request's line carries it.
    assert all(line.get("path", "/v1/events") == "/v1/events" for line in carrying)
