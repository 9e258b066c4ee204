"""The receiver's routes, read from its URL map, and what the hostile tests need to call them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from core.config import Settings
from core.db import metadata
from receiver import create_app
from receiver.limits import INGEST_ENDPOINT

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.orm import Session

API_PREFIX = "/v1/"
SKIPPED_METHODS = frozenset({"HEAD", "OPTIONS"})
# A body every write endpoint can read: unknown fields are ignored (SPEC 3), so each one finds
# what it needs, or answers 400, and none is refused for the body's shape alone.
ANY_WRITE_BODY: dict[str, Any] = {
    "startWithPersonalUrl": False,
    "meetingName": "Quarterly review",
    "meetingStart": "2030-01-01T10:00:00Z",
    "meetingEnd": "2030-01-01T11:00:00Z",
    "participants": [],
    "type": "delivery.failed",
    "params": {},
    "callbackUrl": "https://93.184.216.34/hook",
}


@dataclass(frozen=True)
class Endpoint:
    """One method of one route."""

    method: str
    rule: str
    endpoint: str
    arguments: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.method} {self.rule}"

    def url(self, app: Flask, ids: Mapping[str, int]) -> str:
        """Build the path, taking each URL argument from `ids` by its name."""
        missing = [name for name in self.arguments if name not in ids]
        assert not missing, f"{self}: give the hostile tests an id for {missing}"
        adapter = app.url_map.bind("localhost")
        return adapter.build(
            self.endpoint, {name: ids[name] for name in self.arguments}, method=self.method
        )

    @property
    def writes(self) -> bool:
        return self.method in {"POST", "PUT", "PATCH"}


def throwaway_app() -> Flask:
    """An app on an unused in-memory database: enough to read its routes and document."""
    return create_app(
        Settings(
            database_url="sqlite://",
            broker_url="memory://",
            public_base_url="https://meet.example.test",
            rate_limit_api=None,
            rate_limit_ingest=None,
        )
    )


def routes(app: Flask) -> list[Endpoint]:
    """Every method of every route of the app."""
    found = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - SKIPPED_METHODS):
            found.append(Endpoint(method, rule.rule, rule.endpoint, tuple(rule.arguments)))
    return sorted(found, key=str)


def token_endpoints(app: Flask) -> list[Endpoint]:
    """The /v1 API called with an access token: every /v1 route but the signed ingest."""
    return [
        e for e in routes(app) if e.rule.startswith(API_PREFIX) and e.endpoint != INGEST_ENDPOINT
    ]


def call(client: Any, endpoint: Endpoint, path: str, headers: Mapping[str, str]) -> Any:
    """Send one request, with a body every write endpoint can read."""
    body = ANY_WRITE_BODY if endpoint.writes else None
    return client.open(path, method=endpoint.method, json=body, headers=dict(headers))


def snapshot(session: Session, *, user_id: int | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Return every row of every table (or of those rows a user owns), to compare later."""
    session.rollback()  # a fresh snapshot: the receiver commits in sessions of its own
    rows = {}
    for table in metadata.sorted_tables:
        query = sa.select(table)
        if user_id is not None:
            if table.name == "users":
                query = query.where(table.c.id == user_id)
            elif "user_id" in table.c:
                query = query.where(table.c.user_id == user_id)
            else:
                continue
        primary = list(table.primary_key.columns)
        rows[table.name] = [tuple(row) for row in session.execute(query.order_by(*primary))]
    return rows
