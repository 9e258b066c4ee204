"""The workers' Prometheus metrics, and the functions the code that produces them calls.

Names follow Prometheus' conventions (`meetinghooks_` prefix, counters end in `_total` once
exposed, durations in `_seconds`) and every label takes a bounded set of values: an event type,
an outcome or error class, a rule kind, a pool. Under prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by `meetinghooks serve|worker|run`) each process writes its own
file and a scrape adds them up (`core.metrics_export`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import event
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from core.services.events import Applied
    from core.services.outbound_http import Outcome

# The `type` of a processed event that no longer exists (outcome `missing`) or was skipped.
UNKNOWN_TYPE: Final = "unknown"

EVENTS_PROCESSED = Counter(
    "meetinghooks_events_processed",
    "Events processed by workers, by type and outcome (already-processed: a repeated wake-up)",
    ["type", "outcome"],
)
DELIVERY_ATTEMPTS = Counter(
    "meetinghooks_delivery_attempts",
    "Callback and alert delivery attempts, by result: 2xx, redirect, http-4xx, http-5xx or an "
    "error class (timeout, connection-error, ...)",
    ["result"],
)
DELIVERY_LATENCY = Histogram(
    "meetinghooks_delivery_latency_seconds",
    "Time from sending a callback to its response status (attempts that got one)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
ALERTS_FIRED = Counter(
    "meetinghooks_alerts_fired",
    "Alerts fired (committed), by the kind of rule that fired them",
    ["type"],
)
# Busy and capacity are summed over the live processes of a machine (`livesum`): the pool
# processes of a prefork pool each report 0 or 1 busy, a threads pool reports its running
# threads, and each Celery worker's main process reports its concurrency as capacity.
POOL_BUSY = Gauge(
    "meetinghooks_worker_pool_busy",
    "Tasks running now, by pool (the queues a Celery worker consumes)",
    ["pool"],
    multiprocess_mode="livesum",
)
POOL_CAPACITY = Gauge(
    "meetinghooks_worker_pool_capacity",
    "Tasks a pool can run at once: prefork processes or threads, by pool",
    ["pool"],
    multiprocess_mode="livesum",
)
POOL_BUSY_SECONDS = Counter(
    "meetinghooks_worker_pool_busy_seconds",
    "Time spent running tasks, by pool: its rate over capacity is the pool's mean saturation",
    ["pool"],
)

_ALERTS_KEY: Final = "meetinghooks.metrics.alerts_fired"


def event_processed(applied: Applied) -> None:
    """Count one event a worker processed."""
    outcome = "already-processed" if applied.repeated else applied.outcome
    EVENTS_PROCESSED.labels(type=applied.event_type or UNKNOWN_TYPE, outcome=outcome).inc()


def events_skipped(count: int) -> None:
    """Count events of a batch that were applied before (or by another worker right now)."""
    EVENTS_PROCESSED.labels(type=UNKNOWN_TYPE, outcome="already-processed").inc(count)


def attempt_result(outcome: Outcome) -> str:
    """Return an attempt's `result` label: a status class, never the raw status code."""
    error = outcome.error
    if error is None:
        return "2xx"
    if error.startswith("http-") and outcome.status_code is not None:
        return f"http-{outcome.status_code // 100}xx"
    return error


def delivery_attempted(outcome: Outcome) -> None:
    """Count one delivery attempt, and time it when the receiver answered."""
    DELIVERY_ATTEMPTS.labels(result=attempt_result(outcome)).inc()
    if outcome.status_code is not None:
        DELIVERY_LATENCY.observe(outcome.latency_ms / 1000)


def alert_fired(session: Session, rule_type: str) -> None:
    """Count an alert once the session's transaction commits; a rollback counts nothing."""
    session.info.setdefault(_ALERTS_KEY, []).append(rule_type)


# Every session, whichever factory made it: alerts fire in the receiver's request sessions and in
# the workers' alike. A savepoint's end fires these too: only the real transaction decides.
@event.listens_for(Session, "after_commit")
def _count_committed_alerts(session: Session) -> None:
    if session.in_nested_transaction():
        return
    for rule_type in session.info.pop(_ALERTS_KEY, []):
        ALERTS_FIRED.labels(type=rule_type).inc()


@event.listens_for(Session, "after_rollback")
def _drop_rolled_back_alerts(session: Session) -> None:
    if session.in_nested_transaction():
        return
    session.info.pop(_ALERTS_KEY, None)
