"""A supervisor killed outright (SIGKILL) takes its children with it, on Linux."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from meetinghooks import parent_death

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's"
)

# `meetinghooks worker` or `run` as a process manager sees it: the supervisor with one child
# (which writes its pid, then waits for two minutes unless it is told to stop).
SUPERVISOR = """
import os, sys
from meetinghooks import cli
child = (
    "import os, pathlib, time; "
    "pathlib.Path({pid_file!r}).write_text(str(os.getpid())); time.sleep(120)"
)
cli._supervise([[sys.executable, "-c", child]], dict(os.environ), grace=1.0)
"""


def running(pid: int) -> bool:
    """Tell whether `pid` runs; a zombie does not (in a container nobody may reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_children_get_sigterm_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR.format(pid_file=str(pid_file))],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    child = None
    try:
        assert wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", 60)
        child = int(pid_file.read_text())
        assert running(child)
        supervisor.kill()  # as honcho does once its patience runs out
        supervisor.wait(timeout=20)
        assert wait_until(lambda: not running(child), 20), "the child outlived its supervisor"
    finally:
        supervisor.kill()
        supervisor.wait(timeout=20)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


def test_a_child_whose_supervisor_is_already_gone_does_not_start(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    command = parent_death.launched([sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    command[3] = "1"  # a parent pid that is not ours: as if we had died before the request
    ended = subprocess.run(
        command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False
    )
    assert ended.returncode == 143
    assert not marker.exists()
