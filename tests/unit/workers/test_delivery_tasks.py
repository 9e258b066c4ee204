from __future__ import annotations

import datetime as dt
import ipaddress
import time
from typing import Any

import pytest
import requests_mock as rm
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook as StandardWebhook

from core.config import Settings
from core.db import utcnow
from core.models import Delivery, DeliveryAttempt, User
from core.services import delivery_states, outbound_http
from tests.callback_receiver import Answer, CallbackReceiver
from tests.conftest import Account
from tests.deliveries_helpers import attempts, load, make_delivery
from workers import celery_app as celery_module
from workers.celery_app import DELIVERIES_QUEUE, DbTask, make_celery
from workers.tasks import deliveries as delivery_tasks
from workers.tasks.deliveries import deliver, http_session, run_delivery, sweep_deliveries

HOOK = "https://93.184.216.34/hook"


@pytest.fixture
def worker_context(
    settings: Settings, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> list[dict[str, Any]]:
    """Bind the tasks to a memory:// app and the test database; record deliver.apply_async."""
    make_celery(settings)
    monkeypatch.setattr(DbTask, "_session_factory", session_factory)
    sent: list[dict[str, Any]] = []

    def apply_async(*, kwargs: dict[str, Any], queue: str, **_options: Any) -> None:
        sent.append({"kwargs": kwargs, "queue": queue})

    monkeypatch.setattr(deliver, "apply_async", apply_async)
    return sent


def test_registered_names_route_to_the_deliveries_queue(settings: Settings) -> None:
    app = make_celery(settings)
    assert "workers.deliveries.deliver" in app.tasks
    assert "workers.sweep.sweep_deliveries" in app.tasks
    assert app.amqp.router.route({}, "workers.deliveries.deliver")["queue"].name == (
        celery_module.DELIVERIES_QUEUE
    )
    assert deliver.acks_late is True
    assert deliver.time_limit < celery_module.VISIBILITY_TIMEOUT
    assert deliver.soft_time_limit < deliver.time_limit


def test_deliver_sends_a_due_delivery_once(
    worker_context: list[dict[str, Any]],
    requests_mock: rm.Mocker,
    session_factory: sessionmaker[Session],
    account: Account,
) -> None:
    delivery_id = make_delivery(session_factory, account.id, HOOK)
    requests_mock.post(HOOK, status_code=204)
    deliver(delivery_id=delivery_id)
    deliver(delivery_id=delivery_id, from_a_future_sender=True)  # **_compat; already done
    assert requests_mock.call_count == 1
    assert load(session_factory, delivery_id).status == "succeeded"
    assert len(attempts(session_factory, delivery_id)) == 1


def test_deliver_of_an_unknown_id_is_a_no_op(
    worker_context: list[dict[str, Any]],
    requests_mock: rm.Mocker,
    session_factory: sessionmaker[Session],
    account: Account,
) -> None:
    # A due delivery exists, so a task that ignored its id and sent something would be seen.
    due = make_delivery(session_factory, account.id, HOOK)
    requests_mock.post(HOOK, status_code=204)
    unknown = due + 987654
    assert deliver(delivery_id=unknown) is None  # and it did not raise
    assert requests_mock.call_count == 0  # nothing sent
    assert worker_context == []  # nothing enqueued
    with session_factory() as session:
        assert session.get(Delivery, unknown) is None  # no row made up for the id
        assert session.scalar(sa.select(sa.func.count()).select_from(DeliveryAttempt)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Delivery)) == 1
    assert load(session_factory, due).status == "pending"


def test_sweep_wakes_due_deliveries_once(
    worker_context: list[dict[str, Any]],
    session_factory: sessionmaker[Session],
    account: Account,
) -> None:
    due = make_delivery(session_factory, account.id, HOOK)
    fresh = make_delivery(session_factory, account.id, HOOK)
    later = make_delivery(session_factory, account.id, HOOK)
    with session_factory.begin() as session:
        # `due`'s wake-up was lost long ago; `fresh` was just woken; `later` waits for a retry.
        session.execute(
            sa.update(Delivery)
            .where(Delivery.id == due)
            .values(last_enqueued_at=utcnow() - dt.timedelta(hours=1))
        )
        session.execute(
            sa.update(Delivery)
            .where(Delivery.id == later)
            .values(next_attempt_at=utcnow() + dt.timedelta(minutes=5), last_enqueued_at=None)
        )
    assert sweep_deliveries() == 1
    assert worker_context == [{"kwargs": {"delivery_id": due}, "queue": DELIVERIES_QUEUE}]
    assert sweep_deliveries() == 0  # woken now: not again until it is due again or stuck
    assert fresh not in [call["kwargs"]["delivery_id"] for call in worker_context]


def test_one_http_session_per_process(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery_tasks, "_http", None)
    first = http_session(settings)
    assert http_session(settings) is first
    # After a fork the child builds its own pool instead of sharing the parent's sockets.
    monkeypatch.setattr(delivery_tasks, "_http_pid", -1)
    assert http_session(settings) is not first


def loopback_settings(settings: Settings, **changes: Any) -> Settings:
    """Return settings that admit 127.0.0.0/8 past the SSRF guard, as the embedded mode does."""
    return settings.model_copy(
        update={"callback_allowed_networks": (ipaddress.ip_network("127.0.0.0/8"),), **changes}
    )


def test_a_real_receiver_verifies_the_callback_with_standardwebhooks(
    receiver: CallbackReceiver,
    settings: Settings,
    session_factory: sessionmaker[Session],
    account: Account,
) -> None:
    delivery_id = make_delivery(session_factory, account.id, receiver.url(), custom=[1, "x"])
    local = loopback_settings(settings)
    recorded = run_delivery(
        session_factory,
        delivery_id,
        settings=local,
        http=outbound_http.make_http_session(local.callback_allowed_networks),
    )
    assert recorded == delivery_states.Recorded(status="succeeded")
    (got,) = receiver.wait_for(1)
    with session_factory() as session:
        user = session.get(User, account.id)
        assert user is not None
        secret = user.signing_secret
    payload = StandardWebhook(secret).verify(got.body, got.headers)
    assert payload["customCallbackData"] == [1, "x"]
    assert got.headers["webhook-id"] == load(session_factory, delivery_id).message_id
    assert got.headers["content-type"] == "application/json"


def test_a_real_receiver_slower_than_the_timeout_is_a_timeout(
    receiver: CallbackReceiver,
    settings: Settings,
    session_factory: sessionmaker[Session],
    account: Account,
) -> None:
    # The answer comes long after the timeout, so the bound below has room for a loaded machine.
    receiver.answer(Answer(status=200, delay=10.0))
    delivery_id = make_delivery(session_factory, account.id, receiver.url())
    local = loopback_settings(settings, callback_timeout_seconds=0.25)
    started = time.monotonic()
    recorded = run_delivery(
        session_factory,
        delivery_id,
        settings=local,
        http=outbound_http.make_http_session(local.callback_allowed_networks),
    )
    assert time.monotonic() - started < 5.0  # did not wait the 10 s for the answer
    assert recorded is not None
    assert recorded.status == "pending"
    (logged,) = attempts(session_factory, delivery_id)
    assert (logged.status_code, logged.error) == (None, "timeout")
