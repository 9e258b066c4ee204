"""The steady load of `make faults`: signed `POST /v1/events`, retried as a platform would.

Each meeting gets a `meeting.start` and, `END_AFTER` seconds later, a `meeting.end`, each with
a `webhook-id` of its own. An answer that is not a 2xx (or no answer) is retried with the same
`webhook-id` and body, freshly signed, until it is acknowledged or the load gives up: the
receiver must then store it once, whatever happened to the earlier tries.
"""

from __future__ import annotations

import collections
import datetime as dt
import heapq
import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field

import requests
from standardwebhooks.webhooks import Webhook

END_AFTER = 1.5  # seconds between a meeting's start and its end
RETRY_AFTER = 0.5  # seconds before an unacknowledged event is sent again
THREADS = 6
TIMEOUT = (3, 10)  # connect, read


@dataclass
class SentEvent:
    """One platform event and what became of it."""

    webhook_id: str
    meeting_id: int
    type: str
    body: str = ""
    first_sent: float | None = None  # epoch seconds
    attempts: int = 0
    acknowledged: int | None = None  # the 2xx status that acknowledged it


@dataclass
class Load:
    """Send every planned event at its time, from a few threads, retrying until acknowledged."""

    base_url: str
    secret: str
    meeting_ids: list[int]
    meetings_per_second: float
    give_up_after: float = 45.0  # seconds after the last planned send
    events: list[SentEvent] = field(default_factory=list)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    _heap: list[tuple[float, int, SentEvent]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _busy: int = 0
    _stop: bool = False
    _deadline: float = 0.0
    _threads: list[threading.Thread] = field(default_factory=list)
    _local: threading.local = field(default_factory=threading.local)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def planned_seconds(self) -> float:
        return len(self.meeting_ids) / self.meetings_per_second + END_AFTER

    def start(self) -> None:
        began = time.monotonic()
        for index, meeting_id in enumerate(self.meeting_ids):
            at = began + index / self.meetings_per_second
            for offset, type_ in ((0.0, "meeting.start"), (END_AFTER, "meeting.end")):
                event = SentEvent("msg_" + secrets.token_hex(12), meeting_id, type_)
                self.events.append(event)
                heapq.heappush(self._heap, (at + offset, next(self._order), event))
        self._deadline = began + self.planned_seconds + self.give_up_after
        for _ in range(THREADS):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self) -> None:
        """Wait until every event is acknowledged or the load gave up."""
        for thread in self._threads:
            thread.join()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def _take(self) -> SentEvent | None:
        with self._cond:
            while True:
                now = time.monotonic()
                if self._stop or now > self._deadline:
                    return None
                if not self._heap:
                    if self._busy == 0:
                        self._cond.notify_all()
                        return None
                    self._cond.wait(0.2)
                    continue
                due = self._heap[0][0]
                if due <= now:
                    self._busy += 1
                    return heapq.heappop(self._heap)[2]
                self._cond.wait(min(due - now, 0.2))

    def _run(self) -> None:
        self._local.http = requests.Session()
        while (event := self._take()) is not None:
            status = self._send(event)
            with self._cond:
                self._busy -= 1
                self.statuses[status] += 1
                if status.isdigit() and 200 <= int(status) < 300:
                    event.acknowledged = int(status)
                else:
                    heapq.heappush(
                        self._heap, (time.monotonic() + RETRY_AFTER, next(self._order), event)
                    )
                self._cond.notify_all()

    def _send(self, event: SentEvent) -> str:
        """Send one try; return its status code, or the error's class name."""
        now = dt.datetime.now(dt.UTC)
        if not event.body:  # the event happened when it was first sent; retries say the same
            event.first_sent = now.timestamp()
            event.body = json.dumps(
                {"type": event.type, "timestamp": now.isoformat().replace("+00:00", "Z"),
                 "data": {"meetingId": event.meeting_id}}
            )  # fmt: skip
        event.attempts += 1
        headers = {
            "content-type": "application/json",
            "webhook-id": event.webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(self.secret).sign(event.webhook_id, now, event.body),
        }
        try:
            response = self._local.http.post(
                f"{self.base_url}/v1/events", data=event.body, headers=headers, timeout=TIMEOUT
            )
        except requests.RequestException as exc:
            self._local.http = requests.Session()  # a broken keep-alive connection
            return type(exc).__name__
        return str(response.status_code)

    @property
    def acknowledged(self) -> list[SentEvent]:
        return [event for event in self.events if event.acknowledged is not None]
