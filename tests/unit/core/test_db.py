from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from core.db import make_engine


def test_embedded_sqlite_is_durable_and_shares_the_file_between_processes(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        with engine.connect() as conn:
            pragmas = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    finally:
        engine.dispose()
    # WAL lets the receiver read while a worker writes; synchronous=2 (FULL) syncs every
    # commit, so an event answered 202 survives a power cut.
    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 2,
        "busy_timeout": 30000,
        "foreign_keys": 1,
    }


def test_a_failed_statement_never_shows_its_parameters(database_url: str) -> None:
    engine = make_engine(database_url)
    secret = "whsec_c2VjcmV0LW5ldmVyLWxvZ2dlZA"
    try:
        with pytest.raises(sa.exc.DBAPIError) as failed, engine.connect() as conn:
            conn.execute(sa.text("UPDATE no_such_table SET signing_secret = :s"), {"s": secret})
    finally:
        engine.dispose()
    # The exception's text is what a traceback in the logs would carry.
    assert "no_such_table" in str(failed.value)
    assert secret not in str(failed.value)
    assert secret not in repr(failed.value)
