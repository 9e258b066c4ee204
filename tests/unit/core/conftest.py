"""Fixtures the delivery and alert tests share: one attempt of a delivery, in process."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from core.services import outbound_http
from workers.tasks.deliveries import run_delivery

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    import requests
    from sqlalchemy.orm import Session, sessionmaker

    from core.config import Settings
    from core.services import delivery_states


@pytest.fixture
def http() -> requests.Session:
    return outbound_http.make_http_session()


@pytest.fixture
def attempt(
    session_factory: sessionmaker[Session], settings: Settings, http: requests.Session
) -> Callable[..., delivery_states.Recorded | None]:
    def run(delivery_id: int, rng: random.Random | None = None) -> delivery_states.Recorded | None:
        return run_delivery(session_factory, delivery_id, settings=settings, http=http, rng=rng)

    return run
