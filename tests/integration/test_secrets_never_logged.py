"""Secrets never leave: after a flow that handles every kind of secret, no log line holds one.

`meetinghooks run` (what `make run` starts: gunicorn, both worker pools and beat) is driven as
a user drives it, through the CLI and real HTTP, with callbacks to real local receivers. Then
every line the processes wrote (stdout and stderr of all of them) and the /metrics page are
searched for each secret, and for the random part of each after its well-known prefix.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from core.security import ACCESS_TOKEN_PREFIX, new_signing_secret
from tests.callback_receiver import Answer, CallbackReceiver, Received
from tests.integration.run_command import Run, started_run
from tests.platform_events import event_body, new_msg_id, signed_headers

pytestmark = pytest.mark.integration

SIGNING_PREFIX = "whsec_"
# Generous for a loaded 2-core machine; the whole test takes about 30 s per log format.
FLOW_SECONDS = 60


@pytest.fixture
def ingest_secret() -> str:
    return new_signing_secret()


# Both log formats: JSON lines carry the access log's fields (path, query, referer...) apart.
@pytest.fixture(params=["text", "json"])
def run(request: pytest.FixtureRequest, tmp_path: Path, ingest_secret: str) -> Iterator[Run]:
    settings = {
        "LOG_FORMAT": request.param,
        "INGEST_SIGNING_SECRET": ingest_secret,
        # One quick retry, so that the failing callback is `failed` (and alerted) within seconds.
        "RETRY_SCHEDULE": "1",
        "SWEEP_INTERVAL_SECONDS": "0.5",
        "CALLBACK_TIMEOUT_SECONDS": "5",
    }
    with started_run(tmp_path, settings) as handle:
        yield handle


def _distinctive_parts(secret: str) -> list[str]:
    """Return the secret and what identifies it without its public prefix."""
    parts = [secret]
    for prefix in (ACCESS_TOKEN_PREFIX, SIGNING_PREFIX):
        if secret.startswith(prefix):
            parts.append(secret.removeprefix(prefix))
    if secret.startswith(SIGNING_PREFIX):
        key = base64.b64decode(secret.removeprefix(SIGNING_PREFIX))
        parts += [key.hex(), base64.urlsafe_b64encode(key).decode()]
    return parts


def _leaks(text: str, found: dict[str, list[str]]) -> list[str]:
    """Return a description of every line of `text` that holds one of the secrets."""
    leaks = []
    for kind, values in found.items():
        for value in values:
            for part in _distinctive_parts(value):
                for line in text.splitlines():
                    if part in line:
                        leaks.append(f"{kind} ({part[:12]}...) in: {line.strip()[:300]}")
    return leaks


def _organizer_code_leaks(text: str, codes: list[str]) -> list[str]:
    # Four digits alone match ports, pids and years in any log: look for the forms in which a
    # code would be written (its field name, or a JSON string of exactly those digits), and
    # leave out process ids, which Prometheus' multiprocess mode writes as quoted labels.
    patterns = [re.compile(r"organizer.?code", re.IGNORECASE)]
    patterns += [re.compile(f'"{code}"') for code in codes]
    return [
        f"organizer code in: {line.strip()[:300]}"
        for line in text.splitlines()
        if any(pattern.search(re.sub(r'pid="[0-9]+"', "", line)) for pattern in patterns)
    ]


def _verified(received: Received, signing_secrets: list[str]) -> dict[str, Any]:
    """Check a callback's signature with each live secret; return its JSON body."""
    for secret in signing_secrets:
        body: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return body


