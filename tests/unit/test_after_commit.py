"""Wake-ups go out once their transaction commits, from the receiver and from the workers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from core import task_names, wakeups
from core.config import Settings
from core.db import utcnow
from core.models import Event
from core.services import events
from receiver import create_app
from receiver.db import get_session
from receiver.tasks import CeleryEnqueuer
from tests.conftest import Enqueued
from workers.celery_app import DELIVERIES_QUEUE, EVENTS_QUEUE, DbTask, make_celery


def record(session: Session) -> int:
    event, _ = events.record_event(
        session, source="platform", source_event_id="wh-1", type="meeting.start",
        occurred_at=utcnow(), payload={}, meeting_id=None, user_id=None,
    )  # fmt: skip
    return event.id


def count_events(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Event)) or 0)


class TestReceiver:
    def test_commit_publishes_what_the_services_noted(self, app: Flask, enqueued: Enqueued) -> None:
        with app.app_context():
            session = get_session()
            event_id = record(session)
            assert enqueued.calls == []  # nothing before the commit
            session.commit()
        assert enqueued.calls == [(task_names.PROCESS_EVENT, {"event_id": event_id})]

    def test_rollback_publishes_nothing(
        self, app: Flask, enqueued: Enqueued, session_factory: sessionmaker[Session]
    ) -> None:
        with app.app_context():
            session = get_session()
            record(session)
            wakeups.note(session, task_names.DELIVER, delivery_id=1)
            session.rollback()
            session.commit()  # a later commit of the same session sends nothing either
        assert enqueued.calls == []
        assert count_events(session_factory) == 0

    def test_a_request_that_fails_publishes_nothing(
        self, app: Flask, enqueued: Enqueued, session_factory: sessionmaker[Session]
    ) -> None:
        app.testing = False  # the 500 handler answers instead of re-raising

        @app.get("/explode")
        def explode() -> str:
            record(get_session())
            raise RuntimeError("boom")

        response = app.test_client().get("/explode")
        assert response.status_code == 500
        assert enqueued.calls == []
        assert count_events(session_factory) == 0

    def test_the_callers_factory_publishes_nothing(
        self, app: Flask, enqueued: Enqueued, session_factory: sessionmaker[Session]
    ) -> None:
        with session_factory.begin() as session:
            record(session)
        assert enqueued.calls == []

    def test_a_broker_failure_is_logged_not_raised(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        def refuse(task_name: str, kwargs: dict[str, Any]) -> None:
            raise ConnectionError("broker down")

        app = create_app(settings, session_factory=session_factory, enqueue=refuse)
        with app.app_context():
            session = get_session()
            record(session)
            session.commit()
        assert count_events(session_factory) == 1
        assert "receiver.enqueue.failed task=workers.events.process_event" in caplog.text


class TestWorkers:
    @pytest.fixture
    def sent(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        monkeypatch: pytest.MonkeyPatch,
    ) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        app = make_celery(settings)
        calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

        def send_task(name: str, kwargs: dict[str, Any], **options: Any) -> None:
            calls.append((name, kwargs, options))

        monkeypatch.setattr(app, "send_task", send_task)
        monkeypatch.setattr(DbTask, "_session_factory", session_factory)
        return calls

    def test_commit_publishes_routed_as_the_task_routes_say(
        self, sent: list[tuple[str, dict[str, Any], dict[str, Any]]]
    ) -> None:
        with DbTask().session_scope() as session:
            event_id = record(session)
            wakeups.note(session, task_names.DELIVER, delivery_id=7)
            assert sent == []
        assert sent == [
            (task_names.PROCESS_EVENT, {"event_id": event_id}, {"queue": EVENTS_QUEUE}),
            (task_names.DELIVER, {"delivery_id": 7}, {"queue": DELIVERIES_QUEUE}),
        ]

    def test_an_error_rolls_back_and_publishes_nothing(
        self,
        sent: list[tuple[str, dict[str, Any], dict[str, Any]]],
        session_factory: sessionmaker[Session],
    ) -> None:
        def fail_midway() -> None:
            with DbTask().session_scope() as session:
                record(session)
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            fail_midway()
        assert sent == []
        assert count_events(session_factory) == 0

    def test_a_broker_failure_is_logged_not_raised(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        app = make_celery(settings)

        def refuse(*_args: Any, **_kwargs: Any) -> None:
            raise ConnectionError("broker down")

        monkeypatch.setattr(app, "send_task", refuse)
        monkeypatch.setattr(DbTask, "_session_factory", session_factory)
        with DbTask().session_scope() as session:
            record(session)
        assert count_events(session_factory) == 1
        assert "workers.wakeup.publish_failed task=workers.events.process_event" in caplog.text


class TestSavepoints:
    def test_a_savepoint_neither_publishes_nor_drops_the_transactions_wake_ups(self) -> None:
        factory = sessionmaker(bind=sa.create_engine("sqlite://"))
        published: list[str] = []
        wakeups.publish_after_commit(factory, lambda name, _kwargs: published.append(name))
        with factory() as session, session.begin():
            wakeups.note(session, "noted-before")
            with session.begin_nested():
                wakeups.note(session, "noted-in-savepoint")
            assert published == []  # releasing a savepoint is no commit
            with pytest.raises(ValueError, match="undo"), session.begin_nested():
                raise ValueError("undo")
            assert [name for name, _ in wakeups.pending(session)] == [
                "noted-before",
                "noted-in-savepoint",
            ]  # rolling a savepoint back keeps what the transaction noted
        assert published == ["noted-before", "noted-in-savepoint"]


Sent = list[tuple[str, dict[str, Any]]]


@dataclass
class HeldSender:
    """A CeleryEnqueuer whose first publish hangs until released, as a slow broker's would."""

    enqueuer: CeleryEnqueuer
    sent: Sent
    first_send_started: threading.Event
    release: threading.Event

    def event_ids(self) -> list[int]:
        singles = [kw["event_id"] for name, kw in self.sent if name == task_names.PROCESS_EVENT]
        batched = [i for _, kw in self.sent for i in kw.get("event_ids", [])]
        return sorted(singles + batched)


