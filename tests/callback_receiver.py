"""A real HTTP(S) callback receiver on 127.0.0.1 for tests: records requests, scripted answers."""

from __future__ import annotations

import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TLS_DIR = Path(__file__).parent / "data" / "tls"
# A CA and a certificate for the name `hooks.test` (valid until 2126); see data/tls/README.
TLS_CA = TLS_DIR / "ca.crt"
TLS_CERT = TLS_DIR / "hooks-test.crt"
TLS_KEY = TLS_DIR / "hooks-test.key"


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    server_name: str | None


@dataclass
class Answer:
    """What the receiver answers: status, headers, body, and an optional delay first.

    `trickle` sends the status line and headers one byte at a time, that many seconds apart:
    every read gets data well within a socket timeout, yet the answer takes for ever.
    """

    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    trickle: float = 0.0


class _QuietServer(ThreadingHTTPServer):
    """A server that says nothing when a client hung up first: tests do that on purpose."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class CallbackReceiver:
    """A threaded HTTP server that answers from a script and records what it got.

    `stop()` then `start()` brings it back on the same port, so a test can take the
    receiver down and up again.
    """

    def __init__(self, *, tls: bool = False, port: int = 0) -> None:
        self.tls = tls
        self.port = port
        self.received: list[Received] = []
        self.script: list[Answer] = []
        self.default = Answer()
        self.on_request: Callable[[Received], None] | None = None
        self._lock = threading.Condition()
        self._server: _QuietServer | None = None
        self._thread: threading.Thread | None = None
        self._last_sni: str | None = None

    @property
    def base_url(self) -> str:
        """Return http(s)://127.0.0.1:<port>."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        """Return a URL on this receiver, optionally under another host name."""
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    def answer(self, *answers: Answer) -> None:
        """Queue answers for the next requests (then the default answer)."""
        with self._lock:
            self.script.extend(answers)

    def start(self) -> CallbackReceiver:
        """Listen (again) on 127.0.0.1 and serve in a thread."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                got = Received(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    server_name=receiver._last_sni,
                )
                with receiver._lock:
                    receiver.received.append(got)
                    reply = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver._lock.notify_all()
                if receiver.on_request is not None:
                    receiver.on_request(got)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.trickle:
                    self._trickle(reply)
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def _trickle(self, reply: Answer) -> None:
                head = f"HTTP/1.1 {reply.status} OK\r\nX-Slow: {'x' * 200}\r\n\r\n".encode()
                try:
                    for byte in head:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(reply.trickle)
                except OSError:
                    self.close_connection = True  # the client gave up, as it should

            do_POST = do_GET = _handle  # noqa: N815  (http.server's naming)

            def log_message(self, format: str, *args: object) -> None:
                return

        server = _QuietServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(TLS_CERT, TLS_KEY)

            def remember_sni(_sock: object, name: str | None, _ctx: object) -> None:
                receiver._last_sni = name

            context.sni_callback = remember_sni
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; connections are refused until `start()`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Wait until `count` requests arrived; return them all (fail on timeout)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} requests, got {len(self.received)} in {timeout}s"
                    )
                self._lock.wait(left)
            return list(self.received)
