from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from core.models import Delivery
from meetinghooks.cli import main
from tests.conftest import INGEST_SECRET, Account
from tests.functional.test_delivery_replay import DAY, T0, failed_meeting, many_failed, rows

RANGE = ["--from", DAY["from"], "--to", DAY["to"]]


class FakeEnqueuer:
    """Stands in for the broker: records what the command publishes, and when."""

    sent: list[tuple[str, dict[str, Any]]]
    closed: bool

    def __init__(self, _settings: object) -> None:
        FakeEnqueuer.sent = []
        FakeEnqueuer.closed = False

    def __call__(self, task_name: str, kwargs: dict[str, Any]) -> None:
        FakeEnqueuer.sent.append((task_name, kwargs))

    def close(self) -> None:
        FakeEnqueuer.closed = True


@pytest.fixture
def alice(make_account: Callable[..., Account]) -> Account:
    return make_account(email="alice@example.com")


@pytest.fixture
def bob(make_account: Callable[..., Account]) -> Account:
    return make_account(email="bob@example.com")


@pytest.fixture(autouse=True)
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads the same database as the tests.
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BROKER_URL", "memory://")
    monkeypatch.setenv("INGEST_SIGNING_SECRET", INGEST_SECRET)
    monkeypatch.setattr("receiver.tasks.CeleryEnqueuer", FakeEnqueuer)


def woken() -> list[int]:
    ids: list[int] = []
    for name, kwargs in FakeEnqueuer.sent:
        assert name == "workers.deliveries.deliver"
        ids += [kwargs["delivery_id"], *kwargs.get("more_delivery_ids", [])]
    return ids


def test_replays_the_users_failed_callbacks_and_prints_the_count(
    capsys: pytest.CaptureFixture[str],
    session_factory: sessionmaker[Session],
    alice: Account,
    bob: Account,
) -> None:
    mine = failed_meeting(session_factory, alice.id, T0)
    failed_meeting(session_factory, bob.id, T0)

    status = main(["deliveries", "replay", "--email", "alice@example.com", *RANGE])

    assert status == 0
    assert capsys.readouterr().out == "2 deliveries queued again, each with a new webhook-id\n"
    copies = rows(session_factory, generation=1)
    assert [(c.meeting_id, c.event_type) for c in copies] == [
        (mine, "meeting.start"),
        (mine, "meeting.end"),
    ]
    assert woken() == [c.id for c in copies]
    assert FakeEnqueuer.closed


def test_filters_and_json_answer_the_apis_body(
    capsys: pytest.CaptureFixture[str],
    session_factory: sessionmaker[Session],
    client: FlaskClient,
    alice: Account,
) -> None:
    meeting = failed_meeting(session_factory, alice.id, T0)
    failed_meeting(session_factory, alice.id, T0)
    argv = ["deliveries", "replay", "--email", "alice@example.com", *RANGE]

    assert main([*argv, "--meeting", str(meeting), "--event-type", "meeting.end", "--json"]) == 0

    assert json.loads(capsys.readouterr().out) == {"count": 1}
    (copy,) = rows(session_factory, generation=1)
    assert (copy.meeting_id, copy.event_type) == (meeting, "meeting.end")


def test_a_repeated_idempotency_key_sends_nothing_again(
    capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session], alice: Account
) -> None:
    failed_meeting(session_factory, alice.id, T0)
    argv = ["deliveries", "replay", "--email", "alice@example.com", *RANGE]
    assert main([*argv, "--idempotency-key", "k"]) == 0
    capsys.readouterr()
    failed_meeting(session_factory, alice.id, T0 + dt.timedelta(hours=1))

    assert main([*argv, "--idempotency-key", "k"]) == 0

    out = capsys.readouterr().out
    assert out == "2 deliveries were queued again by the first replay under this key\n"
    assert woken() == []
    assert len(rows(session_factory, generation=1)) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", DAY["to"], "--to", DAY["from"]], "`from` must be before `to`"),
        (["--from", "2026-11-24T00:00:00", "--to", DAY["to"]], "must carry a time zone"),
        ([*RANGE, "--idempotency-key", "k" * 256], "--idempotency-key"),
    ],
)
def test_bad_input_is_an_error_naming_it_and_replays_nothing(
    capsys: pytest.CaptureFixture[str],
    session_factory: sessionmaker[Session],
    alice: Account,
    args: list[str],
    message: str,
) -> None:
    failed_meeting(session_factory, alice.id, T0)

    assert main(["deliveries", "replay", "--email", "alice@example.com", *args]) == 1

    assert message in capsys.readouterr().err
    assert rows(session_factory, generation=1) == []


def test_more_than_ten_thousand_is_refused_naming_the_limit(
    capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session], alice: Account
) -> None:
    many_failed(session_factory, alice.id, 10_001)

    assert main(["deliveries", "replay", "--email", "alice@example.com", *RANGE]) == 1

    assert "more than 10000 deliveries match" in capsys.readouterr().err
    with session_factory() as session:
        assert session.scalar(sa.select(sa.func.max(Delivery.generation))) == 0
    assert woken() == []


def test_an_unknown_user_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deliveries", "replay", "--email", "nobody@example.com", *RANGE]) == 1
    assert "nobody@example.com" in capsys.readouterr().err
