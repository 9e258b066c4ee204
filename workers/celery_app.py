"""The Celery application: queues, routes, serialisation and the DbTask base class."""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from celery import Celery, Task
from celery.signals import celeryd_init
from kombu.entity import Queue
from sqlalchemy.orm import Session, sessionmaker

from core import logs, task_names, wakeups
from core.db import make_engine, make_session_factory
from workers import embedded_broker

if TYPE_CHECKING:
    from core.config import Settings

log = logging.getLogger(__name__)

EVENTS_QUEUE = "events"
DELIVERIES_QUEUE = "deliveries"
ROUTES = {
    "workers.events.*": EVENTS_QUEUE,
    "workers.deliveries.*": DELIVERIES_QUEUE,
    "workers.sweep.*": EVENTS_QUEUE,
}
# Well above every task's time_limit, so Redis never re-delivers a task that is still running.
VISIBILITY_TIMEOUT = 3600
EMBEDDED_PREFETCH_MULTIPLIER = 8


def queue_for(task_name: str) -> str:
    """Return the queue a task's messages are routed to (the `task_routes` globs)."""
    for pattern, queue in ROUTES.items():
        if fnmatch.fnmatchcase(task_name, pattern):
            return queue
    return EVENTS_QUEUE


class DbTask(Task):  # type: ignore[misc]
    """Base task: one session factory per worker process, one transaction per run.

    Its sessions publish the wake-ups their transaction noted once it commits
    (`core.wakeups`), through the app `make_celery` built.
    """

    abstract = True
    settings: ClassVar[Settings | None] = None
    celery: ClassVar[Celery | None] = None
    # Tasks running at once in this process: the worker's concurrency under the threads pool
    # (set at worker start-up, see workers.main), 1 in a prefork pool process.
    threads: ClassVar[int] = 1
    _session_factory: ClassVar[sessionmaker[Session] | None] = None
    # (the factory above, its publishing copy): rebuilt when tests swap the factory.
    _publishing: ClassVar[tuple[sessionmaker[Session], sessionmaker[Session]] | None] = None
    _building = threading.Lock()

    @property
    def session_factory(self) -> sessionmaker[Session]:
        """Build the session factory lazily, after the worker forked, once even under threads."""
        built = DbTask._publishing
        if built is not None and built[0] is DbTask._session_factory:
            return built[1]
        cls = type(self)
        with DbTask._building:  # two threads' first tasks must not build two engines
            if DbTask._session_factory is None:
                settings = cls.get_settings()
                # One connection per thread, kept: no task waits for the pool, and none opens a
                # new connection per delivery (a pool of 5 closed the rest on every return).
                engine = make_engine(
                    settings.database_url,
                    pool_size=max(5, cls.threads),
                    max_overflow=max(10, cls.threads),
                )
                DbTask._session_factory = make_session_factory(engine)
            base = DbTask._session_factory
            if DbTask._publishing is None or DbTask._publishing[0] is not base:
                factory: sessionmaker[Session] = sessionmaker(class_=base.class_, **base.kw)
                wakeups.publish_after_commit(factory, publish)
                DbTask._publishing = (base, factory)
            return DbTask._publishing[1]

    @classmethod
    def get_settings(cls) -> Settings:
        """Return the settings the worker was started with."""
        if DbTask.settings is None:
            raise RuntimeError("make_celery(settings) was not called")
        return DbTask.settings

    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """Yield a session in a transaction: commit on success, roll back on error."""
        with self.session_factory.begin() as session:
            yield session


