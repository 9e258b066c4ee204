"""Sending deliveries in a worker process: one attempt, or a drain over the pool's threads.

A `deliver` wake-up names deliveries that became due; `run_deliveries` sends each of them that
is still due, one attempt at a time (claim, send, record: each database step a short
transaction). A claim also tells whether more deliveries are due; while they are, the drain
keeps claiming the oldest claimable one, whichever it is, and widens: it starts a lane (a thread
of this process) on every free sending slot, each draining the same way. The process has as
many slots as the pool has threads, so at most DELIVERY_CONCURRENCY attempts are in flight. A
wake-up that finds every slot taken leaves a hint and returns at once: the drains holding the
slots look for due deliveries once more before they stop, so its deliveries are sent by them.
A drain ends once nothing is due (or DRAIN_SECONDS have passed, or the worker is stopping),
after its lanes. Each claim is its own lease: a worker that dies leaves each delivery it held
to its lease and the sweep, which sends it again with the same `webhook-id`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from celery.worker import state as worker_state
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from core import metrics
from core.services import delivery_states, outbound_http
from workers import pool_metrics
from workers.celery_app import DbTask

if TYPE_CHECKING:
    import requests
    from sqlalchemy.orm import Session, sessionmaker

    from core.config import Settings

log = logging.getLogger(__name__)

# A drain claims no new delivery after this long (a wake-up it sends carries on), so that a
# task ends well within SOFT_TIME_LIMIT and its message is acknowledged.
DRAIN_SECONDS = 20.0

Begin = Callable[[], AbstractContextManager["Session"]]


@contextmanager
def one_connection(session_factory: sessionmaker[Session]) -> Iterator[Begin]:
    """Yield a `begin()` whose short transactions all use one connection, held meanwhile.

    A drain makes a short transaction per attempt; checking a connection out of the pool for
    each (and pinging it, `pool_pre_ping`) cost more than its statements. Sessions still
    come from `session_factory`, so its after-commit wake-ups go out as before.

    On PostgreSQL the connection plans without bitmap scans meanwhile (`without_bitmap_scans`).
    """
    engine = session_factory.kw.get("bind")
    if not isinstance(engine, Engine):
        yield session_factory.begin
        return
    with engine.connect() as connection, without_bitmap_scans(connection):

        @contextmanager
        def begin() -> Iterator[Session]:
            with session_factory(bind=connection) as session, session.begin():
                yield session

        yield begin


@contextmanager
def without_bitmap_scans(connection: Connection) -> Iterator[None]:
    """Turn PostgreSQL's bitmap scans off for this connection until the block ends.

    Every statement of an attempt finds its rows through an index that stops at the first
    match or probes a handful (the claim's pick, its host's live leases, the callbacks ahead
    of it). When the statistics last saw no pending delivery (a quiet hour before a backlog),
    the planner took `status = 'pending'` for a rare value and ANDed a bitmap of every pending
    delivery into those probes: each claim read the whole backlog. Measured (EXPLAIN ANALYZE
    of the claim, 2,000 then 20,000 pending): 0.45 then 1.0 ms with bitmap scans, 0.20 and
    0.21 ms without. A plain SET, committed, so that the attempts' own transactions keep it;
    RESET before the connection goes back to the pool.
    """
    if connection.dialect.name != "postgresql":
        yield
        return
    connection.exec_driver_sql("SET enable_bitmapscan = off")
    connection.commit()
    try:
        yield
    finally:
        with contextlib.suppress(SQLAlchemyError):  # a broken connection is discarded anyway
            connection.rollback()
            connection.exec_driver_sql("RESET enable_bitmapscan")
            connection.commit()


def attempt(
    begin: Begin,
    claimed: delivery_states.Claim,
    *,
    settings: Settings,
    http: requests.Session,
    rng: random.Random | None = None,
) -> delivery_states.Recorded | None:
    """Send a claimed delivery and record the result (its own short transaction)."""
    outcome = outbound_http.send(http, claimed, timeout=settings.callback_timeout_seconds)
    with begin() as session:
        recorded = record(session, claimed, outcome, settings=settings, rng=rng)
    log_attempt(claimed, outcome, recorded)
    return recorded


def record(
    session: Session,
    claimed: delivery_states.Claim,
    outcome: outbound_http.Outcome,
    *,
    settings: Settings,
    rng: random.Random | None,
) -> delivery_states.Recorded | None:
    """Count the attempt's result in the metrics and record it in `session`."""
    metrics.delivery_attempted(outcome)
    return delivery_states.record(
        session, claimed, outcome, schedule=settings.retry_schedule, rng=rng
    )


