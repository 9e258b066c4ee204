from __future__ import annotations

from pathlib import Path

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
