"""Drive the service as a platform and its users would: meetings, starts, ends, repeats."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from standardwebhooks.webhooks import Webhook

from core.validation import isoformat
from meetinghooks.simulate.plan import MeetingPlan
from meetinghooks.simulate.report import Expected, Ledger

START, END = "meeting.start", "meeting.end"
REQUEST_TIMEOUT_SECONDS = 30.0
# A 429 or 503 is waited out (its Retry-After, at most this long) and sent again, this often.
MAX_RETRIES = 10
MAX_RETRY_AFTER_SECONDS = 30.0


class Aborted(Exception):
    """The run cannot go on: say why, once, in the summary."""


class Pacer:
    """Spaces requests of all threads evenly at `rate` per second."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


@dataclass(frozen=True)
class Setup:
    """What every request needs: where, as whom, and where callbacks go."""

    base_url: str
    token: str
    callback_url: str
    run_id: str
    ingest_secret: str | None


class Driver:
    """Runs meeting scripts on a thread pool, paced, and records each request in the ledger."""

    def __init__(self, setup: Setup, ledger: Ledger, pacer: Pacer) -> None:
        self.setup = setup
        self.ledger = ledger
        self.pacer = pacer
        self.stop = threading.Event()
        self.abort_reason: str | None = None
        self._local = threading.local()

    # --- HTTP -----------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False  # never through a proxy: the target was checked
        return session

    def send(
        self, kind: str, path: str, *, body: str = "", headers: Callable[[], dict[str, str]]
    ) -> requests.Response | None:
        """POST to the service, waiting out 429/503; return the 2xx answer, else None."""
        for _attempt in range(MAX_RETRIES + 1):
            self.pacer.wait()
            with self.ledger.lock:
                self.ledger.sent[kind] += 1
            try:
                response = self._session().post(
                    self.setup.base_url + path,
                    data=body.encode(),
                    headers=headers(),
                    timeout=REQUEST_TIMEOUT_SECONDS,
                    allow_redirects=False,
                )
            except requests.RequestException as exc:
                self._failed(kind, type(exc).__name__)
                return None
            if response.status_code in (429, 503) and not self.stop.is_set():
                with self.ledger.lock:
                    self.ledger.retried += 1
                time.sleep(_retry_after(response))
                continue
            if 200 <= response.status_code < 300:
                with self.ledger.lock:
                    self.ledger.acknowledged[kind] += 1
                return response
            self._failed(kind, _status(response))
            return None
        return None

    def _failed(self, kind: str, what: str) -> None:
        with self.ledger.lock:
            self.ledger.failed[f"{kind}: {what}"] += 1

    def _api_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.setup.token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    # --- one meeting ----------------------------------------------------------------------

    def run_meeting(self, plan: MeetingPlan) -> None:
        """Create the meeting, then start and end it as its plan says."""
        created = self._create()
        if created is None:
            return
        meeting_id, presenter_path = created
        if plan.via_ingest:
            self._platform(plan, meeting_id)
            return
        sent_at = time.monotonic()
        if self.send(
            "presenter start", presenter_path, headers=lambda: {"Accept": "application/json"}
        ):
            self.ledger.expect(Expected(meeting_id, START, sent_at))
        if plan.ends:
            sent_at = time.monotonic()
            if self.send("api end", f"/v1/meetings/{meeting_id}/end", headers=self._api_headers):
                self.ledger.expect(Expected(meeting_id, END, sent_at))

    def _create(self) -> tuple[int, str] | None:
        hook = {
            "callbackUrl": self.setup.callback_url,
            "customCallbackData": {"run": self.setup.run_id},
        }
        body = json.dumps({"startWithPersonalUrl": False, "webhooks": {START: hook, END: hook}})
        response = self.send(
            "create meeting", "/v1/meetings/start", body=body, headers=self._api_headers
        )
        if response is None:
            return None
        answer = response.json()
        for status in answer.get("webhooksStatus", {}).values():
            if not status.get("registered"):
                raise Aborted(_refused_callback(status, self.setup.callback_url))
        # Only the path: the link names PUBLIC_BASE_URL, which may be elsewhere than the
        # service we were allowed to load.
        return int(answer["meetingId"]), urlsplit(answer["presenterLink"]).path

    def _platform(self, plan: MeetingPlan, meeting_id: int) -> None:
        # Times in the past, as a platform's reports are: the end now, the start its length earlier.
        ended_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        started_at = ended_at - dt.timedelta(seconds=plan.length_seconds)
        start_final: dict[str, Any] = {"startedAt": isoformat(started_at)}
        end_final: dict[str, Any] = {
            **start_final,
            "endedAt": isoformat(ended_at),
            "durationSeconds": plan.length_seconds,
        }
        events = [(START, started_at, plan.duplicate_start, start_final)]
        if plan.ends:
            events.append((END, ended_at, plan.duplicate_end, end_final))
        if plan.out_of_order:
            events.reverse()
        for type_, at, repeat, final in events:
            sent_at = time.monotonic()
            if self._ingest(meeting_id, type_, at, repeat=repeat):
                self.ledger.expect(Expected(meeting_id, type_, sent_at, final))

    def _ingest(self, meeting_id: int, type_: str, at: dt.datetime, *, repeat: bool) -> bool:
        secret = self.setup.ingest_secret
        assert secret is not None  # noqa: S101  (the command plans no ingest without it)
        msg_id = f"msg_sim_{secrets.token_hex(8)}"
        body = json.dumps(
            {"type": type_, "timestamp": isoformat(at), "data": {"meetingId": meeting_id}}
        )

        def signed() -> dict[str, str]:  # signed at each attempt: a retry is signed anew
            now = dt.datetime.now(dt.UTC)
            return {
                "Content-Type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Webhook(secret).sign(msg_id, now, body),
            }

        kind = "ingest start" if type_ == START else "ingest end"
        if self.send(kind, "/v1/events", body=body, headers=signed) is None:
            return False
        if repeat:
            again = self.send("ingest duplicate", "/v1/events", body=body, headers=signed)
            if again is not None and again.status_code != 200:  # 202: stored a second time
                with self.ledger.lock:
                    self.ledger.duplicates_stored += 1
        return True

    # --- the run --------------------------------------------------------------------------

    def run(self, plans: Iterator[MeetingPlan], *, concurrency: int, deadline: float | None) -> int:
        """Run the scripts until they run out, the deadline passes or the run aborts."""
        lock = threading.Lock()
        started = 0

        def worker() -> None:
            nonlocal started
            while not self.stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    return
                with lock:
                    plan = next(plans, None)
                    if plan is None:
                        return
                    started += 1
                try:
                    self.run_meeting(plan)
                except Aborted as exc:
                    self.abort_reason = self.abort_reason or str(exc)
                    self.stop.set()

        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="simulate") as pool:
            for future in [pool.submit(worker) for _ in range(concurrency)]:
                future.result()
        return started


def _retry_after(response: requests.Response) -> float:
    try:
        wait = float(response.headers.get("Retry-After", "1"))
    except ValueError:
        wait = 1.0
    return min(max(wait, 0.1), MAX_RETRY_AFTER_SECONDS)


def _status(response: requests.Response) -> str:
    try:
        code: Any = response.json().get("code")
    except ValueError:
        code = None
    return f"{response.status_code} {code}" if code else str(response.status_code)


def _refused_callback(status: dict[str, Any], url: str) -> str:
    code = status.get("code", "not-registered")
    hint = ""
    if code == "callback-url-forbidden":
        hint = (
            " (outside the embedded mode the SSRF guard refuses loopback: on a test deployment "
            "set CALLBACK_ALLOWED_NETWORKS=127.0.0.0/8 on the service, or give --callback-url "
            "a public address that reaches this machine)"
        )
    return f"the service did not register the callback {url}: {code}{hint}"
