"""The deployed schema: head matches the models, every revision upgrades real rows, none is edited.

Each revision gets an entry in REVISIONS: the rows to write at that revision (in its own schema,
with plain SQL: never core.models, whose shape is head's) and the checks to run after upgrading to
it from the revision before, with the earlier revisions' rows in place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from core.migrate import ROOT, alembic_config
from tests.conftest import drop_database, fresh_database_url

VERSIONS = ROOT / "migrations" / "versions"

# sha256 of every revision that has landed (been deployed). A deployed database has run it, so
# an edit would never reach it: change the schema with a new revision instead.
LANDED = {
    "2026_11_24_0001_initial_schema.py": (
        "66f650a1a839b34a7fbb49d847ea650e50cac8b87afa8ef9760a0ab9b0166c9c"
    ),
    "2026_12_01_0002_delivery_sequence_and_wakeups.py": (
        "ff7852f612ee7a8dd870051526e0605197c69803bf2aadbb42eaa50d100c5bb2"
    ),
    "2026_12_01_0003_backfill_delivery_sequence.py": (
        "09916303c44bb31aff2a5fb3099fea228b6ce44067b41a9331175d7161d3c362"
    ),
    "2026_12_01_0004_alerts_and_a_general_outbox.py": (
        "3403f7c6876fd9dbd13c74267a2f26e12e72d81b64df1fd2f9315adbb1eeafb0"
    ),
    "2026_12_05_0005_ordered_delivery_and_destination_hosts.py": (
        "a10dcfdc1c1916bc659517129c2207ee823a2abe061663766e625eeb8cde4d58"
    ),
    "2026_12_05_0006_delivery_replays_and_idempotency_keys.py": (
        "33be66079fc3699fe0d3f3e194be4c7a1acdd899e655e2ef44a20b7f1ccb77de"
    ),
}

# Naive UTC, as the 0001 columns store it.
NOW = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC).replace(tzinfo=None)
SEQUENCE = 3


# --- rows written at each revision, and checks after upgrading to it ----------------------------


def seed_0001(conn: Connection) -> None:
    """One of everything a user has, as the 0001 schema stores it."""
    users = sa.table(
        "users",
        *(sa.column(c) for c in ("id", "email", "full_name", "signing_secret")),
        sa.column("registration_date", sa.DateTime),
    )
    conn.execute(
        users.insert().values(
            id=1,
            email="alice@example.com",
            full_name="Alice Example",
            registration_date=NOW,
            signing_secret="whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
        )
    )
    tokens = sa.table(
        "access_tokens",
        *(sa.column(c) for c in ("id", "user_id", "token_hash", "scopes")),
        sa.column("created_at", sa.DateTime),
    )
    conn.execute(
        tokens.insert().values(
            id=1, user_id=1, token_hash="a" * 64, scopes="start_meeting", created_at=NOW
        )
    )
    meetings = sa.table(
        "meetings",
        *(
            sa.column(c)
            for c in (
                "id",
                "user_id",
                "kind",
                "meeting_code",
                "conference_id",
                "organizer_code",
                "meeting_name",
                "start_with_personal_url",
                "viewer_app_detection",
                "status",
                "duration_seconds",
                "event_sequence",
            )
        ),
        sa.column("participants", sa.JSON),
        *(
            sa.column(c, sa.DateTime)
            for c in ("started_at", "ended_at", "created_at", "updated_at")
        ),
    )
    conn.execute(
        meetings.insert().values(
            id=1,
            user_id=1,
            kind="adhoc",
            meeting_code="123456789",
            conference_id="987654321",
            organizer_code="4821",
            meeting_name="Weekly",
            participants=[],
            start_with_personal_url=False,
            viewer_app_detection=True,
            status="ended",
            started_at=NOW,
            ended_at=NOW + dt.timedelta(minutes=30),
            duration_seconds=1800,
            event_sequence=SEQUENCE,
            created_at=NOW,
            updated_at=NOW,
        )
    )
    webhooks = sa.table(
        "webhooks",
        *(sa.column(c) for c in ("id", "public_id", "user_id", "meeting_id", "event_type")),
        sa.column("callback_url"),
        sa.column("custom_callback_data", sa.JSON),
        sa.column("created_at", sa.DateTime),
    )
    conn.execute(
        webhooks.insert().values(
            id=1,
            public_id="wh_1",
            user_id=1,
            meeting_id=1,
            event_type="meeting.end",
            callback_url="https://hooks.example.com/end",
            custom_callback_data={"crm": 42},
            created_at=NOW,
        )
    )
    events = sa.table(
        "events",
        *(
            sa.column(c)
            for c in (
                "id",
                "public_id",
                "source",
                "source_event_id",
                "type",
                "user_id",
                "meeting_id",
                "outcome",
                "enqueue_count",
            )
        ),
        sa.column("payload", sa.JSON),
        *(sa.column(c, sa.DateTime) for c in ("occurred_at", "received_at", "processed_at")),
    )
    conn.execute(
        events.insert().values(
            id=1,
            public_id="evt_1",
            source="api",
            source_event_id="end-1",
            type="meeting.end",
            occurred_at=NOW + dt.timedelta(minutes=30),
            received_at=NOW + dt.timedelta(minutes=30),
            user_id=1,
            meeting_id=1,
            payload={"meetingId": 1},
            processed_at=NOW + dt.timedelta(minutes=30),
            outcome="applied",
            enqueue_count=0,
        )
    )
    body = {
        "id": "evt_1",
        "type": "meeting.end",
        "timestamp": "2026-11-30T09:30:00Z",
        "meetingId": 1,
        "customCallbackData": {"crm": 42},
        "data": {
            "meetingId": 1,
            "conferenceId": "987654321",
            "meetingName": "Weekly",
            "startedAt": "2026-11-30T09:00:00Z",
            "endedAt": "2026-11-30T09:30:00Z",
            "durationSeconds": 1800,
            "sequence": SEQUENCE,
        },
    }
    deliveries = sa.table(
        "deliveries",
        *(
            sa.column(c)
            for c in (
                "id",
                "message_id",
                "event_id",
                "webhook_id",
                "user_id",
                "meeting_id",
                "event_type",
                "callback_url",
                "body",
                "status",
                "attempt_count",
            )
        ),
        *(
            sa.column(c, sa.DateTime)
            for c in ("next_attempt_at", "last_enqueued_at", "created_at", "updated_at")
        ),
    )
    conn.execute(
        deliveries.insert().values(
            id=1,
            message_id="msg_1",
            event_id=1,
            webhook_id=1,
            user_id=1,
            meeting_id=1,
            event_type="meeting.end",
            callback_url="https://hooks.example.com/end",
            body=json.dumps(body, separators=(",", ":")),
            status="pending",
            attempt_count=1,
            next_attempt_at=NOW + dt.timedelta(minutes=35),
            last_enqueued_at=NOW + dt.timedelta(minutes=30),
            created_at=NOW + dt.timedelta(minutes=30),
            updated_at=NOW + dt.timedelta(minutes=30),
        )
    )
    attempts = sa.table(
        "delivery_attempts",
        *(sa.column(c) for c in ("id", "delivery_id", "status_code", "latency_ms", "error")),
        sa.column("attempted_at", sa.DateTime),
    )
    conn.execute(
        attempts.insert().values(
            id=1,
            delivery_id=1,
            attempted_at=NOW + dt.timedelta(minutes=30),
            status_code=500,
            latency_ms=12,
            error="http-500",
        )
    )


def check_0002(conn: Connection) -> None:
    """The delivery has the new columns at their defaults; 0003 fills in the sequence."""
    row = conn.execute(
        sa.text("SELECT meeting_sequence, enqueue_count, body FROM deliveries WHERE id = 1")
    ).one()
    assert row.meeting_sequence == 0
    assert row.enqueue_count == 0
    assert json.loads(row.body)["data"]["sequence"] == SEQUENCE
    # The delivery's attempt log is still there (on SQLite, 0002 rebuilds the table).
    assert conn.execute(sa.text("SELECT error FROM delivery_attempts")).scalars().all() == [
        "http-500"
    ]


def check_0003(conn: Connection) -> None:
    """The delivery knows the sequence its body carries."""
    row = conn.execute(sa.text("SELECT meeting_sequence FROM deliveries WHERE id = 1")).one()
    assert row.meeting_sequence == SEQUENCE


def check_0004(conn: Connection) -> None:
    """The existing delivery keeps its event as its subject and its webhook as destination."""
    row = conn.execute(
        sa.text("SELECT event_id, alert_id, webhook_id, alert_rule_id FROM deliveries WHERE id = 1")
    ).one()
    assert tuple(row) == (1, None, 1, None)


def check_0005(conn: Connection) -> None:
    """The existing callback is ordered, knows its host; its webhook is ordered."""
    row = conn.execute(
        sa.text("SELECT ordered, destination_host FROM deliveries WHERE id = 1")
    ).one()
    assert (bool(row.ordered), row.destination_host) == (True, "hooks.example.com:443")
    ordered = conn.execute(sa.text("SELECT ordered FROM webhooks WHERE id = 1")).scalar_one()
    assert bool(ordered) is True
    assert conn.execute(sa.text("SELECT count(*) FROM host_slots")).scalar_one() == 0


def check_0006(conn: Connection) -> None:
    """The existing delivery is the event's first send: generation 0."""
    row = conn.execute(sa.text("SELECT generation, message_id FROM deliveries WHERE id = 1")).one()
    assert tuple(row) == (0, "msg_1")


