"""The registry a scrape reads: this process's metrics, or every process's of one directory.

Under prometheus-client's multiprocess mode the processes of a machine (gunicorn's, the Celery
workers' and their pool processes) each write files to PROMETHEUS_MULTIPROC_DIR. Counters of a
process that ended still count; a `livesum` gauge (pool busy and capacity) must not, so the
files of dead processes' live gauges are removed before each collection, whichever process
(the receiver or `meetinghooks worker`) serves the scrape.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus-client names a live gauge's file gauge_live<mode>_<pid>.db.
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def process_alive(pid: int) -> bool:
    """Tell whether a process of this machine runs under `pid`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def forget_dead_processes(path: str) -> list[int]:
    """Remove the live-gauge files of processes that ended; return their pids.

    A pool process killed mid-task (kill -9, a hard time limit) never says it is idle again:
    without this its `busy` of 1 would be added up forever.
    """
    dead = set()
    for entry in Path(path).glob("gauge_live*.db"):
        found = _LIVE_GAUGE_FILE.match(entry.name)
        if found and not process_alive(int(found.group(1))):
            dead.add(int(found.group(1)))
    for pid in dead:
        # Two scrapers may remove the same file at once.
        with contextlib.suppress(FileNotFoundError):
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    return sorted(dead)


class SharedDirectoryCollector:
    """Add up the metrics every process wrote to `path`, forgetting dead processes' gauges."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._files = multiprocess.MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        forget_dead_processes(self.path)
        try:
            return list(self._files.collect())  # type: ignore[no-untyped-call]
        except FileNotFoundError:
            # A file went between listing and reading (another scraper's clean-up): read again.
            return list(self._files.collect())  # type: ignore[no-untyped-call]


def registry_for(path: str | None = None) -> CollectorRegistry:
    """Return what a scrape exposes: the shared directory's metrics if set, else this process's."""
    path = path or os.environ.get(MULTIPROC_ENV)
    if not path:
        return REGISTRY
    registry = CollectorRegistry()
    registry.register(SharedDirectoryCollector(path))
    return registry