class TestReceiverSender:
    """The receiver's CeleryEnqueuer publishes from a thread of its own, folding event wake-ups."""

    @pytest.fixture
    def held(self, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldSender]:
        held = HeldSender(CeleryEnqueuer(settings), [], threading.Event(), threading.Event())

        def send_task(name: str, kwargs: dict[str, Any], **_options: Any) -> None:
            if not held.first_send_started.is_set():
                held.first_send_started.set()
                assert held.release.wait(10)
            held.sent.append((name, kwargs))

        monkeypatch.setattr(held.enqueuer.celery, "send_task", send_task)
        yield held
        held.release.set()
        held.enqueuer.close()

    def test_the_request_does_not_wait_for_the_broker(self, held: HeldSender) -> None:
        held.enqueuer(task_names.PROCESS_EVENT, {"event_id": 1})
        assert held.first_send_started.wait(10)
        assert held.sent == []  # the publish hangs, the caller has returned

    def test_wake_ups_that_wait_together_go_as_one_batch(self, held: HeldSender) -> None:
        held.enqueuer(task_names.PROCESS_EVENT, {"event_id": 1})
        assert held.first_send_started.wait(10)
        # While the first publish hangs, more requests commit their events.
        for event_id in (2, 3, 4):
            held.enqueuer(task_names.PROCESS_EVENT, {"event_id": event_id})
        held.enqueuer(task_names.DELIVER, {"delivery_id": 9})
        held.release.set()
        held.enqueuer.flush()
        assert held.sent == [
            (task_names.PROCESS_EVENT, {"event_id": 1}),
            (task_names.PROCESS_EVENTS, {"event_ids": [2, 3, 4]}),
            (task_names.DELIVER, {"delivery_id": 9}),
        ]

    def test_a_batch_names_at_most_event_batch_events(self, held: HeldSender) -> None:
        held.enqueuer(task_names.DELIVER, {"delivery_id": 1})
        assert held.first_send_started.wait(10)
        for event_id in range(250):
            held.enqueuer(task_names.PROCESS_EVENT, {"event_id": event_id})
        held.release.set()
        held.enqueuer.flush()
        sizes = [len(kwargs["event_ids"]) for _, kwargs in held.sent[1:]]
        assert sizes == [wakeups.BATCH_LIMIT, wakeups.BATCH_LIMIT, 50]
        assert held.event_ids() == list(range(250))

    def test_close_sends_what_is_waiting(self, held: HeldSender) -> None:
        held.release.set()
        for event_id in range(5):
            held.enqueuer(task_names.PROCESS_EVENT, {"event_id": event_id})
        held.enqueuer.close()
        assert held.event_ids() == list(range(5))

    def test_a_broker_failure_is_logged_and_the_sender_goes_on(
        self,
        settings: Settings,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        sender = CeleryEnqueuer(settings)
        sent: list[str] = []

        def send_task(name: str, kwargs: dict[str, Any], **_options: Any) -> None:
            if name == task_names.DELIVER:
                raise ConnectionError("broker down")
            sent.append(name)

        monkeypatch.setattr(sender.celery, "send_task", send_task)
        sender(task_names.DELIVER, {"delivery_id": 1})
        sender.flush()
        sender(task_names.PROCESS_EVENT, {"event_id": 2})
        sender.close()
        assert "receiver.enqueue.failed task=workers.deliveries.deliver" in caplog.text
        assert sent == [task_names.PROCESS_EVENT]


class TestFold:
    def test_a_lone_wake_up_keeps_its_own_task(self) -> None:
        assert wakeups.fold([(task_names.PROCESS_EVENT, {"event_id": 1})]) == [
            (task_names.PROCESS_EVENT, {"event_id": 1})
        ]

    def test_several_fold_into_batches_in_order_and_others_pass_through(self) -> None:
        wake_ups = [
            (task_names.PROCESS_EVENT, {"event_id": 1}),
            (task_names.DELIVER, {"delivery_id": 7}),
            (task_names.PROCESS_EVENT, {"event_id": 2}),
            # Arguments the batch cannot carry: sent as it is.
            (task_names.PROCESS_EVENT, {"event_id": 3, "trace_id": "t"}),
        ]
        assert wakeups.fold(wake_ups) == [
            (task_names.PROCESS_EVENTS, {"event_ids": [1, 2]}),
            (task_names.DELIVER, {"delivery_id": 7}),
            (task_names.PROCESS_EVENT, {"event_id": 3, "trace_id": "t"}),
        ]

    def test_deliver_wake_ups_fold_into_deliver_messages_the_previous_release_reads(
        self,
    ) -> None:
        wake_ups = [(task_names.DELIVER, {"delivery_id": n}) for n in range(1, 203)]
        folded = wakeups.fold(wake_ups)
        assert [name for name, _ in folded] == [task_names.DELIVER] * 3
        # The first of each batch where a worker of the previous release looks for it.
        assert [kwargs["delivery_id"] for _, kwargs in folded] == [1, 101, 201]
        assert folded[0][1]["more_delivery_ids"] == list(range(2, 101))
        assert folded[2][1] == {"delivery_id": 201, "more_delivery_ids": [202]}
        assert wakeups.fold(wake_ups[:1]) == [(task_names.DELIVER, {"delivery_id": 1})]

    def test_a_transaction_that_noted_several_events_sends_one_batch(
        self, app: Flask, enqueued: Enqueued
    ) -> None:
        with app.app_context():
            session = get_session()
            ids = []
            for n in range(3):
                event, _ = events.record_event(
                    session, source="platform", source_event_id=f"wh-{n}", type="meeting.start",
                    occurred_at=utcnow(), payload={}, meeting_id=None, user_id=None,
                )  # fmt: skip
                ids.append(event.id)
            session.commit()
        assert enqueued.calls == [(task_names.PROCESS_EVENTS, {"event_ids": ids})]
