from __future__ import annotations

import pytest
from sqlalchemy.pool import QueuePool

from core.config import Settings
from workers.celery_app import DbTask, make_celery


def test_a_threads_pool_keeps_one_database_connection_per_thread(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_celery(settings)
    monkeypatch.setattr(DbTask, "threads", 32)
    monkeypatch.setattr(DbTask, "_session_factory", None)
    monkeypatch.setattr(DbTask, "_publishing", None)
    engine = DbTask().session_factory.kw["bind"]
    try:
        assert isinstance(engine.pool, QueuePool)
        # Kept, not only allowed: a pool of 5 closed every connection above 5 on its return,
        # and each delivery then opened a new one.
        assert engine.pool.size() == 32
    finally:
        engine.dispose()
