"""Engine, session factory, metadata and the column types every model shares."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Base(DeclarativeBase):
    """Declarative base bound to the shared, convention-named metadata."""

    metadata = metadata


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Store aware datetimes as naive UTC; always return aware UTC.

    SQLite has no time zone type and PostgreSQL's timestamptz answers in the session zone;
    storing naive UTC everywhere gives the same answers on both.
    """

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: pass an aware UTC datetime")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC)


def utcnow() -> dt.datetime:
    """Return the current time, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def insert_unless_present(
    session: Session, model: type[Base], values: dict[str, Any], *, unique: list[str]
) -> int | None:
    """Insert a row unless one with the same `unique` columns exists; return its new id or None.

    INSERT ... ON CONFLICT DO NOTHING: concurrent duplicates are safe on both databases
    without catching IntegrityError mid-transaction.
    """
    row = insert_unless_present_returning(
        session, model, values, unique=unique, returning=[model.__table__.c.id]
    )
    return None if row is None else int(row[0])


def insert_unless_present_returning(
    session: Session,
    model: type[Base],
    values: dict[str, Any],
    *,
    unique: list[str],
    returning: Sequence[Any],
) -> sa.Row[*tuple[Any, ...]] | None:
    """Like `insert_unless_present`, returning the new row's `returning` columns, or None."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=unique)
        .returning(*returning)
    )
    return session.execute(statement).first()


def is_sqlite(url: str | sa.URL) -> bool:
    """Tell whether a database URL names SQLite."""
    return sa.make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, sqlite_immediate: bool = True, **kwargs: Any) -> Engine:
    """Create an engine with explicit pool settings; SQLite gets WAL and a busy timeout.

    `sqlite_immediate=False` leaves SQLite transactions deferred: for read-only observers
    (tests, benchmarks) that must not hold the write lock while they look.
    """
    # A failed statement's parameters would reach the logs inside its exception's text, and
    # some are secrets (a signing secret being rotated): show the SQL, never the values.
    kwargs.setdefault("hide_parameters", True)
    if is_sqlite(url):
        engine = sa.create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )
        _tune_sqlite(engine, immediate=sqlite_immediate)
        return engine
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_recycle", 1800)
    return sa.create_engine(url, **kwargs)


def _tune_sqlite(engine: Engine, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin, so that BEGIN
        # IMMEDIATE below takes the write lock up front and readers never deadlock writers.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL, not WAL's usual NORMAL: a 202 promises the event is on disk, and NORMAL may
        # lose the last commits to a power cut (not to a crash of our processes).
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory; objects stay usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)
