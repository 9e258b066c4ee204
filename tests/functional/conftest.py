"""Fixtures the analytics and timeline tests share: two users and their meeting history."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.analytics_fixture import History, build

if TYPE_CHECKING:
    from collections.abc import Callable

    from sqlalchemy.orm import Session, sessionmaker

    from tests.conftest import Account


@pytest.fixture
def alice(make_account: Callable[..., Account]) -> Account:
    return make_account(email="alice@example.com")


@pytest.fixture
def bob(make_account: Callable[..., Account]) -> Account:
    return make_account(email="bob@example.com")


@pytest.fixture
def history(session_factory: sessionmaker[Session], alice: Account, bob: Account) -> History:
    return build(session_factory, alice, bob)