def make_celery(settings: Settings) -> Celery:
    """Create the Celery app for these settings."""
    DbTask.settings = settings
    DbTask._session_factory = None
    DbTask._publishing = None
    transport_options: dict[str, Any] = {"visibility_timeout": VISIBILITY_TIMEOUT}
    # One message per pool process at a time keeps work fair across workers on Redis/RabbitMQ,
    # which hand over the next message the moment one is acked.
    prefetch_multiplier = 1
    if settings.broker_key_prefix and settings.broker_url.startswith(("redis", "rediss")):
        transport_options["global_keyprefix"] = settings.broker_key_prefix
    if embedded_broker.is_embedded(settings.broker_url):
        embedded_broker.install(settings.broker_polling_interval)
        # This transport hands its options to create_engine(): wait for SQLite's lock
        # instead of failing when receiver, worker and beat write at once.
        transport_options = {"connect_args": {"timeout": 30}}
        # This transport is polled: once a worker holds all it may, it sleeps a polling interval
        # before it looks again, so one message per process capped it at 20 events/s. There is
        # one worker in the embedded mode, and a message it dies holding is re-sent by the sweep.
        prefetch_multiplier = EMBEDDED_PREFETCH_MULTIPLIER
    app = Celery("meetinghooks", broker=settings.broker_url, task_cls=DbTask)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=prefetch_multiplier,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        # Keep reconnecting through a broker outage of any length; the database holds the work.
        broker_connection_max_retries=None,
        # After a lost connection Celery cuts the prefetch count by the tasks in flight and
        # restores it as their acks go out; acks on the dead connection never do, and
        # `make faults` saw the deliveries pool stop taking work after a RabbitMQ restart.
        worker_enable_prefetch_count_reduction=False,
        beat_scheduler="workers.beat:ResilientScheduler",
        broker_transport_options=transport_options,
        task_queues=(Queue(EVENTS_QUEUE), Queue(DELIVERIES_QUEUE)),
        task_default_queue=EVENTS_QUEUE,
        task_routes={pattern: {"queue": queue} for pattern, queue in ROUTES.items()},
        # A publish must not hang a request when the broker is down: the sweep re-sends later.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
        broker_connection_timeout=3,
        timezone="UTC",
        enable_utc=True,
        beat_schedule={
            # A sweep that waited longer than one interval is superseded by the next one.
            "sweep-inbox": {
                "task": task_names.SWEEP_INBOX,
                "schedule": settings.sweep_interval_seconds,
                "options": {"expires": settings.sweep_interval_seconds * 5},
            },
            "sweep-deliveries": {
                "task": task_names.SWEEP_DELIVERIES,
                "schedule": settings.sweep_interval_seconds,
                "options": {"expires": settings.sweep_interval_seconds * 5},
            },
            "sweep-alerts": {
                "task": task_names.SWEEP_ALERTS,
                "schedule": settings.sweep_interval_seconds,
                "options": {"expires": settings.sweep_interval_seconds * 5},
            },
        },
    )
    app.autodiscover_tasks(["workers"], related_name="tasks", force=True)
    DbTask.celery = app
    return app


def deliveries_pool_transport(
    broker_url: str, queues: Any, transport_options: dict[str, Any]
) -> dict[str, Any]:
    """Return the broker options of a worker: those of the app, but lighter for deliveries alone.

    A worker that consumes only the deliveries queue on Redis takes its messages without
    kombu's ack emulation (a Redis hash and sorted set written at each delivery and at each
    ack, a third of what a message costs the pool). Its messages are wake-ups over the
    outbox rows, which keep the work: unacked messages still go back to the queue at a warm
    shutdown, and those a killed worker held are re-sent by the delivery sweep once a lease
    has passed (as they are now: the visibility timeout is an hour). Every other worker keeps
    the app's options.
    """
    names = set(queues.split(",") if isinstance(queues, str) else queues or ())
    if names == {DELIVERIES_QUEUE} and broker_url.startswith(("redis", "rediss")):
        return {**transport_options, "ack_emulation": False}
    return transport_options


@celeryd_init.connect  # type: ignore[untyped-decorator]
def _tune_deliveries_pool(sender: Any, conf: Any, options: dict[str, Any], **_kwargs: Any) -> None:
    """Apply `deliveries_pool_transport` before the worker connects (`celery worker -Q ...`)."""
    conf.broker_transport_options = deliveries_pool_transport(
        conf.broker_url or "", options.get("queues"), dict(conf.broker_transport_options or {})
    )


def publish(task_name: str, kwargs: dict[str, Any]) -> None:
    """Send a committed transaction's wake-up; a broker failure is logged, never raised.

    The rows are committed: a lost message only waits for the sweep.
    """
    try:
        if DbTask.celery is None:
            raise RuntimeError("make_celery(settings) was not called")
        # The work this task does for those requests keeps their ids (receiver.tasks).
        caused_by = logs.current_request_ids()
        extra: dict[str, Any] = {"headers": {logs.REQUEST_IDS: caused_by}} if caused_by else {}
        DbTask.celery.send_task(task_name, kwargs=kwargs, queue=queue_for(task_name), **extra)
    except Exception:
        log.warning("workers.wakeup.publish_failed task=%s", task_name, exc_info=True)
