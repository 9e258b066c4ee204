"""Bulk replay through a real worker to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook as StandardWebhook

from core.config import Settings
from core.models import Delivery, Event
from core.services import accounts
from tests.callback_receiver import CallbackReceiver
from tests.deliveries_helpers import make_meeting_with_hooks
from tests.integration.conftest import Worker, wait_or_show_logs
from tests.platform_events import post_event

pytestmark = pytest.mark.integration


@pytest.fixture
def it_settings(it_settings: Settings) -> Settings:
    # One retry: the start's retries, then (in order) the end's, are spent in a few seconds.
    return it_settings.model_copy(update={"retry_schedule": (1,)})


def make_user(sessions: sessionmaker[Session], email: str) -> tuple[int, str, str]:
    """Create a user; return its id, access token and signing secret."""
    with sessions.begin() as session:
        user, issued = accounts.create_user(session, email=email, full_name="Replay")
        return user.id, issued.token, user.signing_secret


def statuses(engine: Engine) -> list[tuple[int, int, str]]:
    with engine.connect() as conn:
        query = sa.select(Delivery.user_id, Delivery.generation, Delivery.status)
        return sorted(tuple(row) for row in conn.execute(query))  # type: ignore[misc]


def processed(engine: Engine) -> int:
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(Event.processed_at.is_not(None))
        return int(conn.execute(query).scalar_one())


def test_replay_resends_failed_callbacks_with_new_webhook_ids_that_verify(
    it_app: Flask,
    it_sessions: sessionmaker[Session],
    it_engine: Engine,
    worker: Worker,
    receiver: CallbackReceiver,
) -> None:
    alice, token, secret = make_user(it_sessions, "alice@example.com")
    bob, _, _ = make_user(it_sessions, "bob@example.com")
    url = receiver.url("/alice")
    meeting = make_meeting_with_hooks(
        it_sessions, alice, {"meeting.start": url, "meeting.end": url}
    )
    theirs = make_meeting_with_hooks(it_sessions, bob, {"meeting.start": receiver.url("/bob")})
    receiver.stop()  # down while the events happen: every callback spends its retries
    worker.start()
    post_event(it_app, meeting, "meeting.start")
    post_event(it_app, theirs, "meeting.start")
    wait_or_show_logs(worker, lambda: processed(it_engine) == 2, 60, "the starts")
    post_event(it_app, meeting, "meeting.end")
    failed = [(alice, 0, "failed"), (alice, 0, "failed"), (bob, 0, "failed")]
    wait_or_show_logs(worker, lambda: statuses(it_engine) == failed, 90, "every retry spent")
    with it_engine.connect() as conn:
        originals = {
            row.message_id: row.body for row in conn.execute(sa.select(Delivery)).mappings()
        }
    receiver.start()  # back on the same port

    client = it_app.test_client()
    response = client.post(
        "/v1/webhooks/deliveries/replay",
        json={"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z", "status": "failed"},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "outage-1"},
    )

    assert (response.status_code, response.get_json()) == (202, {"count": 2})
    done = [*failed[:2], (alice, 1, "succeeded"), (alice, 1, "succeeded"), failed[2]]
    wait_or_show_logs(worker, lambda: statuses(it_engine) == done, 60, "the replayed callbacks")
    got = receiver.wait_for(2)
    with it_engine.connect() as conn:
        copies = set(
            conn.execute(sa.select(Delivery.message_id).where(Delivery.generation == 1)).scalars()
        )
    assert {r.headers["webhook-id"] for r in got} == copies
    assert not copies & set(originals)
    payloads = [StandardWebhook(secret).verify(r.body, r.headers) for r in got]
    assert sorted(p["type"] for p in payloads) == ["meeting.end", "meeting.start"]
    # The same bytes as the callbacks that failed: only the webhook-id is new.
    assert {r.body.decode() for r in got} <= {
        body for body in originals.values() if f'"meetingId":{meeting},' in body
    }
    # Bob's failed callback stays failed and never reaches his URL.
    time.sleep(2)
    assert [r.path for r in receiver.received] == ["/alice", "/alice"]
