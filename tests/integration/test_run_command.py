"""`meetinghooks run` (what `make run` starts): serves, and a Ctrl-C stops everything it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import answers_ok, child_pids, free_port, wait_until

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; its parent has not reaped it yet.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))


def _descendants(pid: int) -> list[int]:
    found = []
    for child in child_pids(pid):
        found += [child, *_descendants(child)]
    return found


def test_ctrl_c_stops_receiver_both_pools_and_beat_quickly_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
    env |= {"PORT": str(port)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen(
        [sys.executable, "-m", "meetinghooks", "run"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(lambda: answers_ok(f"http://127.0.0.1:{port}/healthz"), 60, "make run to serve")
        started = _descendants(run.pid)
        wait_until(
            lambda: (tmp_path / "run.log").read_text().count(" ready.") >= 2,
            60,
            "both pools' workers",
        )
        log_text = (tmp_path / "run.log").read_text()
        assert "concurrency: 2 (prefork)" in log_text
        assert "concurrency: 32 (thread)" in log_text
        os.killpg(run.pid, signal.SIGINT)  # what the terminal sends to its foreground group
        stopping = time.monotonic()
        assert run.wait(timeout=30) == 0
        stopped_in = time.monotonic() - stopping
        assert [pid for pid in started if _alive(pid)] == []
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        log.close()
    # It used to take 5-10 s; the run command kills what lingers past 10 s.
    assert stopped_in < 8, (tmp_path / "run.log").read_text()[-3000:]
    print(f"make run stopped in {stopped_in:.1f} s")  # noqa: T201  (the figure, shown with -s)
