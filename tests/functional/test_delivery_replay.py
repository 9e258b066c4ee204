from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from core.db import utcnow
from core.models import Delivery, DeliveryReplay, Event, User, Webhook
from core.security import new_public_id
from core.services import accounts
from tests.conftest import Account, Enqueued
from tests.deliveries_helpers import deliver_event, make_meeting_with_hooks

HOOK = "https://93.184.216.34/hook"
REPLAY = "/v1/webhooks/deliveries/replay"
DELIVER = "workers.deliveries.deliver"
T0 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
DAY = {"from": "2026-11-24T00:00:00Z", "to": "2026-11-25T00:00:00Z"}


def failed_meeting(
    session_factory: sessionmaker[Session], user_id: int, start: dt.datetime, url: str = HOOK
) -> int:
    """A meeting whose start and end callbacks both ended `failed`; return its id."""
    meeting_id = make_meeting_with_hooks(
        session_factory, user_id, {"meeting.start": url, "meeting.end": url}
    )
    deliver_event(session_factory, meeting_id, "meeting.start", start)
    deliver_event(session_factory, meeting_id, "meeting.end", start + dt.timedelta(minutes=30))
    with session_factory.begin() as session:
        session.execute(
            sa.update(Delivery)
            .where(Delivery.meeting_id == meeting_id)
            .values(status="failed", next_attempt_at=None, completed_at=utcnow())
        )
    return meeting_id


def rows(session_factory: sessionmaker[Session], **where: Any) -> list[Delivery]:
    with session_factory() as session:
        query = sa.select(Delivery).filter_by(**where).order_by(Delivery.id)
        return list(session.scalars(query))


def woken(enqueued: Enqueued) -> list[int]:
    """The delivery ids the wake-up messages name, in the order they name them."""
    ids: list[int] = []
    for name, kwargs in enqueued.calls:
        if name == DELIVER:
            ids += [kwargs["delivery_id"], *kwargs.get("more_delivery_ids", [])]
    return ids


