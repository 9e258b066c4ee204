"""Callback sink for `make bench`: verifies each callback with standardwebhooks, in its own process.

`/fast/...` answers 204 at once, `/slow/...` after 50 ms; either way the signature is verified
with the public `standardwebhooks` library (unchanged, as a receiver would) before the answer,
and the arrival time is kept per `webhook-id`. `GET /_arrivals` hands the whole record over;
`GET /_log?from=N` only the arrivals after the first N, which is what a poll every 100 ms can
afford: serializing the whole record under the lock held up the callbacks more each round.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SLOW_SECONDS = 0.05


def _serve(secret: str, port: int, ready: Any) -> None:  # a multiprocessing queue (untyped)
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError  # noqa: PLC0415

    verifier = Webhook(secret)
    lock = threading.Lock()
    arrivals: dict[str, list[list[Any]]] = {}  # webhook-id -> [[path, epoch s, meetingId]]
    log: list[list[Any]] = []  # [webhook-id, path, epoch s, meetingId], in arrival order
    bad: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            at = time.time()
            msg_id = self.headers.get("webhook-id", "")
            try:
                verifier.verify(body, dict(self.headers.items()))
                meeting = json.loads(body).get("meetingId")
            except (WebhookVerificationError, ValueError) as exc:
                with lock:
                    bad.append(f"{msg_id}: {exc}")
            else:
                arrival = [self.path.split("/")[1], at, meeting]
                with lock:
                    arrivals.setdefault(msg_id, []).append(arrival)
                    log.append([msg_id, *arrival])
            if self.path.startswith("/slow"):
                time.sleep(SLOW_SECONDS)
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            if path == "/_log":
                start = int(query.removeprefix("from=") or 0)
                with lock:
                    entries, failed = log[start:], len(bad)
                payload = json.dumps({"log": entries, "bad": failed}).encode()
            else:
                with lock:
                    payload = json.dumps({"arrivals": arrivals, "bad": bad}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            return

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # the delivery pool and the baseline open many at once

    server = Server(("127.0.0.1", port), Handler)
    ready.put(server.server_address[1])
    server.serve_forever()


def start(secret: str, port: int) -> tuple[multiprocessing.process.BaseProcess, int]:
    """Start the sink on `port` for callbacks signed with `secret`; return process and port."""
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    process = context.Process(target=_serve, args=(secret, port, ready), daemon=True)
    process.start()
    return process, int(ready.get(timeout=30))
