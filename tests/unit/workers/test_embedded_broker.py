"""The embedded broker survives a second process creating a queue at the same moment."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from celery.worker import state as worker_state
from kombu import Connection
from sqlalchemy import create_engine, event, text

from core.config import Settings
from workers import embedded_broker
from workers.celery_app import make_celery
from workers.embedded_broker import EmbeddedTransport, RaceSafeChannel


@pytest.fixture
def broker_url(tmp_path: Path) -> str:
    embedded_broker.install(polling_interval=0.1)
    return f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"


def insert_queue_first_from_another_connection(channel: RaceSafeChannel, name: str) -> None:
    """Make another connection insert queue `name` just before this channel's own INSERT."""
    engine = channel.session.get_bind()
    rival = create_engine(str(engine.url))
    raced = False

    @event.listens_for(engine, "before_cursor_execute")
    def race(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal raced
        if statement.startswith("INSERT INTO kombu_queue") and not raced:
            raced = True
            with rival.begin() as conn:
                conn.execute(text("INSERT INTO kombu_queue (name) VALUES (:n)"), {"n": name})


def test_queue_created_by_another_process_meanwhile_is_used_and_the_channel_keeps_working(
    broker_url: str,
) -> None:
    with Connection(broker_url) as conn:
        channel = conn.default_channel
        assert isinstance(channel, RaceSafeChannel)
        insert_queue_first_from_another_connection(channel, "events")

        with conn.SimpleQueue("events") as queue:
            queue.put({"n": 1})
            queue.put({"n": 2})
            got = [queue.get(timeout=5), queue.get(timeout=5)]
            for message in got:
                message.ack()

    assert [message.payload for message in got] == [{"n": 1}, {"n": 2}]
    with create_engine(broker_url.removeprefix("sqla+")).connect() as rows:
        count = rows.execute(text("SELECT count(*) FROM kombu_queue WHERE name = 'events'"))
        assert count.scalar() == 1


def test_a_wait_for_messages_ends_soon_after_the_worker_is_asked_to_stop(
    broker_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Celery's consumer loop waits 2 s at a time and looks for Ctrl-C only in between.
    def warm_shutdown_requested() -> None:
        monkeypatch.setattr(worker_state, "should_stop", 0)

    with Connection(broker_url) as conn, conn.SimpleQueue("events"):
        threading.Timer(0.2, warm_shutdown_requested).start()
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=20.0)
        # Without the stop check the wait lasts the whole 20 s; with it, 0.2 s plus one look.
        assert time.monotonic() - started < 10.0


def test_without_a_stop_request_a_wait_lasts_as_long_as_asked(broker_url: str) -> None:
    with Connection(broker_url) as conn, conn.SimpleQueue("events"):
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            conn.drain_events(timeout=1.0)
        assert time.monotonic() - started >= 1.0


def test_a_message_arriving_during_a_long_wait_is_delivered(broker_url: str) -> None:
    def publish_late() -> None:
        # A connection of its own, as the receiver's is: a kombu channel (and the SQLAlchemy
        # session inside it) must never be shared between threads.
        with Connection(broker_url) as producer, producer.SimpleQueue("events") as queue:
            queue.put({"late": True})

    with Connection(broker_url) as conn, conn.SimpleQueue("events") as queue:
        late = threading.Timer(0.5, publish_late)
        late.start()
        message = queue.get(timeout=10)  # room for a loaded machine; on time it is 0.5 s
        message.ack()
    late.join()
    assert message.payload == {"late": True}


def test_celery_apps_use_the_embedded_transport(broker_url: str, settings: Settings) -> None:
    app = make_celery(settings.model_copy(update={"broker_url": broker_url}))
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, EmbeddedTransport)


def test_a_sqla_url_given_to_a_plain_kombu_connection_gets_the_embedded_transport(
    broker_url: str,
) -> None:
    # Celery's CLI hands BROKER_URL to kombu itself, past the app's settings.
    with Connection(broker_url) as conn:
        assert isinstance(conn.transport, EmbeddedTransport)
        assert conn.transport.polling_interval == 0.1


def test_other_broker_urls_are_not_embedded() -> None:
    assert not embedded_broker.is_embedded("redis://127.0.0.1:6379/0")
    assert embedded_broker.is_embedded("sqlalchemy+postgresql://db/broker")
