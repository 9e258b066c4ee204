"""Load generators and baseline loops for `make bench`; each runs in a process of its own.

Every function here is a top-level function taking and returning plain data, so that the suite
runs it in a fresh spawned process (`in_process`): the load never shares a GIL with what it
measures. Every loop is bounded by a count and a deadline and ends by itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import functools
import json
import multiprocessing
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
# Below gunicorn's keep-alive (2 s): an open-loop connection idle longer opens a new one.
IDLE_RECONNECT_SECONDS = 1.0


def in_process(function: Callable[..., T], **kwargs: Any) -> T:
    """Run `function(**kwargs)` in a fresh spawned process and return its result."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(functools.partial(function, **kwargs)).result(timeout=300)


@dataclass
class LoadResult:
    """What a load run saw: answers by status, latencies (ms), acknowledged ids, elapsed s."""

    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    errors: int = 0
    scheduled: dict[str, float] = field(default_factory=dict)  # webhook-id -> perf_counter s

    @property
    def completed(self) -> int:
        return sum(self.statuses.values())

    @property
    def rate(self) -> float:
        return self.completed / self.elapsed if self.elapsed else 0.0

    @property
    def non_2xx(self) -> int:
        return self.errors + sum(n for s, n in self.statuses.items() if not 200 <= s < 300)


def signed_requests(
    secret: str, meeting_ids: list[int], host: str, *, path: str = "/v1/events"
) -> list[tuple[str, bytes]]:
    """Return (webhook-id, raw HTTP/1.1 request) per meeting: a signed, unique meeting.start."""
    from standardwebhooks.webhooks import Webhook  # noqa: PLC0415  (the child imports it)

    signer = Webhook(secret)
    now = dt.datetime.now(dt.UTC)
    stamp = now.isoformat().replace("+00:00", "Z")
    out = []
    for meeting_id in meeting_ids:
        msg_id = "msg_" + secrets.token_hex(12)
        body = json.dumps(
            {"type": "meeting.start", "timestamp": stamp, "data": {"meetingId": meeting_id}}
        ).encode()
        signature = signer.sign(msg_id, now, body.decode())
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nwebhook-id: {msg_id}\r\n"
            f"webhook-timestamp: {int(now.timestamp())}\r\nwebhook-signature: {signature}\r\n\r\n"
        )
        out.append((msg_id, head.encode() + body))
    return out


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, bool]:
    """Send one request, read one response; return its status and whether to reconnect."""
    writer.write(raw)
    await writer.drain()
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("closed before answering")
    status = int(status_line.split()[1])
    length, close = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection" and value.strip().lower() == "close":
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


async def _drive(
    host: str,
    port: int,
    *,
    requests_: list[tuple[str, bytes]],
    connections: int,
    seconds: float,
    rate: float | None,
) -> LoadResult:
    result = LoadResult()
    index = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def connection() -> None:
        nonlocal index
        reader, writer = await asyncio.open_connection(host, port)
        used = time.perf_counter()
        try:
            while index < len(requests_) and time.perf_counter() < deadline:
                mine = index
                index += 1
                scheduled = time.perf_counter()
                if rate is not None:  # open loop: latency counts from the scheduled time
                    scheduled = started + mine / rate
                    await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
                    if time.perf_counter() - used > IDLE_RECONNECT_SECONDS:
                        # As a client's pool does: the server may be closing this idle
                        # connection just as the request goes out.
                        writer.close()
                        reader, writer = await asyncio.open_connection(host, port)
                msg_id, raw = requests_[mine]
                try:
                    status, close = await _exchange(reader, writer, raw)
                except (ConnectionError, asyncio.IncompleteReadError, ValueError, IndexError):
                    result.errors += 1
                    close = True
                else:
                    result.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if status in (200, 202):
                        result.acknowledged.append(msg_id)
                        result.scheduled[msg_id] = scheduled
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                used = time.perf_counter()
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    result.elapsed = time.perf_counter() - started
    return result


def http_load(
    host: str,
    port: int,
    *,
    requests_: list[tuple[str, bytes]],
    connections: int,
    seconds: float,
    rate: float | None = None,
) -> LoadResult:
    """Send the pre-built requests over keep-alive connections, closed loop or at `rate`/s."""
    return asyncio.run(
        _drive(host, port, requests_=requests_, connections=connections, seconds=seconds, rate=rate)
    )


def psycopg_loop(dsn: str, threads: int, seconds: float, limit: int) -> tuple[int, float]:
    """Insert one row and commit, in `threads` connections; return (commits, elapsed s)."""
    import psycopg  # noqa: PLC0415  (the child imports it)

    body = json.dumps({"type": "meeting.start", "data": {"meetingId": 1}})
    count = 0
    lock = threading.Lock()
    started = time.perf_counter()
    deadline = started + seconds

    def loop() -> None:
        nonlocal count
        with psycopg.connect(dsn) as conn:
            while time.perf_counter() < deadline:
                with lock:
                    if count >= limit:
                        return
                conn.execute(
                    "INSERT INTO bench_baseline (source_event_id, body) VALUES (%s, %s)",
                    ("msg_" + secrets.token_hex(12), body),
                )
                conn.commit()
                with lock:
                    count += 1

    _run_in_threads(loop, threads)
    return count, time.perf_counter() - started


def _run_in_threads(loop: Callable[[], None], threads: int) -> None:
    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def requests_loop(
    url: str, secret: str, body: str, *, threads: int, seconds: float, limit: int
) -> tuple[int, float]:
    """POST signed callbacks from `threads` requests.Sessions; return (2xx answers, elapsed s)."""
    import requests  # noqa: PLC0415  (the child imports it)
    from standardwebhooks.webhooks import Webhook  # noqa: PLC0415

    signer = Webhook(secret)
    count = 0
    lock = threading.Lock()
    started = time.perf_counter()
    deadline = started + seconds

    def loop() -> None:
        nonlocal count
        with requests.Session() as http:
            while time.perf_counter() < deadline:
                with lock:
                    if count >= limit:
                        return
                msg_id = "msg_" + secrets.token_hex(12)
                now = dt.datetime.now(dt.UTC)
                headers = {
                    "content-type": "application/json",
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": signer.sign(msg_id, now, body),
                }
                if http.post(url, data=body.encode(), headers=headers, timeout=10).ok:
                    with lock:
                        count += 1

    _run_in_threads(loop, threads)
    return count, time.perf_counter() - started


@dataclass
class SignedLoad:
    """A signed-ingest load run: what it saw, and when each acknowledged request was sent."""

    result: LoadResult
    sent_at: dict[str, float]  # webhook-id -> epoch seconds the request was due
    meetings: dict[str, int]  # webhook-id -> meeting id


def signed_load(
    secret: str,
    meeting_ids: list[int],
    port: int,
    *,
    connections: int,
    seconds: float,
    rate: float | None = None,
) -> SignedLoad:
    """Sign one unique meeting.start per meeting up front, then send them (see http_load)."""
    built = signed_requests(secret, meeting_ids, f"127.0.0.1:{port}")
    epoch = time.time() - time.perf_counter()
    result = asyncio.run(
        _drive(
            "127.0.0.1", port, requests_=built, connections=connections, seconds=seconds, rate=rate
        )
    )
    meetings = {msg_id: m for (msg_id, _), m in zip(built, meeting_ids, strict=True)}
    sent = {msg_id: epoch + result.scheduled[msg_id] for msg_id in result.acknowledged}
    return SignedLoad(result, sent, meetings)
