"""`meetinghooks serve` runs several gunicorn processes; /metrics must count for all of them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import INGEST_SECRET
from tests.integration.conftest import answers_ok, free_port, wait_until

pytestmark = pytest.mark.integration

REJECTED = re.compile(
    r'^meetinghooks_ingest_rejected_total\{reason="bad-signature"\} (\S+)$', re.MULTILINE
)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "BROKER_URL": "memory://",
        "INGEST_SIGNING_SECRET": INGEST_SECRET,
        "PORT": str(port),
        "WEB_CONCURRENCY": "3",
        "WEB_THREADS": "1",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # `serve` makes a fresh one
    cli = [sys.executable, "-m", "meetinghooks"]
    subprocess.run([*cli, "db", "upgrade"], env=env, check=True, capture_output=True)
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen([*cli, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers_ok(f"{base}/healthz"), 60, "the receiver to listen")
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a graceful stop that lingers must not fail the test
            server.kill()
            server.wait()
        log.close()


def test_metrics_add_up_every_receiver_process(served: str) -> None:
    headers = {
        "content-type": "application/json",
        "webhook-id": "msg_forged",
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1,Zm9yZ2Vk",
    }
    for _ in range(30):
        # A new connection each time, so that gunicorn spreads them over its processes.
        response = requests.post(f"{served}/v1/events", data="{}", headers=headers, timeout=30)
        assert response.status_code == 401
    for _ in range(5):  # whichever process answers the scrape, it counts all 30
        found = REJECTED.search(requests.get(f"{served}/metrics", timeout=30).text)
        assert found is not None
        assert float(found.group(1)) == 30
