"""/metrics after a scripted flow, counter by counter, on the processes production runs.

`meetinghooks serve` (two gunicorn processes) takes signed events, a duplicate, a forged one
and API calls up to a rate limit; `meetinghooks worker` (both pools, beat embedded, metrics on
WORKER_METRICS_PORT) processes them and sends callbacks to local receivers, one of which always
answers 500, which fires alerts. Each counter is then read where it is produced: the receiver's
/metrics for requests, ingest and queue lag, the worker's for processing, attempts, alerts and
pools. Last, every metric the Grafana dashboard names must be among what the two export.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.models import AlertType
from core.services import accounts, alerts
from tests.callback_receiver import Answer, CallbackReceiver, Received
from tests.conftest import INGEST_SECRET
from tests.deliveries_helpers import make_meeting_with_hooks
from tests.integration.conftest import PoolsWorker, answers_ok, free_port, wait_until
from tests.platform_events import new_msg_id, signed_event
from tests.unit.test_dashboard import dashboard_metric_names

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
UNKNOWN_MEETING = 990_001


def scrape(url: str) -> Samples:
    """Every sample at `url`; empty while it does not answer."""
    try:
        text = requests.get(url, timeout=5).text
    except requests.RequestException:
        return {}
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def named(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples of one name, by labels."""
    return {labels: found for (sample, labels), found in samples.items() if sample == name}


@dataclass
class MetricsWorker(PoolsWorker):
    """Both pools under `meetinghooks worker`, beat embedded, with a metrics port."""

    metrics_port: int = 0

    def environment(self) -> dict[str, str]:
        return {
            **super().environment(),
            "WORKER_METRICS_PORT": str(self.metrics_port),
            "CALLBACK_TIMEOUT_SECONDS": str(self.settings.callback_timeout_seconds),
        }

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


@pytest.fixture
def flow_settings(it_settings: Settings) -> Settings:
    return it_settings.model_copy(
        update={
            "retry_schedule": (1,),  # two attempts, then failed: `delivery.failed` fires
            # The callback the test holds must not time out, however slow the machine.
            "callback_timeout_seconds": 30,
            "inbox_sweep_after_seconds": 120,  # no re-sent event: processed exactly once
            "delivery_concurrency": 4,
        }
    )


@pytest.fixture
def metrics_worker(flow_settings: Settings, tmp_path: Path) -> Iterator[MetricsWorker]:
    handle = MetricsWorker(settings=flow_settings, workdir=tmp_path)
    handle.metrics_port = free_port()
    yield handle
    handle.stop()


@pytest.fixture
def served(flow_settings: Settings, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": flow_settings.database_url,
        "BROKER_URL": flow_settings.broker_url,
        "BROKER_KEY_PREFIX": flow_settings.broker_key_prefix,
        "INGEST_SIGNING_SECRET": INGEST_SECRET,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "WEB_THREADS": "2",
        "RATE_LIMIT_API": "3/minute",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # `serve` makes a fresh one
    env.pop("RATE_LIMIT_STORAGE_URL", None)
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "meetinghooks", "serve"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers_ok(f"{base}/healthz"), 60, "the receiver to listen")
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


