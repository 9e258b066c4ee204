from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from celery import Celery
from celery.exceptions import Retry
from prometheus_client import REGISTRY
from sqlalchemy.orm import Session, sessionmaker

from core import task_names
from core.config import Settings
from core.models import Delivery, Event, Meeting, Webhook
from core.security import new_public_id
from core.services import backoff, events, inbox
from tests.conftest import Account
from workers.celery_app import DELIVERIES_QUEUE, EVENTS_QUEUE, DbTask, make_celery
from workers.tasks import events as event_tasks
from workers.tasks.events import process_event, process_events, sweep_inbox

Sent = list[tuple[str, dict[str, Any], dict[str, Any]]]


@pytest.fixture
def celery_app(
    settings: Settings, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> tuple[Celery, Sent]:
    app = make_celery(settings)  # memory:// broker: nothing leaves the process
    sent: Sent = []

    def send_task(name: str, kwargs: dict[str, Any] | None = None, **options: Any) -> None:
        sent.append((name, kwargs or {}, options))

    monkeypatch.setattr(app, "send_task", send_task)
    # The tasks run in-process against the test database (no task_always_eager).
    monkeypatch.setattr(DbTask, "_session_factory", session_factory)
    # Keep the tasks bound to this app, so that self.app.send_task is the recorder above.
    for task in (process_event, process_events, sweep_inbox):
        monkeypatch.setattr(task, "_app", app, raising=False)
    return app, sent


@pytest.fixture
def swept(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], str]]:
    calls: list[tuple[dict[str, Any], str]] = []

    def apply_async(*, kwargs: dict[str, Any], queue: str, **_options: Any) -> None:
        calls.append((kwargs, queue))

    monkeypatch.setattr(process_event, "apply_async", apply_async)
    return calls


@pytest.fixture
def meeting_with_hook(session_factory: sessionmaker[Session], account: Account) -> int:
    with session_factory.begin() as session:
        meeting = Meeting(
            user_id=account.id, kind="adhoc", meeting_code="111111111",
            conference_id="222222222", organizer_code="1234", participants=[],
        )  # fmt: skip
        session.add(meeting)
        session.flush()
        session.add(
            Webhook(
                public_id=new_public_id("wh"), user_id=account.id, meeting_id=meeting.id,
                event_type="meeting.start", callback_url="https://93.184.216.34/h",
            )
        )  # fmt: skip
        return meeting.id


def record(
    session_factory: sessionmaker[Session],
    meeting_id: int | None,
    *,
    age: float = 0,
    resent: int = 0,
    last_resent_age: float | None = None,
) -> int:
    now = dt.datetime.now(dt.UTC)
    with session_factory.begin() as session:
        event, _ = events.record_event(
            session, source="platform", source_event_id=new_public_id("msg"),
            type="meeting.start", occurred_at=now, payload={},
            meeting_id=meeting_id, user_id=None,
        )  # fmt: skip
        event.received_at = now - dt.timedelta(seconds=age)
        event.enqueue_count = resent
        if last_resent_age is not None:
            event.last_enqueued_at = now - dt.timedelta(seconds=last_resent_age)
        return event.id


def record_typed(
    session_factory: sessionmaker[Session], meeting_id: int, type_: str, at: dt.datetime
) -> int:
    with session_factory.begin() as session:
        event, _ = events.record_event(
            session, source="platform", source_event_id=new_public_id("msg"), type=type_,
            occurred_at=at, payload={}, meeting_id=meeting_id, user_id=None,
        )  # fmt: skip
        return event.id