def test_no_secret_appears_in_any_log_line_or_metric(run: Run, ingest_secret: str) -> None:
    found: dict[str, list[str]] = {"ingest signing secret": [ingest_secret]}
    hooks = CallbackReceiver().start()
    failing = CallbackReceiver().start()
    failing.default = Answer(status=500, body=b"down for maintenance")
    try:
        # Accounts: the CLI prints a token and a signing secret; a second token has one scope.
        user = run.cli(
            "users", "create", "--email", "alice@example.com", "--name", "Alice",
            "--personal-url", "alice",
        )  # fmt: skip
        reader = run.cli("tokens", "create", "--email", "alice@example.com", "--scope", "user_info")
        found["access token"] = [user["accessToken"], reader["accessToken"]]
        auth = {"Authorization": f"Bearer {user['accessToken']}"}
        me = requests.get(
            f"{run.base_url}/v1/user",
            headers={"Authorization": f"Bearer {reader['accessToken']}"},
            timeout=10,
        )
        assert me.status_code == 200, me.text
        refused = requests.get(
            f"{run.base_url}/v1/user", headers={"Authorization": "Bearer mhat_wrong"}, timeout=10
        )
        assert refused.status_code == 401

        # Signing secrets: the one `users create` printed, read back, then rotated.
        shown = requests.get(f"{run.base_url}/v1/webhooks/signing-secret", headers=auth, timeout=10)
        assert shown.json()["signingSecret"] == user["signingSecret"]
        rotated = requests.post(
            f"{run.base_url}/v1/webhooks/signing-secret/rotate", headers=auth, timeout=10
        ).json()
        signing_secrets = [rotated["signingSecret"], user["signingSecret"]]
        found["webhook signing secret"] = signing_secrets

        # Callback URLs may carry the receiver's own secret in the query string.
        url_keys = [secrets.token_hex(16) for _ in range(3)]
        found["secret in a callback URL"] = url_keys
        rule = requests.post(
            f"{run.base_url}/v1/alerts/rules",
            headers=auth,
            json={
                "type": "delivery.failed",
                "callbackUrl": hooks.url(f"/alerts?key={url_keys[0]}"),
            },
            timeout=10,
        )
        assert rule.status_code == 201, rule.text

        # A meeting with two callbacks, one of which always fails.
        started = requests.post(
            f"{run.base_url}/v1/meetings/start",
            headers=auth,
            json={
                "startWithPersonalUrl": False,
                "webhooks": {
                    "meeting.start": {"callbackUrl": hooks.url(f"/hook?key={url_keys[1]}")},
                    "meeting.end": {"callbackUrl": failing.url(f"/failing?key={url_keys[2]}")},
                },
            },
            timeout=10,
        ).json()
        assert all(entry["registered"] for entry in started["webhooksStatus"].values()), started
        # A second meeting whose presenter link is only looked at, never used: the link a
        # reader of the logs could still use.
        unused = requests.post(
            f"{run.base_url}/v1/meetings/start",
            headers=auth,
            json={"startWithPersonalUrl": True},
            timeout=10,
        ).json()
        links = [started["presenterLink"], unused["presenterLink"]]
        found["presenter link token"] = [link.rsplit("/", 1)[1] for link in links]
        codes = [m["audioConference"]["organizerCode"] for m in (started, unused)]

        # The presenter link as a person uses it: look at the page, press the button; again.
        for link in links:
            page = requests.get(link, timeout=10)
            assert page.status_code == 200
            assert "Start meeting" in page.text
        used = requests.post(links[0], headers={"Accept": "application/json"}, timeout=10)
        assert used.status_code == 200, used.text
        again = requests.post(links[0], headers={"Accept": "application/json"}, timeout=10)
        assert again.status_code == 410

        # The platform reports that the second meeting started (signed with the ingest secret).
        now = dt.datetime.now(dt.UTC)
        msg_id = new_msg_id()
        body = event_body(unused["meetingId"], "meeting.start", at=now)
        ingested = requests.post(
            f"{run.base_url}/v1/events",
            data=body,
            headers=signed_headers(msg_id, body, now, secret=ingest_secret),
            timeout=10,
        )
        assert ingested.status_code == 202, ingested.text
        forged = requests.post(
            f"{run.base_url}/v1/events",
            data=body,
            headers=signed_headers(new_msg_id(), body, now, secret=new_signing_secret()),
            timeout=10,
        )
        assert forged.status_code == 401

        ended = requests.post(
            f"{run.base_url}/v1/meetings/{started['meetingId']}/end", headers=auth, timeout=10
        )
        assert ended.status_code == 200, ended.text

        # meeting.start is delivered; meeting.end fails twice, is `failed`, and fires the alert.
        failing.wait_for(2, timeout=FLOW_SECONDS)
        got = hooks.wait_for(2, timeout=FLOW_SECONDS)
        bodies = [_verified(received, signing_secrets) for received in got]
        assert sorted(b["type"] for b in bodies) == ["alert.delivery.failed", "meeting.start"]
        deliveries = requests.get(
            f"{run.base_url}/v1/webhooks/deliveries",
            headers=auth,
            params={"meetingId": started["meetingId"], "status": "failed"},
            timeout=10,
        ).json()["deliveries"]
        assert [d["eventType"] for d in deliveries] == ["meeting.end"]
        for received in [*got, *failing.received]:
            assert not _organizer_code_leaks(received.body.decode(), codes)

        metrics = requests.get(f"{run.base_url}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "meetinghooks_delivery_attempts_total" in metrics.text
    finally:
        hooks.stop()
        failing.stop()
    run.stop()  # everything the processes had to say is in the log now
    output = run.output()

    # The scan below read the lines that matter: each process spoke, each request was logged.
    requests_logged = _requests_logged(output, json_lines=run.env["LOG_FORMAT"] == "json")
    for expected in (
        "GET /presenter/",
        "POST /presenter/",
        "POST /v1/events",
        "POST /v1/meetings/start",
    ):
        assert expected in requests_logged, f"{expected!r} is not in the output of make run"
    for expected in ("workers.delivery.attempted", "beat: Starting"):
        assert expected in output, f"{expected!r} is not in the output of make run"
    leaks = _leaks(output, found) + _organizer_code_leaks(output, codes)
    leaks += [f"/metrics: {leak}" for leak in _leaks(metrics.text, found)]
    leaks += [f"/metrics: {leak}" for leak in _organizer_code_leaks(metrics.text, codes)]
    assert leaks == [], "\n".join(leaks)


def _requests_logged(output: str, *, json_lines: bool) -> str:
    """Return the access log's "METHOD path" of every request, one a line."""
    if not json_lines:
        return output
    lines = [json.loads(line) for line in output.splitlines()]  # each line is JSON
    return "\n".join(
        f"{line['method']} {line['path']}" for line in lines if line["event"] == "http.request"
    )