def replay(
    client: FlaskClient, account: Account, body: dict[str, Any], key: str | None = None
) -> Any:
    headers = dict(account.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(REPLAY, json=body, headers=headers)


@pytest.fixture
def alice(make_account: Callable[..., Account]) -> Account:
    return make_account(email="alice@example.com")


@pytest.fixture
def bob(make_account: Callable[..., Account]) -> Account:
    return make_account(email="bob@example.com")


class TestReplay:
    def test_resends_each_failed_callback_as_a_new_delivery_with_a_new_webhook_id(
        self,
        client: FlaskClient,
        alice: Account,
        session_factory: sessionmaker[Session],
        enqueued: Enqueued,
    ) -> None:
        first = failed_meeting(session_factory, alice.id, T0 + dt.timedelta(hours=1))
        second = failed_meeting(session_factory, alice.id, T0)
        originals = rows(session_factory, generation=0)

        response = replay(client, alice, {**DAY, "status": "failed"})

        assert response.status_code == 202
        assert response.get_json() == {"count": 4}
        copies = rows(session_factory, generation=1)
        # In order: by meeting, then event time; each meeting's start before its end.
        assert [(c.meeting_id, c.event_type) for c in copies] == [
            (first, "meeting.start"),
            (first, "meeting.end"),
            (second, "meeting.start"),
            (second, "meeting.end"),
        ]
        assert all(c.status == "pending" and c.attempt_count == 0 for c in copies)
        by_key = {(o.event_id, o.webhook_id): o for o in originals}
        for copy in copies:
            original = by_key[copy.event_id, copy.webhook_id]
            assert copy.message_id != original.message_id
            assert copy.body == original.body
            assert copy.meeting_sequence == original.meeting_sequence
        assert len({c.message_id for c in [*copies, *originals]}) == 8
        # The originals stay as they were, as history.
        assert [o.status for o in rows(session_factory, generation=0)] == ["failed"] * 4
        assert woken(enqueued) == [c.id for c in copies]

    def test_a_second_replay_resends_the_copies_that_failed_never_the_originals(
        self, client: FlaskClient, alice: Account, session_factory: sessionmaker[Session]
    ) -> None:
        failed_meeting(session_factory, alice.id, T0)
        assert replay(client, alice, DAY).get_json() == {"count": 2}
        (copy_start, copy_end) = rows(session_factory, generation=1)
        with session_factory.begin() as session:
            session.execute(
                sa.update(Delivery).where(Delivery.id == copy_start.id).values(status="failed")
            )
            session.execute(
                sa.update(Delivery).where(Delivery.id == copy_end.id).values(status="succeeded")
            )

        assert replay(client, alice, DAY).get_json() == {"count": 1}

        (again,) = rows(session_factory, generation=2)
        assert (again.event_id, again.webhook_id) == (copy_start.event_id, copy_start.webhook_id)

    def test_filters_by_event_time_meeting_type_and_status(
        self, client: FlaskClient, alice: Account, session_factory: sessionmaker[Session]
    ) -> None:
        early = failed_meeting(session_factory, alice.id, T0)
        late = failed_meeting(session_factory, alice.id, T0 + dt.timedelta(hours=2))
        with session_factory.begin() as session:
            session.execute(
                sa.update(Delivery)
                .where(Delivery.meeting_id == late, Delivery.event_type == "meeting.end")
                .values(status="succeeded")
            )
        # `from` is inclusive, `to` exclusive: exactly the early meeting's start.
        window = {"from": "2026-11-24T10:00:00Z", "to": "2026-11-24T10:30:00Z"}
        assert replay(client, alice, window).get_json() == {"count": 1}
        assert [(c.meeting_id, c.event_type) for c in rows(session_factory, generation=1)] == [
            (early, "meeting.start")
        ]
        # The same instants in another zone mean the same window.
        shifted = {"from": "2026-11-24T11:30:00+01:00", "to": "2026-11-24T13:00:00+01:00"}
        assert replay(client, alice, {**shifted, "eventType": "meeting.end"}).get_json() == {
            "count": 1
        }
        assert replay(client, alice, {**DAY, "meetingId": late}).get_json() == {"count": 1}
        assert replay(client, alice, {**DAY, "status": "succeeded"}).get_json() == {"count": 1}
        assert [(c.meeting_id, c.event_type) for c in rows(session_factory, generation=1)] == [
            (early, "meeting.start"),
            (early, "meeting.end"),
            (late, "meeting.start"),
            (late, "meeting.end"),
        ]

    def test_leaves_out_callbacks_of_a_disabled_webhook(
        self, client: FlaskClient, alice: Account, session_factory: sessionmaker[Session]
    ) -> None:
        meeting = failed_meeting(session_factory, alice.id, T0)
        with session_factory.begin() as session:
            session.execute(
                sa.update(Webhook)
                .where(Webhook.meeting_id == meeting, Webhook.event_type == "meeting.end")
                .values(disabled_at=utcnow())
            )

        assert replay(client, alice, DAY).get_json() == {"count": 1}
        assert [c.event_type for c in rows(session_factory, generation=1)] == ["meeting.start"]

    def test_nothing_matching_is_a_202_with_zero(
        self, client: FlaskClient, alice: Account, enqueued: Enqueued
    ) -> None:
        response = replay(client, alice, DAY)
        assert (response.status_code, response.get_json()) == (202, {"count": 0})
        assert woken(enqueued) == []

    def test_needs_the_start_meeting_scope(
        self, client: FlaskClient, alice: Account, session_factory: sessionmaker[Session]
    ) -> None:
        with session_factory.begin() as session:
            user = session.get(User, alice.id)
            assert user is not None
            issued = accounts.create_token(session, user=user, scopes=("user_info",))
        response = client.post(
            REPLAY, json=DAY, headers={"Authorization": f"Bearer {issued.token}"}
        )
        assert response.status_code == 403
        assert response.get_json()["code"] == "insufficient-scope"


class TestTenancy:
    def test_another_users_deliveries_are_never_replayed(
        self,
        client: FlaskClient,
        alice: Account,
        bob: Account,
        session_factory: sessionmaker[Session],
        enqueued: Enqueued,
    ) -> None:
        mine = failed_meeting(session_factory, alice.id, T0)
        theirs = failed_meeting(session_factory, bob.id, T0)
        before = [(d.id, d.status, d.updated_at) for d in rows(session_factory, meeting_id=theirs)]

        assert replay(client, alice, DAY).get_json() == {"count": 2}

        assert {c.meeting_id for c in rows(session_factory, generation=1)} == {mine}
        after = [(d.id, d.status, d.updated_at) for d in rows(session_factory, meeting_id=theirs)]
        assert after == before
        theirs_ids = {d.id for d in rows(session_factory, meeting_id=theirs)}
        assert not theirs_ids & set(woken(enqueued))

    def test_another_users_meeting_is_a_404(
        self,
        client: FlaskClient,
        alice: Account,
        bob: Account,
        session_factory: sessionmaker[Session],
    ) -> None:
        theirs = failed_meeting(session_factory, bob.id, T0)
        response = replay(client, alice, {**DAY, "meetingId": theirs})
        assert response.status_code == 404
        assert response.get_json()["code"] == "meeting-not-found"
        assert rows(session_factory, generation=1) == []


def many_failed(session_factory: sessionmaker[Session], user_id: int, count: int) -> None:
    """`count` failed callbacks of one meeting: one event, re-sent at `count` sequences."""
    meeting_id = make_meeting_with_hooks(session_factory, user_id, {"meeting.start": HOOK})
    with session_factory.begin() as session:
        webhook_id = session.scalar(sa.select(Webhook.id).where(Webhook.meeting_id == meeting_id))
        event = Event(
            public_id=new_public_id("evt"),
            source="api",
            source_event_id=new_public_id("msg"),
            type="meeting.start",
            occurred_at=T0,
            user_id=user_id,
            meeting_id=meeting_id,
            payload={},
        )
        session.add(event)
        session.flush()
        session.execute(
            sa.insert(Delivery),
            [
                {
                    "message_id": new_public_id("msg"),
                    "event_id": event.id,
                    "webhook_id": webhook_id,
                    "user_id": user_id,
                    "meeting_id": meeting_id,
                    "event_type": "meeting.start",
                    "meeting_sequence": sequence,
                    "callback_url": HOOK,
                    "body": json.dumps({"sequence": sequence}),
                    "status": "failed",
                }
                for sequence in range(1, count + 1)
            ],
        )


class TestBounds:
    def test_more_than_ten_thousand_is_a_400_naming_the_limit_and_sends_nothing(
        self,
        client: FlaskClient,
        alice: Account,
        session_factory: sessionmaker[Session],
        enqueued: Enqueued,
    ) -> None:
        many_failed(session_factory, alice.id, 10_001)

        response = replay(client, alice, DAY, key="too-many")

        assert response.status_code == 400
        body = response.get_json()
        assert body["code"] == "replay-too-large"
        assert "10000" in body["Message"]
        assert rows(session_factory, generation=1) == []
        assert woken(enqueued) == []
        with session_factory() as session:
            # The key was not spent on a refused replay.
            assert session.scalar(sa.select(sa.func.count()).select_from(DeliveryReplay)) == 0

    def test_exactly_ten_thousand_are_replayed(
        self,
        client: FlaskClient,
        alice: Account,
        session_factory: sessionmaker[Session],
        enqueued: Enqueued,
    ) -> None:
        many_failed(session_factory, alice.id, 10_000)

        response = replay(client, alice, DAY)

        assert (response.status_code, response.get_json()) == (202, {"count": 10_000})
        with session_factory() as session:
            copies = session.execute(
                sa.select(Delivery.id, Delivery.meeting_sequence)
                .where(Delivery.generation == 1)
                .order_by(Delivery.id)
            ).all()
        assert [sequence for _, sequence in copies] == list(range(1, 10_001))
        # Every copy is woken, in batches of a hundred.
        assert woken(enqueued) == [i for i, _ in copies]
        assert len(enqueued.calls) == 100

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"from": "2026-11-25T00:00:00Z", "to": "2026-11-24T00:00:00Z"}, "body"),
            ({"from": "2026-11-24T00:00:00Z", "to": "2026-11-24T00:00:00Z"}, "body"),
            ({"from": "2026-11-24T00:00:00", "to": "2026-11-25T00:00:00Z"}, "from"),
            ({"from": "yesterday", "to": "2026-11-25T00:00:00Z"}, "from"),
            ({"to": "2026-11-25T00:00:00Z"}, "from"),
            ({**DAY, "status": "pending"}, "status"),
            ({**DAY, "status": "lost"}, "status"),
            ({**DAY, "eventType": "meeting.lunch"}, "eventType"),
            ({**DAY, "meetingId": 0}, "meetingId"),
        ],
    )
    def test_a_bad_body_is_a_400_naming_the_field(
        self,
        client: FlaskClient,
        alice: Account,
        session_factory: sessionmaker[Session],
        body: dict[str, Any],
        field: str,
    ) -> None:
        failed_meeting(session_factory, alice.id, T0)

        response = replay(client, alice, body)

        assert response.status_code == 400
        error = response.get_json()
        assert error["code"] == "invalid-request"
        assert [e["field"] for e in error["errors"]] == [field]
        assert rows(session_factory, generation=1) == []

    def test_every_bad_field_is_named_at_once(self, client: FlaskClient, alice: Account) -> None:
        response = replay(client, alice, {"from": "x", "to": "y", "status": "pending"})
        assert response.status_code == 400
        assert {e["field"] for e in response.get_json()["errors"]} == {"from", "to", "status"}

    @pytest.mark.parametrize("key", ["", "k" * 256, "caf\u00e9"])
    def test_a_bad_idempotency_key_is_a_400(
        self, client: FlaskClient, alice: Account, key: str
    ) -> None:
        headers = {**alice.headers, "Idempotency-Key": key}
        response = client.post(REPLAY, json=DAY, headers=headers)
        assert response.status_code == 400
        assert [e["field"] for e in response.get_json()["errors"]] == ["Idempotency-Key"]


