from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.db import is_sqlite
from core.errors import Conflict
from core.models import Delivery, DeliveryReplay
from core.replay_schemas import ReplayIn
from core.services import delivery_replay
from tests.conftest import Account
from tests.functional.test_delivery_replay import DAY, T0, failed_meeting

REQUEST = ReplayIn.model_validate(DAY)


def wait_until_blocked(engine: Engine) -> None:
    """Return once another connection waits for a lock (PostgreSQL) or after a moment."""
    if is_sqlite(str(engine.url)):
        # SQLite's writers queue at BEGIN IMMEDIATE: the second replay starts after the first.
        time.sleep(0.3)
        return
    deadline = time.monotonic() + 30
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar_one()
            if waiting:
                return
            time.sleep(0.05)
    raise AssertionError("the second replay never waited for the first")


def copies(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as session:
        query = sa.select(sa.func.count()).where(Delivery.generation > 0)
        return int(session.scalar(query) or 0)


@pytest.mark.parametrize("key", ["same-key", None])
def test_two_replays_at_once_send_each_callback_once(
    session_factory: sessionmaker[Session],
    engine: Engine,
    make_account: Callable[..., Account],
    key: str | None,
) -> None:
    alice = make_account()
    failed_meeting(session_factory, alice.id, T0)
    answers: list[object] = []

    def second() -> None:
        with session_factory() as session:
            try:
                replayed = delivery_replay.replay(session, alice.id, REQUEST, idempotency_key=key)
                session.commit()
                answers.append((replayed.replay.delivery_count, replayed.repeated))
            except Conflict as exc:
                answers.append(exc.code)

    with session_factory() as session:
        first = delivery_replay.replay(session, alice.id, REQUEST, idempotency_key=key)
        thread = threading.Thread(target=second)
        thread.start()
        wait_until_blocked(engine)
        session.commit()
    thread.join(30)

    assert (first.replay.delivery_count, first.repeated) == (2, False)
    assert copies(session_factory) == 2
    if key is not None:
        # The second answers the first's result and sends nothing.
        assert answers == [(2, True)]
        with session_factory() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(DeliveryReplay)) == 1
    elif is_sqlite(str(engine.url)):
        assert answers == [(0, False)]  # it ran after the first: nothing was left to send
    else:
        assert answers == ["replay-in-progress"]  # it lost the race on the unique key
