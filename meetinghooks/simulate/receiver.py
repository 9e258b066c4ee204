"""The simulator's callback receiver: verifies each callback's signature and records it."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Arrival:
    """One verified callback, as the receiver got it."""

    at: float  # time.monotonic() on arrival
    webhook_id: str
    type: str
    meeting_id: int
    sequence: int
    data: dict[str, Any]


@dataclass
class Tally:
    """What arrived, guarded by one lock (handler threads write, the driver reads)."""

    arrivals: list[Arrival] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)  # why a request was refused
    webhook_ids: set[str] = field(default_factory=set)
    redelivered: int = 0  # a webhook-id seen again: a retry whose answer we sent was lost
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Arrival]:
        with self.lock:
            return list(self.arrivals)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A worker that gave up on an attempt hangs up on us: that is its business.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Server6(_Server):
    address_family = socket.AF_INET6


class CallbackReceiver:
    """A threaded HTTP server on `host:port` that accepts signed callbacks under `path`.

    A callback whose Standard Webhooks signature does not verify with the user's signing
    secret is answered 401 and counted as rejected, never as received.
    """

    def __init__(self, signing_secret: str, *, path: str, host: str = "127.0.0.1", port: int = 0):
        self.path = path
        self.tally = Tally()
        verifier = Webhook(signing_secret)
        tally = self.tally

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self._answer(413, "too-large")
                    return
                body = self.rfile.read(length)
                if self.path != path:
                    self._answer(404, "unknown-path")
                    return
                try:
                    payload = verifier.verify(body, dict(self.headers.items()))
                except WebhookVerificationError:
                    self._answer(401, "bad-signature")
                    return
                try:
                    arrival = Arrival(
                        at=time.monotonic(),
                        webhook_id=self.headers["webhook-id"],
                        type=str(payload["type"]),
                        meeting_id=int(payload["meetingId"]),
                        sequence=int(payload["data"]["sequence"]),
                        data=dict(payload["data"]),
                    )
                except (KeyError, TypeError, ValueError):
                    self._answer(400, "unexpected-shape")
                    return
                with tally.lock:
                    if arrival.webhook_id in tally.webhook_ids:
                        tally.redelivered += 1
                    tally.webhook_ids.add(arrival.webhook_id)
                    tally.arrivals.append(arrival)
                self._answer(204)

            def _answer(self, status: int, reason: str | None = None) -> None:
                if reason is not None:
                    with tally.lock:
                        tally.rejected[reason] += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return  # the summary says what arrived; one line per callback is noise

        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="simulate-receiver", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
