"""The Procfile under honcho: the production topology on one machine, PostgreSQL and Redis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from tests.callback_receiver import CallbackReceiver
from tests.conftest import INGEST_SECRET
from tests.integration.conftest import (
    _counter,
    answers_ok,
    free_port,
    redis_keys,
    wait_until,
)
from tests.platform_events import signed_event

pytestmark = [pytest.mark.production, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the dev virtualenv: honcho is a dev dependency
BOOT_SECONDS = 90
DELIVERY_SECONDS = 60
# honcho SIGKILLs the process groups still running 5 s after its SIGTERM. Idle, everything
# stops in about 4 s; a Celery worker whose supervisor was killed first still has our SIGTERM
# and ends its warm shutdown on its own. Either way nothing may be left after this.
STOP_SECONDS = 60


def _processes_of(env: dict[str, str]) -> list[int]:
    """Return the live processes that carry this deployment's environment.

    Every process honcho starts inherits its environment, and the Redis prefix is ours alone;
    unlike a walk down from honcho's pid this still finds a process whose parent died.
    """
    marker = f"BROKER_KEY_PREFIX={env['BROKER_KEY_PREFIX']}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()  # empty for a zombie: dead already
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def procfile_env(empty_database_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    prefix = f"mh-procfile-{os.getpid()}-{next(_counter)}:"
    with redis_keys(prefix) as (redis_url, _):
        port = free_port()
        dropped = ("PROMETHEUS_MULTIPROC_DIR", "WORKER_METRICS_PORT", "PORT", "MEETINGHOOKS_TOKEN")
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env |= {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', os.defpath)}",
            "TMPDIR": str(tmp_path),
            "DATABASE_URL": empty_database_url,
            "BROKER_URL": redis_url,
            "BROKER_KEY_PREFIX": prefix,
            "INGEST_SIGNING_SECRET": INGEST_SECRET,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "RETRY_SCHEDULE": "1,1,2,2,3",
            "CALLBACK_TIMEOUT_SECONDS": "3",
            "SWEEP_INTERVAL_SECONDS": "1",
            "INBOX_SWEEP_AFTER_SECONDS": "2",
            "BEAT_SCHEDULE_FILE": str(tmp_path / "beat-schedule"),
            "WEB_CONCURRENCY": "1",
            "HONCHO_PORT": str(port),  # ours: the base port handed to honcho below
        }
        yield env


def test_the_procfile_runs_the_deployment_and_stops_cleanly(
    procfile_env: dict[str, str], receiver: CallbackReceiver, tmp_path: Path
) -> None:
    env = procfile_env
    base = env["PUBLIC_BASE_URL"]
    meetinghooks = str(BIN / "meetinghooks")
    subprocess.run([meetinghooks, "db", "upgrade"], env=env, cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    created = json.loads(
        subprocess.run(
            [meetinghooks, "users", "create", "--email", "honcho@example.com", "--name", "H",
             "--json"],
            env=env, cwd=tmp_path, check=True, capture_output=True, text=True, timeout=120,
        ).stdout
    )  # fmt: skip
    log_path = tmp_path / "honcho.log"
    with log_path.open("wb") as log:
        # -p: honcho gives the first process type (web) this $PORT, the next ones +100 each.
        honcho = subprocess.Popen(
            [str(BIN / "honcho"), "-f", str(ROOT / "Procfile"), "-d", str(tmp_path), "start",
             "--no-colour", "-p", env["HONCHO_PORT"]],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def output() -> str:
        return log_path.read_text(errors="replace")[-6000:]

    try:
        wait_until(lambda: answers_ok(f"{base}/healthz"), BOOT_SECONDS, f"web on {base}")
        wait_until(lambda: output().count(" ready.") >= 2, BOOT_SECONDS, "both worker pools")
        headers = {"Authorization": f"Bearer {created['accessToken']}"}
        hook = {"callbackUrl": receiver.url("/hook")}
        meeting = requests.post(
            f"{base}/v1/meetings/start",
            json={
                "startWithPersonalUrl": False,
                "webhooks": {"meeting.start": hook, "meeting.end": hook},
            },
            headers=headers,
            timeout=30,
        ).json()
        presenter = requests.post(
            meeting["presenterLink"], headers={"Accept": "application/json"}, timeout=30
        )
        assert presenter.status_code == 200, presenter.text
        _, body, signed = signed_event(meeting["meetingId"], "meeting.end")
        ended = requests.post(f"{base}/v1/events", data=body, headers=signed, timeout=30)
        assert ended.status_code == 202, ended.text
        receiver.wait_for(2, timeout=DELIVERY_SECONDS)
        verifier = Webhook(created["signingSecret"])
        events = [verifier.verify(got.body, got.headers) for got in receiver.received]
        # One meeting's callbacks to one URL go out in order: the end waits for the start.
        assert [(e["type"], e["meetingId"]) for e in events] == [
            ("meeting.start", meeting["meetingId"]),
            ("meeting.end", meeting["meetingId"]),
        ]
        # The simulator against the same deployment: its user straight in DATABASE_URL's
        # database, ingest signed with INGEST_SIGNING_SECRET, loopback callbacks allowed above.
        simulated = subprocess.run(
            [meetinghooks, "simulate", "--url", base, "--meetings", "6", "--seed", "2",
             "--duplicates", "0.5", "--out-of-order", "0.5", "--grace", "60", "--json"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert simulated.returncode == 0, f"{simulated.stdout}\n{simulated.stderr}\n{output()}"
        summary = json.loads(simulated.stdout.strip().splitlines()[-1])
        assert summary["callbacks"]["verified"] == summary["callbacks"]["expected"] == 12
        started = _processes_of(env)
        assert len(started) >= 8, output()  # four commands, gunicorn, both Celery workers, ...

        honcho.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        honcho.wait(timeout=STOP_SECONDS)
        wait_until(
            lambda: not _processes_of(env),
            STOP_SECONDS - (time.monotonic() - stopping),
            "every process honcho started to end",
        )
        stopped_in = time.monotonic() - stopping
    except BaseException:
        print(output())  # noqa: T201  (the failing test's evidence)
        raise
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
        for pid in _processes_of(env):  # a failed test leaves nothing running either
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    killed = "SIGKILL" in output()
    print(f"honcho stopped the Procfile in {stopped_in:.1f} s (SIGKILL needed: {killed})")  # noqa: T201
