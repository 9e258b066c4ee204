"""Alembic environment: the URL comes from the caller or from Settings.from_env()."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context

from core import models  # noqa: F401  (registers every table on the metadata)
from core.config import Settings
from core.db import is_sqlite, make_engine, metadata

config = context.config
target_metadata = metadata
# An advisory lock key of our own, so that two deploys never migrate at once (warehouse).
MIGRATION_LOCK_KEY = 0x6D686F6F6B73


def _url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    return str(url) if url else Settings.from_env().database_url


def run_migrations_offline() -> None:
    """Emit SQL for the configured URL without connecting."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate the live database, under an advisory lock on PostgreSQL."""
    url = _url()
    engine = make_engine(url, poolclass=sa.pool.NullPool)
    if is_sqlite(url):
        # Batch mode rebuilds a table (copy, DROP, rename); with foreign keys on, the DROP
        # would cascade to every row that references the table. The pragma is ignored inside
        # a transaction, so it is set as the connection opens (after make_engine's own ON).
        @sa.event.listens_for(engine, "connect")
        def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA foreign_keys=OFF")

    with engine.connect() as connection:
        if not is_sqlite(url):
            connection.exec_driver_sql("SET lock_timeout = '4s'")
            connection.exec_driver_sql("SET statement_timeout = '30s'")
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_server_default=True,
            transaction_per_migration=True,
            render_as_batch=is_sqlite(url),
        )
        context.run_migrations()
        if is_sqlite(url):
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            connection.commit()
            if broken:
                raise RuntimeError(f"the migration left rows with broken foreign keys: {broken}")
        if not is_sqlite(url):
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
