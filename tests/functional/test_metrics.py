"""/metrics in-process: requests by route template, and the queue lag read at scrape time."""

from __future__ import annotations

import datetime as dt
import time

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.db import utcnow
from core.models import Delivery, Event
from receiver import create_app
from receiver.ops import QUEUE_LAG
from receiver.queue_lag import CACHE_SECONDS, QueueLagCollector
from tests.conftest import Account, Enqueued
from tests.deliveries_helpers import make_delivery, record

HOOK = "https://93.184.216.34/hook"


def requests_total(method: str, route: str, status: int) -> float:
    labels = {"method": method, "route": route, "status": str(status)}
    return REGISTRY.get_sample_value("meetinghooks_http_requests_total", labels) or 0.0


def timed(method: str, route: str) -> float:
    labels = {"method": method, "route": route}
    return (
        REGISTRY.get_sample_value("meetinghooks_http_request_duration_seconds_count", labels) or 0.0
    )


def scraped(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


class TestRequests:
    def test_counted_by_route_template_and_status_never_by_path(
        self, client: FlaskClient, account: Account
    ) -> None:
        route = "/v1/meetings/<int:meeting_id>"
        before = requests_total("GET", route, 404), timed("GET", route)
        for meeting_id in (11, 12, 13):
            response = client.get(f"/v1/meetings/{meeting_id}", headers=account.headers)
            assert response.status_code == 404
        assert requests_total("GET", route, 404) == before[0] + 3
        assert timed("GET", route) == before[1] + 3
        assert b"/v1/meetings/11" not in client.get("/metrics").data

    def test_refused_before_the_view_still_counted(self, client: FlaskClient) -> None:
        before = requests_total("GET", "/v1/user", 401)
        assert client.get("/v1/user").status_code == 401
        assert requests_total("GET", "/v1/user", 401) == before + 1

    def test_unknown_paths_and_methods_add_no_label_values(self, client: FlaskClient) -> None:
        unmatched = requests_total("GET", "unmatched", 404)
        odd = requests_total("other", "unmatched", 405)
        assert client.get("/a/path/of/the/clients/choosing").status_code == 404
        assert client.open("/healthz", method="BREW").status_code == 405
        assert requests_total("GET", "unmatched", 404) == unmatched + 1
        assert requests_total("other", "unmatched", 405) == odd + 1
        text = client.get("/metrics").get_data(as_text=True)
        assert "choosing" not in text
        assert "BREW" not in text


class TestQueueLag:
    def test_ages_of_the_oldest_due_delivery_and_unprocessed_event(
        self, client: FlaskClient, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        due = make_delivery(session_factory, account.id, HOOK)
        leased = make_delivery(session_factory, account.id, HOOK)
        later = make_delivery(session_factory, account.id, HOOK)
        waiting = record(session_factory, None, "meeting.start", utcnow())
        now = utcnow()
        with session_factory.begin() as session:
            for delivery_id, due_at, locked in (
                (due, now - dt.timedelta(seconds=20), None),
                # Being attempted right now: waiting on a receiver, not in the queue.
                (leased, now - dt.timedelta(seconds=100), now + dt.timedelta(seconds=60)),
                (later, now + dt.timedelta(seconds=300), None),
            ):
                session.execute(
                    sa.update(Delivery)
                    .where(Delivery.id == delivery_id)
                    .values(next_attempt_at=due_at, locked_until=locked)
                )
            session.execute(
                sa.update(Event)
                .where(Event.id == waiting)
                .values(received_at=now - dt.timedelta(seconds=30))
            )
        found = scraped(client)
        assert found[("meetinghooks_scrape_collector_success", (("collector", "queue_lag"),))] == 1
        assert 20 <= found[("meetinghooks_delivery_queue_lag_seconds", ())] < 30
        assert 30 <= found[("meetinghooks_inbox_lag_seconds", ())] < 40

    def test_nothing_waiting_is_zero(self, client: FlaskClient) -> None:
        found = scraped(client)
        assert found[("meetinghooks_delivery_queue_lag_seconds", ())] == 0
        assert found[("meetinghooks_inbox_lag_seconds", ())] == 0

    def test_read_once_per_cache_period(
        self, client: FlaskClient, session_factory: sessionmaker[Session]
    ) -> None:
        assert scraped(client)[("meetinghooks_inbox_lag_seconds", ())] == 0
        event_id = record(session_factory, None, "meeting.start", utcnow())
        with session_factory.begin() as session:
            old = utcnow() - dt.timedelta(seconds=60)
            session.execute(sa.update(Event).where(Event.id == event_id).values(received_at=old))
        # Scraped again at once: the cached answer, no second query.
        assert scraped(client)[("meetinghooks_inbox_lag_seconds", ())] == 0

    def test_read_again_once_the_cache_is_stale(
        self, session_factory: sessionmaker[Session]
    ) -> None:
        clock = [100.0]
        collector = QueueLagCollector(session_factory, clock=lambda: clock[0])
        assert collector.lag().oldest_unprocessed_event == 0
        event_id = record(session_factory, None, "meeting.start", utcnow())
        with session_factory.begin() as session:
            old = utcnow() - dt.timedelta(seconds=60)
            session.execute(sa.update(Event).where(Event.id == event_id).values(received_at=old))
        clock[0] += CACHE_SECONDS - 0.5
        assert collector.lag().oldest_unprocessed_event == 0
        clock[0] += 0.5
        assert 60 <= (collector.lag().oldest_unprocessed_event or 0) < 70

    def test_a_database_that_is_down_never_fails_the_scrape(
        self, settings: Settings, session_factory: sessionmaker[Session], enqueued: Enqueued
    ) -> None:
        # Nothing listens on port 1: the lag's connection is refused; the app's own sessions work.
        down = settings.model_copy(
            update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/nothing"}
        )
        app: Flask = create_app(down, session_factory=session_factory, enqueue=enqueued)
        client = app.test_client()
        started = time.monotonic()
        found = scraped(client)
        assert time.monotonic() - started < 5
        assert found[("meetinghooks_scrape_collector_success", (("collector", "queue_lag"),))] == 0
        assert ("meetinghooks_inbox_lag_seconds", ()) not in found
        assert ("meetinghooks_delivery_queue_lag_seconds", ()) not in found
        assert QUEUE_LAG in app.extensions
        assert client.get("/healthz").status_code == 200