def log_attempt(
    claimed: delivery_states.Claim,
    outcome: outbound_http.Outcome,
    recorded: delivery_states.Recorded | None,
) -> None:
    """Log one attempt and what it decided."""
    log.info(
        "workers.delivery.attempted delivery=%s status=%s error=%s outcome=%s",
        claimed.delivery_id,
        outcome.status_code,
        outcome.error,
        recorded.status if recorded else None,
    )


def stopping() -> bool:
    """Tell whether this worker is shutting down (Celery's flags hold its exit code, maybe 0)."""
    return any(
        flag is not None and flag is not False
        for flag in (worker_state.should_stop, worker_state.should_terminate)
    )


class SendingSlots:
    """Attempts one process may have in flight at once: one per thread of its pool.

    A wake-up that finds every slot taken leaves a hint instead of waiting: whoever holds a
    slot looks for due deliveries once more before giving it back (`give_unless_hinted`),
    so the wake-up's deliveries are taken by a drain already running, and its message is
    acknowledged at once instead of waiting in the broker to cost a second look later.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._hinted = False
        self._lock = threading.Lock()

    def take_or_hint(self) -> bool:
        """Take a free slot; with none free, leave the hint and say so."""
        with self._lock:
            if self._free:
                self._free -= 1
                return True
            self._hinted = True
            return False

    def try_take(self) -> bool:
        """Take a free slot if there is one (a lane: no hint, its drain looks anyway)."""
        with self._lock:
            if self._free:
                self._free -= 1
                return True
            return False

    def give_unless_hinted(self) -> bool:
        """Hand the slot back, unless a wake-up left a hint: then keep it and say so.

        Atomic with `take_or_hint`: a wake-up either finds this slot free or leaves a hint
        that this holder sees, never neither.
        """
        with self._lock:
            if self._hinted:
                self._hinted = False
                return False
            self._free += 1
            return True

    def give(self) -> None:
        """Hand the slot back whatever happened (an error, a stopping worker)."""
        with self._lock:
            self._free += 1


_slots: SendingSlots | None = None
_lanes: concurrent.futures.ThreadPoolExecutor | None = None
_slots_pid: int | None = None
_slots_building = threading.Lock()


def sending_slots() -> tuple[SendingSlots, concurrent.futures.ThreadPoolExecutor]:
    """Return this process's sending slots and the threads its lanes run on (after a fork)."""
    global _slots, _lanes, _slots_pid  # noqa: PLW0603  (one set per process, as the HTTP pool)
    with _slots_building:
        if _slots is None or _lanes is None or _slots_pid != os.getpid():
            size = max(1, DbTask.threads)
            _slots = SendingSlots(size)
            _lanes = concurrent.futures.ThreadPoolExecutor(size, thread_name_prefix="lane")
            _slots_pid = os.getpid()
        return _slots, _lanes


