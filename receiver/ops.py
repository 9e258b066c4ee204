"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging
from typing import Any, Final

import sqlalchemy as sa
from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from core.metrics_export import registry_for
from core.responses import HealthOut, ReadyOut
from receiver import get_settings
from receiver.db import get_session
from receiver.errors import error_response
from receiver.openapi import operation
from receiver.queue_lag import QueueLagCollector, lag_session_factory

log = logging.getLogger(__name__)
bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@operation({200: (HealthOut, "The process serves requests.")})
def healthz() -> Response:
    """Answer 200 while the process serves requests."""
    return jsonify(HealthOut(status="ok").render())


@bp.get("/readyz")
@operation(
    {200: (ReadyOut, "The database and the broker answer.")},
    errors=(503,),
)
def readyz() -> Response:
    """Answer 200 when the database and the broker are reachable, else 503."""
    checks: dict[str, str] = {}
    try:
        get_session().execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:
        log.warning("receiver.readyz.database_unreachable", exc_info=True)
        checks["database"] = "unreachable"
    checks["broker"] = "ok" if _broker_reachable() else "unreachable"
    if all(value == "ok" for value in checks.values()):
        return jsonify(ReadyOut(status="ready", checks=checks).render())
    response = error_response(
        503, "not-ready", "a dependency is unreachable", headers={"Retry-After": "5"}
    )
    body: dict[str, Any] = response.get_json()
    body["checks"] = checks
    response.set_data(current_app.json.dumps(body))
    return response


def _broker_reachable() -> bool:
    from kombu.connection import Connection  # noqa: PLC0415  (only readiness needs a broker connection)

    try:
        with Connection(get_settings().broker_url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception:
        log.warning("receiver.readyz.broker_unreachable", exc_info=True)
        return False
    return True


@bp.get("/metrics")
def metrics() -> Response:
    """Expose Prometheus metrics: of every process sharing PROMETHEUS_MULTIPROC_DIR, if set.

    gunicorn workers (and, under `meetinghooks run`, the Celery workers) each write their own
    files there; a scrape adds them up, whichever process answers it. The queue lag is read
    from the database by this process.
    """
    text = generate_latest(registry_for()) + generate_latest(_queue_lag_registry())
    return Response(text, mimetype=CONTENT_TYPE_LATEST)


QUEUE_LAG: Final = "meetinghooks.queue_lag"


def _queue_lag_registry() -> CollectorRegistry:
    # One collector (its cache and its small pool) per app, made at the first scrape.
    registry: CollectorRegistry | None = current_app.extensions.get(QUEUE_LAG)
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        sessions = lag_session_factory(get_settings().database_url)
        registry.register(QueueLagCollector(sessions))
        current_app.extensions[QUEUE_LAG] = registry
    return registry
