"""Fixtures of the hostile-input suite: rate limits off, two users with history, a case tally."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import pytest

from core.config import Settings
from tests.analytics_fixture import History, build

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
    return settings.model_copy(update={"rate_limit_api": None, "rate_limit_ingest": None})


@pytest.fixture
def alice(make_account: Callable[..., Account]) -> Account:
    return make_account(email="alice@example.com", personal_url="alice")


@pytest.fixture
def bob(make_account: Callable[..., Account]) -> Account:
    return make_account(email="bob@example.com", personal_url="bob")


@pytest.fixture
def history(session_factory: sessionmaker[Session], alice: Account, bob: Account) -> History:
    return build(session_factory, alice, bob)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CASES:
        parts = ", ".join(f"{name} {count}" for name, count in sorted(CASES.items()))
        terminalreporter.write_line(
            f"hostile input: {sum(CASES.values())} generated requests ({parts})"
        )
