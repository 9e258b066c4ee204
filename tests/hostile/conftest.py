"""Fixtures of the hostile-input suite: rate limits off, two users with history, a case tally."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from core.config import Settings
from core.models import Delivery
from tests.analytics_fixture import END, HOOK, START, History, at, build, report
from tests.deliveries_helpers import make_meeting_with_hooks

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session, sessionmaker

    from tests.conftest import Account

# Requests sent by the property-based tests, by test module: the report prints them.
CASES: collections.Counter[str] = collections.Counter()


def count_case(request: pytest.FixtureRequest) -> None:
    """Count one generated request for the summary at the end of the run."""
    CASES[request.node.module.__name__.rsplit(".", 1)[-1]] += 1


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Thousands of requests with one token would meet the API's rate limit; its 429 has
    # tests of its own (tests/functional/test_rate_limits.py).
    # The console is switched on (it needs a session key), so its forms get hostile input too.
    return settings.model_copy(
        update={
            "rate_limit_api": None,
            "rate_limit_ingest": None,
            "secret_key": SecretStr("hostile-suite-session-key-" + "k" * 32),
        }
    )


@pytest.fixture
def alice(make_account: Callable[..., Account]) -> Account:
    return make_account(email="alice@example.com", personal_url="alice")


@pytest.fixture
def bob(make_account: Callable[..., Account]) -> Account:
    return make_account(email="bob@example.com", personal_url="bob")


@pytest.fixture
def full_history(session_factory: sessionmaker[Session], alice: Account, bob: Account) -> History:
    """The analytics tests' history: every kind of meeting and delivery, for the fuzz."""
    return build(session_factory, alice, bob)


@pytest.fixture
def history(session_factory: sessionmaker[Session], alice: Account, bob: Account) -> History:
    """A few rows of each kind per user, quick to build for each of the many targeted tests.

    Alice: `m1` started, with its start callbacks (`deliveries`); `never`, scheduled, no
    callbacks. Bob: `bob1`, started, with a callback of his own.
    """
    sf, made = session_factory, History()
    made.meetings["m1"] = make_meeting_with_hooks(sf, alice.id, {START: HOOK, END: HOOK}, number=1)
    report(sf, made.meetings["m1"], START, at("10:00"))
    made.meetings["never"] = make_meeting_with_hooks(sf, alice.id, {}, number=2)
    made.meetings["bob1"] = make_meeting_with_hooks(sf, bob.id, {START: HOOK}, number=3)
    report(sf, made.meetings["bob1"], START, at("10:00"))
    with sf() as session:
        made.deliveries = list(
            session.scalars(
                sa.select(Delivery.id).where(Delivery.user_id == alice.id).order_by(Delivery.id)
            )
        )
    assert made.deliveries, "the started meeting's callback is a delivery"
    return made


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CASES:
        parts = ", ".join(f"{name} {count}" for name, count in sorted(CASES.items()))
        terminalreporter.write_line(
            f"hostile input: {sum(CASES.values())} generated requests ({parts})"
        )
