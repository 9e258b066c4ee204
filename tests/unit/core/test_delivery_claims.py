"""Claims in one UPDATE ... RETURNING: one holder per delivery, no wait for a row lock, and the
success path's alert-rule check folded into its UPDATE."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.db import is_sqlite, make_engine, utcnow
from core.models import Alert, AlertType, Delivery
from core.services import alerts, delivery_states, outbox
from core.services.outbound_http import Outcome
from tests.conftest import Account
from tests.deliveries_helpers import attempts, load, make_delivery, make_due

HOOK = "https://hooks.example.com/meetings"
SCHEDULE = (5, 300, 1800)
LEASE = dt.timedelta(seconds=50)
OK = Outcome(status_code=204, latency_ms=3, error=None)
FAILED = Outcome(status_code=500, latency_ms=3, error="http-500")
# Longest a thread of a test may take before the test gives up on it.
PATIENCE = 30.0


def claim_any(session_factory: sessionmaker[Session]) -> delivery_states.Claim | None:
    with session_factory.begin() as session:
        return delivery_states.claim_next(session, lease=LEASE)


def record(
    session_factory: sessionmaker[Session], claimed: delivery_states.Claim, outcome: Outcome
) -> delivery_states.Recorded | None:
    with session_factory.begin() as session:
        return delivery_states.record(session, claimed, outcome, schedule=SCHEDULE)


class TestClaimNext:
    def test_two_threads_claiming_at_once_never_hold_the_same_delivery(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        ids = {make_delivery(session_factory, account.id, HOOK) for _ in range(30)}
        claimed: dict[str, list[int]] = {"a": [], "b": []}
        barrier = threading.Barrier(2)

        def claimer(name: str) -> None:
            barrier.wait()
            while (got := claim_any(session_factory)) is not None:
                claimed[name].append(got.delivery_id)

        threads = [threading.Thread(target=claimer, args=(name,)) for name in claimed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(PATIENCE)
        assert not any(thread.is_alive() for thread in threads)
        a, b = set(claimed["a"]), set(claimed["b"])
        assert len(claimed["a"]) + len(claimed["b"]) == len(ids)  # none claimed twice
        assert a | b == ids
        assert not a & b
        for delivery_id in ids:
            assert [x.error for x in attempts(session_factory, delivery_id)] == ["in-progress"]
            assert load(session_factory, delivery_id).attempt_count == 1

    def test_the_oldest_due_delivery_goes_first_and_others_are_left_alone(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        older, newer, later, done = (
            make_delivery(session_factory, account.id, HOOK) for _ in range(4)
        )
        now = utcnow()
        make_due(session_factory, older, now - dt.timedelta(minutes=2))
        make_due(session_factory, newer, now - dt.timedelta(minutes=1))
        make_due(session_factory, later, now + dt.timedelta(minutes=1))
        with session_factory.begin() as session:
            session.execute(
                sa.update(Delivery).where(Delivery.id == done).values(status="succeeded")
            )
        first = claim_any(session_factory)
        second = claim_any(session_factory)
        assert first is not None
        assert second is not None
        assert (first.delivery_id, second.delivery_id) == (older, newer)
        assert first.more_due  # `newer` was still due and free
        assert not second.more_due  # `later` is not due yet, `done` is done
        assert claim_any(session_factory) is None
        assert load(session_factory, later).attempt_count == 0

    def test_a_claim_brings_what_the_request_needs(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        before = utcnow()
        claimed = claim_any(session_factory)
        assert claimed is not None
        row = load(session_factory, delivery_id)
        assert claimed.delivery_id == delivery_id
        assert (claimed.message_id, claimed.callback_url, claimed.body) == (
            row.message_id,
            HOOK,
            row.body,
        )
        assert claimed.secrets == (account.user.signing_secret,)
        assert claimed.lease == row.locked_until
        assert before + LEASE <= claimed.lease <= utcnow() + LEASE
        (attempt,) = attempts(session_factory, delivery_id)
        assert attempt.id == claimed.attempt_id

    def test_a_claim_does_not_wait_for_a_row_another_transaction_holds(
        self, session_factory: sessionmaker[Session], database_url: str, account: Account
    ) -> None:
        if is_sqlite(database_url):
            pytest.skip("SQLite locks the whole database: test_delivery_lease waits on it")
        held, free = (make_delivery(session_factory, account.id, HOOK) for _ in range(2))
        make_due(session_factory, held, utcnow() - dt.timedelta(minutes=1))  # the oldest
        results: list[delivery_states.Claim | None] = []
        engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as other:
                other.execute(
                    sa.text("SELECT id FROM deliveries WHERE id = :id FOR UPDATE"), {"id": held}
                )
                for among in ([held], None):
                    thread = threading.Thread(
                        target=lambda among=among: results.append(_claim(session_factory, among))
                    )
                    thread.start()
                    thread.join(PATIENCE)
                    assert not thread.is_alive(), "the claim waited for the row lock"
                other.rollback()
        finally:
            engine.dispose()
        named, any_due = results
        assert named is None  # left to whoever holds it
        assert any_due is not None
        assert any_due.delivery_id == free  # the next one, not a wait for the first
        assert load(session_factory, held).attempt_count == 0


def _claim(
    session_factory: sessionmaker[Session], among: list[int] | None
) -> delivery_states.Claim | None:
    with session_factory.begin() as session:
        return delivery_states.claim_next(session, among=among, lease=LEASE)


class TestDeadWorkers:
    def test_a_worker_killed_between_claim_and_record_leaves_the_delivery_to_the_sweep(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        now = utcnow()
        with session_factory.begin() as session:
            dead = delivery_states.claim_next(session, lease=LEASE, now=now)
        assert dead is not None  # ... and its worker is killed here: nothing is recorded
        with session_factory() as session:
            assert outbox.due_ids(session, now + LEASE / 2, resend_after=LEASE) == []
            after = now + LEASE + dt.timedelta(seconds=1)
            assert outbox.due_ids(session, after, resend_after=LEASE) == [delivery_id]
        with session_factory.begin() as session:
            again = delivery_states.claim_next(session, lease=LEASE, now=after)
        assert again is not None
        assert again.message_id == dead.message_id  # the same webhook-id
        assert record(session_factory, again, OK) == delivery_states.Recorded(status="succeeded")
        assert [a.error for a in attempts(session_factory, delivery_id)] == ["interrupted", None]

    def test_a_success_recorded_after_the_lease_ran_out_changes_nothing(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        now = utcnow()
        with session_factory.begin() as session:
            slow = delivery_states.claim_next(session, lease=LEASE, now=now)
        with session_factory.begin() as session:
            fresh = delivery_states.claim_next(session, lease=LEASE, now=now + 2 * LEASE)
        assert slow is not None
        assert fresh is not None
        recorded = record(session_factory, slow, OK)
        assert recorded == delivery_states.Recorded(status="pending", stale=True)
        row = load(session_factory, delivery_id)
        assert (row.status, row.locked_until) == ("pending", fresh.lease)
        assert record(session_factory, fresh, FAILED) is not None
        row = load(session_factory, delivery_id)
        assert row.status == "pending"
        assert row.completed_at is None
        # The slow worker's answer is in the log as what it was; the newer claim decided.
        assert [a.status_code for a in attempts(session_factory, delivery_id)] == [204, 500]

    def test_a_delivery_deleted_meanwhile_records_nothing(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        claimed = claim_any(session_factory)
        assert claimed is not None
        with session_factory.begin() as session:
            session.execute(sa.delete(Delivery).where(Delivery.id == delivery_id))
        assert record(session_factory, claimed, OK) is None


@pytest.fixture
def rule_queries(engine: Engine) -> Iterator[list[str]]:
    """Record every statement that reads the alert rules on their own (a SELECT of them)."""
    seen: list[str] = []

    def look(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "alert_rules" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", look)
    yield seen
    event.remove(engine, "before_cursor_execute", look)


def add_recovery_rule(session_factory: sessionmaker[Session], user_id: int) -> int:
    with session_factory.begin() as session:
        rule = alerts.create_rule(
            session,
            user_id,
            type=AlertType.WEBHOOK_RECOVERED,
            params={},
            callback_url="https://alerts.example.com/in",
        )
        return rule.id


def recoveries(session_factory: sessionmaker[Session]) -> list[Alert]:
    with session_factory() as session:
        return list(
            session.scalars(sa.select(Alert).where(Alert.type == str(AlertType.WEBHOOK_RECOVERED)))
        )


class TestSuccessAndRules:
    def test_a_success_of_a_user_without_a_recovery_rule_reads_no_rule(
        self,
        session_factory: sessionmaker[Session],
        account: Account,
        rule_queries: list[str],
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        claimed = claim_any(session_factory)
        assert claimed is not None
        assert record(session_factory, claimed, OK) == delivery_states.Recorded(status="succeeded")
        assert rule_queries == []
        row = load(session_factory, delivery_id)
        assert (row.status, row.next_attempt_at, row.locked_until) == ("succeeded", None, None)
        assert row.completed_at is not None

    def test_a_rule_made_while_the_attempt_is_in_flight_sees_its_success(
        self,
        session_factory: sessionmaker[Session],
        account: Account,
        rule_queries: list[str],
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        first = claim_any(session_factory)
        assert first is not None
        record(session_factory, first, FAILED)  # a failing streak of one attempt
        make_due(session_factory, delivery_id)
        claimed = claim_any(session_factory)
        assert claimed is not None
        rule_id = add_recovery_rule(session_factory, account.id)  # between claim and record
        assert record(session_factory, claimed, OK) == delivery_states.Recorded(status="succeeded")
        assert rule_queries != []  # the rule was looked up: there is one
        (alert,) = recoveries(session_factory)
        assert alert.rule_id == rule_id
        assert alert.data["failedAttempts"] == 1

    def test_a_deleted_rule_is_no_rule(
        self,
        session_factory: sessionmaker[Session],
        account: Account,
        rule_queries: list[str],
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        first = claim_any(session_factory)
        assert first is not None
        record(session_factory, first, FAILED)
        make_due(session_factory, delivery_id)
        rule_id = add_recovery_rule(session_factory, account.id)
        with session_factory.begin() as session:
            alerts.delete_rule(session, account.id, rule_id)
        claimed = claim_any(session_factory)
        assert claimed is not None
        rule_queries.clear()
        assert record(session_factory, claimed, OK) == delivery_states.Recorded(status="succeeded")
        assert rule_queries == []
        assert recoveries(session_factory) == []


def add_rule_elsewhere(database_url: str, user_id: int, rule_type: AlertType) -> int:
    """Create a rule as another process would: its own engine, its own committed transaction."""
    other = make_engine(database_url)
    try:
        with sessionmaker(bind=other).begin() as session:
            return alerts.create_rule(
                session,
                user_id,
                type=rule_type,
                params={},
                callback_url="https://alerts.example.com/in",
            ).id
    finally:
        other.dispose()


def alerts_of(session_factory: sessionmaker[Session], rule_type: AlertType) -> list[Alert]:
    with session_factory() as session:
        return list(session.scalars(sa.select(Alert).where(Alert.type == str(rule_type))))


class TestRulesMadeElsewhere:
    """A rule another process commits just before an attempt's result is recorded fires."""

    def test_a_delivery_failing_for_good_fires_a_rule_made_just_before(
        self, session_factory: sessionmaker[Session], database_url: str, account: Account
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        for _ in SCHEDULE:  # every retry fails, the last one is left
            claimed = claim_any(session_factory)
            assert claimed is not None
            assert record(session_factory, claimed, FAILED) is not None
            make_due(session_factory, delivery_id)
        claimed = claim_any(session_factory)
        assert claimed is not None
        rule_id = add_rule_elsewhere(database_url, account.id, AlertType.DELIVERY_FAILED)
        assert record(session_factory, claimed, FAILED) == delivery_states.Recorded(status="failed")
        (alert,) = alerts_of(session_factory, AlertType.DELIVERY_FAILED)
        assert alert.rule_id == rule_id

    def test_a_recovery_fires_a_rule_made_just_before(
        self, session_factory: sessionmaker[Session], database_url: str, account: Account
    ) -> None:
        delivery_id = make_delivery(session_factory, account.id, HOOK)
        first = claim_any(session_factory)
        assert first is not None
        record(session_factory, first, FAILED)
        make_due(session_factory, delivery_id)
        claimed = claim_any(session_factory)
        assert claimed is not None
        rule_id = add_rule_elsewhere(database_url, account.id, AlertType.WEBHOOK_RECOVERED)
        assert record(session_factory, claimed, OK) == delivery_states.Recorded(status="succeeded")
        (alert,) = alerts_of(session_factory, AlertType.WEBHOOK_RECOVERED)
        assert alert.rule_id == rule_id
