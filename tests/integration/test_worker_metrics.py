"""`meetinghooks worker` serves the counters of its pool processes on WORKER_METRICS_PORT."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from core.config import Settings
from tests.integration.conftest import Worker, free_port, wait_until
from tests.integration.test_event_pipeline import post_event

pytestmark = pytest.mark.integration

PROCESSED = re.compile(r"^meetinghooks_events_processed_total\{[^}]*\} (\S+)$", re.MULTILINE)


class CliWorker(Worker):
    """The worker as production runs it: `meetinghooks worker`, with a metrics port."""

    metrics_port: int = 0

    def environment(self) -> dict[str, str]:
        env = {**super().environment(), "WORKER_METRICS_PORT": str(self.metrics_port)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the command makes a fresh one
        return env

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "meetinghooks", "worker", "--concurrency", "2",
             "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-n", f"metrics-{os.getpid()}-{self.starts}@%h"],
            cwd=self.workdir, env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


@pytest.fixture
def cli_worker(it_settings: Settings, tmp_path: Path) -> Iterator[CliWorker]:
    handle = CliWorker(settings=it_settings, workdir=tmp_path)
    handle.metrics_port = free_port()
    yield handle
    handle.stop()


def processed_total(port: int) -> float:
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except requests.RequestException:  # not up yet, or booting too slowly to answer
        return -1.0
    return sum(float(value) for value in PROCESSED.findall(text))


def test_worker_metrics_count_what_the_pool_processes_did(
    it_app: Flask, cli_worker: CliWorker
) -> None:
    cli_worker.start()
    wait_until(lambda: processed_total(cli_worker.metrics_port) >= 0, 30, "the metrics port")
    for meeting_id in (900_001, 900_002, 900_003):  # unknown meetings: processed, never sent
        post_event(it_app, meeting_id)
    try:
        wait_until(
            lambda: processed_total(cli_worker.metrics_port) == 3, 60, "three processed events"
        )
    except AssertionError:
        print(cli_worker.logs())  # noqa: T201
        raise
