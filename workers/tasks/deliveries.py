"""Callback delivery tasks: `deliver` (a wake-up) and the sweep that finds what is due.

A `deliver` message names deliveries that became due (one, or a batch); the task sends each
that is still due and then drains whatever else is due over the pool's threads
(`workers.delivery_drain`). The sweep wakes what no message woke: retries, lost messages, and
the deliveries of dead workers once their leases have run out.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from celery import shared_task
from sqlalchemy.exc import OperationalError

from core import task_names
from core.db import utcnow
from core.services import delivery_states, outbound_http, outbox
from workers.celery_app import DELIVERIES_QUEUE, DbTask
from workers.delivery_drain import attempt, run_deliveries, stopping

if TYPE_CHECKING:
    import requests
    from sqlalchemy.orm import Session, sessionmaker

    from core.config import Settings

log = logging.getLogger(__name__)

# A sweep wakes at most this many deliveries; the next sweep takes the rest.
SWEEP_BATCH = 500
# Above the longest attempt the largest CALLBACK_TIMEOUT_SECONDS (300) allows (see
# delivery_states.lease_duration), and well under the broker's visibility timeout (3600 s).
SOFT_TIME_LIMIT = 960
TIME_LIMIT = 1020

_http: requests.Session | None = None
_http_pid: int | None = None
_http_building = threading.Lock()


def http_session(settings: Settings) -> requests.Session:
    """Return this worker process's pooled HTTP session, created after the fork.

    Under the threads pool every thread shares it: urllib3's pools are thread-safe, and each
    keeps as many idle connections per receiver as there are threads (fewer, and urllib3
    would close the surplus with a warning after every burst).
    """
    global _http, _http_pid  # noqa: PLW0603  (one pool per process, as DbTask's engine)
    with _http_building:
        if _http is None or _http_pid != os.getpid():
            _http = outbound_http.make_http_session(
                settings.callback_allowed_networks, pool_maxsize=max(10, DbTask.threads)
            )
            _http_pid = os.getpid()
        return _http


def run_delivery(
    session_factory: sessionmaker[Session],
    delivery_id: int,
    *,
    settings: Settings,
    http: requests.Session,
    rng: random.Random | None = None,
) -> delivery_states.Recorded | None:
    """Make one attempt of a delivery if it is due: claim, send, record.

    Each database step is its own short transaction; the HTTP request runs between them
    with no transaction open. None when the delivery was not ours to send now. Neither step
    is given the time: each reads the clock once it holds the lock (a lease counted from
    before a long wait for the lock could run out while the attempt is still going).
    """
    with session_factory.begin() as session:
        claimed = delivery_states.claim(
            session,
            delivery_id,
            lease=delivery_states.lease_duration(settings),
            max_attempts=len(settings.retry_schedule) + 1,
            max_in_flight=settings.delivery_max_in_flight_per_host,
        )
    if claimed is None:
        return None
    return attempt(session_factory.begin, claimed, settings=settings, http=http, rng=rng)


@shared_task(  # type: ignore[untyped-decorator]  # celery ships no annotations
    name=task_names.DELIVER,
    base=DbTask,
    bind=True,
    acks_late=True,
    ignore_result=True,
    # A database that is briefly unavailable delays the attempt; the sweep also re-sends it.
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=5,
    soft_time_limit=SOFT_TIME_LIMIT,
    time_limit=TIME_LIMIT,
)
def deliver(
    self: DbTask,
    delivery_id: int | None = None,
    more_delivery_ids: Sequence[int] = (),
    **_compat: object,
) -> None:
    """Send the named deliveries that are due, then whatever else is due (module doc).

    Messages of the previous release (`delivery_id` alone) still mean the same thing; a
    message with no id at all continues a drain that ran out of time.
    """
    settings = self.get_settings()
    named = ([] if delivery_id is None else [delivery_id]) + list(more_delivery_ids)
    _, unfinished = run_deliveries(
        self.session_factory, named, settings=settings, http=http_session(settings)
    )
    if unfinished and not stopping():
        # Sent now, not noted: no transaction of ours caused it. Lost, the sweep stands in.
        deliver.apply_async(kwargs={}, queue=DELIVERIES_QUEUE)


@shared_task(  # type: ignore[untyped-decorator]  # celery ships no annotations
    name=task_names.SWEEP_DELIVERIES,
    base=DbTask,
    bind=True,
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
)
def sweep_deliveries(self: DbTask, **_compat: object) -> int:
    """Wake the deliveries that are due: retries, lost messages, leases of dead workers."""
    settings = self.get_settings()
    now = utcnow()
    with self.session_scope() as session:
        ids = outbox.due_ids(
            session, now, SWEEP_BATCH, resend_after=delivery_states.lease_duration(settings)
        )
        outbox.mark_enqueued(session, ids, now)
    # Sent here, not noted: the commit above recorded the wake-ups (`last_enqueued_at`).
    for kwargs in outbox.wakeup_messages(ids):
        deliver.apply_async(kwargs=kwargs, queue=DELIVERIES_QUEUE)
    if ids:
        log.info("workers.sweep.deliveries woke=%d", len(ids))
    return len(ids)