def processed(name: str, outcome: str) -> float:
    """The counter's value for `outcome`, over every event type."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == f"{name}_total" and sample.labels.get("outcome") == outcome
    )


def unprocessed(session_factory: sessionmaker[Session]) -> int:
    with session_factory() as session:
        return int(
            session.scalar(
                sa.select(sa.func.count()).select_from(Event).where(Event.processed_at.is_(None))
            )
            or 0
        )


class TestProcessEvent:
    def test_registered_name_and_route(self, settings: Settings) -> None:
        app = make_celery(settings)
        assert "workers.events.process_event" in app.tasks
        assert "workers.sweep.sweep_inbox" in app.tasks
        assert app.amqp.router.route({}, "workers.events.process_event")["queue"].name == (
            EVENTS_QUEUE
        )
        assert process_event.acks_late is True
        assert process_event.ignore_result is True
        assert process_event.time_limit
        assert process_event.soft_time_limit

    def test_applies_and_wakes_the_delivery_after_commit(
        self,
        celery_app: tuple[Celery, Sent],
        session_factory: sessionmaker[Session],
        meeting_with_hook: int,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        app, sent = celery_app
        visible: list[bool] = []

        def send_task(name: str, kwargs: dict[str, Any], **options: Any) -> None:
            # Another connection must see the delivery when its wake-up goes out.
            with session_factory() as other:
                visible.append(other.get(Delivery, kwargs["delivery_id"]) is not None)
            sent.append((name, kwargs, options))

        monkeypatch.setattr(app, "send_task", send_task)
        event_id = record(session_factory, meeting_with_hook)
        labels = {"type": "meeting.start", "outcome": "applied"}
        before = processed("meetinghooks_events_processed", "applied")
        typed = REGISTRY.get_sample_value("meetinghooks_events_processed_total", labels) or 0.0
        assert process_event(event_id=event_id) == "applied"
        assert processed("meetinghooks_events_processed", "applied") - before == 1
        after = REGISTRY.get_sample_value("meetinghooks_events_processed_total", labels)
        assert after == typed + 1
        with session_factory() as session:
            meeting = session.get(Meeting, meeting_with_hook)
            assert meeting is not None
            assert meeting.status == "started"
            event = session.get(Event, event_id)
            assert event is not None
            assert event.processed_at is not None
        assert len(sent) == 1
        name, kwargs, options = sent[0]
        assert name == "workers.deliveries.deliver"
        assert options["queue"] == DELIVERIES_QUEUE
        assert kwargs == {"delivery_id": kwargs["delivery_id"]}
        assert visible == [True]

    def test_second_run_is_a_no_op(
        self,
        celery_app: tuple[Celery, Sent],
        session_factory: sessionmaker[Session],
        meeting_with_hook: int,
    ) -> None:
        _, sent = celery_app
        event_id = record(session_factory, meeting_with_hook)
        process_event(event_id=event_id)
        before = processed("meetinghooks_events_processed", "already-processed")
        # A redelivered message (acks_late, a killed worker, the sweep) changes nothing.
        assert process_event(event_id=event_id) == "applied"
        assert processed("meetinghooks_events_processed", "already-processed") - before == 1
        assert len(sent) == 1
        with session_factory() as session:
            meeting = session.get(Meeting, meeting_with_hook)
            assert meeting is not None
            assert meeting.event_sequence == 1

    def test_unknown_ids_unknown_meetings_and_extra_arguments(
        self, celery_app: tuple[Celery, Sent], session_factory: sessionmaker[Session]
    ) -> None:
        _, sent = celery_app
        before = processed("meetinghooks_events_processed", "unknown-meeting")
        assert process_event(event_id=424242, trace_id="from-a-newer-sender") == "missing"
        event_id = record(session_factory, None)
        assert process_event(event_id=event_id) == "unknown-meeting"
        assert processed("meetinghooks_events_processed", "unknown-meeting") - before == 1
        assert sent == []

    def test_transient_database_error_is_retried(
        self,
        celery_app: tuple[Celery, Sent],
        session_factory: sessionmaker[Session],
        meeting_with_hook: int,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        event_id = record(session_factory, meeting_with_hook)
        retried: list[dict[str, Any]] = []

        def down(*_args: object, **_kwargs: object) -> None:
            raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))

        def retry(**kwargs: Any) -> Retry:
            retried.append(kwargs)
            raise Retry("retry", kwargs.get("exc"))

        monkeypatch.setattr(events, "apply_event", down)
        monkeypatch.setattr(process_event, "retry", retry)
        with pytest.raises(Retry):
            process_event(event_id=event_id)
        assert isinstance(retried[0]["exc"], sa.exc.OperationalError)
        assert 0 <= retried[0]["countdown"] <= process_event.retry_backoff_max
        assert unprocessed(session_factory) == 1  # rolled back; the retry or the sweep finishes it

    def test_a_bug_is_not_retried(
        self,
        celery_app: tuple[Celery, Sent],
        session_factory: sessionmaker[Session],
        meeting_with_hook: int,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        event_id = record(session_factory, meeting_with_hook)

        def broken(*_args: object, **_kwargs: object) -> None:
            raise KeyError("bug")

        def retry(**_kwargs: Any) -> None:
            raise AssertionError("a bug must not be retried")

        monkeypatch.setattr(events, "apply_event", broken)
        monkeypatch.setattr(process_event, "retry", retry)
        with pytest.raises(KeyError):
            process_event(event_id=event_id)

    def test_broker_down_after_commit_keeps_the_event_processed(
        self,
        celery_app: tuple[Celery, Sent],
        session_factory: sessionmaker[Session],
        meeting_with_hook: int,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        app, _ = celery_app

        def broker_down(*_args: object, **_kwargs: object) -> None:
            raise ConnectionRefusedError("broker down")

        monkeypatch.setattr(app, "send_task", broker_down)
        event_id = record(session_factory, meeting_with_hook)
        assert process_event(event_id=event_id) == "applied"
        assert unprocessed(session_factory) == 0


class TestProcessEvents:
    def test_registered_name_and_route(self, settings: Settings) -> None:
        app = make_celery(settings)
        assert app.amqp.router.route({}, task_names.PROCESS_EVENTS)["queue"].name == EVENTS_QUEUE
        assert process_events.acks_late is True
        assert process_events.time_limit

    def test_a_batch_applies_each_event_once_and_wakes_the_deliveries(
        self,
        celery_app: tuple[Celery, Sent],
        session_factory: sessionmaker[Session],
        meeting_with_hook: int,
    ) -> None:
        _, sent = celery_app
        now = dt.datetime.now(dt.UTC)
        done = record(session_factory, None)
        process_event(event_id=done)  # already applied: the batch leaves it alone
        sent.clear()
        start = record(session_factory, meeting_with_hook)
        end = record_typed(session_factory, meeting_with_hook, "meeting.end", now)
        unknown = record(session_factory, None)

        assert process_events(event_ids=[end, unknown, done, start, 424242]) == 3
        assert process_events(event_ids=[end, start]) == 0  # a repeated message does nothing
        assert unprocessed(session_factory) == 0
        with session_factory() as session:
            meeting = session.get_one(Meeting, meeting_with_hook)
            assert meeting.status == "ended"
            outcomes = {
                row.id: row.outcome for row in session.execute(sa.select(Event.id, Event.outcome))
            }
        assert outcomes[unknown] == "unknown-meeting"
        assert [name for name, _, _ in sent] == [task_names.DELIVER]  # the start's callback

    def test_an_event_that_fails_does_not_hold_back_the_others(
        self,
        celery_app: tuple[Celery, Sent],
        session_factory: sessionmaker[Session],
        meeting_with_hook: int,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        poisoned = record(session_factory, None)
        healthy = [record(session_factory, None) for _ in range(3)]
        apply = events._apply

        def fails_on_one(session: Session, event: Event, *args: Any, **kwargs: Any) -> Any:
            if event.id == poisoned:
                raise KeyError("bug")
            return apply(session, event, *args, **kwargs)

        # What applying one event does, in a batch and alone.
        monkeypatch.setattr(events, "_apply", fails_on_one)
        assert process_events(event_ids=[poisoned, *healthy]) == 3
        assert unprocessed(session_factory) == 1  # the sweep re-sends it on its own
        assert f"workers.event.failed event={poisoned}" in caplog.text
        with session_factory() as session:
            # Counted as a second try: out of the drains, on the sweep's back-off.
            assert session.get_one(Event, poisoned).enqueue_count == 1

    def test_a_transient_database_error_retries_the_batch(
        self,
        celery_app: tuple[Celery, Sent],
        session_factory: sessionmaker[Session],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        ids = [record(session_factory, None) for _ in range(2)]

        def down(*_args: object, **_kwargs: object) -> None:
            raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))

        def retry(**kwargs: Any) -> Retry:
            raise Retry("retry", kwargs.get("exc"))

        monkeypatch.setattr(events, "apply_batch", down)
        monkeypatch.setattr(process_events, "retry", retry)
        with pytest.raises(Retry):
            process_events(event_ids=ids)
        assert unprocessed(session_factory) == 2


class TestInboxDrain:
    """A wake-up goes on to apply the fresh events waiting in the inbox, a batch at a time."""

    def test_one_wake_up_applies_every_event_whose_message_was_lost(
        self,
        celery_app: tuple[Celery, Sent],
        session_factory: sessionmaker[Session],
        meeting_with_hook: int,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        _, sent = celery_app
        monkeypatch.setattr(event_tasks, "DRAIN_BATCH", 4)
        woken = record(session_factory, meeting_with_hook)
        # Nine more whose wake-ups never went out: more than two full batches.
        lost = [record(session_factory, None) for _ in range(9)]
        sent.clear()
        claims: list[int] = []
        claim_fresh = inbox.claim_fresh

        def counted(session: Session, *, limit: int) -> list[int]:
            claimed = claim_fresh(session, limit=limit)
            claims.append(len(claimed))
            return claimed

        monkeypatch.setattr(inbox, "claim_fresh", counted)

        assert process_event(event_id=woken) == "applied"
        assert unprocessed(session_factory) == 0
        assert claims == [4, 4, 1]  # stops at the first batch short of full
        with session_factory() as session:
            outcomes = session.scalars(sa.select(Event.outcome).where(Event.id.in_(lost))).all()
        assert outcomes == ["unknown-meeting"] * 9
        # Their own messages, when they come, find nothing to do.
        assert process_events(event_ids=lost) == 0
        assert [name for name, _, _ in sent] == [task_names.DELIVER]  # the woken start's

    def test_events_the_sweep_re_sent_are_left_to_their_own_messages(
        self,
        celery_app: tuple[Celery, Sent],
        session_factory: sessionmaker[Session],
    ) -> None:
        woken = record(session_factory, None)
        fresh = record(session_factory, None)
        resent = record(session_factory, None, age=60, resent=1, last_resent_age=1)

        process_event(event_id=woken)

        with session_factory() as session:
            assert session.get_one(Event, fresh).processed_at is not None
            assert session.get_one(Event, resent).processed_at is None

    def test_an_event_that_fails_in_a_drain_is_set_aside_and_the_rest_applied(
        self,
        celery_app: tuple[Celery, Sent],
        session_factory: sessionmaker[Session],
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        woken = record(session_factory, None)
        poisoned = record(session_factory, None)
        healthy = [record(session_factory, None) for _ in range(3)]
        apply = events._apply
        tries: list[int] = []

        def fails_on_one(session: Session, event: Event, *args: Any, **kwargs: Any) -> Any:
            if event.id == poisoned:
                tries.append(event.id)
                raise KeyError("bug")
            return apply(session, event, *args, **kwargs)

        monkeypatch.setattr(events, "_apply", fails_on_one)
        process_event(event_id=woken)
        process_event(event_id=woken)  # a second wake-up's drain does not try it again

        assert unprocessed(session_factory) == 1
        assert tries == [poisoned, poisoned]  # in the batch, then on its own; never again
        assert f"workers.event.failed event={poisoned}" in caplog.text
        with session_factory() as session:
            assert session.get_one(Event, poisoned).enqueue_count == 1
            applied = session.scalars(sa.select(Event.processed_at).where(Event.id.in_(healthy)))
            assert all(at is not None for at in applied)


class TestSweepInbox:
    def test_requeues_only_stale_unprocessed_events(
        self,
        celery_app: tuple[Celery, Sent],
        swept: list[tuple[dict[str, Any], str]],
        session_factory: sessionmaker[Session],
        meeting_with_hook: int,
    ) -> None:
        stale = record(session_factory, meeting_with_hook, age=60)
        record(session_factory, meeting_with_hook, age=0)  # just arrived: its wake-up is coming
        done = record(session_factory, meeting_with_hook, age=60)
        with session_factory.begin() as session:
            events.apply_event(session, done)  # alone: a wake-up's drain would apply them all

        assert sweep_inbox() == 1
        assert swept == [({"event_id": stale}, EVENTS_QUEUE)]
        with session_factory() as session:
            event = session.get(Event, stale)
            assert event is not None
            assert event.enqueue_count == 1
            assert event.last_enqueued_at is not None
        # Re-sent just now: the next sweep leaves it alone.
        assert sweep_inbox() == 0
        assert unprocessed(session_factory) == 2

    def test_each_resend_doubles_the_wait(
        self,
        celery_app: tuple[Celery, Sent],
        swept: list[tuple[dict[str, Any], str]],
        session_factory: sessionmaker[Session],
        settings: Settings,
        meeting_with_hook: int,
    ) -> None:
        wait = settings.inbox_sweep_after_seconds
        waits = backoff.resend_waits(dt.timedelta(seconds=5), inbox.MAX_RESEND_WAIT)
        assert waits[:4] == [dt.timedelta(seconds=s) for s in (5, 10, 20, 40)]
        assert waits[-1] == inbox.MAX_RESEND_WAIT
        due_once = record(
            session_factory, meeting_with_hook, age=600, resent=1, last_resent_age=wait * 2 + 1
        )
        record(session_factory, meeting_with_hook, age=600, resent=1, last_resent_age=wait + 1)
        record(session_factory, meeting_with_hook, age=600, resent=3, last_resent_age=wait * 4)
        due_often = record(
            session_factory, meeting_with_hook, age=9999, resent=40, last_resent_age=301
        )
        assert sweep_inbox() == 2
        assert sorted(kwargs["event_id"] for kwargs, _ in swept) == sorted([due_once, due_often])

    def test_batch_is_bounded_and_the_least_recently_tried_go_first(
        self,
        celery_app: tuple[Celery, Sent],
        swept: list[tuple[dict[str, Any], str]],
        session_factory: sessionmaker[Session],
        meeting_with_hook: int,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(event_tasks, "SWEEP_BATCH", 3)
        ids = [record(session_factory, meeting_with_hook, age=100 - n) for n in range(5)]
        assert sweep_inbox() == 3
        assert [kwargs["event_id"] for kwargs, _ in swept] == ids[:3]
        swept.clear()
        assert sweep_inbox() == 2
        assert [kwargs["event_id"] for kwargs, _ in swept] == ids[3:]