class Gate:
    """Holds the callbacks to one path until released: an attempt in flight, on demand."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.open = threading.Event()

    def __call__(self, got: Received) -> None:
        if got.path == self.path:
            self.open.wait(60)


def post(base: str, meeting_id: int, type_: str = "meeting.start") -> tuple[str, str, dict]:
    msg_id, body, headers = signed_event(meeting_id, type_)
    response = requests.post(f"{base}/v1/events", data=body, headers=headers, timeout=30)
    assert response.status_code == 202, response.text
    return msg_id, body, headers


def test_every_counter_after_a_scripted_flow(
    served: str,
    metrics_worker: MetricsWorker,
    it_sessions: sessionmaker[Session],
) -> None:
    ok, failing = CallbackReceiver().start(), CallbackReceiver().start()
    failing.default = Answer(status=500)
    gate = Gate("/start")
    ok.on_request = gate
    try:
        with it_sessions.begin() as session:
            user, issued = accounts.create_user(session, email="m@example.com", full_name="M")
            user_id, token = user.id, issued.token
            for rule_type, params in (
                (AlertType.MEETING_SHORT, {"seconds": 300}),
                (AlertType.DELIVERY_FAILED, {}),
            ):
                alerts.create_rule(
                    session, user_id, type=rule_type, params=params, callback_url=ok.url("/alerts")
                )
        meeting = make_meeting_with_hooks(
            it_sessions,
            user_id,
            {"meeting.start": ok.url("/start"), "meeting.end": failing.url("/end")},
        )
        receiver_url = f"{served}/metrics"

        # --- the receiver alone: ingest, refusals, the API up to its rate limit -------------
        _, body, headers = post(served, meeting)
        duplicate = requests.post(f"{served}/v1/events", data=body, headers=headers, timeout=30)
        assert duplicate.status_code == 200
        post(served, UNKNOWN_MEETING)
        forged = {**headers, "webhook-id": new_msg_id()}
        refused = requests.post(f"{served}/v1/events", data=body, headers=forged, timeout=30)
        assert refused.status_code == 401
        assert requests.get(f"{served}/no/such/page/42", timeout=30).status_code == 404
        assert requests.request("BREW", f"{served}/healthz", timeout=30).status_code == 405
        answered = []
        while 429 not in answered:
            assert len(answered) < 20, answered  # 3 a minute in each of the 2 processes
            response = requests.get(
                f"{served}/v1/user", headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            answered.append(response.status_code)
        # No worker yet: the two events wait in the inbox, and the receiver sees them age.
        wait_until(
            lambda: value(scrape(receiver_url), "meetinghooks_inbox_lag_seconds") >= 1,
            30,
            "the inbox lag to show",
            every=0.5,
        )

        # --- the worker: a callback in flight is a busy deliveries slot ----------------------
        metrics_worker.start()
        metrics_worker.wait_ready()
        worker_url = metrics_worker.metrics_url
        try:
            wait_until(
                lambda: (
                    value(scrape(worker_url), "meetinghooks_worker_pool_busy", pool="deliveries")
                    == 1
                ),
                60,
                "the held callback to fill a deliveries slot",
            )
        finally:
            gate.open.set()
        wait_until(
            lambda: (
                value(scrape(worker_url), "meetinghooks_delivery_attempts_total", result="2xx") == 1
            ),
            60,
            "the start callback",
        )
        # The end only now, so that it is applied after the start (its outcome is `applied`).
        started = dt.datetime.now(dt.UTC)
        post(served, meeting, "meeting.end")

        def settled() -> bool:
            found = scrape(worker_url)
            return (
                value(found, "meetinghooks_delivery_attempts_total", result="http-5xx") == 2
                and value(found, "meetinghooks_delivery_attempts_total", result="2xx") == 3
            )

        try:
            wait_until(settled, 60, "two failed attempts and two alerts delivered", every=0.5)
        except AssertionError:
            print(metrics_worker.logs())  # noqa: T201  (the failing test's evidence)
            raise
        assert dt.datetime.now(dt.UTC) - started < dt.timedelta(seconds=60)
        wait_until(
            lambda: (
                value(scrape(receiver_url), "meetinghooks_inbox_lag_seconds") == 0
                and value(scrape(receiver_url), "meetinghooks_delivery_queue_lag_seconds") == 0
            ),
            30,
            "the queues to drain",
            every=0.5,
        )
        received = scrape(receiver_url)
        worked = scrape(worker_url)
    finally:
        gate.open.set()
        ok.stop()
        failing.stop()

    # --- the receiver's counters ------------------------------------------------------------
    assert named(received, "meetinghooks_ingest_events_total") == {
        frozenset({("result", "accepted"), ("type", "meeting.start")}): 2,
        frozenset({("result", "accepted"), ("type", "meeting.end")}): 1,
        frozenset({("result", "duplicate"), ("type", "meeting.start")}): 1,
    }
    assert named(received, "meetinghooks_ingest_rejected_total") == {
        frozenset({("reason", "bad-signature")}): 1
    }
    assert named(received, "meetinghooks_ingest_unknown_meeting_total") == {
        frozenset({("type", "meeting.start")}): 1
    }
    assert named(received, "meetinghooks_rate_limited_total") == {frozenset({("limit", "api")}): 1}
    requests_total = "meetinghooks_http_requests_total"
    for method, route, status, count in (
        ("POST", "/v1/events", "202", 3),
        ("POST", "/v1/events", "200", 1),
        ("POST", "/v1/events", "401", 1),
        ("GET", "unmatched", "404", 1),
        ("other", "unmatched", "405", 1),
        ("GET", "/v1/user", "200", answered.count(200)),
        ("GET", "/v1/user", "429", 1),
    ):
        found = value(received, requests_total, method=method, route=route, status=status)
        assert found == count, (method, route, status)
    assert {dict(labels)["route"] for labels in named(received, requests_total)} <= {
        "/v1/events", "/v1/user", "/healthz", "/metrics", "unmatched",
    }  # fmt: skip
    duration = "meetinghooks_http_request_duration_seconds_count"
    assert value(received, duration, method="POST", route="/v1/events") == 5
    assert value(received, duration, method="GET", route="/v1/user") == len(answered)
    assert value(received, "meetinghooks_scrape_collector_success", collector="queue_lag") == 1

    # --- the worker's counters --------------------------------------------------------------
    # Without the wake-ups that found their event applied already (by another one's drain):
    # how many there are depends on timing.
    processed = {
        labels: count
        for labels, count in named(worked, "meetinghooks_events_processed_total").items()
        if ("outcome", "already-processed") not in labels
    }
    assert processed == {
        frozenset({("type", "meeting.start"), ("outcome", "applied")}): 1,
        frozenset({("type", "meeting.end"), ("outcome", "applied")}): 1,
        frozenset({("type", "meeting.start"), ("outcome", "unknown-meeting")}): 1,
    }
    assert named(worked, "meetinghooks_delivery_attempts_total") == {
        frozenset({("result", "2xx")}): 3,  # the start callback and the two alerts
        frozenset({("result", "http-5xx")}): 2,  # the end callback, tried twice
    }
    assert value(worked, "meetinghooks_delivery_latency_seconds_count") == 5
    assert named(worked, "meetinghooks_alerts_fired_total") == {
        frozenset({("type", "meeting.short")}): 1,
        frozenset({("type", "delivery.failed")}): 1,
    }
    assert named(worked, "meetinghooks_worker_pool_capacity") == {
        frozenset({("pool", "events")}): 2,
        frozenset({("pool", "deliveries")}): 4,
    }
    assert value(worked, "meetinghooks_worker_pool_busy", pool="deliveries") == 0
    busy_seconds = "meetinghooks_worker_pool_busy_seconds_total"
    assert value(worked, busy_seconds, pool="events") > 0
    assert value(worked, busy_seconds, pool="deliveries") > 0
    assert len(ok.received) == 3
    assert len(failing.received) == 2

    # --- the dashboard names only what the two export ---------------------------------------
    exported = {name for name, _ in received} | {name for name, _ in worked}
    assert dashboard_metric_names() - exported == set()