def seed_0006(conn: Connection) -> None:
    """A replay under a key, and the copy of the delivery it re-sent (a new webhook-id)."""
    replays = sa.table(
        "delivery_replays",
        *(
            sa.column(c)
            for c in ("id", "user_id", "idempotency_key", "request_hash", "delivery_count")
        ),
        sa.column("request", sa.JSON),
        *(sa.column(c, sa.DateTime) for c in ("created_at", "key_expires_at")),
    )
    conn.execute(
        replays.insert().values(
            id=1,
            user_id=1,
            idempotency_key="recover-1",
            request_hash="b" * 64,
            request={"from": "2026-11-30T00:00:00Z", "to": "2026-12-01T00:00:00Z"},
            delivery_count=1,
            created_at=NOW + dt.timedelta(hours=1),
            key_expires_at=NOW + dt.timedelta(hours=25),
        )
    )
    conn.execute(
        sa.text(
            "INSERT INTO deliveries (id, message_id, event_id, webhook_id, user_id, meeting_id,"
            " event_type, meeting_sequence, generation, callback_url, body, status,"
            " attempt_count, enqueue_count, next_attempt_at, created_at, updated_at)"
            " SELECT 2, 'msg_2', event_id, webhook_id, user_id, meeting_id, event_type,"
            " meeting_sequence, 1, callback_url, body, 'pending', 0, 0, :now, :now, :now"
            " FROM deliveries WHERE id = 1"
        ),
        {"now": NOW + dt.timedelta(hours=1)},
    )


