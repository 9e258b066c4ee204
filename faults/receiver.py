"""The callback receiver of `make faults`: a process of its own, so that it can be killed -9.

Run as a script it serves `POST /hook`: it verifies the Standard Webhooks signature with the
public `standardwebhooks` library, appends one JSON line per request to its record file (before
answering, with one `write(2)` each, so a kill -9 never loses a line it answered for), waits
`delay` seconds and answers `status`. `POST /_control {"status": 500, "delay": 1.0}` changes
both while it runs; `GET /_health` says it is up. The record outlives restarts: every start
appends to the same file.

`CallbackReceiver` is the suite's handle on it: start, kill -9, control, read the record.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests


@dataclass(frozen=True)
class Arrival:
    """One callback request as the receiver saw it."""

    webhook_id: str
    verified: bool
    body_sha256: str
    status: int
    at: float
    error: str | None


def serve(port: int, secret: str, record: Path, status: int, delay: float) -> None:
    """Serve callbacks on 127.0.0.1:`port` until killed."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError  # noqa: PLC0415

    verifier = Webhook(secret)
    state = {"status": status, "delay": delay}
    lock = threading.Lock()
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, code: int, payload: bytes = b"") -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._answer(200 if self.path == "/_health" else 404)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/_control":
                with lock:
                    state.update(json.loads(body))
                self._answer(200)
                return
            error = None
            try:
                verifier.verify(body, {k.lower(): v for k, v in self.headers.items()})
            except WebhookVerificationError as exc:
                error = str(exc) or type(exc).__name__
            with lock:
                answer = int(state["status"]) if error is None else 401
                wait = float(state["delay"])
            line = {
                "id": self.headers.get("webhook-id", ""),
                "verified": error is None,
                "sha": hashlib.sha256(body).hexdigest(),
                "status": answer,
                "at": time.time(),
                "error": error,
            }
            os.write(fd, (json.dumps(line) + "\n").encode())  # one append: whole or not at all
            if wait:
                time.sleep(wait)
            self._answer(answer)

        def log_message(self, format: str, *args: object) -> None:
            return

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True  # a restart after kill -9 takes the same port at once
        request_queue_size = 256

    Server(("127.0.0.1", port), Handler).serve_forever()


class CallbackReceiver:
    """The suite's handle on the receiver process: same port and record across restarts."""

    def __init__(self, port: int, secret: str, record: Path, log: Path) -> None:
        self.port = port
        self.secret = secret
        self.record = record
        self.log = log
        self.status = 204
        self.delay = 0.0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        """Start the process with the current status and delay; wait until it answers."""
        argv = [
            sys.executable, __file__, "--port", str(self.port), "--record", str(self.record),
            "--status", str(self.status), "--delay", str(self.delay),
        ]  # fmt: skip
        env = {**os.environ, "FAULTS_RECEIVER_SECRET": self.secret}  # not on the command line
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):  # not listening yet
                if requests.get(f"http://127.0.0.1:{self.port}/_health", timeout=1).ok:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the callback receiver did not start, see {self.log}")

    def kill(self) -> int:
        """Kill -9 the process; return its pid."""
        if self.process is None:
            raise RuntimeError("the callback receiver is not running")
        pid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.process.wait()
        self.process = None
        return pid

    def control(self, *, status: int | None = None, delay: float | None = None) -> None:
        """Change the answer (and keep it for later restarts)."""
        if status is not None:
            self.status = status
        if delay is not None:
            self.delay = delay
        if self.process is not None:
            requests.post(
                f"http://127.0.0.1:{self.port}/_control",
                json={"status": self.status, "delay": self.delay},
                timeout=5,
            ).raise_for_status()

    def arrivals(self) -> list[Arrival]:
        """Return every request recorded so far, over all the process's lives."""
        found: list[Arrival] = []
        if not self.record.exists():
            return found
        for line in self.record.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError):  # a line cut short: never answered
                item = json.loads(line)
                found.append(
                    Arrival(
                        webhook_id=item["id"],
                        verified=item["verified"],
                        body_sha256=item["sha"],
                        status=item["status"],
                        at=item["at"],
                        error=item["error"],
                    )
                )
        return found

    def close(self) -> None:
        if self.process is not None:
            self.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description="callback receiver for make faults")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--status", type=int, default=204)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    serve(args.port, os.environ["FAULTS_RECEIVER_SECRET"], args.record, args.status, args.delay)


if __name__ == "__main__":
    main()
