"""Worker entry point: `celery -A workers.main worker`."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import worker_init
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from core.config import Settings
from workers.celery_app import make_celery

log = logging.getLogger(__name__)

settings = Settings.from_env()
app = make_celery(settings)


@worker_init.connect  # type: ignore[untyped-decorator]
def serve_metrics(**_kwargs: Any) -> None:
    """Serve the metrics of the worker and its pool processes on WORKER_METRICS_PORT, if set."""
    if settings.worker_metrics_port is None:
        return
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Pool processes count in their own memory: without the shared directory a scrape of
        # the main process would show none of their work.
        log.warning("worker.metrics.disabled reason=PROMETHEUS_MULTIPROC_DIR is not set")
        return
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(settings.worker_metrics_port, settings.worker_metrics_host, registry)
    log.info(
        "worker.metrics.serving address=%s:%s",
        settings.worker_metrics_host,
        settings.worker_metrics_port,
    )