def replays(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(DeliveryReplay)) or 0)


class TestIdempotencyKey:
    def test_the_same_key_and_body_answer_the_first_replay_and_send_nothing_again(
        self,
        client: FlaskClient,
        alice: Account,
        session_factory: sessionmaker[Session],
        enqueued: Enqueued,
    ) -> None:
        failed_meeting(session_factory, alice.id, T0)
        first = replay(client, alice, DAY, key="recover-2026-11-24")
        sent = woken(enqueued)
        # Another failed callback appears: a repeat must still not re-send anything.
        failed_meeting(session_factory, alice.id, T0 + dt.timedelta(hours=1))

        again = replay(client, alice, DAY, key="recover-2026-11-24")
        # The same request, written differently, is the same request.
        spelled = {"to": "2026-11-25T01:00:00+01:00", "from": "2026-11-24T00:00:00.000Z"}
        third = replay(client, alice, {**spelled, "status": "failed"}, key="recover-2026-11-24")

        assert first.status_code == again.status_code == third.status_code == 202
        assert first.get_json() == again.get_json() == third.get_json() == {"count": 2}
        assert "Idempotent-Replayed" not in first.headers
        assert again.headers["Idempotent-Replayed"] == "true"
        assert len(rows(session_factory, generation=1)) == 2
        assert woken(enqueued) == sent
        assert replays(session_factory) == 1

    def test_the_same_key_with_another_body_is_a_422(
        self,
        client: FlaskClient,
        alice: Account,
        session_factory: sessionmaker[Session],
        enqueued: Enqueued,
    ) -> None:
        meeting = failed_meeting(session_factory, alice.id, T0)
        replay(client, alice, {**DAY, "eventType": "meeting.start"}, key="k1")
        sent = woken(enqueued)

        response = replay(client, alice, {**DAY, "meetingId": meeting}, key="k1")

        assert response.status_code == 422
        error = response.get_json()
        assert error["code"] == "idempotency-key-reused"
        assert set(error) == {"Message", "code", "errors"}
        assert len(rows(session_factory, generation=1)) == 1
        assert woken(enqueued) == sent

    def test_keys_are_per_user(
        self,
        client: FlaskClient,
        alice: Account,
        bob: Account,
        session_factory: sessionmaker[Session],
    ) -> None:
        failed_meeting(session_factory, alice.id, T0)
        theirs = failed_meeting(session_factory, bob.id, T0)

        assert replay(client, alice, DAY, key="shared").get_json() == {"count": 2}
        # Bob's key is his own: another body is no conflict, and his replay runs.
        response = replay(client, bob, {**DAY, "eventType": "meeting.end"}, key="shared")

        assert (response.status_code, response.get_json()) == (202, {"count": 1})
        assert "Idempotent-Replayed" not in response.headers
        assert [
            (c.meeting_id, c.event_type)
            for c in rows(session_factory, generation=1, user_id=bob.id)
        ] == [(theirs, "meeting.end")]

    def test_a_key_expires_after_24_hours(
        self,
        client: FlaskClient,
        alice: Account,
        session_factory: sessionmaker[Session],
    ) -> None:
        failed_meeting(session_factory, alice.id, T0)
        replay(client, alice, DAY, key="daily")
        with session_factory.begin() as session:
            (record,) = session.scalars(sa.select(DeliveryReplay))
            assert record.key_expires_at is not None
            assert record.created_at is not None
            assert record.key_expires_at - record.created_at == dt.timedelta(hours=24)
            record.key_expires_at = utcnow() - dt.timedelta(seconds=1)
            session.execute(
                sa.update(Delivery).where(Delivery.generation == 1).values(status="failed")
            )

        response = replay(client, alice, {**DAY, "eventType": "meeting.end"}, key="daily")

        assert (response.status_code, response.get_json()) == (202, {"count": 1})
        assert "Idempotent-Replayed" not in response.headers
        assert replays(session_factory) == 2
