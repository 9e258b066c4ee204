"""Shared fixtures: a migrated database (SQLite, or PostgreSQL when TEST_DATABASE_URL is set)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core import migrate
from core.config import Settings
from core.db import is_sqlite, make_engine, make_session_factory, metadata
from core.models import User
from core.services import accounts
from receiver import create_app
from tests.callback_receiver import CallbackReceiver

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
INGEST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def empty_postgres_database(server_url: str, name: str) -> str:
    """Create an empty database `name` on the server (dropping any of that name); return its URL."""
    server = sa.make_url(server_url)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


def fresh_database_url(name: str, tmp_dir: str) -> str:
    """Return the URL of an empty, migrated database named `name` on the test backend."""
    if TEST_DATABASE_URL and not is_sqlite(TEST_DATABASE_URL):
        url = empty_postgres_database(TEST_DATABASE_URL, name)
    else:
        url = f"sqlite:///{tmp_dir}/{name}.sqlite3"
    migrate.upgrade(url)
    return url


def drop_database(url: str) -> None:
    """Drop a test database made by `fresh_database_url` (SQLite files go with tmp_path)."""
    if is_sqlite(url):
        return
    server = sa.make_url(url)
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{server.database}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    """A real HTTP callback receiver on 127.0.0.1, stopped after the test."""
    server = CallbackReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # One database per pytest process, so that parallel runs never share tables.
    url = fresh_database_url(f"mh_test_{os.getpid()}", str(tmp_path_factory.mktemp("db")))
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    yield make_session_factory(engine)
    # Every test starts from empty tables; code under test commits for real.
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
            conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        else:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture(scope="session")
def observer_engine(database_url: str) -> Iterator[Engine]:
    # Tests look at the database through deferred transactions, so that a read in the test
    # never holds SQLite's write lock while the code under test wants it.
    engine = make_engine(database_url, sqlite_immediate=False)
    yield engine
    engine.dispose()


@pytest.fixture
def db_session(
    session_factory: sessionmaker[Session], observer_engine: Engine
) -> Iterator[Session]:
    with Session(observer_engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        broker_url="memory://",
        public_base_url="https://meet.example.test",
        ingest_signing_secret=INGEST_SECRET,
        presenter_link_ttl_seconds=600,
        retry_schedule=(5, 300, 1800, 7200, 18000, 36000, 36000),
    )


@dataclass
class Enqueued:
    """Records the wake-up messages the receiver sent."""

    calls: list[tuple[str, dict[str, Any]]]

    def __call__(self, task_name: str, kwargs: dict[str, Any]) -> None:
        self.calls.append((task_name, kwargs))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def enqueued() -> Enqueued:
    return Enqueued(calls=[])


@pytest.fixture
def app(settings: Settings, session_factory: sessionmaker[Session], enqueued: Enqueued) -> Flask:
    app = create_app(settings, session_factory=session_factory, enqueue=enqueued)
    app.testing = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass
class Account:
    """A user created for a test, with a bearer token in clear."""

    user: User
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def id(self) -> int:
        return self.user.id


@pytest.fixture
def make_account(session_factory: sessionmaker[Session]) -> Callable[..., Account]:
    counter = iter(range(1, 10_000))

    def make(
        email: str | None = None, name: str = "Alice Example", personal_url: str | None = None
    ) -> Account:
        with session_factory.begin() as session:
            user, issued = accounts.create_user(
                session,
                email=email or f"user{next(counter)}@example.com",
                full_name=name,
                personal_url=personal_url,
            )
        return Account(user=user, token=issued.token)

    return make


@pytest.fixture
def account(make_account: Callable[..., Account]) -> Account:
    return make_account(email="alice@example.com", personal_url="alice")


# What the PostgreSQL pass is for: every test that reaches the database. A test that never
# does (pure functions, parsers, the CLI's argument handling) gives the same answer on either
# backend, so it runs once, in the SQLite pass.
DATABASE_FIXTURES = frozenset({"database_url", "it_database_url"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not TEST_DATABASE_URL or is_sqlite(TEST_DATABASE_URL):
        return
    backend_free = [
        item
        for item in items
        if not DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("production") is None
    ]
    if backend_free:
        config.hook.pytest_deselected(items=backend_free)
        chosen = set(map(id, backend_free))
        items[:] = [item for item in items if id(item) not in chosen]
