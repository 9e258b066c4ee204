"""The embedded broker survives a second process creating a queue at the same moment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import create_engine, event, text

from workers.embedded_broker import RaceSafeChannel, tune_sqlalchemy_transport


@pytest.fixture
def broker_url(tmp_path: Path) -> str:
    tune_sqlalchemy_transport(polling_interval=0.1)
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
