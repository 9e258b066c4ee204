from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from amqp.exceptions import NotAllowed
from celery import Celery

from core.config import Settings
from workers.beat import RETRY_AFTER_SECONDS, ResilientScheduler
from workers.celery_app import EVENTS_QUEUE, make_celery


@pytest.fixture
def beat_app(settings: Settings) -> Celery:
    return make_celery(settings)  # memory:// broker: the sweeps land in this process


def queued_sweeps(app: Celery) -> list[str]:
    """Drain the events queue of the in-memory broker and return the task names found."""
    names = []
    with app.connection_for_write() as conn, conn.SimpleQueue(EVENTS_QUEUE) as queue:
        while True:
            try:
                message = queue.get(block=False)
            except queue.Empty:
                return names
            names.append(message.headers["task"])
            message.ack()


def tick_until_sent(scheduler: ResilientScheduler, app: Celery) -> list[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        scheduler.tick()
        if sent := queued_sweeps(app):
            return sent
        time.sleep(0.05)
    return []


def test_beat_uses_the_scheduler_that_survives_broker_errors(beat_app: Celery) -> None:
    assert beat_app.conf.beat_scheduler == "workers.beat:ResilientScheduler"
    assert beat_app.conf.broker_connection_max_retries is None


def test_a_broker_refusing_the_connection_delays_the_sweeps_and_stops_nothing(
    beat_app: Celery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = ResilientScheduler(app=beat_app, schedule_filename=str(tmp_path / "beat"))
    refusals = []
    connect = ResilientScheduler._ensure_connected

    def refuse_twice(self: ResilientScheduler) -> Any:
        # RabbitMQ answers NOT_ALLOWED while a vhost is being recreated: kombu does not retry it.
        if len(refusals) < 2:
            refusals.append(1)
            raise NotAllowed("access to vhost refused", (10, 40), "Connection.open")
        return connect(self)

    monkeypatch.setattr(ResilientScheduler, "_ensure_connected", refuse_twice)
    try:
        waits = []
        deadline = time.monotonic() + 10
        while len(refusals) < 2 and time.monotonic() < deadline:
            waits.append(scheduler.tick())  # raises nothing while the broker refuses
            time.sleep(0.05)
        assert waits[-1] == RETRY_AFTER_SECONDS
        sent = tick_until_sent(scheduler, beat_app)
    finally:
        scheduler.close()
    assert len(refusals) == 2
    assert set(sent) <= {
        "workers.sweep.sweep_inbox",
        "workers.sweep.sweep_deliveries",
        "workers.sweep.sweep_alerts",
    }
    assert sent, "beat sent no sweep once the broker took connections again"