@dataclass(frozen=True)
class Revision:
    """What the migration tests do at one revision."""

    seed: Callable[[Connection], None] | None = None
    check: Callable[[Connection], None] | None = None
    # A backfill's downgrade keeps the values it wrote: they are true at the revision before.
    downgrade_restores_rows: bool = True


# Every revision needs an entry (test_every_revision_has_an_entry), so that its author decides
# which rows prove that it upgrades a deployed database.
REVISIONS: dict[str, Revision] = {
    "0001": Revision(seed=seed_0001),
    "0002": Revision(check=check_0002),
    "0003": Revision(check=check_0003, downgrade_restores_rows=False),
    "0004": Revision(check=check_0004),
    "0005": Revision(check=check_0005),
    "0006": Revision(seed=seed_0006, check=check_0006),
}


# --- the tests ----------------------------------------------------------------------------------


def revision_order() -> list[str]:
    """Return the revision ids, oldest first."""
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    # A database of its own, migrated to head: the shared test database must stay at head.
    url = fresh_database_url(f"mh_migrations_{os.getpid()}", str(tmp_path))
    yield url
    drop_database(url)


def snapshot(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Return every row of every table, sorted, in whatever schema the database is at."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            meta = sa.MetaData()
            meta.reflect(conn)
            return {
                name: sorted(tuple(row) for row in conn.execute(sa.select(table)))
                for name, table in meta.tables.items()
                if name != "alembic_version"
            }
    finally:
        engine.dispose()


def run(url: str, step: Callable[[Connection], None]) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            step(conn)
    finally:
        engine.dispose()


def test_head_matches_the_models(database_url: str) -> None:
    # Raises when autogenerate would find a difference (alembic check, as CI runs it).
    command.check(alembic_config(database_url))


def test_every_revision_has_an_entry() -> None:
    assert list(REVISIONS) == revision_order()


@pytest.mark.parametrize("revision", revision_order()[1:])
def test_upgrade_keeps_the_rows_of_a_deployed_database(database_url: str, revision: str) -> None:
    config = alembic_config(database_url)
    order = revision_order()
    previous = order[order.index(revision) - 1]
    command.downgrade(config, "base")
    # The database as the previous release left it, with rows written at every revision.
    for rev in order[: order.index(revision)]:
        command.upgrade(config, rev)
        step = REVISIONS[rev].seed
        if step is not None:
            run(database_url, step)
    before = snapshot(database_url)

    command.upgrade(config, revision)
    after = snapshot(database_url)
    # No row lost or made up in any table both schemas have. (On SQLite, a batch operation
    # rebuilds the table: with foreign keys on, dropping the old copy cascades to the rows
    # that reference it.)
    counts = {name: len(rows) for name, rows in before.items()}
    assert {name: len(after[name]) for name in before} == counts, "the upgrade lost rows"
    check = REVISIONS[revision].check
    if check is not None:
        run(database_url, check)

    command.downgrade(config, previous)
    if REVISIONS[revision].downgrade_restores_rows:
        assert snapshot(database_url) == before, "the downgrade did not restore the rows"
    else:
        restored = {name: len(rows) for name, rows in snapshot(database_url).items()}
        assert restored == counts, "the downgrade lost rows"
    command.upgrade(config, revision)
    assert snapshot(database_url) == after
    command.upgrade(config, "head")


def test_landed_revisions_are_never_edited() -> None:
    for name, expected in LANDED.items():
        path = VERSIONS / name
        assert path.exists(), f"{name} has landed and was deployed: never remove it"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == expected, (
            f"{name} changed: never edit a landed revision: add a new one "
            "(databases that already ran it would never run the edit)"
        )
