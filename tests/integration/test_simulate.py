"""`meetinghooks run` and `meetinghooks simulate` as a newcomer runs them, in two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import answers_ok, free_port, wait_until

pytestmark = pytest.mark.integration
# What a newcomer's shell would not have, and what would point either process elsewhere.
_NOT_A_NEWCOMERS = (
    "DATABASE_URL", "BROKER_URL", "INGEST_SIGNING_SECRET", "MEETINGHOOKS_TOKEN",
    "PROMETHEUS_MULTIPROC_DIR", "WORKER_METRICS_PORT", "BEAT_SCHEDULE_FILE",
)  # fmt: skip
BOOT_SECONDS = 90
SIMULATE_SECONDS = 150  # 10 meetings at 20 requests/s, then at most --grace 90 s for callbacks


def test_simulate_against_make_run_verifies_every_callback(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in _NOT_A_NEWCOMERS} | {"PORT": str(port)}
    with (tmp_path / "run.log").open("wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "meetinghooks", "run"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(
            lambda: answers_ok(f"http://127.0.0.1:{port}/healthz"),
            BOOT_SECONDS,
            "make run to serve",
        )
        # No token, no secret: it creates its user in ./var and signs with make run's secret.
        done = subprocess.run(
            [sys.executable, "-m", "meetinghooks", "simulate", "--meetings", "10", "--seed", "1",
             "--duplicates", "0.5", "--out-of-order", "0.5", "--grace", "90", "--json"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SIMULATE_SECONDS,
            check=False,
        )  # fmt: skip
    finally:
        os.killpg(run.pid, signal.SIGINT)
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    context = f"{done.stdout}\n{done.stderr}\n{(tmp_path / 'run.log').read_text()[-3000:]}"
    assert done.returncode == 0, context
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True, context
    assert summary["meetings"] == 10
    requests_ = summary["requests"]
    assert requests_["acknowledged"] == requests_["sent"], context
    assert requests_["failed"] == {}
    assert requests_["duplicatesStored"] == 0
    by_kind = requests_["byKind"]
    # Half the meetings through the presenter link and the end call, half through signed ingest,
    # half of whose 10 events are sent twice; out of order or not, every one ends.
    assert by_kind["create meeting"] == {"sent": 10, "acknowledged": 10}
    assert by_kind["presenter start"]["acknowledged"] == 5
    assert by_kind["api end"]["acknowledged"] == 5
    assert by_kind["ingest start"]["acknowledged"] == 5
    assert by_kind["ingest end"]["acknowledged"] == 5
    assert by_kind["ingest duplicate"]["acknowledged"] == 5
    callbacks = summary["callbacks"]
    assert callbacks["expected"] == 20  # a start and an end for each meeting
    assert callbacks["verified"] == 20
    assert callbacks["missing"] == []
    assert callbacks["rejected"] == {}
    assert callbacks["latencyP50Ms"] is not None
    assert callbacks["latencyP99Ms"] >= callbacks["latencyP50Ms"]
