"""`meetinghooks run` (what `make run` starts) in a directory of its own, for tests to drive."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.conftest import answers_ok, free_port, wait_until

# Generous for a loaded 2-core machine.
START_SECONDS = 90


@dataclass
class Run:
    """A running `meetinghooks run`, and how to talk to it."""

    workdir: Path
    env: dict[str, str]
    base_url: str
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.workdir / "run.log"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def cli(self, *args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "meetinghooks", *args, "--json"],
            cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=60,
            check=True,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # a Ctrl-C in the terminal
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextlib.contextmanager
def started_run(workdir: Path, settings: dict[str, str]) -> Iterator[Run]:
    """Start `meetinghooks run` embedded in `workdir` with these settings; stop it after."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "BROKER_URL", "PROMETHEUS_MULTIPROC_DIR")
    }
    env |= {
        "PORT": str(port),
        "BEAT_SCHEDULE_FILE": str(workdir / "beat-schedule"),
        "EVENT_CONCURRENCY": "1",
        "DELIVERY_CONCURRENCY": "4",
        **settings,
    }
    log = (workdir / "run.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "meetinghooks", "run"],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    handle = Run(workdir, env, f"http://127.0.0.1:{port}", process)
    try:
        wait_until(lambda: answers_ok(f"{handle.base_url}/healthz"), START_SECONDS, "make run")
        wait_until(lambda: handle.output().count(" ready.") >= 2, START_SECONDS, "both pools")
        yield handle
    finally:
        handle.stop()
        log.close()
