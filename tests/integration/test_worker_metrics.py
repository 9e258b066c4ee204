"""`meetinghooks worker` serves the counters of both pools on WORKER_METRICS_PORT, once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.services import accounts
from tests.callback_receiver import CallbackReceiver
from tests.deliveries_helpers import make_meeting_with_hooks
from tests.integration.conftest import PoolsWorker, free_port, wait_until
from tests.platform_events import post_event

pytestmark = pytest.mark.integration

# Events processed: not the wake-ups that found their event applied by another one's drain.
PROCESSED = re.compile(
    r"^meetinghooks_events_processed_total\{(?![^}]*already-processed)[^}]*\} (\S+)$",
    re.MULTILINE,
)
ATTEMPTS = re.compile(r"^meetinghooks_delivery_attempts_total\{[^}]*\} (\S+)$", re.MULTILINE)


@dataclass
class CliWorker(PoolsWorker):
    """Both pools under `meetinghooks worker`, with a metrics port."""

    metrics_port: int = 0

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "WORKER_METRICS_PORT": str(self.metrics_port)}


@pytest.fixture
def cli_worker(it_settings: Settings, tmp_path: Path) -> Iterator[CliWorker]:
    handle = CliWorker(settings=it_settings, workdir=tmp_path, beat=False)
    handle.metrics_port = free_port()
    yield handle
    handle.stop()


def totals(port: int) -> tuple[float, float]:
    """(events processed, delivery attempts) on the worker's /metrics; -1 while not up."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except requests.RequestException:  # not up yet, or booting too slowly to answer
        return -1.0, -1.0
    return (
        sum(float(value) for value in PROCESSED.findall(text)),
        sum(float(value) for value in ATTEMPTS.findall(text)),
    )


def test_worker_metrics_add_up_both_pools_and_their_processes(
    it_app: Flask, it_sessions: sessionmaker[Session], cli_worker: CliWorker
) -> None:
    receiver = CallbackReceiver().start()
    try:
        with it_sessions.begin() as session:
            user, _ = accounts.create_user(session, email="m@example.com", full_name="M")
            user_id = user.id
        hooked = make_meeting_with_hooks(it_sessions, user_id, {"meeting.start": receiver.url()})
        cli_worker.start()
        wait_until(lambda: totals(cli_worker.metrics_port)[0] >= 0, 30, "the metrics port")
        cli_worker.wait_ready()
        # Events counted by the events pool's processes; the attempt by a deliveries thread.
        for meeting_id in (900_001, 900_002, hooked):  # unknown meetings: processed, not sent
            post_event(it_app, meeting_id)
        try:
            wait_until(
                lambda: totals(cli_worker.metrics_port) == (3, 1), 60, "3 events and 1 attempt"
            )
        except AssertionError:
            print(totals(cli_worker.metrics_port), cli_worker.logs())  # noqa: T201
            raise
        # Served once, by the supervising process: neither Celery worker took the port.
        assert "Address already in use" not in cli_worker.logs()
    finally:
        receiver.stop()