@dataclass
class Drain:
    """One task's work: its named deliveries, then whatever is due, over one or more lanes.

    Every lane (the task's own thread first) holds a sending slot and gives it back once,
    when it stops: with nothing due (unless a wake-up left a hint meanwhile), when its time
    is up or the worker is stopping, or on an error.
    """

    session_factory: sessionmaker[Session]
    settings: Settings
    http: requests.Session
    slots: SendingSlots
    lanes: concurrent.futures.Executor
    stop_claiming: float
    rng: random.Random | None = None
    # Set when it stopped claiming with deliveries possibly still due.
    unfinished: bool = False
    _started: list[concurrent.futures.Future[int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, named: Sequence[int]) -> int:
        """Send the named deliveries that are due, then drain; return the attempts made.

        Returns once every lane it started has ended, also when it raises itself.
        """
        made = 0
        try:
            made = self._drain(list(dict.fromkeys(named)))
        finally:
            made += self._join()
        return made

    def _drain(self, named: list[int]) -> int:
        made = 0
        given = False
        try:
            with one_connection(self.session_factory) as begin:
                with begin() as session:
                    claimed = self._claim(session, named, go_on=not named)
                while True:
                    if claimed is None:
                        if self.unfinished or self.slots.size == 1:
                            break
                        given = self.slots.give_unless_hinted()
                        if given:
                            break
                        # A wake-up came while every slot was busy: look for its deliveries.
                        with begin() as session:
                            claimed = self._claim(session, named, go_on=True)
                        continue
                    if claimed.more_due:
                        self._widen()
                    outcome = outbound_http.send(
                        self.http, claimed, timeout=self.settings.callback_timeout_seconds
                    )
                    # The result and the next claim share a transaction: a commit an attempt.
                    with begin() as session:
                        recorded = record(
                            session, claimed, outcome, settings=self.settings, rng=self.rng
                        )
                        following = self._claim(session, named, go_on=claimed.more_due)
                    log_attempt(claimed, outcome, recorded)
                    made += 1
                    claimed = following
        finally:
            if not given:
                self.slots.give()
        return made

    def _claim(
        self, session: Session, named: list[int], *, go_on: bool
    ) -> delivery_states.Claim | None:
        """Claim the next named delivery that is due; past them, with `go_on`, any due one."""
        lease = delivery_states.lease_duration(self.settings)
        max_attempts = len(self.settings.retry_schedule) + 1
        bound = self.settings.delivery_max_in_flight_per_host
        while named:
            claimed = delivery_states.claim_next(
                session,
                among=named,
                lease=lease,
                max_attempts=max_attempts,
                max_in_flight=bound,
            )
            if claimed is not None:
                named.remove(claimed.delivery_id)
                return claimed
            # None of them is due any more (done, held, or not ours now); another worker's
            # drain may be what took them: look whether more is due.
            named.clear()
            go_on = True
        if not go_on or self.slots.size == 1:
            # One slot (a prefork child, or a pool of one thread): sending what it was woken
            # for is all it does, or a drain would hold the process's only worker.
            return None
        if time.monotonic() >= self.stop_claiming or stopping():
            self.unfinished = True
            return None
        return delivery_states.claim_next(
            session, lease=lease, max_attempts=max_attempts, max_in_flight=bound
        )

    def _widen(self) -> None:
        """Start a lane on a free slot, if there is one: more is due than this lane sends."""
        if not self.slots.try_take():
            return
        try:
            lane = self.lanes.submit(self._lane)
        except RuntimeError:  # the executor is shutting down with the process
            self.slots.give()
            return
        with self._lock:
            self._started.append(lane)

    def _lane(self) -> int:
        try:
            with pool_metrics.extra_thread_busy():
                return self._drain([])
        except Exception:
            # Its claimed delivery, if any, keeps its lease and goes to the sweep after it.
            log.exception("workers.delivery.lane_failed")
            return 0

    def _join(self) -> int:
        """Wait for every lane this drain started (lanes may start lanes); sum their attempts."""
        made = 0
        while True:
            with self._lock:
                started, self._started = self._started, []
            if not started:
                return made
            made += sum(lane.result() for lane in started)


def run_deliveries(
    session_factory: sessionmaker[Session],
    delivery_ids: Sequence[int],
    *,
    settings: Settings,
    http: requests.Session,
    rng: random.Random | None = None,
    drain_seconds: float | None = None,
    slots: tuple[SendingSlots, concurrent.futures.Executor] | None = None,
) -> tuple[int, bool]:
    """Send the named deliveries that are due, then drain what is due; see the module doc.

    With every sending slot taken it only leaves a hint for the drains that hold them (one
    of them takes these deliveries) and returns. Returns the attempts made (by every lane)
    and whether claiming stopped with deliveries possibly still due.
    """
    free, lanes = slots or sending_slots()
    if not free.take_or_hint():
        return 0, False
    drain = Drain(
        session_factory,
        settings,
        http,
        free,
        lanes,
        stop_claiming=time.monotonic()
        + (DRAIN_SECONDS if drain_seconds is None else drain_seconds),
        rng=rng,
    )
    made = drain.run(delivery_ids)  # gives the slot back
    return made, drain.unfinished
